public import BerthModel
public import BerthScheduler
import Foundation
public import Logging

/// A service as operators see it: its record, and what its replicas amount to.
public struct ServiceStatus: Sendable, Hashable {
    public enum Progress: String, Sendable, Hashable {
        /// Every replica runs (a job: has completed) on the current spec.
        case converged
        /// Replicas are being placed, started or updated.
        case progressing
        /// Nothing moves without a change: replicas keep failing or fit no
        /// node, or the update paused or rolled back.
        case stalled
    }

    public var service: ClusterService
    /// Replicas wanted: the count, or for a global service its eligible nodes.
    public var desired: Int
    /// Replicas that run, of any version.
    public var running: Int
    /// Replicas of the current version that have run for the update monitor.
    public var updated: Int
    /// Replicas waiting for a node or for a backoff to pass.
    public var pending: Int
    /// Jobs: replicas that completed on the current spec.
    public var completed: Int
    public var progress: Progress
    /// Why it has stalled, or what it waits for.
    public var progressMessage: String
}

/// The services and their replicas: what operators ask for and what the
/// reconciler decided, kept in the store before anyone acts on it.
public actor ServiceManager {
    private let writer: StoreWriter
    private let logger: Logger
    private let metrics: ControllerMetrics?
    /// The cluster's ID, put on every container the controller makes.
    public nonisolated let clusterID: String
    private var services: [String: ClusterService] = [:]
    private var replicas: [String: Replica] = [:]
    /// Replicas by node, for each node's pass.
    private var byNode: [String: Set<String>] = [:]
    /// Overlay networks, by ID.
    private var networks: [String: OverlayNetwork] = [:]
    /// The nodes as of the last plan: where each node's VTEP is.
    private var knownNodes: [String: ClusterNode] = [:]

    /// - Parameters:
    ///   - contents: what the store held when this controller began to lead.
    ///   - writer: where every change goes.
    public init(contents: StoreContents, writer: StoreWriter, logger: Logger, metrics: ControllerMetrics? = nil) {
        self.writer = writer
        self.logger = logger
        self.metrics = metrics
        clusterID = contents.clusterID
        for service in contents.services { services[service.id] = service }
        for network in contents.networks { networks[network.id] = network }
        var replicas: [String: Replica] = [:]
        var byNode: [String: Set<String>] = [:]
        for replica in contents.replicas {
            replicas[replica.id] = replica
            if replica.isAssigned { byNode[replica.nodeID, default: []].insert(replica.id) }
        }
        self.replicas = replicas
        self.byNode = byNode
    }

    /// A manager of what `store` holds, with a writer of its own.
    ///
    /// - Throws: what the store throws when its records cannot be read.
    public init(store: any ControllerStore, logger: Logger, metrics: ControllerMetrics? = nil) async throws {
        self.init(contents: try await store.load(), writer: StoreWriter(store: store), logger: logger, metrics: metrics)
    }

    private func index(_ replica: Replica) {
        if let old = replicas[replica.id], old.nodeID != replica.nodeID { byNode[old.nodeID]?.remove(replica.id) }
        replicas[replica.id] = replica
        if replica.isAssigned { byNode[replica.nodeID, default: []].insert(replica.id) }
    }

    private func forget(_ id: String) {
        if let old = replicas.removeValue(forKey: id) { byNode[old.nodeID]?.remove(id) }
    }

    /// Changes the records in memory and hands the change to the writer,
    /// in one step; the caller answers once it is stored.
    private func apply(_ given: StoreChange) -> StoreCompletion {
        var change = given
        OverlayPlanner.assignAddresses(&change, networks: networks, services: services, replicas: replicas)
        for network in change.networks { networks[network.id] = network }
        for id in change.removedNetworks { networks[id] = nil }
        for service in change.services { services[service.id] = service }
        for id in change.removedServices { services[id] = nil }
        for replica in change.replicas { index(replica) }
        for id in change.removedReplicas { forget(id) }
        return writer.submit(change)
    }

    // MARK: Operators' requests

    /// Resolves short node IDs in `node.id` constraints to the node's full ID.
    ///
    /// - Throws: `BerthError.invalidArgument` for a prefix more than one node has.
    static func normalized(_ spec: ServiceSpec, nodes: [ClusterNode], networks: [String: OverlayNetwork] = [:]) throws -> ServiceSpec {
        var spec = spec
        spec.networks = try OverlayPlanner.resolve(spec.networks, in: networks)
        spec.constraints = try spec.constraints.map { text in
            let constraint = try Constraint(parsing: text)
            guard constraint.field == .id, constraint.value.count < 32 else { return text }
            let matches = nodes.filter { $0.id.hasPrefix(constraint.value) }
            if matches.count > 1 {
                throw BerthError.invalid("constraint \"\(text)\": \(constraint.value) is the start of \(matches.count) node IDs; give more of it")
            }
            guard let node = matches.first, constraint.value.count >= 12 else { return text }
            return "node.id\(constraint.op.rawValue)\(node.id)"
        }
        return spec
    }

    /// Checks `spec` and that its replicas fit now; with `dryRun`, stores nothing.
    ///
    /// - Returns: the service (nil for a dry run), every node's verdict for
    ///   the first replica, each replica's node, and for a dry run whose
    ///   replicas do not all fit, why.
    /// - Throws: `BerthError.invalidArgument` for a bad spec,
    ///   `alreadyExists` for a name in use, `resourceExhausted` when the
    ///   replicas do not all fit ("insufficient memory on 3 of 3 nodes").
    public func create(_ given: ServiceSpec, nodes: [ClusterNode], dryRun: Bool) async throws -> (ClusterService?, [NodeVerdict], [String], String) {
        try given.validate()
        let spec = try Self.normalized(given, nodes: nodes, networks: networks)
        if services.values.contains(where: { $0.spec.name == spec.name }) {
            throw BerthError(.alreadyExists, "service \"\(spec.name)\" already exists")
        }
        let now = Date()
        var service = ClusterService(id: RandomHex.make(25), spec: spec, createdAt: now, updatedAt: now)
        try OverlayPlanner.checkPorts(service, among: services.values)
        try OverlayPlanner.assignVirtualIPs(&service, networks: networks, services: services.values, replicas: replicas.values)
        let request = try ServicePlanner.request(for: service)
        var cluster = ServicePlanner.cluster(nodes: nodes, services: services, replicas: replicas.values)
        let verdicts = Scheduler.explain(request, on: cluster)
        let count = Self.fitCount(spec, verdicts: verdicts)
        if dryRun {
            let (placed, unplaced) = Scheduler.placeAsMany(request, count: count, on: &cluster)
            return (nil, verdicts, placed, unplaced?.message ?? "")
        }
        let placements = try Scheduler.place(request, count: count, on: &cluster)
        let stored = apply(StoreChange(services: [service]))
        logger.info("service created", metadata: ["service": "\(spec.name)", "mode": "\(spec.mode.rawValue)", "replicas": "\(spec.replicas)"])
        try await stored.stored()
        return (service, verdicts, placements, "")
    }

    /// How many replicas must fit at once for a spec to be taken: its
    /// count, a job's parallelism, one per node that takes a global service.
    static func fitCount(_ spec: ServiceSpec, verdicts: [NodeVerdict]) -> Int {
        switch spec.mode {
        case .replicated: return spec.replicas
        case .replicatedJob: return spec.replicas == 0 ? 0 : spec.parallelism
        case .global, .globalJob: return verdicts.contains { $0.rejection == nil } ? 1 : 0
        }
    }

    /// Every service with its status.
    public func list(nodes: [ClusterNode], now: Date = Date()) -> [ServiceStatus] {
        var byService: [String: [Replica]] = [:]
        for replica in replicas.values { byService[replica.serviceID, default: []].append(replica) }
        return services.values.sorted { $0.spec.name < $1.spec.name }.map { Self.status(of: $0, replicas: byService[$0.id] ?? [], nodes: nodes, now: now) }
    }

    /// One service's status.
    public func status(of service: ClusterService, nodes: [ClusterNode], now: Date = Date()) -> ServiceStatus {
        Self.status(of: service, replicas: replicas.values.filter { $0.serviceID == service.id }, nodes: nodes, now: now)
    }

    /// What a service's replicas amount to, and whether it has converged,
    /// is getting there, or has stalled (and why).
    static func status(of service: ClusterService, replicas: [Replica], nodes: [ClusterNode], now: Date) -> ServiceStatus {
        let spec = service.spec
        let live = replicas.filter { $0.desiredState == .running }
        let running = live.count { $0.state == .running }
        let pending = live.count { $0.state == .pending }
        let completed = live.count { $0.state == .complete && $0.version == service.version }
        let updated = live.count { $0.version == service.version && ServicePlanner.isSettled($0, monitor: spec.update.monitor, now: now) }
        let desired: Int
        switch spec.mode {
        case .replicated, .replicatedJob:
            desired = spec.replicas
        case .global, .globalJob:
            let constraints = (try? spec.constraints.map { try Constraint(parsing: $0) }) ?? []
            desired = nodes.count { node in
                node.state == .ready && node.availability == .active
                    && constraints.allSatisfy { $0.matches(ServicePlanner.schedulerNode(node)) }
            }
        }
        var progress = ServiceStatus.Progress.progressing
        var message = service.message
        let updateState = service.update?.state
        if let updateState, [.paused, .rollbackPaused, .rolledBack].contains(updateState), service.update?.failed == true {
            progress = .stalled
            message = service.update?.message ?? message
        } else if spec.mode.isJob ? completed >= desired : (updated >= desired
            && live.allSatisfy { $0.version == service.version } && !(updateState?.isActive ?? false))
        {
            // Converged once every replica has run for the monitor: a crash
            // loop's moments of running are not convergence.
            progress = .converged
            message = ""
        } else {
            // Stalled when every slot not yet running the current version
            // steadily is stuck: its replica fits no node, or its slot has
            // failed before and it has not yet run for the monitor.
            let monitor = spec.update.monitor
            let waiting = live.filter {
                !($0.version == service.version && ServicePlanner.isSettled($0, monitor: monitor, now: now)) && $0.state != .complete
            }
            let stuck = waiting.filter { ($0.state == .pending && (!$0.isAssigned && $0.message.hasPrefix("no node fits"))) || $0.attempt > 0 }
            if !waiting.isEmpty && stuck.count == waiting.count && !(updateState?.isActive ?? false) {
                progress = .stalled
                if let first = stuck.first, first.attempt > 0 {
                    // The slot's last failure says why.
                    let last = replicas.filter { $0.desiredState == .shutdown && $0.slot == first.slot && $0.nodeID != "" && ServicePlanner.isFailure($0) }
                        .max { $0.createdAt < $1.createdAt }
                    let slot = first.slot > 0 ? "replica \(first.slot)" : "a replica"
                    message = "\(stuck.count == 1 ? slot : "\(stuck.count) replicas") keep\(stuck.count == 1 ? "s" : "") failing (\(first.attempt) tries in a row)"
                        + (last.map { ": \($0.message)" } ?? "")
                } else if message.isEmpty {
                    message = stuck.first?.message ?? ""
                }
            }
        }
        return ServiceStatus(
            service: service, desired: desired, running: running, updated: updated, pending: pending, completed: completed, progress: progress,
            progressMessage: message)
    }

    /// By name, ID, or unique ID prefix.
    ///
    /// - Throws: `BerthError.notFound`, or `invalidArgument` for an ambiguous prefix.
    public func get(_ reference: String) throws -> ClusterService {
        if let service = services[reference] ?? services.values.first(where: { $0.spec.name == reference }) { return service }
        let matches = reference.isEmpty ? [] : services.values.filter { $0.id.hasPrefix(reference) }
        if matches.count == 1 { return matches[0] }
        if matches.count > 1 { throw BerthError.invalid("service \"\(reference)\" is ambiguous: \(matches.map(\.spec.name).sorted().joined(separator: ", "))") }
        throw BerthError.notFound("service", reference)
    }

    /// A replica by ID, unique ID prefix, or container name.
    ///
    /// - Throws: `BerthError.notFound`, or `invalidArgument` for an ambiguous prefix.
    public func replica(_ reference: String) throws -> Replica {
        if let replica = replicas[reference] { return replica }
        if let byName = replicas.values.first(where: { $0.containerName == reference }) { return byName }
        let matches = reference.count < 4 ? [] : replicas.values.filter { $0.id.hasPrefix(reference) }
        if matches.count == 1 { return matches[0] }
        if matches.count > 1 { throw BerthError.invalid("replica \"\(reference)\" is ambiguous") }
        throw BerthError.notFound("service or replica", reference)
    }

    /// Replaces a service's spec; its replicas roll over to the new one as
    /// its update policy says, and the old spec is kept for a rollback.
    ///
    /// - Throws: `BerthError` as `create` does, `failedPrecondition` when
    ///   the service changed since `expectedRevision`, or for a rename.
    public func update(_ reference: String, spec given: ServiceSpec, expectedRevision: Int?, force: Bool, nodes: [ClusterNode]) async throws
        -> ClusterService
    {
        let (service, stored) = try updated(reference, spec: given, expectedRevision: expectedRevision, force: force, nodes: nodes)
        try await stored?.stored()
        return service
    }

    /// `update`'s decision and its change in memory, in one step.
    private func updated(_ reference: String, spec given: ServiceSpec, expectedRevision: Int?, force: Bool, nodes: [ClusterNode]) throws
        -> (ClusterService, StoreCompletion?)
    {
        var service = try get(reference)
        try given.validate()
        let spec = try Self.normalized(given, nodes: nodes, networks: networks)
        if let expectedRevision, expectedRevision != service.revision {
            throw BerthError(
                .failedPrecondition, "service \(service.spec.name) changed meanwhile (revision \(service.revision), not \(expectedRevision)); try again")
        }
        guard spec.name == service.spec.name else { throw BerthError(.failedPrecondition, "a service cannot be renamed") }
        guard spec.mode == service.spec.mode else {
            throw BerthError(.failedPrecondition, "a service's mode cannot change (\(service.spec.mode.rawValue)); remove it and create it again")
        }
        guard spec != service.spec || force else { return (service, nil) }
        var updated = service
        updated.spec = spec
        // Every replica moves to the new spec: it must fit where the old ones are gone.
        var cluster = ServicePlanner.cluster(nodes: nodes, services: services, replicas: replicas.values.filter { $0.serviceID != service.id })
        let request = try ServicePlanner.request(for: updated)
        _ = try Scheduler.place(request, count: Self.fitCount(spec, verdicts: Scheduler.explain(request, on: cluster)), on: &cluster)
        let now = Date()
        let onlyCount = spec.mode != .replicatedJob && { var same = spec; same.replicas = service.spec.replicas; return same == service.spec }() && !force
        if !onlyCount {
            service.previous = VersionedSpec(version: service.version, spec: service.spec)
            service.version = max(service.version, service.previous?.version ?? 0, replicas.values.filter { $0.serviceID == service.id }.map(\.version).max() ?? 0) + 1
            service.update = UpdateStatus(state: .updating, startedAt: now)
        }
        service.spec = spec
        service.revision += 1
        service.updatedAt = now
        try OverlayPlanner.checkPorts(service, among: services.values)
        try OverlayPlanner.assignVirtualIPs(&service, networks: networks, services: services.values.filter { $0.id != service.id }, replicas: replicas.values)
        let stored = apply(StoreChange(services: [service]))
        logger.info("service updated", metadata: ["service": "\(spec.name)", "version": "\(service.version)"])
        return (service, stored)
    }

    /// Changes the replica count only (a job's completions).
    public func scale(_ reference: String, replicas count: Int, nodes: [ClusterNode]) async throws -> ClusterService {
        let service = try get(reference)
        guard !service.spec.mode.isGlobal else { throw BerthError(.failedPrecondition, "\(service.spec.name) is global: it has one replica per node") }
        var spec = service.spec
        spec.replicas = count
        let (scaled, stored) = try updated(service.id, spec: spec, expectedRevision: nil, force: false, nodes: nodes)
        try await stored?.stored()
        return scaled
    }

    /// Restores the spec before the last update, batch by batch.
    ///
    /// - Throws: `BerthError.failedPrecondition` for a service never updated.
    public func rollback(_ reference: String) async throws -> ClusterService {
        var service = try get(reference)
        guard let previous = service.previous else {
            throw BerthError(.failedPrecondition, "service \(service.spec.name) has no previous spec to roll back to (it was never updated)")
        }
        let now = Date()
        service.previous = VersionedSpec(version: service.version, spec: service.spec)
        service.spec = previous.spec
        service.version = previous.version
        service.revision += 1
        service.updatedAt = now
        service.update = UpdateStatus(state: .rollingBack, startedAt: now, message: "rollback requested")
        try OverlayPlanner.assignVirtualIPs(&service, networks: networks, services: services.values.filter { $0.id != service.id }, replicas: replicas.values)
        let stored = apply(StoreChange(services: [service]))
        logger.info("service rolling back", metadata: ["service": "\(service.spec.name)", "version": "\(service.version)"])
        try await stored.stored()
        return service
    }

    /// Removes the service; its replicas are shut down by the next pass.
    ///
    /// - Returns: the service's ID.
    public func remove(_ reference: String) async throws -> String {
        let service = try get(reference)
        let now = Date()
        let stopping = replicas.values.filter { $0.serviceID == service.id && $0.desiredState == .running }.map { replica in
            var replica = replica
            replica.desiredState = .shutdown
            replica.message = "the service was removed"
            replica.updatedAt = now
            if !replica.isAssigned { replica.removed = true }
            return replica
        }
        let stored = apply(StoreChange(removedServices: [service.id], replicas: stopping))
        logger.info("service removed", metadata: ["service": "\(service.spec.name)"])
        try await stored.stored()
        return service.id
    }

    // MARK: Overlay networks

    /// Creates an overlay network; agents make it on a node when a replica
    /// on it is placed there.
    ///
    /// - Throws: what `OverlayPlanner.network` throws; nothing is stored then.
    public func createNetwork(name: String, subnet: String?, gateway: String?, internal: Bool, labels: [String: String]) async throws -> OverlayNetwork {
        let network = try OverlayPlanner.network(
            name: name, subnet: subnet, gateway: gateway, internal: `internal`, labels: labels, existing: Array(networks.values), id: RandomHex.make(),
            now: Date())
        let stored = apply(StoreChange(networks: [network]))
        logger.info("overlay network created", metadata: ["network": "\(name)", "subnet": "\(network.subnet)", "vni": "\(network.vni)"])
        try await stored.stored()
        return network
    }

    /// Every overlay network, by name.
    public func networkList() -> [OverlayNetwork] {
        networks.values.sorted { $0.name < $1.name }
    }

    /// By name, ID or an unambiguous ID prefix.
    ///
    /// - Throws: `BerthError.notFound`.
    public func network(_ reference: String) throws -> OverlayNetwork {
        guard let id = try OverlayPlanner.resolve([reference], in: networks).first, let network = networks[id] else {
            throw BerthError.notFound("network", reference)
        }
        return network
    }

    /// The services on a network (their current or previous spec).
    public func networkUsers(_ id: String) -> [String] {
        services.values.filter { $0.spec.networks.contains(id) || $0.previous?.spec.networks.contains(id) == true }.map(\.spec.name).sorted()
    }

    /// Removes an overlay network no service uses. Containers of removed
    /// services still being stopped keep it on their node until they are
    /// gone (a node that is down, until it returns).
    ///
    /// - Throws: `BerthError.failedPrecondition` naming the users; nothing changes then.
    public func removeNetwork(_ reference: String) async throws -> String {
        let network = try network(reference)
        let users = networkUsers(network.id)
        guard users.isEmpty else {
            throw BerthError(.failedPrecondition, "network \(network.name) is in use by service\(users.count == 1 ? "" : "s") \(users.joined(separator: ", "))")
        }
        let stored = apply(StoreChange(removedNetworks: [network.id]))
        logger.info("overlay network removed", metadata: ["network": "\(network.name)"])
        try await stored.stored()
        return network.id
    }

    /// A service's replicas (every service's for nil), by service and slot:
    /// those meant to run, and with `all` those being shut down and each
    /// slot's history too, newest first within a slot.
    public func replicaList(service reference: String?, all: Bool) throws -> [Replica] {
        let serviceID = try reference.map { try get($0).id }
        return replicas.values.filter { (serviceID == nil || $0.serviceID == serviceID) && (all || $0.desiredState == .running) }
            .sorted {
                ($0.serviceName, $0.slot, $0.nodeID, $0.desiredState == .running ? 0 : 1, -$0.createdAt.timeIntervalSince1970)
                    < ($1.serviceName, $1.slot, $1.nodeID, $1.desiredState == .running ? 0 : 1, -$1.createdAt.timeIntervalSince1970)
            }
    }

    /// What a scrape of `/metrics` reads.
    func snapshot() -> (services: [ClusterService], replicas: [Replica]) {
        (Array(services.values), Array(replicas.values))
    }

    // MARK: The reconciler's side

    /// Decides this pass's changes and stores them.
    ///
    /// - Returns: whether anything changed.
    @discardableResult
    public func plan(nodes: [ClusterNode], now: Date = Date()) async -> Bool {
        knownNodes = Dictionary(nodes.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let change = ServicePlanner.plan(services: Array(services.values), replicas: Array(replicas.values), nodes: nodes, now: now)
        guard !change.isEmpty else { return false }
        do {
            var placed = 0
            for replica in change.replicas where replica.isAssigned && replicas[replica.id].map({ !$0.isAssigned }) ?? true {
                placed += 1
                logger.debug("replica placed", metadata: ["service": "\(replica.serviceName)", "slot": "\(replica.slot)", "node.id": "\(replica.nodeID)"])
            }
            for service in change.services where services[service.id]?.update?.state != service.update?.state {
                logger.info(
                    "service update state", metadata: ["service": "\(service.spec.name)", "state": "\(service.update?.state.rawValue ?? "")", "message": "\(service.update?.message ?? "")"])
            }
            try await apply(change).stored()
            metrics?.placed(placed)
        } catch {
            logger.error("the reconciler's decisions could not be stored; the controller reads the store again", metadata: ["error": "\(error)"])
            return false
        }
        return true
    }

    /// What `node`'s agent is to be brought to (a node with no replicas
    /// may still hold containers to remove: its work is empty, not absent).
    ///
    /// - Returns: nil when the store failed: nothing is to be done on
    ///   records that may not be stored.
    public func work(for node: ClusterNode) async -> NodeWork? {
        let onNode = (byNode[node.id] ?? []).compactMap { replicas[$0] }.filter { !$0.removed }
        var specs: [String: ServiceSpec] = [:]
        for replica in onNode where replica.desiredState == .running {
            guard let service = services[replica.serviceID] else { continue }
            let key = NodeWork.key(service: service.id, version: replica.version)
            if specs[key] != nil { continue }
            if replica.version == service.version {
                specs[key] = service.spec
            } else if let previous = service.previous, previous.version == replica.version {
                specs[key] = previous.spec
            }
        }
        var nodes = knownNodes
        nodes[node.id] = node
        let addressed = OverlayPlanner.assignNodeAddresses(for: node, networks: networks, services: services, replicas: replicas.values)
        if !addressed.isEmpty { _ = apply(StoreChange(networks: addressed)) }
        let overlays = OverlayPlanner.states(for: node, nodes: nodes, networks: networks, services: services, replicas: replicas.values)
        let work = NodeWork(node: node, replicas: onNode, specs: specs, clusterID: clusterID, overlays: overlays)
        // Nothing is started for a placement before it is stored: a change
        // of nothing is stored once every change before it is.
        do {
            try await writer.submit(StoreChange()).stored()
        } catch {
            return nil
        }
        return work
    }

    /// Records what a node pass learned; a replica being shut down whose
    /// container is gone becomes history.
    ///
    /// - Returns: whether anything changed (the planner has new facts).
    @discardableResult
    public func observe(_ reports: [ReplicaReport], now: Date = Date()) async -> Bool {
        var change = StoreChange()
        var failed = 0
        for report in reports {
            guard let replica = replicas[report.id] else { continue }
            let isJob = services[replica.serviceID]?.spec.mode.isJob ?? false
            let next = replica.applying(report, isJob: isJob, now: now)
            guard next != replica else { continue }
            if next.state == .failed || next.state == .exited, replica.state != next.state { failed += 1 }
            change.replicas.append(next)
        }
        guard !change.isEmpty else { return false }
        do {
            try await apply(change).stored()
            metrics?.failed(failed)
        } catch {
            logger.error("replica states could not be stored; the controller reads the store again", metadata: ["error": "\(error)"])
            return false
        }
        return true
    }
}
