public import BerthModel
public import BerthScheduler
import Foundation
public import Logging

/// What one agent is to be brought to: the replicas placed on its node
/// (to run, or to be shut down) and their services.
public struct NodeWork: Sendable {
    public var node: ClusterNode
    public var replicas: [Replica]
    public var services: [String: ClusterService]
}

/// What an agent was found to hold, for a replica.
public enum ReplicaObservation: Sendable, Hashable {
    /// Its container's state now.
    case state(id: String, Replica.State, message: String, exitCode: Int?)
    /// Its container is gone from its node.
    case gone(id: String)
}

/// The services and their replicas: what operators ask for and what the
/// reconciler decided, kept in the store before anyone acts on it.
public actor ServiceManager {
    private let store: any ControllerStore
    private let logger: Logger
    /// The cluster's ID, put on every container the controller makes.
    public nonisolated let clusterID: String
    private var services: [String: ClusterService] = [:]
    private var replicas: [String: Replica] = [:]

    /// - Throws: what the store throws when its records cannot be read.
    public init(store: any ControllerStore, logger: Logger) throws {
        self.store = store
        self.logger = logger
        clusterID = try store.clusterID()
        for service in try store.services() { services[service.id] = service }
        for replica in try store.replicas() { replicas[replica.id] = replica }
    }

    // MARK: Operators' requests

    /// Checks `spec` and that all its replicas fit now; with `dryRun`, stores nothing.
    ///
    /// - Returns: the service (nil for a dry run), every node's verdict for
    ///   the first replica, each replica's node, and for a dry run whose
    ///   replicas do not all fit, why.
    /// - Throws: `BerthError.invalidArgument` for a bad spec,
    ///   `alreadyExists` for a name in use, `resourceExhausted` when the
    ///   replicas do not all fit ("insufficient memory on 3 of 3 nodes").
    public func create(_ spec: ServiceSpec, nodes: [ClusterNode], dryRun: Bool) throws -> (ClusterService?, [NodeVerdict], [String], String) {
        try spec.validate()
        if services.values.contains(where: { $0.spec.name == spec.name }) {
            throw BerthError(.alreadyExists, "service \"\(spec.name)\" already exists")
        }
        let now = Date()
        let service = ClusterService(id: RandomHex.make(25), spec: spec, createdAt: now, updatedAt: now)
        let request = try ServicePlanner.request(for: service)
        var cluster = ServicePlanner.cluster(nodes: nodes, services: services, replicas: replicas.values)
        let verdicts = Scheduler.explain(request, on: cluster)
        if dryRun {
            let (placed, unplaced) = Scheduler.placeAsMany(request, count: spec.replicas, on: &cluster)
            return (nil, verdicts, placed, unplaced?.message ?? "")
        }
        let placements = try Scheduler.place(request, count: spec.replicas, on: &cluster)
        try store.commit(StoreChange(services: [service]))
        services[service.id] = service
        logger.info("service created", metadata: ["service": "\(spec.name)", "replicas": "\(spec.replicas)"])
        return (service, verdicts, placements, "")
    }

    public func list() -> [(ClusterService, running: Int)] {
        // One pass over the replicas for all the services.
        var running: [String: Int] = [:]
        for replica in replicas.values where isRunning(replica) { running[replica.serviceID, default: 0] += 1 }
        return services.values.sorted { $0.spec.name < $1.spec.name }.map { ($0, running[$0.id] ?? 0) }
    }

    /// Replicas of the current version that run.
    public func running(of service: ClusterService) -> Int {
        replicas.values.count { $0.serviceID == service.id && isRunning($0) }
    }

    /// Whether a replica runs its service's current version.
    private func isRunning(_ replica: Replica) -> Bool {
        replica.desiredState == .running && replica.state == .running && replica.version == services[replica.serviceID]?.version
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

    /// Replaces a service's spec; its replicas roll over to the new one.
    ///
    /// - Throws: `BerthError` as `create` does, `failedPrecondition` when
    ///   the service changed since `expectedVersion`, or for a rename.
    public func update(_ reference: String, spec: ServiceSpec, expectedVersion: Int?, force: Bool, nodes: [ClusterNode]) throws -> ClusterService {
        var service = try get(reference)
        try spec.validate()
        if let expectedVersion, expectedVersion != service.version {
            throw BerthError(
                .failedPrecondition, "service \(service.spec.name) changed meanwhile (version \(service.version), not \(expectedVersion)); try again")
        }
        guard spec.name == service.spec.name else { throw BerthError(.failedPrecondition, "a service cannot be renamed") }
        guard spec != service.spec || force else { return service }
        var updated = service
        updated.spec = spec
        // Every replica moves to the new spec: it must fit where the old ones are gone.
        var cluster = ServicePlanner.cluster(nodes: nodes, services: services, replicas: replicas.values.filter { $0.serviceID != service.id })
        _ = try Scheduler.place(try ServicePlanner.request(for: updated), count: spec.replicas, on: &cluster)
        let onlyCount = spec.withReplicas(service.spec.replicas) == service.spec && !force
        service.spec = spec
        if !onlyCount { service.version += 1 }
        service.updatedAt = Date()
        try store.commit(StoreChange(services: [service]))
        services[service.id] = service
        logger.info("service updated", metadata: ["service": "\(spec.name)", "version": "\(service.version)"])
        return service
    }

    /// Changes the replica count only.
    public func scale(_ reference: String, replicas count: Int, nodes: [ClusterNode]) throws -> ClusterService {
        let service = try get(reference)
        return try update(service.id, spec: service.spec.withReplicas(count), expectedVersion: nil, force: false, nodes: nodes)
    }

    /// Removes the service; its replicas are shut down by the next pass.
    ///
    /// - Returns: the service's ID.
    public func remove(_ reference: String) throws -> String {
        let service = try get(reference)
        let now = Date()
        let stopping = replicas.values.filter { $0.serviceID == service.id && $0.desiredState == .running }.map { replica in
            var replica = replica
            replica.desiredState = .shutdown
            replica.message = "the service was removed"
            replica.updatedAt = now
            return replica
        }
        try store.commit(StoreChange(removedServices: [service.id], replicas: stopping))
        services[service.id] = nil
        for replica in stopping { replicas[replica.id] = replica }
        logger.info("service removed", metadata: ["service": "\(service.spec.name)"])
        return service.id
    }

    /// A service's replicas (every service's for nil), by service and slot;
    /// those being shut down only with `all`.
    public func replicaList(service reference: String?, all: Bool) throws -> [Replica] {
        let serviceID = try reference.map { try get($0).id }
        return replicas.values.filter { (serviceID == nil || $0.serviceID == serviceID) && (all || $0.desiredState == .running) }
            .sorted { ($0.serviceName, $0.slot, $0.createdAt) < ($1.serviceName, $1.slot, $1.createdAt) }
    }

    // MARK: The reconciler's side

    /// Decides this pass's changes and stores them.
    ///
    /// - Returns: each reachable node's work (every ready node, also those
    ///   with nothing placed: they may hold containers to remove).
    public func plan(nodes: [ClusterNode]) -> [NodeWork] {
        let change = ServicePlanner.plan(services: Array(services.values), replicas: Array(replicas.values), nodes: nodes, now: Date())
        do {
            try store.commit(change)
            for service in change.services { services[service.id] = service }
            for replica in change.replicas {
                if replicas[replica.id] == nil {
                    logger.info("replica placed", metadata: ["service": "\(replica.serviceName)", "slot": "\(replica.slot)", "node.id": "\(replica.nodeID)"])
                }
                replicas[replica.id] = replica
            }
        } catch {
            logger.error("the reconciler's decisions could not be stored; nothing was changed", metadata: ["error": "\(error)"])
        }
        var byNode: [String: [Replica]] = [:]
        for replica in replicas.values { byNode[replica.nodeID, default: []].append(replica) }
        return nodes.filter { $0.state == .ready }.map { NodeWork(node: $0, replicas: byNode[$0.id] ?? [], services: services) }
    }

    /// Records what agents reported; a replica being shut down whose
    /// container is gone is forgotten.
    public func observe(_ observations: [ReplicaObservation]) {
        var change = StoreChange()
        let now = Date()
        for observation in observations {
            switch observation {
            case .state(let id, let state, let message, let exitCode):
                guard var replica = replicas[id] else { continue }
                // A replica being shut down keeps saying why.
                let newMessage = replica.desiredState == .shutdown ? replica.message : message
                guard replica.state != state || replica.message != newMessage || replica.exitCode != exitCode else { continue }
                if replica.state == .orphaned && replica.desiredState == .shutdown { continue }
                replica.state = state
                replica.message = newMessage
                replica.exitCode = exitCode
                replica.updatedAt = now
                change.replicas.append(replica)
            case .gone(let id):
                guard let replica = replicas[id], replica.desiredState == .shutdown else { continue }
                change.removedReplicas.append(id)
            }
        }
        do {
            try store.commit(change)
            for replica in change.replicas { replicas[replica.id] = replica }
            for id in change.removedReplicas { replicas[id] = nil }
        } catch {
            logger.error("replica states could not be stored", metadata: ["error": "\(error)"])
        }
    }
}

extension ServiceSpec {
    func withReplicas(_ count: Int) -> ServiceSpec {
        var spec = self
        spec.replicas = count
        return spec
    }
}
