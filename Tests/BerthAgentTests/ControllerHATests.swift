import BerthAPI
import BerthEtcd
import BerthLinux
import BerthModel
import BerthTesting
import BerthTransport
import Foundation
import GRPCCore
import Logging
import SwiftProtobuf
import Testing

/// Three controllers on a three-member etcd cluster (real processes on
/// loopback), three agents: one leader, a failover that loses and doubles
/// nothing, a deposed leader that writes nothing, and a store without quorum.
@Suite("controllers on etcd: one leader, failover, fenced writes, quorum (processes)", .ownThreads, .serialized, .timeLimit(.minutes(10)))
struct ControllerHATests {
    /// The controller that leads now: the one that answers `berth controller ls` as leader.
    static func leader(_ cluster: ClusterHarness, timeout: Duration = .seconds(15)) async throws -> Int {
        let deadline = ContinuousClock.now + timeout
        while true {
            let r = try await cluster.cli(["controller", "ls", "--format", "json"])
            if r.status == 0, let list = try? JSONDecoder().decode([ControllerRecord].self, from: Data(r.stdout.utf8)),
                let leading = list.first(where: \.leader),
                let index = cluster.controllers.firstIndex(where: { $0.address == leading.address && $0.process.isRunning })
            {
                return index
            }
            guard ContinuousClock.now < deadline else { throw HarnessError("no controller leads: \(r.stdout) \(r.stderr)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    struct ControllerRecord: Decodable {
        var address: String
        var leader: Bool
        var term: Int64
    }

    /// Each agent's running containers of `service`, by slot (from their names, `SERVICE.SLOT.ID`).
    static func slots(_ cluster: ClusterHarness, _ service: String) async throws -> [Int: Int] {
        var slots: [Int: Int] = [:]
        for names in try await cluster.containers(service).values {
            for name in names {
                let parts = name.split(separator: ".")
                guard parts.count == 3, let slot = Int(parts[1]) else { continue }
                slots[slot, default: 0] += 1
            }
        }
        return slots
    }

    @Test("kill -9 of the leader while web scales from 6 to 30: another leads within the lease and a second, web ends at exactly 30, no slot runs twice")
    func failover() async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(store: .etcd, controllers: 3, etcdMembers: 3)
        defer { cluster.cleanUp() }
        let created = try await cluster.cli(["service", "create", "--name", "web", "--replicas", "6", "-m", "8m", "busybox", "sleep", "3600"])
        try #require(created.status == 0, "\(created.stderr)")

        let old = try await Self.leader(cluster)
        let scaled = try await cluster.cli(["service", "scale", "-d", "web=30"])
        try #require(scaled.status == 0, "\(scaled.stderr)")
        try await Task.sleep(for: .milliseconds(150))
        let killed = ContinuousClock.now
        cluster.controllers[old].kill9()
        let next = try await Self.leader(cluster, timeout: .seconds(10))
        let took = ContinuousClock.now - killed
        #expect(next != old)
        #expect(took < .seconds(3), "a new leader after \(took) (lease 2 s + 1 s)")

        #expect(
            try await cluster.eventually(timeout: .seconds(60)) {
                let replicas = try await cluster.replicas("web")
                return replicas.count == 30 && replicas.allSatisfy { $0.state == "running" }
            }, "web converges to 30")
        let slots = try await Self.slots(cluster, "web")
        #expect(slots.count == 30 && slots.values.allSatisfy { $0 == 1 }, "every slot runs once: \(slots.filter { $0.value != 1 })")
        #expect(Set(slots.keys) == Set(1...30))
        // Still 30 a moment later: nothing placed twice is being cleaned up.
        try await Task.sleep(for: .seconds(3))
        #expect(try await Self.slots(cluster, "web").count == 30)
    }

    @Test("a leader frozen (SIGSTOP) past its lease is replaced; thawed, it writes nothing, though its view says every node is down, and follows")
    func frozenLeader() async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(store: .etcd, controllers: 3, etcdMembers: 1)
        defer { cluster.cleanUp() }
        let created = try await cluster.cli(["service", "create", "--name", "web", "--replicas", "3", "-m", "8m", "busybox", "sleep", "3600"])
        try #require(created.status == 0, "\(created.stderr)")
        let client = try #require(cluster.etcd).client()
        defer { client.close() }

        let old = try await Self.leader(cluster)
        let pid = cluster.controllers[old].process.pid
        try Processes.signal(pid, SIGSTOP)
        var thawed = false
        defer { if !thawed { try? Processes.signal(pid, SIGCONT) } }
        let next = try await Self.leader(cluster, timeout: .seconds(10))
        #expect(next != old)
        let scaled = try await cluster.cli(["service", "scale", "web=4"])
        #expect(scaled.status == 0, "\(scaled.stderr)")
        let from = try await client.range("/berth/cluster-id").revision + 1

        // Frozen for longer than the grace period: its registry has heard no
        // heartbeat, so its first sweep marks every node down. Fenced, none of it lands.
        try await Task.sleep(for: .seconds(3))
        try Processes.signal(pid, SIGCONT)
        thawed = true
        try await Task.sleep(for: .seconds(4))
        let log = cluster.controllers[old].log
        #expect(log.contains("leadership lost") || log.contains("could not be stored"), "\(log.suffix(2000))")

        // Every write since the thaw, from the store's own history.
        let events = try await Self.history(client, from: from)
        let downs = events.filter { $0.key.hasPrefix("/berth/nodes/") && String(decoding: $0.value, as: UTF8.self).contains("\"down\"") }
        #expect(downs.map(\.key).isEmpty, "a deposed leader's writes landed: \(downs.map(\.key))")
        let nodes = try await cluster.cli(["node", "ls", "--format", "json"])
        #expect(nodes.status == 0 && !nodes.stdout.contains("\"down\""), "\(nodes.stdout)")
        #expect(try await Self.leader(cluster) == next, "the thawed controller follows")
        #expect(try await cluster.eventually(timeout: .seconds(30)) { try await cluster.replicas("web").filter { $0.state == "running" }.count == 4 })
    }

    /// Every put under /berth/ from revision `from` on (a watch replays the history).
    static func history(_ client: EtcdClient, from: Int64) async throws -> [EtcdKeyValue] {
        let until = try await client.range("/berth/cluster-id").revision
        guard until >= from else { return [] }
        let seen = Locked<[EtcdKeyValue]>([])
        do {
            try await client.watch("/berth/", prefix: true, from: from) { events, revision in
                for case .put(let value) in events { seen.withLock { $0.append(value) } }
                if revision >= until { throw HistoryRead() }
            }
        } catch is HistoryRead {}
        return seen.value
    }

    struct HistoryRead: Error {}

    @Test("one etcd member lost: the cluster works; two: changes are refused saying the store has no quorum, containers keep running; a member back: it all resumes")
    func quorum() async throws {
        guard Privileges.root else { return }
        // The default lease (5 s): when the member lost is etcd's raft leader,
        // the others take a second or two to elect one, and renewals wait for it.
        let cluster = try await ClusterHarness(store: .etcd, controllers: 2, etcdMembers: 3, leaderLease: 5)
        defer { cluster.cleanUp() }
        let etcd = try #require(cluster.etcd)
        let created = try await cluster.cli(["service", "create", "--name", "web", "--replicas", "3", "-m", "8m", "busybox", "sleep", "3600"])
        try #require(created.status == 0, "\(created.stderr)")

        // The member lost first is etcd's raft leader: the hard case.
        let client = etcd.client()
        defer { client.close() }
        let raftLeader = await client.status().firstIndex(where: \.isLeader) ?? 2
        let second = raftLeader == 0 ? 1 : 0
        etcd.kill(raftLeader)
        let scaled = try await cluster.cli(["service", "scale", "web=4"])
        #expect(scaled.status == 0, "one member down: \(scaled.stderr)\n\(cluster.controllers.map { String($0.log.suffix(4000)) }.joined(separator: "\n-----\n"))")
        #expect(try await cluster.eventually(timeout: .seconds(30)) { try await cluster.replicas("web").filter { $0.state == "running" }.count == 4 })

        etcd.kill(second)
        let refused = try await cluster.cli(["service", "scale", "web=6"], timeout: .seconds(60))
        #expect(refused.status != 0 && refused.stderr.contains("no quorum"), "\(refused.stderr)")
        try await Task.sleep(for: .seconds(3))
        #expect(try await Self.slots(cluster, "web").count == 4, "containers keep running without a quorum")
        // Reads are answered from what the member left holds, and say it may be stale.
        let listed = try await cluster.cli(["service", "ls"], timeout: .seconds(60))
        #expect(listed.status == 0 && listed.stdout.contains("web"), "\(listed.stdout) \(listed.stderr)")
        #expect(listed.stderr.contains("no quorum") && listed.stderr.contains("may be stale"), "\(listed.stderr)")

        try await etcd.restart(second)
        #expect(
            try await cluster.eventually(timeout: .seconds(30)) { try await cluster.cli(["service", "scale", "web=6"]).status == 0 }, "changes are taken again")
        #expect(try await cluster.eventually(timeout: .seconds(30)) { try await Self.slots(cluster, "web").count == 6 })
    }

    @Test("any controller takes a heartbeat: the store records it and the leader keeps the node ready on it; a controller that does not lead answers reads from the store, also while the leader is frozen")
    func heartbeatsAndReads() async throws {
        guard Privileges.root else { return }
        // A long lease: the frozen leader below still leads while the follower is asked.
        let cluster = try await ClusterHarness(store: .etcd, controllers: 2, etcdMembers: 1, leaderLease: 15)
        defer { cluster.cleanUp() }
        let leader = try await Self.leader(cluster)
        let follower = cluster.controllers[1 - leader]
        let client = try #require(cluster.etcd).client()
        defer { client.close() }

        // Agent 0 frozen: its node lives on heartbeats sent to the follower alone.
        let agent = cluster.agents[0]
        let id = try agent.nodeID
        try Processes.signal(agent.pid, SIGSTOP)
        var frozen = true
        defer { if frozen { try? Processes.signal(agent.pid, SIGCONT) } }
        func state() async throws -> String {
            struct Inspected: Decodable { var state: String }
            let r = try await cluster.cli(["node", "inspect", id])
            return (try? JSONDecoder().decode([Inspected].self, from: Data(r.stdout.utf8)).first?.state) ?? "unknown: \(r.stderr)"

        }
        let beats = Task {
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let address = try TransportAddress(parsing: follower.address)
            try await withGRPCClient(transport: NGHTTP2ClientTransport(config: .init(address: address), logger: logger)) { grpc in
                let nodes = Berth_Controller_V1_Nodes.Client(wrapping: grpc)
                while !Task.isCancelled {
                    let reply = try await nodes.heartbeat(.with { $0.id = id })
                    guard reply.known else { throw HarnessError("the follower does not know node \(id)") }
                    try await Task.sleep(for: .milliseconds(300))
                }
            }
        }
        // Three grace periods (2 s) on the follower's heartbeats alone.
        for _ in 0..<12 {
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await state() == "ready", "the leader kept the node ready on heartbeats the follower recorded")
        }
        let record = try #require(try await client.range("/berth/heartbeats/\(id)").values.first)
        #expect(String(decoding: record.value, as: UTF8.self).contains(follower.address))
        beats.cancel()
        _ = try? await beats.value
        #expect(try await cluster.eventually(timeout: .seconds(5)) { try await state() == "down" }, "no heartbeat anywhere: down")
        try Processes.signal(agent.pid, SIGCONT)
        frozen = false
        #expect(try await cluster.eventually(timeout: .seconds(10)) { try await state() == "ready" })

        // The leader frozen, still leading (its lease runs): the follower answers reads itself.
        let pid = cluster.controllers[leader].process.pid
        try Processes.signal(pid, SIGSTOP)
        defer { try? Processes.signal(pid, SIGCONT) }
        let listed = try await cluster.cli(["node", "ls", "-q", "--controller", follower.address], timeout: .seconds(5))
        #expect(listed.status == 0 && listed.stdout.split(separator: "\n").count == 3, "\(listed.stdout) \(listed.stderr)")
        #expect(listed.stderr.isEmpty, "a quorum: nothing stale")
        let services = try await cluster.cli(["service", "ls", "--controller", follower.address], timeout: .seconds(5))
        #expect(services.status == 0, "\(services.stderr)")
        // A change is the leader's: the follower sends it there.
        let refused = try await cluster.cli(["service", "rm", "nothing", "--controller", follower.address], timeout: .seconds(3))
        #expect(refused.status != 0)
    }
}
