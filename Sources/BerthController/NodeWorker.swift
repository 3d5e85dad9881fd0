import BerthModel
import Foundation
import Logging

/// How long each kind of agent call may take before it is given up.
public struct AgentDeadlines: Sendable {
    /// Listing the node's containers.
    public var list: Duration = .seconds(5)
    /// Making and starting a container.
    public var run: Duration = .seconds(60)
    /// Pulling an image (a registry that never answers holds up only its own replica).
    public var pull: Duration = .seconds(600)
    /// Starting a made container.
    public var start: Duration = .seconds(30)
    /// Removing a container, beyond its stop timeout.
    public var remove: Duration = .seconds(20)
    /// Telling the agent of its overlay networks.
    public var overlays: Duration = .seconds(20)

    public init() {}
}

/// Runs `body` and gives up when `deadline` passes first.
///
/// - Throws: `AgentCallError.timedOut(what)` at the deadline; what `body` throws.
func withDeadline<T: Sendable>(
    _ deadline: Duration, clock: any Clock<Duration>, _ what: String, _ body: @escaping @Sendable () async throws(AgentCallError) -> T
) async throws(AgentCallError) -> T {
    let outcome: Result<T, AgentCallError> = await withTaskGroup(of: Result<T, AgentCallError>?.self) { group in
        group.addTask {
            do throws(AgentCallError) {
                return .success(try await body())
            } catch {
                return .failure(error)
            }
        }
        group.addTask {
            do {
                try await clock.sleep(for: deadline)
            } catch {
                return nil  // cancelled: the call finished first
            }
            return .failure(.timedOut(what))
        }
        var first: Result<T, AgentCallError>?
        while let next = await group.next() {
            if let next {
                first = next
                break
            }
        }
        group.cancelAll()
        return first ?? .failure(.cancelled)
    }
    return try outcome.get()
}

/// Brings one node's agent along, on its own: lists the node's containers
/// every second (and at once when woken), decides with `NodeReconciler`,
/// and runs each action as a task of its own with its deadline, so that
/// neither this node nor one slow call on it (an image pull that hangs)
/// holds up any other. What it learns goes to the service manager, which
/// wakes the planner when something changed.
actor NodeWorker {
    let node: ClusterNode
    var nodeID: String { node.id }
    var hostname: String { node.hostname }
    let client: any AgentClient
    let services: ServiceManager
    let clock: any Clock<Duration>
    let deadlines: AgentDeadlines
    let metrics: ControllerMetrics?
    let logger: Logger
    /// Wakes the planner.
    let changed: @Sendable () -> Void
    let interval: Duration
    /// The time replicas' reports and plans are made at.
    let now: @Sendable () -> Date

    /// Actions under way, by key.
    private var busy: Set<String> = []
    /// When each recent action finished, by key: a list begun before that
    /// cannot be trusted about it.
    private var finishedAt: [String: UInt64] = [:]
    private var sequence: UInt64 = 0
    /// The overlay networks the agent last took, nil when it is to be told
    /// again (at first, after a failure, and every `overlayRefresh`).
    private var overlaysSent: [OverlayState]?
    private var overlaysSentAt: ContinuousClock.Instant?
    /// How often the agent is told again what it has (it changes nothing
    /// then): a restarted agent whose state file was lost catches up.
    static let overlayRefresh: Duration = .seconds(30)
    private let wakeups: AsyncStream<Void>
    private let wakeup: AsyncStream<Void>.Continuation

    init(
        node: ClusterNode, client: any AgentClient, services: ServiceManager, clock: any Clock<Duration>, deadlines: AgentDeadlines,
        metrics: ControllerMetrics?, logger: Logger, interval: Duration = .seconds(1), now: @escaping @Sendable () -> Date = { Date() },
        changed: @escaping @Sendable () -> Void
    ) {
        self.now = now
        self.node = node
        self.client = client
        self.services = services
        self.clock = clock
        self.deadlines = deadlines
        self.metrics = metrics
        self.logger = logger
        self.interval = interval
        self.changed = changed
        (wakeups, wakeup) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Brings the next pass forward.
    nonisolated func wake() { wakeup.yield() }

    /// Passes until cancelled; actions under way are cancelled with it.
    func run() async {
        await withDiscardingTaskGroup { group in
            let (clock, interval) = (self.clock, self.interval)
            group.addTask { [weak self] in
                while !Task.isCancelled {
                    self?.wake()
                    try? await clock.sleep(for: interval)
                }
            }
            for await _ in wakeups {
                if Task.isCancelled { break }
                for action in await pass() {
                    group.addTask { await self.execute(action) }
                }
            }
            group.cancelAll()
        }
    }

    /// One look at the node: what to do, what to record.
    func pass() async -> [NodeAction] {
        guard let work = await services.work(for: node) else { return [] }
        let listedAfter = sequence
        let containers: [Container]
        do {
            containers = try await call("list") { [client, deadlines] () async throws(AgentCallError) -> [Container] in
                try await client.containers(cluster: work.clusterID, deadline: deadlines.list)
            }
        } catch {
            logger.debug("agent not reached this pass", metadata: ["node": "\(hostname)", "error": "\(error)"])
            return []
        }
        // Replicas on an overlay the agent could not take wait; the rest of the node's work goes on.
        let overlaysTaken = await syncOverlays(work.overlays)
        let recent = Set(finishedAt.filter { $0.value > listedAfter }.keys)
        finishedAt = finishedAt.filter { $0.value > listedAfter }
        var (actions, reports) = NodeReconciler.plan(work, containers: containers, busy: busy.union(recent), now: now())
        if !overlaysTaken {
            let overlays = Set((work.overlays ?? []).map(\.network.id))
            actions.removeAll { action in
                guard case .run(_, let spec) = action else { return false }
                return overlays.contains(spec.network) || (spec.additionalNetworks ?? []).contains { overlays.contains($0.network) }
            }
        }
        if await services.observe(reports, now: now()) { changed() }
        for action in actions { busy.insert(action.key) }
        return actions
    }

    /// Tells the agent of its overlay networks when they changed; whether
    /// it has them (replicas on an overlay do not start before).
    private func syncOverlays(_ wanted: [OverlayState]?) async -> Bool {
        guard let wanted else { return true }
        let now = ContinuousClock.now
        if wanted == overlaysSent, let at = overlaysSentAt, wanted.isEmpty || now - at < Self.overlayRefresh { return true }
        let (client, deadline) = (self.client, deadlines.overlays)
        do {
            try await call("overlays") { () async throws(AgentCallError) in try await client.setOverlays(wanted, deadline: deadline) }
            overlaysSent = wanted
            overlaysSentAt = now
            return true
        } catch {
            overlaysSent = nil
            overlaysSentAt = nil
            logger.warning("the agent could not take its overlay networks", metadata: ["node": "\(hostname)", "error": "\(error)"])
            return false
        }
    }

    /// Times a call and counts its failures.
    private func call<T: Sendable>(_ name: String, _ body: @escaping @Sendable () async throws(AgentCallError) -> T) async throws(AgentCallError) -> T {
        let started = ContinuousClock.now
        do {
            let result = try await body()
            metrics?.agentCall(node: hostname, call: name, duration: ContinuousClock.now - started, error: nil)
            return result
        } catch {
            metrics?.agentCall(node: hostname, call: name, duration: ContinuousClock.now - started, error: error)
            throw error
        }
    }

    /// Runs one action; records what came of it.
    func execute(_ action: NodeAction) async {
        var reports: [ReplicaReport] = []
        let client = self.client
        let deadlines = self.deadlines
        switch action {
        case .run(let replica, let spec):
            do {
                let container: Container
                do {
                    container = try await call("run") { () async throws(AgentCallError) -> Container in try await client.run(spec, deadline: deadlines.run) }
                } catch .imageNotFound {
                    logger.info("pulling a replica's image", metadata: ["node": "\(hostname)", "image": "\(spec.image)"])
                    try await call("pull") { () async throws(AgentCallError) in try await client.pull(image: spec.image, deadline: deadlines.pull) }
                    container = try await call("run") { () async throws(AgentCallError) -> Container in try await client.run(spec, deadline: deadlines.run) }
                }
                logger.info("replica started", metadata: ["node": "\(hostname)", "container": "\(spec.name ?? "")"])
                reports.append(.container(id: replica, ContainerReport(container)))
            } catch .nameInUse {
                // Made by an earlier pass whose answer was lost; the next list shows it.
            } catch .unreachable, .cancelled {
                // The node's own state decides (down after its grace); nothing failed yet.
            } catch {
                logger.warning("a replica could not be started", metadata: ["node": "\(hostname)", "container": "\(spec.name ?? "")", "error": "\(error)"])
                reports.append(.failed(id: replica, message: error.description))
            }
        case .start(let replica, let container):
            do {
                try await call("start") { () async throws(AgentCallError) in try await client.start(container: container, deadline: deadlines.start) }
            } catch .unreachable, .cancelled {
            } catch {
                reports.append(.failed(id: replica, message: error.description))
            }
        case .remove(let replica, let container, let name, let stopTimeout):
            do {
                try await call("remove") { () async throws(AgentCallError) in
                    try await client.remove(container: container, stopTimeout: stopTimeout, deadline: .seconds(stopTimeout) + deadlines.remove)
                }
                logger.info("replica container removed", metadata: ["node": "\(hostname)", "container": "\(name)"])
                if let replica { reports.append(.gone(id: replica)) }
            } catch .noSuchContainer {
                if let replica { reports.append(.gone(id: replica)) }
            } catch {
                logger.warning("cannot remove a replica's container", metadata: ["node": "\(hostname)", "container": "\(name)", "error": "\(error)"])
            }
        }
        if !reports.isEmpty, await services.observe(reports, now: now()) { changed() }
        finished(action.key)
    }

    private func finished(_ key: String) {
        sequence += 1
        busy.remove(key)
        finishedAt[key] = sequence
    }
}
