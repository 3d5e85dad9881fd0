@testable import BerthController
import BerthModel
import Foundation
import Testing

@Suite("the reconciler's decisions, from records alone")
struct ServicePlannerTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    static func node(_ n: Int, zone: String = "a", state: ClusterNode.State = .ready, availability: ClusterNode.Availability = .active) -> ClusterNode {
        ClusterNode(
            id: String(repeating: String(n), count: 32), hostname: "host\(n)", address: "127.0.0.1:\(7000 + n)", agentLabels: ["zone": zone],
            capacity: NodeCapacity(cpus: 2, memoryBytes: 1 << 30), allocatable: NodeCapacity(cpus: 2, memoryBytes: 1 << 30), state: state,
            availability: availability, registeredAt: start, lastHeartbeat: start)
    }

    static func service(replicas: Int, memory: Int64 = 64 << 20, version: Int = 1, parallelism: Int = 1, spread: Bool = false) -> ClusterService {
        var container = ContainerSpec(image: "busybox")
        container.resources.memory = ByteSize(bytes: memory)
        return ClusterService(
            id: "svc", spec: ServiceSpec(
                name: "web", replicas: replicas, container: container, placementPreferences: spread ? ["spread=node.labels.zone"] : [],
                updateParallelism: parallelism),
            version: version, createdAt: start, updatedAt: start)
    }

    /// Applies a plan to the records, as the manager does.
    static func apply(_ change: StoreChange, to replicas: inout [Replica]) {
        for replica in change.replicas {
            if let i = replicas.firstIndex(where: { $0.id == replica.id }) { replicas[i] = replica } else { replicas.append(replica) }
        }
    }

    static func running(_ replicas: [Replica]) -> [Replica] { replicas.filter { $0.desiredState == .running } }

    static func plan(_ services: [ClusterService], _ replicas: inout [Replica], _ nodes: [ClusterNode], at: TimeInterval = 0) -> StoreChange {
        var counter = replicas.count
        let change = ServicePlanner.plan(services: services, replicas: replicas, nodes: nodes, now: start + at) {
            counter += 1
            return String(format: "%032d", counter)
        }
        apply(change, to: &replicas)
        return change
    }

    @Test("replicas fill slots 1…N, spread over zones; a second pass changes nothing")
    func fill() {
        let nodes = [Self.node(1, zone: "a"), Self.node(2, zone: "a"), Self.node(3, zone: "b")]
        var replicas: [Replica] = []
        _ = Self.plan([Self.service(replicas: 4, spread: true)], &replicas, nodes)
        #expect(replicas.map(\.slot).sorted() == [1, 2, 3, 4])
        let zoneOf = Dictionary(uniqueKeysWithValues: nodes.map { ($0.id, $0.labels["zone"]!) })
        #expect(replicas.count { zoneOf[$0.nodeID] == "b" } == 2, "two of four in zone b, the only node there")
        #expect(Self.plan([Self.service(replicas: 4, spread: true)], &replicas, nodes).isEmpty)
    }

    @Test("a down node's replicas are orphaned and replaced in their slots on other nodes; a drained node's are shut down and replaced")
    func nodeLoss() {
        var nodes = [Self.node(1), Self.node(2), Self.node(3)]
        var replicas: [Replica] = []
        let service = Self.service(replicas: 6)
        _ = Self.plan([service], &replicas, nodes)
        let onFirst = Set(replicas.filter { $0.nodeID == nodes[0].id }.map(\.slot))
        #expect(!onFirst.isEmpty, "binpack fills the first node")
        nodes[0].state = .down
        _ = Self.plan([service], &replicas, nodes)
        let orphans = replicas.filter { $0.nodeID == nodes[0].id }
        #expect(orphans.allSatisfy { $0.desiredState == .shutdown && $0.state == .orphaned && $0.message.contains("is down") })
        #expect(Self.running(replicas).count == 6 && Set(Self.running(replicas).map(\.slot)) == Set(1...6))
        #expect(Self.running(replicas).allSatisfy { $0.nodeID != nodes[0].id })

        nodes[1].availability = .drain
        _ = Self.plan([service], &replicas, nodes)
        #expect(Self.running(replicas).count == 6 && Self.running(replicas).allSatisfy { $0.nodeID == nodes[2].id })
        #expect(replicas.filter { $0.nodeID == nodes[1].id }.allSatisfy { $0.desiredState == .shutdown && $0.message.contains("drained") })
    }

    @Test("scaling down shuts the highest slots; a removed service's replicas all shut down")
    func scaleAndRemove() {
        let nodes = [Self.node(1), Self.node(2)]
        var replicas: [Replica] = []
        _ = Self.plan([Self.service(replicas: 5)], &replicas, nodes)
        _ = Self.plan([Self.service(replicas: 2)], &replicas, nodes)
        #expect(Self.running(replicas).map(\.slot).sorted() == [1, 2])
        #expect(replicas.filter { $0.slot > 2 }.allSatisfy { $0.message == "scaled down to 2" })
        _ = Self.plan([], &replicas, nodes)
        #expect(Self.running(replicas).isEmpty)
    }

    @Test("a rolling update replaces at most its parallelism at a time, waiting for the new ones to run; a failed one pauses it")
    func rollingUpdate() {
        let nodes = [Self.node(1), Self.node(2)]
        var replicas: [Replica] = []
        _ = Self.plan([Self.service(replicas: 5)], &replicas, nodes)
        for i in replicas.indices { replicas[i].state = .running }
        let v2 = Self.service(replicas: 5, version: 2, parallelism: 2)
        _ = Self.plan([v2], &replicas, nodes)
        #expect(Self.running(replicas).count { $0.version == 2 } == 2 && Self.running(replicas).count == 5)
        // The new ones have not come up: nothing more is replaced.
        _ = Self.plan([v2], &replicas, nodes)
        #expect(Self.running(replicas).count { $0.version == 2 } == 2)
        // One fails: the update pauses and says why.
        let failed = replicas.firstIndex { $0.version == 2 && $0.desiredState == .running }!
        replicas[failed].state = .failed
        replicas[failed].exitCode = 1
        replicas[failed].message = "exit 1"
        let paused = Self.plan([v2], &replicas, nodes)
        #expect(paused.services.first?.message.contains("update paused: replica") == true)
        // Both run: the next two go, then the last.
        for i in replicas.indices where replicas[i].version == 2 { replicas[i].state = .running }
        _ = Self.plan([v2], &replicas, nodes)
        #expect(Self.running(replicas).count { $0.version == 2 } == 4)
        for i in replicas.indices where replicas[i].version == 2 { replicas[i].state = .running }
        _ = Self.plan([v2], &replicas, nodes)
        #expect(Self.running(replicas).count == 5 && Self.running(replicas).allSatisfy { $0.version == 2 })
        #expect(Set(Self.running(replicas).map(\.slot)) == Set(1...5))
    }

    @Test("a replica its agent could not make is replaced only after the backoff")
    func failedCreation() {
        let nodes = [Self.node(1)]
        var replicas: [Replica] = []
        _ = Self.plan([Self.service(replicas: 1)], &replicas, nodes)
        replicas[0].state = .failed
        replicas[0].message = "image not found"
        replicas[0].updatedAt = Self.start
        _ = Self.plan([Self.service(replicas: 1)], &replicas, nodes, at: 1)
        #expect(replicas.count == 1, "not yet")
        _ = Self.plan([Self.service(replicas: 1)], &replicas, nodes, at: ServicePlanner.failedReplicaBackoff + 1)
        #expect(replicas.count == 2 && Self.running(replicas).count == 1 && Self.running(replicas)[0].state == .pending)
    }

    @Test("when a lost node leaves too little room, what fits is placed and the service says why the rest waits")
    func partial() {
        var nodes = [Self.node(1), Self.node(2)]
        var replicas: [Replica] = []
        let service = Self.service(replicas: 4, memory: 400 << 20)
        _ = Self.plan([service], &replicas, nodes)
        #expect(Self.running(replicas).count == 4)
        nodes[1].state = .down
        let change = Self.plan([service], &replicas, nodes)
        #expect(Self.running(replicas).count == 2)
        #expect(change.services.first?.message.contains("cannot place 2 of 2 replicas of web: insufficient memory on 1 of 2 nodes") == true,
                "\(change.services.first?.message ?? "")")
    }
}
