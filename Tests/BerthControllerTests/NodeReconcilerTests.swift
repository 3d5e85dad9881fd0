@testable import BerthController
import BerthModel
import BerthTesting
import Foundation
import Logging
import Testing

@Suite("a node's reconcile: records and an agent's containers → actions, against an agent in memory")
struct NodeReconcilerTests {
    static let node = PlannerWorld.node(1)
    static let now = PlannerWorld.start

    static func work(_ replicas: [Replica], spec: ServiceSpec = PlannerWorld.service(replicas: 1).spec) -> NodeWork {
        NodeWork(node: node, replicas: replicas, specs: [NodeWork.key(service: "svc-web", version: 1): spec], clusterID: "cluster")
    }

    static func replica(_ id: String, slot: Int = 1, desired: Replica.DesiredState = .running, state: Replica.State = .pending) -> Replica {
        Replica(
            id: id, serviceID: "svc-web", serviceName: "web", slot: slot, version: 1, nodeID: node.id, desiredState: desired, state: state,
            createdAt: now, updatedAt: now)
    }

    static func container(for replica: Replica, spec: ServiceSpec = PlannerWorld.service(replicas: 1).spec, running: Bool = true) -> Container {
        var status = ContainerStatus(createdAt: now)
        if running { try? status.markStarted(pid: 10, at: now) }
        return Container(
            id: ContainerID.random(), name: replica.containerName, spec: NodeReconciler.containerSpec(for: replica, spec: spec, clusterID: "cluster"),
            imageID: "", status: status)
    }

    @Test("a placed replica is made with its name and the labels that tie it to the cluster; one whose backoff has not passed waits")
    func makes() {
        var spec = PlannerWorld.service(replicas: 1).spec
        spec.stopAfterDisconnect = 30
        let waiting = { var r = Self.replica("b", slot: 2); r.notBefore = Self.now + 5; return r }()
        let (actions, reports) = NodeReconciler.plan(Self.work([Self.replica("a"), waiting], spec: spec), containers: [], busy: [], now: Self.now)
        #expect(reports.isEmpty && actions.count == 1)
        guard case .run(let id, let container)? = actions.first else {
            Issue.record("\(actions)")
            return
        }
        #expect(id == "a" && container.name == "web.1.a")
        #expect(container.labels[ReplicaLabel.cluster] == "cluster" && container.labels[ReplicaLabel.replica] == "a")
        #expect(container.labels[ReplicaLabel.stopAfterDisconnect] == "30s")
    }

    @Test("containers no running record claims are removed; a replica being shut down whose container is gone is reported gone")
    func removes() {
        let running = Self.replica("a", state: .running)
        let stopping = Self.replica("b", slot: 2, desired: .shutdown, state: .running)
        let gone = Self.replica("c", slot: 3, desired: .shutdown, state: .running)
        let stranger = Self.container(for: Self.replica("zzz", slot: 9))
        let containers = [Self.container(for: running), Self.container(for: stopping), stranger]
        let (actions, reports) = NodeReconciler.plan(Self.work([running, stopping, gone]), containers: containers, busy: [], now: Self.now)
        #expect(Set(actions.compactMap { if case .remove(_, _, let name, _) = $0 { name } else { nil } }) == ["web.2.b", "web.9.zzz"])
        #expect(reports.contains(.gone(id: "c")))
        #expect(reports.contains { if case .container(let id, let report) = $0 { id == "a" && report.state == .running } else { false } })
    }

    @Test("what is under way is left alone; a running replica whose container vanished failed; a made container never started is started")
    func busyAndVanished() {
        let pending = Self.replica("a")
        let vanished = Self.replica("b", slot: 2, state: .running)
        let unstarted = Self.replica("c", slot: 3, state: .pending)
        let (actions, reports) = NodeReconciler.plan(
            Self.work([pending, vanished, unstarted]), containers: [Self.container(for: unstarted, running: false)], busy: ["a"], now: Self.now)
        #expect(actions.count == 1)
        if case .start(let id, _)? = actions.first { #expect(id == "c") } else { Issue.record("\(actions)") }
        #expect(reports == [.failed(id: "b", message: "its container was removed from node host1")])
    }

    static func manager(_ kind: StoreKind) async throws -> (ServiceManager, TestStore) {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let store = try await TestStore(kind)
        do {
            return (try await ServiceManager(store: store.store, logger: logger), store)
        } catch {
            store.close()
            throw error
        }
    }

    static func worker(_ node: ClusterNode, _ agents: FakeAgents, _ services: ServiceManager, _ clock: ManualClock) -> NodeWorker {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return NodeWorker(
            node: node, client: agents.client(for: node), services: services, clock: clock, deadlines: AgentDeadlines(), metrics: nil, logger: logger,
            changed: {})
    }

    /// Passes of a worker until it has nothing to do, running its actions.
    static func settle(_ worker: NodeWorker) async {
        for _ in 0..<5 {
            let actions = await worker.pass()
            if actions.isEmpty { return }
            for action in actions { await worker.execute(action) }
        }
    }

    @Test("against the fake agent: a service converges, pulling a missing image first; a removed service's containers go", arguments: StoreKind.allCases)
    func converges(_ kind: StoreKind) async throws {
        let (services, store) = try await Self.manager(kind)
        defer { store.close() }
        let clock = ManualClock()
        let agents = FakeAgents(images: [], clock: clock)
        let nodes = [PlannerWorld.node(1), PlannerWorld.node(2)]
        let workers = nodes.map { Self.worker($0, agents, services, clock) }
        _ = try await services.create(ServiceSpec(name: "web", replicas: 4, container: ContainerSpec(image: "busybox")), nodes: nodes, dryRun: false)
        await services.plan(nodes: nodes)
        for worker in workers { await Self.settle(worker) }
        await services.plan(nodes: nodes)
        let replicas = try await services.replicaList(service: "web", all: false)
        #expect(replicas.count == 4 && replicas.allSatisfy { $0.state == .running }, "\(replicas.map(\.state))")
        #expect(agents.agent(nodes[0].id).containers.count == 2 && agents.agent(nodes[1].id).containers.count == 2)
        #expect(agents.agent(nodes[0].id).calls(.pull) == 1, "one pull per node: \(agents.agent(nodes[0].id).calls(.pull))")
        // Twice more: nothing is made twice.
        for worker in workers { await Self.settle(worker) }
        #expect(agents.agent(nodes[0].id).calls(.run) == 3, "one refused for the image, then pulled, then two made")

        _ = try await services.remove("web")
        await services.plan(nodes: nodes)
        for worker in workers { await Self.settle(worker) }
        await services.plan(nodes: nodes)
        #expect(agents.agent(nodes[0].id).containers.isEmpty && agents.agent(nodes[1].id).containers.isEmpty)
        #expect(try await services.replicaList(service: nil, all: true).isEmpty)
    }

    @Test("a pull that hangs holds up nothing else: the same node makes other replicas, a lost node's replicas move, and the pull gives up at its deadline", arguments: StoreKind.allCases)
    func hungPull(_ kind: StoreKind) async throws {
        let (services, store) = try await Self.manager(kind)
        defer { store.close() }
        let clock = ManualClock()
        let agents = FakeAgents(images: ["busybox"], clock: clock)
        var nodes = [PlannerWorld.node(1), PlannerWorld.node(2)]
        agents.agent(nodes[0].id).hang([.pull])
        agents.agent(nodes[1].id).hang([.pull])
        let workers = nodes.map { Self.worker($0, agents, services, clock) }
        _ = try await services.create(ServiceSpec(name: "slow", replicas: 2, container: ContainerSpec(image: "127.0.0.1:9/never:1")), nodes: nodes, dryRun: false)
        _ = try await services.create(ServiceSpec(name: "web", replicas: 4, container: ContainerSpec(image: "busybox")), nodes: nodes, dryRun: false)
        await services.plan(nodes: nodes)
        // Every action runs on its own; the pulls hang.
        let hanging = Task {
            await withDiscardingTaskGroup { group in
                for worker in workers {
                    for action in await worker.pass() { group.addTask { await worker.execute(action) } }
                }
            }
        }
        // The pulls wait on the clock; everything else finishes (the web
        // runs are tasks of their own: under load they may still be under
        // way when both pulls sleep, so the workers look until they are done).
        while clock.sleepers < 2 { await Task.yield() }
        var web: [Replica] = []
        for _ in 0..<500 {
            for worker in workers { _ = await worker.pass() }
            web = try await services.replicaList(service: "web", all: false)
            if web.count == 4 && web.allSatisfy({ $0.state == .running }) { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(web.count == 4 && web.allSatisfy { $0.state == .running }, "\(web.map(\.state))")

        // Node 2 is lost: its replicas of web are made on node 1 at once, while node 1's pull still hangs.
        nodes[1].state = .down
        await services.plan(nodes: nodes)
        let actions = await workers[0].pass()
        let webRuns = actions.filter { if case .run(_, let spec) = $0 { spec.image == "busybox" } else { false } }
        #expect(webRuns.count == 2, "\(actions)")
        let moreHanging = Task {
            await withDiscardingTaskGroup { group in
                for action in actions where !webRuns.contains(action) { group.addTask { await workers[0].execute(action) } }
            }
        }
        for action in webRuns { await workers[0].execute(action) }
        _ = await workers[0].pass()
        web = try await services.replicaList(service: "web", all: false)
        #expect(web.count == 4 && web.allSatisfy { $0.state == .running && $0.nodeID == nodes[0].id })

        // The pull's deadline: the replica failed, and waits out a backoff.
        while clock.sleepers < 3 { await Task.yield() }
        clock.advance(by: AgentDeadlines().pull)
        await hanging.value
        await moreHanging.value
        let slow = try await services.replicaList(service: "slow", all: true)
        #expect(slow.contains { $0.state == .failed && $0.message.contains("pull: no answer within its deadline") }, "\(slow.map(\.message))")
    }

    @Test("a call given up at its deadline ends with timedOut, on the injected clock")
    func deadline() async throws {
        let clock = ManualClock()
        let agent = FakeAgentClient(clock: clock)
        agent.hang([.list])
        let call = Task { () -> AgentCallError? in
            do throws(AgentCallError) {
                _ = try await agent.containers(cluster: "c", deadline: .seconds(5))
                return nil
            } catch {
                return error
            }
        }
        while clock.sleepers == 0 { await Task.yield() }
        clock.advance(by: .seconds(4))
        try await Task.sleep(for: .milliseconds(10))
        clock.advance(by: .seconds(1))
        #expect(await call.value == AgentCallError.timedOut("list"))
        // withDeadline gives up on a body that never answers.
        let stuck = Task { () -> AgentCallError? in
            do throws(AgentCallError) {
                try await withDeadline(.seconds(3), clock: clock, "stuck") { () async throws(AgentCallError) in
                    do { try await Task.sleep(for: .seconds(3600)) } catch { throw .cancelled }
                }
                return nil
            } catch {
                return error
            }
        }
        while clock.sleepers == 0 { await Task.yield() }
        clock.advance(by: .seconds(3))
        #expect(await stuck.value == AgentCallError.timedOut("stuck"))
    }
}
