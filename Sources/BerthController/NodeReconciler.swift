public import BerthModel
public import Foundation

/// What one node's agent is to be brought to: the replicas placed on it
/// whose container may exist (those to run, and those being shut down
/// whose container has not been seen gone), with the specs they run.
public struct NodeWork: Sendable {
    /// The node.
    public var node: ClusterNode
    /// Its replicas whose container may exist.
    public var replicas: [Replica]
    /// Each replica's service spec, by `NodeWork.key(service:version:)`.
    public var specs: [String: ServiceSpec]
    /// The cluster's ID, a label on every container the controller makes.
    public var clusterID: String
    /// What the agent must know of the overlay networks its replicas are
    /// on, before any of them runs; nil when the node has no VTEP address.
    public var overlays: [OverlayState]?

    public init(node: ClusterNode, replicas: [Replica], specs: [String: ServiceSpec], clusterID: String, overlays: [OverlayState]? = []) {
        self.overlays = overlays
        self.node = node
        self.replicas = replicas
        self.specs = specs
        self.clusterID = clusterID
    }

    /// The key of a spec in `specs`.
    public static func key(service: String, version: Int) -> String { "\(service)@\(version)" }

    /// The spec `replica` runs, nil when the service (or that version) is gone.
    public func spec(of replica: Replica) -> ServiceSpec? { specs[Self.key(service: replica.serviceID, version: replica.version)] }
}

/// One thing to do on a node's agent.
public enum NodeAction: Sendable, Hashable {
    /// Make and start a replica's container (pulling its image when the node lacks it).
    case run(replica: String, spec: ContainerSpec)
    /// Start a replica's container that was made but never started.
    case start(replica: String, container: String)
    /// Stop and remove a container: of a replica being shut down, or one no record claims.
    case remove(replica: String?, container: String, name: String, stopTimeout: Int)

    /// What an action is known by while it runs: a replica's ID, or a container's.
    public var key: String {
        switch self {
        case .run(let replica, _), .start(let replica, _): return replica
        case .remove(_, let container, _, _): return container
        }
    }

    /// The replica the action is for, if any.
    public var replica: String? {
        switch self {
        case .run(let replica, _), .start(let replica, _): return replica
        case .remove(let replica, _, _, _): return replica
        }
    }
}

/// What the agent showed of a replica's container.
public struct ContainerReport: Sendable, Hashable {
    /// The container's state on its node.
    public var state: ContainerState
    /// Its last exit code, once it exited.
    public var exitCode: Int?
    /// Why it ended, or why it could not start.
    public var message: String
    /// Restarts its agent made under the restart policy.
    public var restartCount: Int
    /// Whether its restart policy brings it back by itself.
    public var willRestart: Bool
    /// Its health while it runs, when it has a health check.
    public var health: HealthStatus?
    /// The last health probe's output, when it failed.
    public var healthOutput: String
    /// Its agent stops or restarts it itself when it turns unhealthy
    /// (`--health-on-failure` other than none).
    public var agentActsOnHealth: Bool

    public init(
        state: ContainerState, exitCode: Int? = nil, message: String = "", restartCount: Int = 0, willRestart: Bool = false,
        health: HealthStatus? = nil, healthOutput: String = "", agentActsOnHealth: Bool = false
    ) {
        self.state = state
        self.exitCode = exitCode
        self.message = message
        self.restartCount = restartCount
        self.willRestart = willRestart
        self.health = health
        self.healthOutput = healthOutput
        self.agentActsOnHealth = agentActsOnHealth
    }

    /// What `container` shows.
    public init(_ container: Container) {
        let status = container.status
        let code = status.exitCode.map(Int.init)
        var message = ""
        if status.state == .exited || status.state == .dead {
            if let error = status.error, !error.isEmpty {
                message = error
            } else if status.reason == .oomKilled {
                message = "out of memory (OOMKilled)"
            } else if status.stoppedByUser {
                message = "stopped on its node" + (status.signal.map { " (\($0))" } ?? code.map { " (exit \($0))" } ?? "")
            } else if let signal = status.signal {
                message = "killed by \(signal)"
            } else if let code {
                message = "exited (\(code))"
            }
        }
        let lastProbe = status.health?.log.last
        self.init(
            state: status.state, exitCode: code, message: message, restartCount: status.restartCount,
            willRestart: status.state == .exited
                && container.spec.restartPolicy.shouldRestart(
                    exitCode: status.exitCode ?? 0, restartCount: status.restartCount, stoppedByUser: status.stoppedByUser),
            health: status.state.isActive ? status.health?.status : nil,
            healthOutput: lastProbe.map { probe in
                let output = probe.output.trimmingCharacters(in: .whitespacesAndNewlines)
                return probe.exitCode == 0 ? "" : output.isEmpty ? "its check exited \(probe.exitCode)" : output
            } ?? "",
            agentActsOnHealth: container.spec.healthOnFailure != .none)
    }
}

/// What a node pass learned of a replica.
public enum ReplicaReport: Sendable, Hashable {
    /// Its container, as the agent shows it.
    case container(id: String, ContainerReport)
    /// It could not be made or started.
    case failed(id: String, message: String)
    /// It has no container on its node.
    case gone(id: String)

    /// The replica's ID.
    public var id: String {
        switch self {
        case .container(let id, _), .failed(let id, _), .gone(let id): return id
        }
    }
}

/// Brings one node's records and its agent's containers together: pure,
/// from what the agent listed and what is already under way, to the
/// actions to take and what to record. A replica's container name is fixed
/// (`SERVICE.SLOT.ID12`), so a controller killed between its decision and
/// the agent's answer finds the container on its next pass instead of
/// making a second one.
public enum NodeReconciler {
    /// - Parameters:
    ///   - containers: what the agent holds of this cluster.
    ///   - busy: keys of actions under way (replica IDs, container IDs);
    ///     nothing is decided about them this time.
    public static func plan(_ work: NodeWork, containers: [Container], busy: Set<String>, now: Date) -> (actions: [NodeAction], reports: [ReplicaReport]) {
        var actions: [NodeAction] = []
        var reports: [ReplicaReport] = []
        let records = Dictionary(work.replicas.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var present: Set<String> = []

        for container in containers {
            let replicaID = container.spec.labels[ReplicaLabel.replica] ?? ""
            let replica = records[replicaID]
            if let replica, replica.nodeID == work.node.id, container.name == replica.containerName { present.insert(replica.id) }
            guard let replica, replica.desiredState == .running, replica.nodeID == work.node.id, container.name == replica.containerName,
                replica.state != .failed, replica.state != .exited
            else {
                // Shut down, replaced, failed, or claimed by no record: it goes.
                guard !busy.contains(container.id.rawValue), replica.map({ !busy.contains($0.id) }) ?? true else { continue }
                actions.append(
                    .remove(
                        replica: replica?.id, container: container.id.rawValue, name: container.name,
                        stopTimeout: container.spec.stopTimeout ?? 10))
                continue
            }
            guard !busy.contains(replica.id) else { continue }
            // A job's replica that is done stays as it is.
            if replica.state == .complete { continue }
            if container.status.state == .created && container.status.startedAt == nil && container.status.restartCount == 0 {
                // Made, but its start did not happen: start it.
                actions.append(.start(replica: replica.id, container: container.id.rawValue))
                continue
            }
            reports.append(.container(id: replica.id, ContainerReport(container)))
        }

        for replica in work.replicas where !present.contains(replica.id) && !busy.contains(replica.id) {
            switch replica.desiredState {
            case .shutdown:
                reports.append(.gone(id: replica.id))
            case .running:
                switch replica.state {
                case .pending:
                    guard (replica.notBefore ?? .distantPast) <= now, let spec = work.spec(of: replica) else { continue }
                    // A replica on an overlay runs once it has its address
                    // and the agent can be told where its peers are.
                    if !spec.networks.isEmpty {
                        guard spec.networks.allSatisfy({ replica.addresses[$0] != nil }) else { continue }
                        guard work.overlays != nil else {
                            reports.append(.failed(id: replica.id, message: "node \(work.node.hostname) has no IPv4 address for overlay traffic (its agent's --listen)"))
                            continue
                        }
                    }
                    actions.append(.run(replica: replica.id, spec: containerSpec(for: replica, spec: spec, clusterID: work.clusterID)))
                case .created, .starting, .running, .exited:
                    // It was there: someone removed it.
                    reports.append(.failed(id: replica.id, message: "its container was removed from node \(work.node.hostname)"))
                case .failed, .complete, .orphaned, .shutdown:
                    break
                }
            }
        }
        return (actions, reports)
    }

    /// The container a replica runs: the service's, with the replica's
    /// name and the labels that tie it to the cluster, the service and the record.
    public static func containerSpec(for replica: Replica, spec: ServiceSpec, clusterID: String) -> ContainerSpec {
        var container = spec.container
        container.name = replica.containerName
        container.labels[ReplicaLabel.cluster] = clusterID
        container.labels[ReplicaLabel.service] = spec.name
        container.labels[ReplicaLabel.replica] = replica.id
        if let seconds = spec.stopAfterDisconnect { container.labels[ReplicaLabel.stopAfterDisconnect] = DurationText.format(seconds) }
        // On an overlay: the network by its ID (the agent has it under the
        // same one), at the address the controller gave the replica.
        if let network = spec.networks.first, let address = replica.addresses[network] {
            container.network = network
            container.ipv4Address = address.description
            let more = spec.networks.dropFirst().compactMap { id in replica.addresses[id].map { NetworkAttachment(network: id, ipv4Address: $0.description) } }
            container.additionalNetworks = more.isEmpty ? nil : more
        }
        for port in spec.publish where port.mode == .host {
            container.ports.append(PortMapping(hostPort: port.published, containerPort: port.target, transport: port.transport))
        }
        return container
    }
}

extension Replica {
    /// The record after `report`, as of `now`: its state, when it began to
    /// run, its restarts; a crash loop (restarts in a row without running
    /// steadily) fails it, and a job's replica that exited 0 is complete.
    ///
    /// - Parameter isJob: whether the replica's service is a job.
    public func applying(_ report: ReplicaReport, isJob: Bool, now: Date) -> Replica {
        var next = self
        switch report {
        case .gone:
            guard desiredState == .shutdown else { return self }
            next.removed = true
            if [.pending, .created, .starting, .running].contains(state) { next.state = .shutdown }
        case .failed(_, let message):
            guard desiredState == .running else { return self }
            next.state = .failed
            next.message = message
            next.exitCode = nil
        case .container(_, let container):
            guard desiredState == .running, state != .complete else { return self }
            next.restartCount = container.restartCount
            switch container.state {
            case .running, .paused:
                switch container.health {
                case .unhealthy? where !container.agentActsOnHealth:
                    // As swarm: an unhealthy replica has failed, and is replaced.
                    next.state = .failed
                    next.exitCode = nil
                    next.message = "unhealthy" + (container.healthOutput.isEmpty ? "" : ": \(container.healthOutput.prefix(200))")
                case .starting?, .unhealthy?:
                    // Running, but not yet healthy (or being restarted by
                    // its agent for its health): it does not count as running.
                    next.state = .starting
                    next.runningSince = nil
                    next.exitCode = nil
                    next.message = container.health == .starting ? "waiting for its health check to pass" : "unhealthy; its agent restarts it"
                case .healthy?, nil:
                    if state != .running || restartCount != container.restartCount { next.runningSince = now }
                    next.state = .running
                    next.message = ""
                    next.exitCode = nil
                    if let since = next.runningSince, now.timeIntervalSince(since) >= ServicePlanner.steadyAfter {
                        next.steadyRestarts = container.restartCount
                    }
                }
            case .created, .exited, .dead:
                if container.willRestart {
                    next.state = .created
                    next.exitCode = container.exitCode
                    next.message = container.message.isEmpty ? "restarting" : "\(container.message); restarting"
                } else if container.state == .created {
                    next.state = .created
                } else if isJob && container.exitCode == 0 {
                    next.state = .complete
                    next.exitCode = 0
                    next.message = ""
                } else {
                    next.state = .exited
                    next.exitCode = container.exitCode
                    next.message = container.message
                }
            }
            if next.state != .exited && next.state != .complete && next.state != .failed
                && container.restartCount - steadyRestarts >= ServicePlanner.crashLoopRestarts
            {
                next.state = .failed
                next.message = "restarted \(container.restartCount - steadyRestarts) times in a row"
                    + (container.message.isEmpty ? "" : " (last: \(container.message.replacingOccurrences(of: "; restarting", with: "")))")
            }
        }
        guard next != self else { return self }
        next.updatedAt = now
        return next
    }
}
