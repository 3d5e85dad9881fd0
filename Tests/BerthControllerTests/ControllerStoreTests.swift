@testable import BerthController
import BerthEtcd
import BerthModel
import BerthTesting
import BerthTransport
import Foundation
import Logging
import Synchronization
import Testing

/// Both stores hold the same records the same way; the writer keeps the
/// order of changes and stops at the first that fails.
@Suite("the controller's stores: SQLite and etcd, and the writer in front of them")
struct ControllerStoreTests {
    static func node(_ n: Int) -> ClusterNode {
        let now = Date(timeIntervalSince1970: 1_700_000_000)
        return ClusterNode(
            id: String(format: "%032x", n), hostname: "node\(n)", address: "10.0.0.\(n):7440", capacity: NodeCapacity(cpus: 2, memoryBytes: 1 << 30),
            allocatable: NodeCapacity(cpus: 2, memoryBytes: 1 << 30), registeredAt: now, lastHeartbeat: now)
    }

    static func replicas(_ service: ClusterService, _ count: Int) -> [Replica] {
        (1...count).map { slot in
            Replica(
                id: String(format: "%032x", slot), serviceID: service.id, serviceName: service.spec.name, slot: slot, version: service.version,
                nodeID: node(slot % 3).id, createdAt: service.createdAt, updatedAt: service.createdAt)
        }
    }

    @Test("a change is stored whole and read back as it was; removals remove; a removed node is remembered; the cluster ID stays", arguments: StoreKind.allCases)
    func roundTrip(_ kind: StoreKind) async throws {
        let test = try await TestStore(kind)
        defer { test.close() }
        let store = test.store
        let empty = try await store.load()
        #expect(empty.clusterID.count == 32 && empty.nodes.isEmpty && empty.services.isEmpty && empty.replicas.isEmpty)

        let service = PlannerWorld.service(replicas: 3)
        let replicas = Self.replicas(service, 3)
        try await store.commit(StoreChange(nodes: [Self.node(1), Self.node(2)], services: [service], replicas: replicas))
        var loaded = try await store.load()
        #expect(loaded.clusterID == empty.clusterID)
        #expect(Set(loaded.nodes.map(\.id)) == [Self.node(1).id, Self.node(2).id])
        #expect(loaded.services == [service])
        #expect(loaded.replicas.sorted { $0.slot < $1.slot } == replicas)

        try await store.commit(StoreChange(removedNodes: [Self.node(2).id], removedReplicas: [replicas[0].id]))
        loaded = try await store.load()
        #expect(loaded.nodes.map(\.id) == [Self.node(1).id])
        #expect(loaded.removedNodes == [Self.node(2).id])
        #expect(loaded.replicas.count == 2)

        try await store.commit(StoreChange(removedServices: [service.id], removedReplicas: replicas.dropFirst().map(\.id)))
        loaded = try await store.load()
        #expect(loaded.services.isEmpty && loaded.replicas.isEmpty)
    }

    @Test("2,500 replicas in one change: etcd takes them in transactions under its limits, and all of them land", arguments: StoreKind.allCases)
    func large(_ kind: StoreKind) async throws {
        let test = try await TestStore(kind)
        defer { test.close() }
        let service = PlannerWorld.service(replicas: 2_500)
        let replicas = Self.replicas(service, 2_500)
        try await test.store.commit(StoreChange(services: [service], replicas: replicas))
        let loaded = try await test.store.load()
        #expect(loaded.replicas.count == 2_500)
        #expect(Set(loaded.replicas.map(\.id)) == Set(replicas.map(\.id)))
    }

    @Test("merging: for each ID the last word counts")
    func merging() {
        let a = Self.node(1)
        var b = a
        b.hostname = "renamed"
        let merged = StoreChange(nodes: [a], removedServices: ["s1"], removedReplicas: ["r1"])
            .merging(StoreChange(nodes: [b], services: [PlannerWorld.service(replicas: 1)], removedReplicas: ["r2"]))
            .merging(StoreChange(removedNodes: [a.id]))
        #expect(merged.nodes.isEmpty && merged.removedNodes == [a.id])
        #expect(merged.removedServices == ["s1"] && merged.services.count == 1)
        #expect(merged.removedReplicas == ["r1", "r2"])
        let revived = StoreChange(removedNodes: [a.id]).merging(StoreChange(nodes: [b]))
        #expect(revived.nodes == [b] && revived.removedNodes.isEmpty)
    }

    /// A real store that can be told to fail its next commit, and says what it was given.
    final class FailingStore: ControllerStore {
        let inner: any ControllerStore
        let state = Mutex((fail: false, commits: [StoreChange](), gate: [CheckedContinuation<Void, Never>]()))
        let held = Mutex(false)

        init(_ inner: any ControllerStore) { self.inner = inner }

        func load() async throws -> StoreContents { try await inner.load() }

        func commit(_ change: StoreChange) async throws {
            if held.withLock({ $0 }) {
                await withCheckedContinuation { continuation in state.withLock { $0.gate.append(continuation) } }
            }
            let fail = state.withLock { state -> Bool in
                state.commits.append(change)
                return state.fail
            }
            if fail { throw BerthError(.unavailable, "the store has no quorum") }
            try await inner.commit(change)
        }

        func release() {
            held.withLock { $0 = false }
            for waiter in state.withLock({ state in defer { state.gate = [] }; return state.gate }) { waiter.resume() }
        }
    }

    @Test("the writer commits in order, takes what queued behind a commit in one, and after a failed commit refuses every later change", arguments: StoreKind.allCases)
    func writer(_ kind: StoreKind) async throws {
        let test = try await TestStore(kind)
        defer { test.close() }
        let store = FailingStore(test.store)
        let failures = Mutex([BerthError]())
        let writer = StoreWriter(store: store, failed: { error in failures.withLock { $0.append(error) } })

        // The first commit is held in the store; three more queue behind it.
        store.held.withLock { $0 = true }
        var renamed = Self.node(1)
        let first = writer.submit(StoreChange(nodes: [renamed]))
        while store.state.withLock({ $0.gate.isEmpty }) { try await Task.sleep(for: .milliseconds(5)) }
        renamed.hostname = "second"
        let second = writer.submit(StoreChange(nodes: [renamed]))
        renamed.hostname = "third"
        let third = writer.submit(StoreChange(nodes: [renamed], services: [PlannerWorld.service(replicas: 1)]))
        store.release()
        try await first.stored()
        try await second.stored()
        try await third.stored()
        let commits = store.state.withLock { $0.commits }
        #expect(commits.count == 2, "the two that queued went in one commit")
        #expect(commits.last?.nodes.map(\.hostname) == ["third"])
        #expect(try await test.store.load().nodes.map(\.hostname) == ["third"])

        // A failed commit: it and everything after it is refused, and the store keeps what it had.
        store.state.withLock { $0.fail = true }
        renamed.hostname = "lost"
        await #expect(throws: BerthError.self) { try await writer.submit(StoreChange(nodes: [renamed])).stored() }
        store.state.withLock { $0.fail = false }
        do {
            try await writer.submit(StoreChange(nodes: [Self.node(9)])).stored()
            Issue.record("a change after a failed one was stored")
        } catch let error as BerthError {
            #expect(error.code == .unavailable && error.message.contains("could not be stored"), "\(error)")
        }
        #expect(failures.withLock { $0.count } == 1)
        #expect(try await test.store.load().nodes.map(\.hostname) == ["third"])
    }

    @Test("etcd: a write fenced by an election key that is gone stores nothing")
    func fenced() async throws {
        let test = try await TestStore(.etcd)
        defer { test.close() }
        let client = try #require(test.client)
        let key = "/berth/election/test"
        _ = try await client.put(key, Array("me".utf8))
        let mine = try #require(try await client.range(key).values.first)
        let fenced = EtcdControllerStore(client: client, fence: .created(key, at: mine.createRevision))
        try await fenced.commit(StoreChange(nodes: [Self.node(1)]))
        // Another controller's key now: the same name, a later create revision.
        _ = try await client.txn(if: [], then: [.delete(key)], else: [])
        _ = try await client.put(key, Array("another".utf8))
        do {
            try await fenced.commit(StoreChange(nodes: [Self.node(2)]))
            Issue.record("a deposed leader's write was stored")
        } catch let error as BerthError {
            #expect(error.code == .failedPrecondition && error.message.contains("no longer leads"))
        }
        #expect(try await test.store.load().nodes.map(\.id) == [Self.node(1).id])
    }

    @Test("etcd: a heartbeat is recorded only for a node the store holds, refused for a removed one; the leader's follower of them lists again when their history is compacted away")
    func heartbeats() async throws {
        let test = try await TestStore(.etcd)
        defer { test.close() }
        let client = try #require(test.client)
        let records = EtcdHeartbeats(client: client, prefix: "/berth/")
        let (known, removed, unknown) = (Self.node(1), Self.node(2), Self.node(3))
        try await test.store.commit(StoreChange(nodes: [known, removed]))
        try await test.store.commit(StoreChange(removedNodes: [removed.id]))
        let start = try await test.store.load().revision

        #expect(try await records.record(known.id, by: "127.0.0.1:7451"))
        #expect(try await records.record(unknown.id, by: "127.0.0.1:7451") == false)
        await #expect(throws: BerthError.self) { try await records.record(removed.id, by: "127.0.0.1:7451") }
        #expect(Set(try await records.lastHeard(serializable: false).keys) == [known.id])
        // A follower's heartbeats: the store's word first; once recorded, answered at once.
        #expect(try await records.take(unknown.id, by: "127.0.0.1:7452") == false)
        #expect(try await records.take(known.id, by: "127.0.0.1:7452"))
        await #expect(throws: BerthError.self) { try await records.take(removed.id, by: "127.0.0.1:7452") }
        #expect(try await client.range("/berth/heartbeats/\(unknown.id)").values.isEmpty)

        // The history from `start` compacted away: what was recorded since is listed and handed over.
        let now = try await client.range("/berth/cluster-id").revision
        try await client.compact(to: now)
        let heard = Locked<[String]>([])
        let follower = Task { await records.follow(after: start) { ids in heard.withLock { $0 += ids } } }
        defer { follower.cancel() }
        let deadline = ContinuousClock.now + .seconds(10)
        while heard.value.isEmpty && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(heard.value == [known.id])
        // And it goes on watching from there.
        #expect(try await records.record(known.id, by: "127.0.0.1:7452"))
        while heard.value.count < 2 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(heard.value == [known.id, known.id])
    }

    @Test("etcd over mutual TLS (--store-tls-dir): a controller's client with a certificate of the CA etcd trusts stores and reads; one without a certificate, or with another CA's, is refused with a clear error")
    func etcdOverTLS() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-etcd-tls-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try ClusterCA.initialize(directory: "\(directory)/ca")
        try ClusterCA.issue(caDirectory: "\(directory)/ca", name: "etcd", role: .controller, ipAddresses: ["127.0.0.1"], outputDirectory: "\(directory)/etcd")
        try ClusterCA.issue(caDirectory: "\(directory)/ca", name: "controller", role: .controller, outputDirectory: "\(directory)/controller")
        try ClusterCA.initialize(directory: "\(directory)/other-ca")
        try ClusterCA.issue(
            caDirectory: "\(directory)/other-ca", name: "intruder", role: .controller, outputDirectory: "\(directory)/intruder")
        // The intruder trusts etcd's CA (it found ca.pem), but its own certificate is another CA's.
        try FileManager.default.removeItem(atPath: "\(directory)/intruder/ca.pem")
        try FileManager.default.copyItem(atPath: "\(directory)/ca/ca.pem", toPath: "\(directory)/intruder/ca.pem")

        try await EtcdProcesses.with(members: 1, tlsDirectory: "\(directory)/etcd") { etcd in
            func store(_ tls: String?) throws -> (EtcdClient, EtcdControllerStore) {
                let client = EtcdClient(
                    endpoints: etcd.endpoints, tls: try tls.map { try MutualTLS(directory: $0) }, requestTimeout: .seconds(2),
                    logger: EtcdProcesses.logger)
                return (client, EtcdControllerStore(client: client, fence: nil))
            }
            let (client, trusted) = try store("\(directory)/controller")
            defer { client.close() }
            try await trusted.commit(StoreChange(nodes: [Self.node(1)]))
            #expect(try await trusted.load().nodes.map(\.id) == [Self.node(1).id])

            for tls in [nil, "\(directory)/intruder"] {
                let (client, refused) = try store(tls)
                defer { client.close() }
                do {
                    _ = try await refused.load()
                    Issue.record("a client \(tls == nil ? "without a certificate" : "with another CA's certificate") read the store")
                } catch let error as BerthError {
                    #expect(error.code == .unavailable, "\(error)")
                    #expect(error.message.contains("127.0.0.1:\(etcd.members[0].clientPort)"), "\(error.message)")
                }
            }
        }
    }

    @Test("etcd: revocations stored once per serial; a controller's list follows them as they are added and removed")
    func revocations() async throws {
        let test = try await TestStore(.etcd)
        defer { test.close() }
        let client = try #require(test.client)
        let revocations = EtcdRevocations(client: client)
        #expect(try await revocations.add(["a1 node n1 (host1) revoked T", "b2 revoked T"]) == ["a1 node n1 (host1) revoked T", "b2 revoked T"])
        #expect(try await revocations.add(["a1 revoked again"]).isEmpty, "the first line stays")
        #expect(try await client.range("/berth/revoked/a1").values.first?.value == Array("a1 node n1 (host1) revoked T".utf8))

        let list = RevocationList()
        let following = Task { await revocations.follow(into: list) }
        defer { following.cancel() }
        func eventually(_ expected: Set<String>) async throws -> Bool {
            let deadline = ContinuousClock.now + .seconds(10)
            while list.serials != expected && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            return list.serials == expected
        }
        #expect(try await eventually(["a1", "b2"]))
        _ = try await revocations.add(["c3 revoked T"])
        #expect(try await eventually(["a1", "b2", "c3"]))
        _ = try await client.delete("/berth/revoked/b2")
        #expect(try await eventually(["a1", "c3"]))
    }
}
