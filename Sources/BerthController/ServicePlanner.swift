import BerthModel
import BerthScheduler
import Foundation

/// The decisions of one reconcile pass, made from records alone: which
/// replicas to shut down (their service gone, their node down or drained,
/// scaled away, rolled over by an update) and where new ones go. No agent
/// is called here; what is decided is stored before any agent acts on it.
enum ServicePlanner {
    /// A replica whose agent could not make it is replaced after this long.
    static let failedReplicaBackoff: TimeInterval = 5

    /// What one replica of `service` asks of the scheduler.
    ///
    /// - Throws: `BerthError.invalidArgument` for a constraint or placement
    ///   preference that does not parse.
    static func request(for service: ClusterService) throws -> PlacementRequest {
        let spec = service.spec
        guard spec.placementPreferences.count <= 1 else {
            throw BerthError.invalid("--placement-pref: one spread preference is supported, \(spec.placementPreferences.count) were given")
        }
        let resources = spec.container.resources
        return PlacementRequest(
            service: service.id, name: spec.name,
            resources: Resources2D(
                milliCPU: (resources.cpus?.nanoCPUs ?? 0) / 1_000_000, memoryBytes: resources.memory?.bytes ?? 0),
            constraints: try spec.constraints.map { try Constraint(parsing: $0) },
            ports: spec.container.ports.map { HostPort($0.hostPort, $0.transport) },
            strategy: try spec.placementPreferences.first.map { try PlacementStrategy(parsingPreference: $0) } ?? .binpack)
    }

    /// The nodes as the scheduler sees them, with what the replicas that
    /// should run on them request.
    static func cluster(nodes: [ClusterNode], services: [String: ClusterService], replicas: some Sequence<Replica>) -> Cluster {
        var cluster = Cluster(nodes: nodes.map { node in
            let availability: NodeAvailability =
                node.state == .down ? .down : node.availability == .drain ? .draining : .ready
            return SchedulerNode(
                id: node.id, hostname: node.hostname, labels: node.labels, availability: availability,
                allocatable: Resources2D(milliCPU: Int64(node.allocatable.cpus) * 1000, memoryBytes: node.allocatable.memoryBytes))
        })
        // One request per service, not per replica (a request parses its constraints).
        let requests = services.compactMapValues { try? request(for: $0) }
        for replica in replicas where replica.desiredState == .running {
            guard let request = requests[replica.serviceID] else { continue }
            cluster.record(request, onNode: replica.nodeID)
        }
        return cluster
    }

    /// One pass's decisions.
    ///
    /// - Returns: the replicas and services that change; nothing is stored yet.
    static func plan(
        services: [ClusterService], replicas: [Replica], nodes: [ClusterNode], now: Date, newID: () -> String = { RandomHex.make(32) }
    ) -> StoreChange {
        var current = Dictionary(uniqueKeysWithValues: replicas.map { ($0.id, $0) })
        var byService: [String: [String]] = [:]
        for replica in replicas { byService[replica.serviceID, default: []].append(replica.id) }
        var changed: Set<String> = []
        let servicesByID = Dictionary(uniqueKeysWithValues: services.map { ($0.id, $0) })
        let nodesByID = Dictionary(uniqueKeysWithValues: nodes.map { ($0.id, $0) })

        func shutDown(_ id: String, _ why: String, orphaned: Bool = false) {
            guard var replica = current[id], replica.desiredState == .running else { return }
            replica.desiredState = .shutdown
            replica.message = why
            if orphaned { replica.state = .orphaned }
            replica.updatedAt = now
            current[id] = replica
            changed.insert(id)
        }

        // Replicas that can no longer run where they are.
        for replica in replicas where replica.desiredState == .running {
            guard servicesByID[replica.serviceID] != nil else {
                shutDown(replica.id, "the service was removed")
                continue
            }
            guard let node = nodesByID[replica.nodeID] else {
                shutDown(replica.id, "node \(replica.nodeID.prefix(12)) is not in the cluster", orphaned: true)
                continue
            }
            if node.state == .down {
                shutDown(replica.id, "node \(node.hostname) is down", orphaned: true)
            } else if node.availability == .drain {
                shutDown(replica.id, "node \(node.hostname) is drained")
            } else if replica.state == .failed, replica.exitCode == nil, now.timeIntervalSince(replica.updatedAt) >= failedReplicaBackoff {
                shutDown(replica.id, "replaced: \(replica.message)")
            }
        }

        var changedServices: [ClusterService] = []
        var cluster = cluster(nodes: nodes, services: servicesByID, replicas: current.values)
        for var service in services.sorted(by: { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }) {
            let wanted = service.spec.replicas
            let request: PlacementRequest
            do {
                request = try Self.request(for: service)
            } catch {
                if "\(error)" != service.message {
                    service.message = "\(error)"
                    changedServices.append(service)
                }
                continue
            }
            /// Shuts a replica down and gives back what it held on its node.
            func release(_ replica: Replica, _ why: String) {
                shutDown(replica.id, why)
                cluster.remove(request, fromNode: replica.nodeID)
            }
            var live = (byService[service.id] ?? []).compactMap { current[$0] }.filter { $0.desiredState == .running }
                .sorted { ($0.slot, -$0.version, $0.createdAt) < ($1.slot, -$1.version, $1.createdAt) }
            // Scaled down, and any second replica in one slot.
            var seen: Set<Int> = []
            for replica in live where replica.slot > wanted || !seen.insert(replica.slot).inserted {
                release(replica, replica.slot > wanted ? "scaled down to \(wanted)" : "a second replica in slot \(replica.slot)")
            }
            live.removeAll { current[$0.id]?.desiredState != .running }

            // A rolling update: stop-first, at most updateParallelism
            // replicas of the new version on their way up at once.
            var message = ""
            let outdated = live.filter { $0.version < service.version }
            let inFlight = live.filter { $0.version == service.version && $0.state != .running }
            let budget = max(0, service.spec.updateParallelism - inFlight.count)
            for replica in outdated.prefix(budget) { release(replica, "replaced by version \(service.version)") }
            if !outdated.isEmpty, budget == 0, let failed = inFlight.first(where: { $0.state == .failed || $0.state == .exited }) {
                message = "update paused: replica \(failed.slot) of version \(service.version) is \(failed.state.rawValue): \(failed.message)"
            }

            // Empty slots get new replicas: all of them if they fit, else as many as fit.
            let filled = Set(live.compactMap { current[$0.id]?.desiredState == .running ? $0.slot : nil })
            let missing = wanted > 0 ? (1...wanted).filter { !filled.contains($0) } : []
            if !missing.isEmpty {
                let (placed, unplaced) = Scheduler.placeAsMany(request, count: missing.count, on: &cluster)
                if let unplaced { message = unplaced.message }
                for (slot, node) in zip(missing, placed) {
                    let replica = Replica(
                        id: newID(), serviceID: service.id, serviceName: service.spec.name, slot: slot, version: service.version,
                        nodeID: node, createdAt: now, updatedAt: now)
                    current[replica.id] = replica
                    changed.insert(replica.id)
                }
            }
            if message != service.message {
                service.message = message
                changedServices.append(service)
            }
        }
        return StoreChange(services: changedServices, replicas: changed.sorted().compactMap { current[$0] })
    }
}
