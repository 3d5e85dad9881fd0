import BerthModel
import BerthScheduler
import Foundation

/// The decisions of one reconcile pass, made from records alone: which
/// replicas to shut down (their service gone, their node down, drained or
/// no longer meeting a constraint, scaled away, rolled over by an update,
/// failed), which new ones to make (in an empty slot, after a backoff when
/// the slot keeps failing), where they go, and where an update is. No agent
/// is called here; what is decided is stored before any agent acts on it.
enum ServicePlanner {
    /// Ended replicas kept per slot as its history (`service ps -a`), as swarm keeps five.
    static let historyPerSlot = 5
    /// A replica that has run this long is steady: its slot's failures start over.
    static let steadyAfter: TimeInterval = 10
    /// Restarts in a row, without running steadily between them, after which
    /// a replica is failed and replaced (on another node if there is one).
    static let crashLoopRestarts = 3

    /// The wait before the replacement after `attempt` failures in a row:
    /// 1 s doubling to a minute.
    static func backoff(attempt: Int) -> TimeInterval {
        attempt <= 0 ? 0 : min(60, Double(1 << min(attempt - 1, 6)))
    }

    /// What one replica of `spec` asks of the scheduler.
    ///
    /// - Throws: `BerthError.invalidArgument` for a constraint or placement
    ///   preference that does not parse.
    static func request(for service: ClusterService, spec: ServiceSpec? = nil) throws -> PlacementRequest {
        let spec = spec ?? service.spec
        guard spec.placementPreferences.count <= 1 else {
            throw BerthError.invalid("--placement-pref: one spread preference is supported, \(spec.placementPreferences.count) were given")
        }
        let resources = spec.container.resources
        return PlacementRequest(
            service: service.id, name: spec.name,
            resources: ResourceRequest(
                milliCPU: (resources.cpus?.nanoCPUs ?? 0) / 1_000_000, memoryBytes: resources.memory?.bytes ?? 0),
            constraints: try spec.constraints.map { try Constraint(parsing: $0) },
            ports: spec.container.ports.map { HostPort($0.hostPort, $0.transport) },
            strategy: .spread, spreadLabel: try spec.placementPreferences.first.map { try PlacementRequest.spreadLabel(parsingPreference: $0) },
            maxPerNode: spec.maxReplicasPerNode)
    }

    /// A node as the scheduler sees it.
    static func schedulerNode(_ node: ClusterNode) -> SchedulerNode {
        let availability: NodeAvailability = node.state == .down ? .down : node.availability == .drain ? .draining : .ready
        return SchedulerNode(
            id: node.id, hostname: node.hostname, labels: node.operatorLabels, engineLabels: node.agentLabels, availability: availability,
            allocatable: ResourceRequest(milliCPU: Int64(node.allocatable.cpus) * 1000, memoryBytes: node.allocatable.memoryBytes))
    }

    /// The nodes as the scheduler sees them, with what the replicas that
    /// should run on them request.
    static func cluster(nodes: [ClusterNode], services: [String: ClusterService], replicas: some Sequence<Replica>) -> Cluster {
        var cluster = Cluster(nodes: nodes.map(schedulerNode))
        // One request per service that has replicas, not per replica (a
        // request parses its constraints), made when first needed.
        var requests: [String: PlacementRequest?] = [:]
        for replica in replicas where replica.desiredState == .running && replica.isAssigned && replica.state != .complete {
            let request: PlacementRequest?
            if let known = requests[replica.serviceID] {
                request = known
            } else {
                request = services[replica.serviceID].flatMap { try? Self.request(for: $0) }
                requests[replica.serviceID] = request
            }
            guard let request else { continue }
            cluster.record(request, onNode: replica.nodeID)
        }
        return cluster
    }

    /// Whether a replica ended as a failure of its slot (not moved away,
    /// replaced by an update, or scaled down).
    static func isFailure(_ replica: Replica) -> Bool {
        replica.state == .failed || replica.state == .exited
    }

    /// Whether a replica of the current version has run for the update's monitor.
    static func isSettled(_ replica: Replica, monitor: TimeInterval, now: Date) -> Bool {
        guard replica.state == .running, let since = replica.runningSince else { return false }
        return now.timeIntervalSince(since) >= monitor
    }

    /// One pass's decisions.
    ///
    /// - Returns: the replicas and services that change, and the history
    ///   records to forget; nothing is stored yet.
    static func plan(
        services: [ClusterService], replicas: [Replica], nodes: [ClusterNode], now: Date, newID: () -> String = { RandomHex.make(32) }
    ) -> StoreChange {
        var pass = Pass(services: services, replicas: replicas, nodes: nodes, now: now)
        pass.retire()
        for service in services.sorted(by: { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }) {
            pass.plan(service, newID: newID)
        }
        pass.prune()
        return pass.change
    }
}

/// The working state of one planning pass.
private struct Pass {
    let now: Date
    let servicesByID: [String: ClusterService]
    let nodesByID: [String: ClusterNode]
    let nodes: [ClusterNode]
    var current: [String: Replica]
    var byService: [String: [String]] = [:]
    var changed: Set<String> = []
    var changedServices: [ClusterService] = []
    var pruned: [String] = []
    var cluster: Cluster
    /// Placement requests by service and version.
    var requests: [String: PlacementRequest?] = [:]

    init(services: [ClusterService], replicas: [Replica], nodes: [ClusterNode], now: Date) {
        self.now = now
        self.nodes = nodes
        servicesByID = Dictionary(services.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        nodesByID = Dictionary(nodes.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        current = Dictionary(replicas.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for replica in replicas { byService[replica.serviceID, default: []].append(replica.id) }
        cluster = ServicePlanner.cluster(nodes: nodes, services: servicesByID, replicas: replicas)
    }

    var change: StoreChange {
        StoreChange(services: changedServices, replicas: changed.sorted().compactMap { current[$0] }, removedReplicas: pruned)
    }

    /// The spec a replica of `version` runs: the current one, the previous one, or (unknown) the current one.
    func spec(of service: ClusterService, version: Int) -> ServiceSpec {
        if version != service.version, let previous = service.previous, previous.version == version { return previous.spec }
        return service.spec
    }

    mutating func request(_ service: ClusterService, version: Int) -> PlacementRequest? {
        let key = "\(service.id)@\(version)"
        if let cached = requests[key] { return cached }
        let made = try? ServicePlanner.request(for: service, spec: spec(of: service, version: version))
        requests[key] = made
        return made
    }

    /// Marks a replica for shutdown and gives back what it held on its node.
    /// A replica that never had a node has nothing to remove: it is history at once.
    mutating func shutDown(_ id: String, _ why: String?, as state: Replica.State? = nil) {
        guard var replica = current[id], replica.desiredState == .running else { return }
        if replica.isAssigned, replica.state != .complete, let service = servicesByID[replica.serviceID],
            let request = request(service, version: replica.version)
        {
            cluster.remove(request, fromNode: replica.nodeID)
        }
        replica.desiredState = .shutdown
        if let why { replica.message = why }
        if let state { replica.state = state }
        if !replica.isAssigned {
            replica.removed = true
            if replica.state == .pending { replica.state = .shutdown }
        }
        replica.updatedAt = now
        current[id] = replica
        changed.insert(id)
    }

    mutating func update(_ replica: Replica) {
        if current[replica.id] == nil { byService[replica.serviceID, default: []].append(replica.id) }
        current[replica.id] = replica
        changed.insert(replica.id)
    }

    /// Shuts down replicas that can no longer run where they are: their
    /// service gone, their node gone, down or drained, a constraint their
    /// node no longer meets, or a failure (replaced in `plan`).
    mutating func retire() {
        for replica in current.values where replica.desiredState == .running {
            guard let service = servicesByID[replica.serviceID] else {
                shutDown(replica.id, "the service was removed")
                continue
            }
            if ServicePlanner.isFailure(replica) && !(service.spec.mode.isJob && replica.state == .exited && replica.exitCode == 0) {
                // Its message says why (the agent's error, the exit).
                shutDown(replica.id, nil)
                continue
            }
            guard replica.isAssigned else { continue }
            guard let node = nodesByID[replica.nodeID] else {
                shutDown(replica.id, "node \(replica.nodeID.prefix(12)) is not in the cluster", as: .orphaned)
                continue
            }
            if node.state == .down {
                shutDown(replica.id, "node \(node.hostname) is down", as: .orphaned)
            } else if node.availability == .drain {
                shutDown(replica.id, "node \(node.hostname) is drained")
            } else if replica.state != .complete, let request = request(service, version: replica.version),
                let index = cluster.index(of: node.id),
                let failed = request.constraints.first(where: { !$0.matches(cluster.nodes[index]) })
            {
                shutDown(replica.id, "node \(node.hostname) no longer meets constraint \(failed)")
            }
        }
    }

    /// Forgets history beyond what each slot keeps, and every record of a
    /// removed service once its container is gone.
    mutating func prune() {
        var history: [String: [Replica]] = [:]
        for replica in current.values where replica.desiredState == .shutdown && replica.removed {
            guard servicesByID[replica.serviceID] != nil else {
                pruned.append(replica.id)
                continue
            }
            history["\(replica.serviceID)/\(replica.slot > 0 ? String(replica.slot) : replica.nodeID)", default: []].append(replica)
        }
        for (_, records) in history where records.count > ServicePlanner.historyPerSlot {
            let sorted = records.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }
            pruned += sorted.dropFirst(ServicePlanner.historyPerSlot).map(\.id)
        }
        for id in pruned {
            current[id] = nil
            changed.remove(id)
        }
    }

    /// A new replica record: for a slot (or a global service's node),
    /// waiting out the slot's backoff when its last replica failed.
    mutating func makeReplica(_ service: ClusterService, _ placing: VersionedSpec, slot: Int, node: String, history: [Replica], newID: () -> String)
        -> Replica
    {
        var attempt = 0
        // Failures of another version do not hold up this one.
        let history = history.filter { $0.version == placing.version }
        if let last = history.max(by: { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }), ServicePlanner.isFailure(last) {
            let ranSteadily = last.runningSince.map { last.updatedAt.timeIntervalSince($0) >= ServicePlanner.steadyAfter } ?? false
            attempt = (ranSteadily ? 0 : last.attempt) + 1
        }
        let wait = ServicePlanner.backoff(attempt: attempt)
        var replica = Replica(
            id: newID(), serviceID: service.id, serviceName: service.spec.name, slot: slot, version: placing.version, nodeID: node,
            createdAt: now, updatedAt: now, notBefore: wait > 0 ? now + wait : nil, attempt: attempt)
        if wait > 0, let last = history.max(by: { $0.createdAt < $1.createdAt }) {
            replica.message = "waiting \(DurationText.format(wait)) after \(attempt) failure\(attempt == 1 ? "" : "s") in a row (last: \(last.message))"
        }
        update(replica)
        return replica
    }

    /// One service's decisions.
    mutating func plan(_ original: ClusterService, newID: () -> String) {
        var service = original
        var messages: [String] = []
        let all = (byService[service.id] ?? []).compactMap { current[$0] }
        let history = all.filter { $0.desiredState == .shutdown }
        var failures = 0
        if let status = service.update, status.state.isActive {
            // New replicas that failed before they settled, since the update began.
            let monitor = service.spec.update.monitor
            failures = all.count { replica in
                replica.version == service.version && replica.createdAt >= status.startedAt && ServicePlanner.isFailure(replica)
                    && (replica.runningSince.map { replica.updatedAt.timeIntervalSince($0) < monitor } ?? true)
            }
        }
        // An update's failures beyond what it tolerates: its failure action.
        if let status = service.update, status.state.isActive, failures > 0 {
            let desired = service.spec.mode.isGlobal ? max(1, eligibleNodes(service.spec).count) : max(1, service.spec.replicas)
            if Double(failures) / Double(desired) > service.spec.update.maxFailureRatio {
                let last = all.filter { $0.version == service.version && ServicePlanner.isFailure($0) }.max { $0.updatedAt < $1.updatedAt }
                let why = last.map { "replica \($0.slot > 0 ? String($0.slot) : String($0.nodeID.prefix(12))) of version \(service.version) failed: \($0.message)" } ?? ""
                if status.state == .rollingBack {
                    service.update = UpdateStatus(state: .rollbackPaused, startedAt: status.startedAt, message: "rollback paused: \(why)", failed: true)
                } else {
                    switch service.spec.update.failureAction {
                    case .pause:
                        service.update = UpdateStatus(state: .paused, startedAt: status.startedAt, message: "update paused: \(why)", failed: true)
                    case .rollback:
                        if let previous = service.previous {
                            let bad = VersionedSpec(version: service.version, spec: service.spec)
                            service.spec = previous.spec
                            service.version = previous.version
                            service.previous = bad
                            service.revision += 1
                            service.updatedAt = now
                            service.update = UpdateStatus(state: .rollingBack, startedAt: now, message: "rolling back after a failure: \(why)", failed: true)
                        } else {
                            service.update = UpdateStatus(state: .paused, startedAt: status.startedAt, message: "update paused: \(why)", failed: true)
                        }
                    case .continue:
                        break
                    }
                }
            }
        }
        switch service.spec.mode {
        case .replicated: planReplicated(&service, history: history, messages: &messages, newID: newID)
        case .global, .globalJob: planGlobal(&service, history: history, messages: &messages, newID: newID)
        case .replicatedJob: planJob(&service, history: history, messages: &messages, newID: newID)
        }
        if let status = service.update, !status.state.isActive, status.failed {
            messages.insert(status.message, at: 0)
        }
        service.message = messages.joined(separator: "; ")
        if service != original { changedServices.append(service) }
    }

    /// Nodes a global service's replicas belong on: ready, active, and meeting its constraints.
    func eligibleNodes(_ spec: ServiceSpec) -> [ClusterNode] {
        let constraints = (try? spec.constraints.map { try Constraint(parsing: $0) }) ?? []
        return nodes.filter { node in
            guard node.state == .ready, node.availability == .active, let index = cluster.index(of: node.id) else { return false }
            return constraints.allSatisfy { $0.matches(cluster.nodes[index]) }
        }
    }

    /// Places the service's live replicas that wait for a node (and whose
    /// backoff has passed); says why those that fit nowhere wait.
    mutating func placeWaiting(_ service: ClusterService, history: [Replica], messages: inout [String]) {
        let waiting = (byService[service.id] ?? []).compactMap { current[$0] }
            .filter { $0.desiredState == .running && !$0.isAssigned && ($0.notBefore ?? .distantPast) <= now }
            .sorted { ($0.slot, $0.createdAt) < ($1.slot, $1.createdAt) }
        guard !waiting.isEmpty else { return }
        var unplaced: BerthError?
        var fresh: [Replica] = []
        for replica in waiting {
            guard let request = request(service, version: replica.version) else { continue }
            // Nodes where this slot failed lately are the last choice.
            let avoid = Set(history.filter { $0.slot == replica.slot && ServicePlanner.isFailure($0) && $0.isAssigned }
                .sorted { $0.createdAt > $1.createdAt }.prefix(3).map(\.nodeID))
            if avoid.isEmpty && replica.attempt == 0 {
                fresh.append(replica)
                continue
            }
            let (placed, error) = Scheduler.placeAsMany(request, count: 1, on: &cluster, avoid: avoid)
            assign(replica, to: placed.first, error: error, unplaced: &unplaced)
        }
        // Replicas without a history are placed together (one request for all of them).
        var byVersion: [Int: [Replica]] = [:]
        for replica in fresh { byVersion[replica.version, default: []].append(replica) }
        for (version, group) in byVersion.sorted(by: { $0.key < $1.key }) {
            guard let request = request(service, version: version) else { continue }
            let (placed, error) = Scheduler.placeAsMany(request, count: group.count, on: &cluster)
            for (i, replica) in group.enumerated() { assign(replica, to: i < placed.count ? placed[i] : nil, error: error, unplaced: &unplaced) }
        }
        if let unplaced {
            let count = (byService[service.id] ?? []).compactMap { current[$0] }.count { $0.desiredState == .running && !$0.isAssigned }
            messages.append("\(count) replica\(count == 1 ? "" : "s") pending: \(Self.reason(unplaced))")
        }
    }

    private mutating func assign(_ replica: Replica, to node: String?, error: BerthError?, unplaced: inout BerthError?) {
        var replica = replica
        if let node {
            replica.nodeID = node
            replica.message = ""
            replica.notBefore = nil
            replica.updatedAt = now
            update(replica)
            return
        }
        // "no node fits: constraint … is not met on 3 of 3 nodes"
        let why = error.map { Self.reason($0) } ?? "no node fits"
        unplaced = error
        if replica.message != why {
            replica.message = why
            update(replica)
        }
    }

    /// The scheduler's refusal as a pending replica's reason.
    static func reason(_ error: BerthError) -> String {
        guard let colon = error.message.range(of: ": ") else { return error.message }
        return "no node fits: " + error.message[colon.upperBound...]
    }

    /// Replicated services: slots 1…replicas, each with one live replica,
    /// rolled over to the current version in batches.
    mutating func planReplicated(_ service: inout ClusterService, history: [Replica], messages: inout [String], newID: () -> String) {
        let wanted = service.spec.replicas
        let placing = service.placing
        var live = (byService[service.id] ?? []).compactMap { current[$0] }.filter { $0.desiredState == .running }
        for replica in live where replica.slot > wanted || replica.slot < 1 {
            shutDown(replica.id, "scaled down to \(wanted)")
        }
        // Replicas waiting for a node, of a version no longer placed, go at once: nothing runs.
        for replica in live where !replica.isAssigned && replica.version != placing.version {
            shutDown(replica.id, "superseded by version \(placing.version)")
        }
        live.removeAll { current[$0.id]?.desiredState != .running }
        var slots: [Int: [Replica]] = [:]
        for replica in live { slots[replica.slot, default: []].append(replica) }
        rollOver(&service, slots: &slots, count: wanted, newID: newID, messages: &messages, history: history)
        placeWaiting(service, history: history, messages: &messages)
        backoffMessage(service, messages: &messages)
    }

    /// The update's batches for replicated and global services: `slots`
    /// holds each slot's live replicas (for global services keyed by a
    /// number per node); empty slots are filled with `placing`.
    mutating func rollOver(
        _ service: inout ClusterService, slots: inout [Int: [Replica]], count: Int, newID: () -> String, messages: inout [String],
        history: [Replica], nodeOfSlot: [Int: String] = [:]
    ) {
        let placing = service.placing
        let policy = service.spec.update
        let paused = service.update.map { !$0.state.isActive } ?? false
        // A slot with two replicas: during a start-first update, the old one
        // goes once the new one runs; otherwise the newer version stays.
        for (slot, replicas) in slots where replicas.count > 1 {
            let sorted = replicas.sorted {
                ($0.version == service.version ? 1 : 0, $0.createdAt) > ($1.version == service.version ? 1 : 0, $1.createdAt)
            }
            let newest = sorted[0]
            if newest.version == service.version, newest.state != .running, sorted.count == 2, sorted[1].version != service.version {
                continue  // start-first: the old one serves until the new one runs
            }
            for extra in sorted.dropFirst() {
                shutDown(extra.id, extra.version != newest.version ? "replaced by version \(newest.version)" : "a second replica in slot \(slot)")
            }
            slots[slot] = [newest]
        }
        let monitor = policy.monitor
        let version = service.version
        let now = self.now
        let snapshot = slots
        // Slots that hold only outdated replicas (those still to update).
        let outdated = (1...max(count, 1)).filter { slot in
            guard slot <= count, let replicas = snapshot[slot], !replicas.isEmpty else { return false }
            return replicas.allSatisfy { $0.version != version }
        }
        // Slots whose new replica has not yet run for the monitor.
        let inFlight = (1...max(count, 1)).filter { slot in
            guard slot <= count, let newest = snapshot[slot]?.first(where: { $0.version == version }) else { return false }
            return !ServicePlanner.isSettled(newest, monitor: monitor, now: now)
        }
        if !outdated.isEmpty, !paused, service.update?.state.isActive ?? true {
            // The next batch starts once every new replica has run for the
            // monitor, and `delay` after the last of them did.
            let lastSettled = slots.values.flatMap { $0 }
                .filter { $0.version == service.version && $0.createdAt >= (service.update?.startedAt ?? .distantPast) }
                .compactMap { $0.runningSince.map { $0 + monitor } }.max()
            let delayed = lastSettled.map { $0 + policy.delay > now } ?? false
            if inFlight.isEmpty && !delayed {
                for slot in outdated.prefix(policy.parallelism) {
                    switch policy.order {
                    case .stopFirst:
                        for old in slots[slot] ?? [] { shutDown(old.id, "replaced by version \(service.version)") }
                        slots[slot] = []
                    case .startFirst:
                        let node = nodeOfSlot[slot] ?? ""
                        let made = makeReplica(service, placing, slot: service.spec.mode.isGlobal ? 0 : slot, node: node, history: [], newID: newID)
                        slots[slot, default: []].append(made)
                    }
                }
            }
        }
        // Empty slots: a new replica of the version being placed.
        if count > 0 {
            var historyBySlot: [String: [Replica]] = [:]
            for replica in history { historyBySlot[service.spec.mode.isGlobal ? replica.nodeID : String(replica.slot), default: []].append(replica) }
            for slot in 1...count where (slots[slot] ?? []).isEmpty {
                let node = nodeOfSlot[slot] ?? ""
                let slotHistory = historyBySlot[service.spec.mode.isGlobal ? node : String(slot)] ?? []
                let made = makeReplica(service, placing, slot: service.spec.mode.isGlobal ? 0 : slot, node: node, history: slotHistory, newID: newID)
                if made.isAssigned, let request = request(service, version: made.version) {
                    cluster.record(request, onNode: made.nodeID)
                }
                slots[slot] = [made]
            }
        }
        // Done: everything on the current version, and settled.
        if var status = service.update, status.state.isActive {
            let done = (count == 0 || (1...count).allSatisfy { slot in
                guard let replicas = slots[slot], replicas.count == 1, let only = replicas.first, only.version == service.version else { return false }
                return ServicePlanner.isSettled(only, monitor: monitor, now: now)
            })
            if done {
                status.state = status.state == .rollingBack ? .rolledBack : .completed
                status.completedAt = now
                if status.failed { status.message = status.message.replacingOccurrences(of: "rolling back after a failure", with: "rolled back after a failure") }
                service.update = status
            }
        }
    }

    /// Says why slots wait when their replicas keep failing.
    func backoffMessage(_ service: ClusterService, messages: inout [String]) {
        let waiting = (byService[service.id] ?? []).compactMap { current[$0] }
            .filter { $0.desiredState == .running && $0.attempt > 0 && $0.state == .pending }
            .sorted { $0.slot < $1.slot }
        guard let first = waiting.first else { return }
        messages.append(waiting.count == 1 ? first.message : "\(waiting.count) replicas keep failing: \(first.message)")
    }

    /// Global services and jobs: one replica per eligible node.
    mutating func planGlobal(_ service: inout ClusterService, history: [Replica], messages: inout [String], newID: () -> String) {
        let placing = service.placing
        let eligible = eligibleNodes(placing.spec).sorted { $0.id < $1.id }
        var live = (byService[service.id] ?? []).compactMap { current[$0] }.filter { $0.desiredState == .running }
        let eligibleIDs = Set(eligible.map(\.id))
        for replica in live where !eligibleIDs.contains(replica.nodeID) {
            shutDown(replica.id, "its node no longer takes the service")
        }
        if service.spec.mode == .globalJob {
            // A job reruns on a new version: what ran on an older one goes.
            for replica in live where replica.version != placing.version { shutDown(replica.id, "superseded by version \(placing.version)") }
        }
        live.removeAll { current[$0.id]?.desiredState != .running }
        // Slots are numbered over the eligible nodes; a node whose job completed needs nothing.
        var slots: [Int: [Replica]] = [:]
        var nodeOfSlot: [Int: String] = [:]
        var skipped: [String] = []
        var number = 0
        for node in eligible {
            let here = live.filter { $0.nodeID == node.id }
            if service.spec.mode == .globalJob && here.isEmpty == false && here.allSatisfy({ $0.state == .complete }) { continue }
            if here.isEmpty, let request = request(service, version: placing.version),
                let rejection = Scheduler.rejection(request, onNode: node.id, in: cluster)
            {
                skipped.append("\(node.hostname): \(rejection)")
                continue
            }
            number += 1
            slots[number] = here
            nodeOfSlot[number] = node.id
        }
        if service.spec.mode == .globalJob {
            for slot in slots.keys where slots[slot]?.contains(where: { $0.state == .complete }) == true { slots[slot] = slots[slot]?.filter { $0.state == .complete } }
        }
        rollOver(&service, slots: &slots, count: number, newID: newID, messages: &messages, history: history, nodeOfSlot: nodeOfSlot)
        if !skipped.isEmpty { messages.append("\(skipped.count) node\(skipped.count == 1 ? "" : "s") cannot take a replica: \(skipped.prefix(3).joined(separator: "; "))") }
        backoffMessage(service, messages: &messages)
    }

    /// Replicated jobs: `replicas` completions, at most `maxConcurrent` running at once.
    mutating func planJob(_ service: inout ClusterService, history: [Replica], messages: inout [String], newID: () -> String) {
        let placing = service.placing
        let completions = service.spec.replicas
        var live = (byService[service.id] ?? []).compactMap { current[$0] }.filter { $0.desiredState == .running }
        for replica in live where replica.version != placing.version || replica.slot > completions || replica.slot < 1 {
            shutDown(replica.id, replica.version != placing.version ? "superseded by version \(placing.version)" : "scaled down to \(completions)")
        }
        live.removeAll { current[$0.id]?.desiredState != .running }
        let done = Set(live.filter { $0.state == .complete }.map(\.slot))
        let active = Set(live.filter { $0.state != .complete }.map(\.slot))
        let room = service.spec.parallelism - active.count
        if room > 0, completions > 0 {
            for slot in (1...completions).filter({ !done.contains($0) && !active.contains($0) }).prefix(room) {
                _ = makeReplica(service, placing, slot: slot, node: "", history: history.filter { $0.slot == slot }, newID: newID)
            }
        }
        if var status = service.update, status.state.isActive, live.allSatisfy({ $0.version == service.version }) {
            status.state = status.state == .rollingBack ? .rolledBack : .completed
            status.completedAt = now
            service.update = status
        }
        placeWaiting(service, history: history, messages: &messages)
        backoffMessage(service, messages: &messages)
    }
}
