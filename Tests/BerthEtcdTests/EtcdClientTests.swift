import BerthEtcd
import BerthModel
import BerthTesting
import BerthTransport
import Foundation
import Logging
import Testing

@Suite("the etcd client's pure parts: endpoints and batches")
struct EtcdClientUnitTests {
    @Test("etcd://HOST:PORT[,HOST:PORT...] parses to the endpoints, in order")
    func endpoints() throws {
        #expect(try EtcdClient.endpoints(parsing: "etcd://127.0.0.1:2379") == [.tcp(host: "127.0.0.1", port: 2379)])
        #expect(
            try EtcdClient.endpoints(parsing: "etcd://10.0.0.1:2379,etcd-2.example:2379,[::1]:2380")
                == [.tcp(host: "10.0.0.1", port: 2379), .tcp(host: "etcd-2.example", port: 2379), .tcp(host: "::1", port: 2380)])
    }

    @Test(
        "a store that is not etcd://HOST:PORT[,...] is refused, saying what is wrong",
        arguments: [
            ("127.0.0.1:2379", "expected etcd://"), ("http://127.0.0.1:2379", "expected etcd://"), ("etcd://", "no endpoint"),
            ("etcd://a:2379,,b:2379", "empty"), ("etcd://a", "not HOST:PORT"), ("etcd://a:notaport", "not HOST:PORT"),
            ("etcd://a:2379/path", "not HOST:PORT"), ("etcd://:2379", "not HOST:PORT"), ("etcd://a:0", "port 0"),
            ("etcd://a:2379,a:2379", "listed twice"),
        ])
    func badEndpoints(_ text: String, _ says: String) {
        do {
            _ = try EtcdClient.endpoints(parsing: text)
            Issue.record("\(text) was taken")
        } catch let error as BerthError {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains(says) && error.message.contains(text), "\(error.message)")
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test("1,000 puts split into transactions of at most 128 operations, in order")
    func batchesByCount() throws {
        let operations = (0..<1000).map { EtcdOperation.put("/t/\($0)", Array("v\($0)".utf8)) }
        let batches = try EtcdClient.batches(operations, conditions: [.created("/e/1", at: 5)])
        #expect(batches.allSatisfy { $0.count <= EtcdClient.maxOperationsPerTxn })
        #expect(batches.count == 8)
        #expect(Array(batches.joined()) == operations)
    }

    @Test("large values split by encoded size, conditions counted; one operation larger than a request is refused")
    func batchesBySize() throws {
        let value = [UInt8](repeating: 7, count: 300_000)
        let operations = (0..<10).map { EtcdOperation.put("/big/\($0)", value) }
        let batches = try EtcdClient.batches(operations)
        #expect(batches.map(\.count) == [5, 5])
        // A condition with a large value leaves room for four only.
        let heavy = EtcdCondition("/c", .value([UInt8](repeating: 1, count: 300_000)))
        #expect(try EtcdClient.batches(operations, conditions: [heavy]).map(\.count) == [4, 4, 2])
        do {
            _ = try EtcdClient.batches([.put("/huge", [UInt8](repeating: 0, count: EtcdClient.maxRequestBytes))])
            Issue.record("an operation larger than etcd takes was batched")
        } catch let error as BerthError {
            #expect(error.code == .resourceExhausted && error.message.contains("/huge"), "\(error)")
        }
    }

    @Test("a batch never writes one key twice, nor puts a key it deletes")
    func batchesWithoutDuplicates() throws {
        let operations: [EtcdOperation] = [
            .put("/a", [1]), .put("/b", [1]), .put("/a", [2]), .delete("/b"), .deletePrefix("/c/"), .put("/c/1", [1]), .get("/a"),
        ]
        let batches = try EtcdClient.batches(operations)
        #expect(batches == [[.put("/a", [1]), .put("/b", [1])], [.put("/a", [2]), .delete("/b"), .deletePrefix("/c/")], [.put("/c/1", [1]), .get("/a")]])
    }
}

/// The client against one real etcd member.
@Suite("the etcd client on a real etcd member")
struct EtcdClientTests {
    static func text(_ value: EtcdKeyValue?) -> String? { value.map { String(decoding: $0.value, as: UTF8.self) } }

    @Test("put, range (a key, a prefix, pages, by create revision, at a revision), delete")
    func putAndRange() async throws {
        try await EtcdProcesses.with(members: 1) { etcd in
            let client = etcd.client()
            defer { client.close() }
            let first = try await client.put("/r/b", Array("one".utf8))
            let second = try await client.put("/r/a", Array("two".utf8))
            try await client.put("/r/b", Array("three".utf8))
            try await client.put("/other", Array("x".utf8))
            #expect(second > first)

            let b = try await client.range("/r/b")
            #expect(Self.text(b.values.first) == "three")
            #expect(b.values.first?.createRevision == first && b.values.first?.version == 2 && b.values.first?.modRevision == b.revision - 1)
            #expect(try await client.range("/r/none").values.isEmpty)

            let all = try await client.range("/r/", prefix: true)
            #expect(all.values.map(\.key) == ["/r/a", "/r/b"] && !all.more)
            let page = try await client.range("/r/", prefix: true, limit: 1)
            #expect(page.values.map(\.key) == ["/r/a"] && page.more)
            let rest = try await client.range(from: "/r/a\u{0}", end: EtcdClient.prefixEnd("/r/"))
            #expect(rest.values.map(\.key) == ["/r/b"])
            let byCreation = try await client.range("/r/", prefix: true, sortByCreateRevision: true)
            #expect(byCreation.values.map(\.key) == ["/r/b", "/r/a"])
            let before = try await client.range("/r/b", revision: first)
            #expect(Self.text(before.values.first) == "one")
            #expect(Self.text(try await client.range("/r/b", serializable: true).values.first) == "three")

            #expect(try await client.delete("/r/", prefix: true) == 2)
            #expect(try await client.range("/r/", prefix: true).values.isEmpty)
            #expect(try await client.range("/other").values.count == 1)
        }
    }

    @Test("a transaction runs the branch its conditions choose and returns what its reads found")
    func transactions() async throws {
        try await EtcdProcesses.with(members: 1) { etcd in
            let client = etcd.client()
            defer { client.close() }
            let created = try await client.txn(if: [.absent("/t/k")], then: [.put("/t/k", Array("v1".utf8)), .get("/t/k")], else: [.get("/t/k")])
            #expect(created.succeeded && Self.text(created.ranges.first?.first) == "v1")
            let revision = created.revision

            let again = try await client.txn(if: [.absent("/t/k")], then: [.put("/t/k", Array("v2".utf8))], else: [.get("/t/k")])
            #expect(!again.succeeded && again.ranges.count == 1 && Self.text(again.ranges[0].first) == "v1")
            #expect(again.revision == revision, "a transaction that only read does not change the revision")

            // The fence: the same key, created at this revision.
            let fenced = try await client.txn(if: [.created("/t/k", at: revision)], then: [.put("/t/k", Array("v3".utf8))])
            #expect(fenced.succeeded)
            try await client.delete("/t/k")
            try await client.put("/t/k", Array("v4".utf8))
            let stale = try await client.txn(if: [.created("/t/k", at: revision)], then: [.put("/t/k", Array("v5".utf8))])
            #expect(!stale.succeeded)
            #expect(Self.text(try await client.range("/t/k").values.first) == "v4")

            let byValue = try await client.txn(
                if: [.value("/t/k", is: Array("v4".utf8)), .present("/t/k"), EtcdCondition("/t/k", .version(1), .equal)],
                then: [.put("/t/other", [1]), .getPrefix("/t/")])
            #expect(byValue.succeeded && byValue.ranges.first?.map(\.key) == ["/t/k", "/t/other"])
            let notEqual = try await client.txn(if: [EtcdCondition("/t/k", .value(Array("v4".utf8)), .notEqual)], then: [.deletePrefix("/t/")])
            #expect(!notEqual.succeeded)
            let deleted = try await client.txn(if: [EtcdCondition("/t/k", .modRevision(0), .greater)], then: [.deletePrefix("/t/"), .getPrefix("/t/")])
            #expect(deleted.succeeded && deleted.ranges == [[]])
        }
    }

    @Test("1,000 puts in batches of at most 128 land, each batch fenced; 129 operations in one are refused as too many")
    func batchesLand() async throws {
        try await EtcdProcesses.with(members: 1) { etcd in
            let client = etcd.client()
            defer { client.close() }
            let revision = try await client.put("/fence", [1])
            let fence = EtcdCondition.created("/fence", at: revision)
            let operations = (0..<1000).map { EtcdOperation.put("/batch/\(String(format: "%04d", $0))", Array("value \($0)".utf8)) }
            let batches = try EtcdClient.batches(operations, conditions: [fence])
            #expect(batches.count == 8 && batches.allSatisfy { $0.count <= 128 })
            for batch in batches {
                let result = try await client.txn(if: [fence], then: batch)
                #expect(result.succeeded)
            }
            let stored = try await client.range("/batch/", prefix: true)
            #expect(stored.values.count == 1000)
            #expect(stored.values.map(\.key) == operations.map(\.key))

            do {
                _ = try await client.txn(if: [], then: (0..<129).map { .put("/many/\($0)", [0]) })
                Issue.record("etcd took 129 operations in one transaction")
            } catch let error as BerthError {
                #expect(error.code == .resourceExhausted && error.message.hasPrefix("the store refused"), "\(error)")
            }
            do {
                _ = try await client.txn(if: [], then: [.put("/dup", [0]), .put("/dup", [1])])
                Issue.record("etcd took one key written twice")
            } catch let error as BerthError {
                #expect(error.code == .invalidArgument, "\(error)")
            }
        }
    }

    @Test("a watch from a revision sees every put and delete after it, in order, then what follows; a compacted revision is .compacted")
    func watch() async throws {
        try await EtcdProcesses.with(members: 1) { etcd in
            let client = etcd.client()
            defer { client.close() }
            let start = try await client.put("/w/a", Array("1".utf8))
            try await client.put("/w/b", Array("2".utf8))
            try await client.put("/elsewhere", Array("x".utf8))
            try await client.delete("/w/a")
            try await client.put("/w/b", Array("3".utf8))

            let seen = Seen()
            let watching = Task {
                try await client.watch("/w/", prefix: true, from: start) { events, revision in
                    if seen.add(events, revision) >= 5 { throw Enough() }
                }
            }
            // A change made while the watch runs arrives too.
            try await Task.sleep(for: .milliseconds(300))
            let last = try await client.put("/w/c", Array("4".utf8))
            await #expect(throws: Enough.self) { try await watching.value }

            let events = seen.events
            let described = events.map { event -> String in
                switch event {
                case .put(let value): "put \(value.key) \(String(decoding: value.value, as: UTF8.self))"
                case .delete(let key, _): "delete \(key)"
                }
            }
            #expect(described == ["put /w/a 1", "put /w/b 2", "delete /w/a", "put /w/b 3", "put /w/c 4"])
            #expect(events.first?.revision == start && events.last?.revision == last)
            #expect(zip(events, events.dropFirst()).allSatisfy { $0.revision < $1.revision })
            #expect(seen.revisions.last == last, "the handler's revision is the last change's")

            // Compacted: the history before `last` is gone.
            try await client.compact(to: last)
            do {
                try await client.watch("/w/", prefix: true, from: start) { _, _ in Issue.record("a compacted watch reported events") }
                Issue.record("a watch from a compacted revision ran")
            } catch EtcdError.compacted(let revision) {
                #expect(revision == last)
            }
            do {
                _ = try await client.range("/w/b", revision: start)
                Issue.record("a read at a compacted revision was answered")
            } catch let error as BerthError {
                #expect(error.code == .outOfRange, "\(error)")
            }
        }
    }

    @Test("a quiet watch keeps its one stream open past the request timeout (progress requests are answered), then sees a change")
    func quietWatch() async throws {
        try await EtcdProcesses.with(members: 1) { etcd in
            let messages = Shared<[String]>([])
            let logger = Logger(label: "test") { _ in RecordingLogHandler(messages: messages) }
            let client = EtcdClient(endpoints: etcd.endpoints, tls: nil, requestTimeout: .milliseconds(500), logger: logger)
            defer { client.close() }
            let seen = Seen()
            let watching = Task {
                try await client.watch("/quiet") { events, revision in
                    _ = seen.add(events, revision)
                    throw Enough()
                }
            }
            try await Task.sleep(for: .seconds(3))
            let revision = try await client.put("/quiet", [1])
            let result = try await within(.seconds(5), "the watch seeing the put") { await watching.result }
            #expect(throws: Enough.self) { try result.get() }
            #expect(seen.events.map(\.revision) == [revision])
            #expect(messages.value.filter { $0.contains("watch") }.isEmpty, "the watch was made again: \(messages.value)")
        }
    }

    @Test("a kept-alive lease keeps its key past the TTL; a revoked one takes it at once; etcd's TTL 0 ends the keep-alive")
    func leases() async throws {
        try await EtcdProcesses.with(members: 1) { etcd in
            let client = etcd.client()
            defer { client.close() }
            let lease = try await client.grantLease(ttl: 2)
            #expect(lease.ttl >= 2)
            try await client.put("/lease/kept", Array("v".utf8), lease: lease.id)
            let renewals = Shared(0)
            let keeping = Task { try await client.keepAlive(lease: lease.id, every: .milliseconds(500)) { _ in renewals.update { $0 += 1 } } }
            try await Task.sleep(for: .seconds(4))
            #expect(try await client.range("/lease/kept").values.first?.lease == lease.id, "the key outlived its TTL")
            #expect(renewals.value >= 4)
            keeping.cancel()
            try await keeping.value

            try await client.revokeLease(lease.id)
            #expect(try await client.range("/lease/kept").values.isEmpty)
            do {
                try await client.revokeLease(lease.id)
                Issue.record("a revoked lease was revoked again")
            } catch let error as BerthError {
                #expect(error.code == .notFound && error.message.contains("lease"), "\(error)")
            }
            await #expect(throws: EtcdError.leaseExpired) {
                try await client.keepAlive(lease: lease.id, every: .milliseconds(200)) { _ in }
            }

            // Not kept alive: the key goes with the lease.
            let short = try await client.grantLease(ttl: 2)
            try await client.put("/lease/dropped", [1], lease: short.id)
            try await Task.sleep(for: .seconds(4))
            #expect(try await client.range("/lease/dropped").values.isEmpty)
            do {
                try await client.put("/lease/late", [1], lease: short.id)
                Issue.record("a put on an expired lease was taken")
            } catch let error as BerthError {
                #expect(error.code == .notFound, "\(error)")
            }
        }
    }

    @Test("a member's status names its ID, leader and term; one that does not run has an error")
    func status() async throws {
        try await EtcdProcesses.with(members: 1) { etcd in
            let down = TransportAddress.tcp(host: "127.0.0.1", port: 1)
            let client = EtcdClient(endpoints: etcd.endpoints + [down], tls: nil, requestTimeout: .seconds(2), logger: EtcdProcesses.logger)
            defer { client.close() }
            let statuses = await client.status()
            #expect(statuses.count == 2)
            #expect(statuses[0].error == nil && statuses[0].isLeader && statuses[0].raftTerm >= 1 && statuses[0].version.hasPrefix("3.4"))
            #expect(statuses[1].endpoint == down && statuses[1].error != nil && !statuses[1].isLeader)
        }
    }
}

/// What a watch handed its handler.
final class Seen: Sendable {
    private let state = Shared<(events: [EtcdEvent], revisions: [Int64])>(([], []))

    /// Adds a batch; returns how many events were seen in all.
    func add(_ events: [EtcdEvent], _ revision: Int64) -> Int {
        var count = 0
        state.update {
            $0.events += events
            $0.revisions.append(revision)
            count = $0.events.count
        }
        return count
    }

    var events: [EtcdEvent] { state.value.events }
    var revisions: [Int64] { state.value.revisions }
}

/// A watch handler's way out once it has seen enough.
struct Enough: Error {}
