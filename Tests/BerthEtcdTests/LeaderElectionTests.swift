@testable import BerthEtcd
import BerthModel
import BerthTesting
import Testing

/// etcd's election recipe against one real member. Serialized: the
/// assertions are about seconds, which parallel etcd processes blur.
@Suite("leader election on a real etcd member", .serialized)
struct LeaderElectionTests {
    static func candidate(_ client: EtcdClient, _ value: String, ttl: Int64 = 5) -> LeaderElection {
        LeaderElection(client: client, prefix: "/election/", ttl: ttl, value: value, logger: EtcdProcesses.logger)
    }

    @Test("two candidates: the first leads, the second waits; the first resigns and the second leads within a second")
    func resignation() async throws {
        try await EtcdProcesses.with(members: 1) { etcd in
            let client = etcd.client()
            defer { client.close() }
            let first = Self.candidate(client, "10.0.0.1:7440")
            let second = Self.candidate(client, "10.0.0.2:7440")
            let one = try await within(.seconds(5), "the first campaign") { try await first.campaign() }
            #expect(one.key.hasPrefix("/election/") && one.key == "/election/" + String(one.lease, radix: 16))

            let won = Shared<ContinuousClock.Instant?>(nil)
            let waiting = Task {
                let leadership = try await second.campaign()
                won.value = .now
                return leadership
            }
            try await Task.sleep(for: .milliseconds(1500))
            #expect(won.value == nil, "the second candidate led while the first did")
            #expect(try await second.leader()?.value == "10.0.0.1:7440")
            #expect(try await second.candidates().map(\.value) == ["10.0.0.1:7440", "10.0.0.2:7440"])

            let resigned = ContinuousClock.now
            await first.resign()
            let two = try await within(.seconds(5), "the second campaign") { try await waiting.value }
            let handedOver = resigned.duration(to: try #require(won.value))
            #expect(handedOver < .seconds(1), "the second led \(handedOver) after the first resigned")
            #expect(two.createRevision > one.createRevision, "terms grow")
            #expect(try await first.leader()?.value == "10.0.0.2:7440")
            #expect(try await first.leader()?.createRevision == two.createRevision)
            try await within(.seconds(1), "lost() of a resigned leadership") { await first.lost(one) }

            // The deposed leader's fence fails; the new one's holds.
            let stale = try await client.txn(if: [first.fence(for: one)], then: [.put("/state", Array("first".utf8))])
            #expect(!stale.succeeded)
            let fresh = try await client.txn(if: [second.fence(for: two)], then: [.put("/state", Array("second".utf8))])
            #expect(fresh.succeeded)

            await second.resign()
            #expect(try await second.leader() == nil)
            #expect(try await client.range("/election/", prefix: true).values.isEmpty, "resigning deletes the key")
        }
    }

    @Test("a leader that stops renewing learns it lost before etcd expires its lease; the next candidate leads; the deposed leader's fenced write fails")
    func expiredLeader() async throws {
        try await EtcdProcesses.with(members: 1) { etcd in
            let client = etcd.client()
            defer { client.close() }
            let first = Self.candidate(client, "first", ttl: 2)
            let second = Self.candidate(client, "second", ttl: 2)
            let one = try await within(.seconds(5), "the first campaign") { try await first.campaign() }
            let won = Shared<ContinuousClock.Instant?>(nil)
            let waiting = Task {
                let leadership = try await second.campaign()
                won.value = .now
                return leadership
            }
            try await Task.sleep(for: .seconds(1))

            // As if paused: renewals stop, nothing is revoked.
            let stopped = ContinuousClock.now
            first.stopRenewing()
            try await within(.seconds(4), "lost() after renewals stopped") { await first.lost(one) }
            let lost = ContinuousClock.now
            #expect(stopped.duration(to: lost) <= .milliseconds(2300), "the local deadline is the TTL from the last renewal sent")

            let two = try await within(.seconds(6), "the second campaign") { try await waiting.value }
            let wonAt = try #require(won.value)
            #expect(lost < wonAt, "the deposed leader knew before the next one led")
            #expect(try await second.leader()?.value == "second")

            let stale = try await client.txn(if: [first.fence(for: one)], then: [.put("/state", Array("first".utf8))])
            #expect(!stale.succeeded, "a deposed leader's fenced write landed")
            let fresh = try await client.txn(if: [second.fence(for: two)], then: [.put("/state", Array("second".utf8))])
            #expect(fresh.succeeded)
            #expect(try await client.range("/state").values.first.map { String(decoding: $0.value, as: UTF8.self) } == "second")
            await second.resign()
            await first.resign()
        }
    }

    @Test("a leader cut off from the store (etcd frozen) knows it lost within the TTL of its last renewal, by its local deadline")
    func cutOffLeader() async throws {
        try await EtcdProcesses.with(members: 1) { etcd in
            let client = etcd.client(requestTimeout: .seconds(1))
            defer { client.close() }
            let election = Self.candidate(client, "only", ttl: 2)
            let leadership = try await within(.seconds(5), "the campaign") { try await election.campaign() }
            try await Task.sleep(for: .seconds(1))

            // Nothing answers now: no renewal, no watch event, no error but silence.
            etcd.pause(0)
            let frozen = ContinuousClock.now
            try await within(.seconds(4), "lost() with the store frozen") { await election.lost(leadership) }
            let after = frozen.duration(to: .now)
            #expect(after <= .milliseconds(2300), "lost \(after) after the store froze; the lease's TTL is 2 s")
            #expect(after >= .milliseconds(1200), "lost \(after) after the store froze, well before the lease could expire")
            etcd.resume(0)
            await election.resign()
        }
    }

    @Test("a leader whose key is deleted learns it at once, though its lease lives")
    func deletedKey() async throws {
        try await EtcdProcesses.with(members: 1) { etcd in
            let client = etcd.client()
            defer { client.close() }
            let election = Self.candidate(client, "only")
            let leadership = try await within(.seconds(5), "the campaign") { try await election.campaign() }
            try await client.delete(leadership.key)
            try await within(.seconds(1), "lost() after the key's deletion") { await election.lost(leadership) }
            await election.resign()
        }
    }

    @Test("a campaign cancelled while it waits revokes its lease: its key does not stay in line")
    func cancelledCampaign() async throws {
        try await EtcdProcesses.with(members: 1) { etcd in
            let client = etcd.client()
            defer { client.close() }
            let first = Self.candidate(client, "first")
            let second = Self.candidate(client, "second")
            _ = try await first.campaign()
            let waiting = Task { try await second.campaign() }
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await first.candidates().count == 2)
            waiting.cancel()
            await #expect(throws: CancellationError.self) { try await waiting.value }
            #expect(try await first.candidates().map(\.value) == ["first"])
            await first.resign()
        }
    }
}
