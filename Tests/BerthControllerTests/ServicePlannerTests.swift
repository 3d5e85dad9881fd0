@testable import BerthController
import BerthModel
import Foundation
import Testing

/// Records and a clock for the planner, and what agents would report.
struct PlannerWorld {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)
    var nodes: [ClusterNode]
    var services: [ClusterService]
    var replicas: [Replica] = []
    var now = PlannerWorld.start
    var counter = 0

    static func node(_ n: Int, zone: String = "a", state: ClusterNode.State = .ready, availability: ClusterNode.Availability = .active) -> ClusterNode {
        ClusterNode(
            id: String(repeating: String(n), count: 32), hostname: "host\(n)", address: "127.0.0.1:\(7000 + n)", operatorLabels: ["zone": zone],
            capacity: NodeCapacity(cpus: 2, memoryBytes: 1 << 30), allocatable: NodeCapacity(cpus: 2, memoryBytes: 1 << 30), state: state,
            availability: availability, registeredAt: start, lastHeartbeat: start)
    }

    static func service(
        _ name: String = "web", replicas: Int = 1, memory: Int64 = 64 << 20, mode: ServiceMode = .replicated, update: UpdatePolicy = UpdatePolicy(),
        constraints: [String] = [], spread: Bool = false, maxPerNode: Int = 0, image: String = "busybox"
    ) -> ClusterService {
        var container = ContainerSpec(image: image)
        container.resources.memory = ByteSize(bytes: memory)
        return ClusterService(
            id: "svc-\(name)",
            spec: ServiceSpec(
                name: name, mode: mode, replicas: replicas, container: container, constraints: constraints,
                placementPreferences: spread ? ["spread=node.labels.zone"] : [], maxReplicasPerNode: maxPerNode, update: update),
            createdAt: start, updatedAt: start)
    }

    init(nodes: [ClusterNode], services: [ClusterService]) {
        self.nodes = nodes
        self.services = services
    }

    /// One planning pass, applied to the records as the manager applies it.
    @discardableResult
    mutating func plan() -> StoreChange {
        var counter = self.counter
        let change = ServicePlanner.plan(services: services, replicas: replicas, nodes: nodes, now: now) {
            counter += 1
            return String(format: "%032d", counter)
        }
        self.counter = counter
        for service in change.services {
            if let i = services.firstIndex(where: { $0.id == service.id }) { services[i] = service }
        }
        for replica in change.replicas {
            if let i = replicas.firstIndex(where: { $0.id == replica.id }) { replicas[i] = replica } else { replicas.append(replica) }
        }
        replicas.removeAll { change.removedReplicas.contains($0.id) }
        return change
    }

    /// What agents report of each placed replica: the ones meant to run
    /// start (or exit with `code`, for those `failing` picks); the ones being
    /// shut down are gone.
    mutating func agentsAct(failing: (Replica) -> Int? = { _ in nil }, isJob: Bool = false) {
        for i in replicas.indices where replicas[i].isAssigned && !replicas[i].removed {
            let replica = replicas[i]
            guard nodes.first(where: { $0.id == replica.nodeID })?.state == .ready else { continue }
            if replica.desiredState == .shutdown {
                replicas[i] = replica.applying(.gone(id: replica.id), isJob: isJob, now: now)
            } else if replica.state == .pending, (replica.notBefore ?? .distantPast) <= now {
                if let code = failing(replica) {
                    replicas[i] = replica.applying(
                        .container(id: replica.id, ContainerReport(state: .exited, exitCode: code, message: "exited (\(code))")), isJob: isJob, now: now)
                } else {
                    replicas[i] = replica.applying(.container(id: replica.id, ContainerReport(state: .running)), isJob: isJob, now: now)
                }
            } else if replica.state == .running {
                // Seen again: steady by now or not.
                replicas[i] = replica.applying(.container(id: replica.id, ContainerReport(state: .running, restartCount: replica.restartCount)), isJob: isJob, now: now)
            }
        }
    }

    /// Passes the time, planning and acting each second.
    mutating func run(seconds: Int, failing: (Replica) -> Int? = { _ in nil }, isJob: Bool = false) {
        for _ in 0..<seconds {
            plan()
            agentsAct(failing: failing, isJob: isJob)
            now += 1
        }
        plan()
    }

    var live: [Replica] { replicas.filter { $0.desiredState == .running } }
    func live(of service: String) -> [Replica] { live.filter { $0.serviceName == service } }
    func service(_ name: String) -> ClusterService { services.first { $0.spec.name == name }! }
}

@Suite("the planner: decisions from records alone")
struct ServicePlannerTests {
    typealias World = PlannerWorld

    @Test("replicas fill slots 1…N, spread over nodes by default and over zones when asked; a second pass changes nothing")
    func fill() {
        var world = World(nodes: [World.node(1), World.node(2), World.node(3)], services: [World.service(replicas: 6, memory: 0)])
        world.plan()
        #expect(world.replicas.map(\.slot).sorted() == [1, 2, 3, 4, 5, 6])
        #expect(Dictionary(grouping: world.replicas, by: \.nodeID).values.map(\.count).sorted() == [2, 2, 2], "six replicas without requests: two per node")
        #expect(world.plan().isEmpty)

        var zones = World(
            nodes: [World.node(1, zone: "a"), World.node(2, zone: "a"), World.node(3, zone: "b")], services: [World.service(replicas: 4, spread: true)])
        zones.plan()
        let zoneOf = Dictionary(uniqueKeysWithValues: zones.nodes.map { ($0.id, $0.operatorLabels["zone"]!) })
        #expect(zones.replicas.count { zoneOf[$0.nodeID] == "b" } == 2, "two of four in zone b, the only node there")
    }

    @Test("a down node's replicas are orphaned and replaced elsewhere at once; a drained node's are shut down and replaced")
    func nodeLoss() {
        var world = World(nodes: [World.node(1), World.node(2), World.node(3)], services: [World.service(replicas: 6)])
        world.run(seconds: 2)
        world.nodes[0].state = .down
        world.plan()
        let orphans = world.replicas.filter { $0.nodeID == world.nodes[0].id }
        #expect(!orphans.isEmpty && orphans.allSatisfy { $0.desiredState == .shutdown && $0.state == .orphaned && $0.message.contains("is down") })
        #expect(world.live.count == 6 && Set(world.live.map(\.slot)) == Set(1...6) && world.live.allSatisfy { $0.isAssigned && $0.nodeID != world.nodes[0].id })
        #expect(world.live.allSatisfy { $0.notBefore == nil }, "a node's loss is not the replicas' failure: no backoff")

        world.nodes[1].availability = .drain
        world.plan()
        #expect(world.live.count == 6 && world.live.allSatisfy { $0.nodeID == world.nodes[2].id })
        #expect(world.replicas.filter { $0.nodeID == world.nodes[1].id }.allSatisfy { $0.desiredState == .shutdown && $0.message.contains("drained") })
    }

    @Test("scaling down shuts the highest slots; a removed service's replicas all shut down and are forgotten once gone")
    func scaleAndRemove() {
        var world = World(nodes: [World.node(1), World.node(2)], services: [World.service(replicas: 5)])
        world.run(seconds: 1)
        world.services[0].spec.replicas = 2
        world.plan()
        #expect(world.live.map(\.slot).sorted() == [1, 2])
        #expect(world.replicas.filter { $0.slot > 2 }.allSatisfy { $0.message == "scaled down to 2" })
        world.services = []
        world.plan()
        #expect(world.live.isEmpty)
        world.agentsAct()
        world.plan()
        #expect(world.replicas.isEmpty, "nothing kept of a removed service: \(world.replicas.count)")
    }

    @Test("a replica that exits is replaced in its slot after a backoff that doubles per failure in a row, on another node, with history")
    func failedReplicas() {
        var world = World(nodes: [World.node(1), World.node(2)], services: [World.service(replicas: 1)])
        world.run(seconds: 1)
        let first = world.live[0]
        // It exits for good (restart no, or on-failure exhausted, or stopped).
        let i = world.replicas.firstIndex { $0.id == first.id }!
        world.replicas[i] = first.applying(.container(id: first.id, ContainerReport(state: .exited, exitCode: 1, message: "exited (1)")), isJob: false, now: world.now)
        world.plan()
        let second = world.live[0]
        #expect(second.id != first.id && second.slot == 1 && second.attempt == 1 && second.state == .pending && !second.isAssigned)
        #expect(second.notBefore == world.now + 1, "the first replacement waits 1 s")
        #expect(second.message.contains("after 1 failure in a row (last: exited (1))"), "\(second.message)")
        #expect(world.service("web").message.contains("after 1 failure"), "the service says why: \(world.service("web").message)")
        // After the backoff it is placed, away from the node where it failed.
        world.now += 1
        world.plan()
        #expect(world.live[0].isAssigned && world.live[0].nodeID != first.nodeID, "on the other node")
        // Failing on and on: 2, 4, 8, 16 s…
        var waits: [TimeInterval] = []
        for _ in 0..<5 {
            world.plan()
            let current = world.live[0]
            if let notBefore = current.notBefore { waits.append(notBefore.timeIntervalSince(world.now)) }
            world.now = max(world.now, current.notBefore ?? world.now)
            world.plan()
            world.agentsAct(failing: { _ in 1 })
        }
        #expect(waits == [2, 4, 8, 16], "\(waits)")
        // History: the last five per slot, newest first in ps -a.
        world.run(seconds: 60, failing: { _ in 1 })
        let history = world.replicas.filter { $0.desiredState == .shutdown }
        #expect(history.count == ServicePlanner.historyPerSlot, "\(history.count)")
        #expect(world.live.count == 1 && world.live[0].attempt > 5)
    }

    @Test("a replica that ran steadily before it failed starts its slot's backoff over")
    func steadyResetsBackoff() {
        var world = World(nodes: [World.node(1)], services: [World.service(replicas: 1)])
        world.run(seconds: 30)
        let replica = world.live[0]
        #expect(replica.state == .running)
        let i = world.replicas.firstIndex { $0.id == replica.id }!
        world.replicas[i] = replica.applying(.container(id: replica.id, ContainerReport(state: .exited, exitCode: 137, message: "killed")), isJob: false, now: world.now)
        world.plan()
        #expect(world.live[0].attempt == 1 && world.live[0].notBefore == world.now + 1)
    }

    @Test("a crash loop under a local restart policy fails the replica after three restarts in a row, and it is replaced")
    func crashLoop() {
        var replica = Replica(
            id: "r", serviceID: "s", serviceName: "web", slot: 1, version: 1, nodeID: "n", createdAt: World.start, updatedAt: World.start)
        var now = World.start
        replica = replica.applying(.container(id: "r", ContainerReport(state: .running)), isJob: false, now: now)
        for restart in 1...2 {
            now += 1
            replica = replica.applying(.container(id: "r", ContainerReport(state: .exited, exitCode: 1, message: "exited (1)", restartCount: restart - 1, willRestart: true)), isJob: false, now: now)
            #expect(replica.state == .created && replica.message == "exited (1); restarting")
            replica = replica.applying(.container(id: "r", ContainerReport(state: .running, restartCount: restart)), isJob: false, now: now)
            #expect(replica.state == .running)
        }
        now += 1
        replica = replica.applying(.container(id: "r", ContainerReport(state: .running, restartCount: 3)), isJob: false, now: now)
        #expect(replica.state == .failed && replica.message.contains("restarted 3 times in a row"), "\(replica.message)")
        // Restarts far apart, with steady runs between, are no crash loop.
        var steady = Replica(id: "s", serviceID: "s", serviceName: "web", slot: 1, version: 1, nodeID: "n", createdAt: World.start, updatedAt: World.start)
        now = World.start
        for restart in 0..<6 {
            steady = steady.applying(.container(id: "s", ContainerReport(state: .running, restartCount: restart)), isJob: false, now: now)
            now += 60
            steady = steady.applying(.container(id: "s", ContainerReport(state: .running, restartCount: restart)), isJob: false, now: now)
        }
        #expect(steady.state == .running)
    }

    @Test("unplaceable replicas are pending records with the scheduler's reason, placed once a node fits")
    func pending() {
        var world = World(nodes: [World.node(1), World.node(2)], services: [World.service(replicas: 2, constraints: ["node.labels.zone==pci"])])
        world.plan()
        #expect(world.live.count == 2 && world.live.allSatisfy { $0.state == .pending && !$0.isAssigned })
        #expect(world.live[0].message == "no node fits: constraint node.labels.zone==pci is not met on 2 of 2 nodes", "\(world.live[0].message)")
        #expect(world.service("web").message.contains("2 replicas pending: no node fits"), "\(world.service("web").message)")
        #expect(world.plan().isEmpty, "the same reason is not written again")
        world.nodes[1].operatorLabels["zone"] = "pci"
        world.plan()
        #expect(world.live.allSatisfy { $0.nodeID == world.nodes[1].id } && world.service("web").message.isEmpty)
    }

    @Test("a node whose labels no longer meet a replica's constraints loses it; it moves to a node that meets them")
    func constraintsEnforced() {
        var world = World(nodes: [World.node(1, zone: "a"), World.node(2, zone: "a"), World.node(3, zone: "b")], services: [World.service(replicas: 2, constraints: ["node.labels.zone==a"])])
        world.run(seconds: 1)
        #expect(Set(world.live.map(\.nodeID)) == [world.nodes[0].id, world.nodes[1].id])
        world.nodes[0].operatorLabels["zone"] = "c"
        world.plan()
        let moved = world.replicas.filter { $0.nodeID == world.nodes[0].id }
        #expect(moved.allSatisfy { $0.desiredState == .shutdown && $0.message.contains("no longer meets constraint node.labels.zone==a") })
        #expect(world.live.count == 2 && world.live.allSatisfy { $0.nodeID == world.nodes[1].id })
    }

    @Test("--replicas-max-per-node leaves what does not fit pending")
    func maxPerNode() {
        var world = World(nodes: [World.node(1), World.node(2)], services: [World.service(replicas: 5, maxPerNode: 2)])
        world.plan()
        #expect(world.live.filter(\.isAssigned).count == 4 && world.live.filter { !$0.isAssigned }.count == 1)
        #expect(world.live.first { !$0.isAssigned }?.message.contains("--replicas-max-per-node") == true)
    }

    @Test("a global service has one replica per eligible node, and one on each node that joins")
    func global() {
        var world = World(
            nodes: [World.node(1, zone: "a"), World.node(2, zone: "b")], services: [World.service("agent", mode: .global, constraints: ["node.labels.zone!=x"])])
        world.run(seconds: 1)
        #expect(Set(world.live.map(\.nodeID)) == Set(world.nodes.map(\.id)) && world.live.allSatisfy { $0.slot == 0 && $0.state == .running })
        #expect(world.live[0].containerName.hasPrefix("agent.\(world.live[0].nodeID.prefix(12))."))
        world.nodes.append(World.node(3, zone: "c"))
        world.nodes.append(World.node(4, zone: "x"))
        world.plan()
        #expect(world.live.count == 3 && world.live.contains { $0.nodeID == world.nodes[2].id })
    }

    @Test("a replicated job runs until its completions are done, at most max-concurrent at once; completed replicas stay done")
    func replicatedJob() {
        var service = World.service("batch", replicas: 5, mode: .replicatedJob)
        service.spec.maxConcurrent = 2
        var world = World(nodes: [World.node(1), World.node(2)], services: [service])
        world.plan()
        #expect(world.live.count == 2)
        var attempts = 0
        for _ in 0..<10 {
            world.agentsAct(isJob: true)
            // Each running one completes; the first try of slot 2 fails once.
            for i in world.replicas.indices where world.replicas[i].state == .running && world.replicas[i].desiredState == .running {
                attempts += 1
                let code = world.replicas[i].slot == 2 && world.replicas[i].attempt == 0 ? 1 : 0
                world.replicas[i] = world.replicas[i].applying(
                    .container(id: world.replicas[i].id, ContainerReport(state: .exited, exitCode: code, message: "exited (\(code))")), isJob: true, now: world.now)
            }
            world.now += 2
            world.plan()
            #expect(world.live.count { $0.state != .complete } <= 2)
        }
        #expect(world.live.count { $0.state == .complete } == 5 && Set(world.live.map(\.slot)) == Set(1...5))
        #expect(attempts == 6, "five completions and one failure replaced: \(attempts)")
    }

    @Test("a global job runs once on every eligible node")
    func globalJob() {
        var world = World(nodes: [World.node(1), World.node(2)], services: [World.service("once", mode: .globalJob)])
        world.plan()
        world.agentsAct(isJob: true)
        for i in world.replicas.indices {
            world.replicas[i] = world.replicas[i].applying(.container(id: world.replicas[i].id, ContainerReport(state: .exited, exitCode: 0)), isJob: true, now: world.now)
        }
        world.plan()
        world.plan()
        #expect(world.live.count == 2 && world.live.allSatisfy { $0.state == .complete }, "\(world.live.map(\.state))")
    }
}
