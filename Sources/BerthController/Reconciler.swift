import BerthModel
import Foundation
public import Logging
import Synchronization

/// Keeps the cluster at what its records say. The planner decides from
/// records alone (a pass every second, and at once after an operator's
/// change, a node going down or back, or news from a node) and stores its
/// decisions; a `NodeWorker` per ready node brings that node's agent along
/// on its own, concurrently with every other, through one `AgentClient` per
/// node. Workers start when a node is ready and stop when it goes down or
/// away; the planner wakes them when their work may have changed.
public final class Reconciler: Sendable {
    let services: ServiceManager
    let registry: NodeRegistry
    let clients: any AgentClientFactory
    let clock: any Clock<Duration>
    let deadlines: AgentDeadlines
    let metrics: ControllerMetrics?
    let logger: Logger
    let interval: Duration
    /// The time plans are made at.
    let now: @Sendable () -> Date
    private let wakeups: AsyncStream<Void>
    private let wakeup: AsyncStream<Void>.Continuation

    /// A node's worker, the address it was made for, and the task it runs in.
    private struct Running: Sendable {
        var worker: NodeWorker
        var address: String
        var task: Task<Void, Never>
        var client: any AgentClient
    }

    private let workers = Mutex<[String: Running]>([:])

    public init(
        services: ServiceManager, registry: NodeRegistry, clients: any AgentClientFactory, clock: any Clock<Duration> = ContinuousClock(),
        deadlines: AgentDeadlines = AgentDeadlines(), metrics: ControllerMetrics? = nil, logger: Logger, interval: Duration = .seconds(1),
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.now = now
        self.services = services
        self.registry = registry
        self.clients = clients
        self.clock = clock
        self.deadlines = deadlines
        self.metrics = metrics
        self.logger = logger
        self.interval = interval
        (wakeups, wakeup) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Brings the next planning pass forward.
    public func wake() { wakeup.yield() }

    /// The client of a ready node's agent (the one connection its worker
    /// uses); nil for a node that has no worker.
    public func client(for node: ClusterNode) -> (any AgentClient)? {
        workers.withLock { $0[node.id]?.client }
    }

    /// One planning pass; then every ready node has a worker, and those
    /// whose work may have changed are woken.
    public func pass() async {
        let nodes = await registry.list()
        let started = ContinuousClock.now
        let changed = await services.plan(nodes: nodes, now: now())
        metrics?.planned(after: ContinuousClock.now - started)
        let ready = nodes.filter { $0.state == .ready }
        let (stopped, woken) = workers.withLock { running -> ([Running], [NodeWorker]) in
            var stopped: [Running] = []
            let readyIDs = Set(ready.map(\.id))
            for (id, worker) in running where !readyIDs.contains(id) {
                stopped.append(worker)
                running[id] = nil
            }
            var woken: [NodeWorker] = []
            for node in ready {
                if let existing = running[node.id], existing.address == node.address {
                    if changed { woken.append(existing.worker) }
                    continue
                }
                if let old = running[node.id] { stopped.append(old) }
                let client = clients.client(for: node)
                let worker = NodeWorker(
                    node: node, client: client, services: services, clock: clock, deadlines: deadlines, metrics: metrics, logger: logger,
                    interval: interval, now: now, changed: { [weak self] in self?.wake() })
                running[node.id] = Running(worker: worker, address: node.address, task: Task { await worker.run() }, client: client)
            }
            return (stopped, woken)
        }
        for running in stopped {
            running.task.cancel()
            running.client.close()
        }
        for worker in woken { worker.wake() }
    }

    /// Empties a node removed from the cluster while its agent ran (`node rm
    /// --force`): its replicas are replaced elsewhere by a pass, then its
    /// agent is asked, once and best effort, to remove the cluster's
    /// containers, so that a node no longer in the cluster runs none of its work.
    public func evict(_ node: ClusterNode) async {
        await pass()
        let client = clients.client(for: node)
        defer { client.close() }
        guard let containers = try? await client.containers(cluster: services.clusterID, deadline: deadlines.list) else {
            logger.warning("a removed node's containers could not be listed; they stay on it", metadata: ["node": "\(node.hostname)"])
            return
        }
        let deadlines = self.deadlines
        let reports = await withTaskGroup(of: ReplicaReport?.self) { group in
            for container in containers {
                group.addTask {
                    let timeout = container.spec.stopTimeout ?? 10
                    do throws(AgentCallError) {
                        try await client.remove(container: container.id.rawValue, stopTimeout: timeout, deadline: .seconds(timeout) + deadlines.remove)
                    } catch {
                        return nil
                    }
                    return container.spec.labels[ReplicaLabel.replica].map { ReplicaReport.gone(id: $0) }
                }
            }
            var all: [ReplicaReport] = []
            for await report in group { if let report { all.append(report) } }
            return all
        }
        await services.observe(reports)
        logger.info("a removed node's containers were removed", metadata: ["node": "\(node.hostname)", "containers": "\(reports.count)"])
    }

    /// Passes until cancelled; `wake` brings the next one forward. The
    /// workers stop with it.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            let (clock, interval) = (self.clock, self.interval)
            group.addTask { [weak self] in
                while !Task.isCancelled {
                    self?.wake()
                    try? await clock.sleep(for: interval)
                }
            }
            for await _ in wakeups {
                if Task.isCancelled { break }
                await pass()
            }
            group.cancelAll()
        }
        let all = workers.withLock { running in
            defer { running = [:] }
            return Array(running.values)
        }
        for running in all {
            running.task.cancel()
            running.client.close()
        }
        for running in all { await running.task.value }
    }
}
