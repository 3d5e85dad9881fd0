public import BerthModel
import FoundationEssentials
import SwiftProtobuf

extension ServiceMode {
    public var proto: Berth_Controller_V1_ServiceMode {
        switch self {
        case .replicated: return .replicated
        case .global: return .global
        case .replicatedJob: return .replicatedJob
        case .globalJob: return .globalJob
        }
    }

    /// Unset is replicated.
    public init(proto: Berth_Controller_V1_ServiceMode) {
        switch proto {
        case .global: self = .global
        case .replicatedJob: self = .replicatedJob
        case .globalJob: self = .globalJob
        default: self = .replicated
        }
    }
}

extension UpdatePolicy {
    public var proto: Berth_Controller_V1_UpdatePolicy {
        .with {
            $0.parallelism = Int32(clamping: parallelism)
            $0.delayMs = Int64((delay * 1000).rounded())
            $0.monitorMs = Int64((monitor * 1000).rounded())
            $0.order = order == .startFirst ? .startFirst : .stopFirst
            switch failureAction {
            case .pause: $0.failureAction = .pause
            case .continue: $0.failureAction = .continue
            case .rollback: $0.failureAction = .rollback
            }
            $0.maxFailureRatio = maxFailureRatio
        }
    }

    /// Unset fields take their defaults.
    public init(proto p: Berth_Controller_V1_UpdatePolicy) {
        let action: FailureAction
        switch p.failureAction {
        case .continue: action = .continue
        case .rollback: action = .rollback
        default: action = .pause
        }
        self.init(
            parallelism: p.parallelism == 0 ? 1 : Int(p.parallelism), delay: Double(p.delayMs) / 1000,
            monitor: p.hasMonitorMs ? Double(p.monitorMs) / 1000 : 5, order: p.order == .startFirst ? .startFirst : .stopFirst,
            failureAction: action, maxFailureRatio: p.maxFailureRatio)
    }
}

extension ServiceSpec {
    public var proto: Berth_Controller_V1_ServiceSpec {
        .with {
            $0.name = name
            $0.replicas = Int32(clamping: replicas)
            $0.container = container.proto
            $0.constraints = constraints
            $0.placementPreferences = placementPreferences
            $0.updateParallelism = Int32(clamping: update.parallelism)
            $0.mode = mode.proto
            $0.maxConcurrent = Int32(clamping: maxConcurrent ?? 0)
            $0.maxReplicasPerNode = Int32(clamping: maxReplicasPerNode)
            $0.update = update.proto
            if let stopAfterDisconnect { $0.stopAfterDisconnectMs = Int64((stopAfterDisconnect * 1000).rounded()) }
            $0.networks = networks
            $0.endpointMode = endpointMode.rawValue
            $0.publish = publish.map(\.proto)
        }
    }

    /// - Throws: `BerthError.invalidArgument` for a container spec that does not convert.
    public init(proto p: Berth_Controller_V1_ServiceSpec) throws {
        var update = p.hasUpdate ? UpdatePolicy(proto: p.update) : UpdatePolicy()
        if !p.hasUpdate, p.updateParallelism > 0 { update.parallelism = Int(p.updateParallelism) }
        self.init(
            name: p.name, mode: ServiceMode(proto: p.mode), replicas: Int(p.replicas), maxConcurrent: p.maxConcurrent == 0 ? nil : Int(p.maxConcurrent),
            container: try ContainerSpec(proto: p.container), constraints: p.constraints, placementPreferences: p.placementPreferences,
            maxReplicasPerNode: Int(p.maxReplicasPerNode), update: update,
            stopAfterDisconnect: p.hasStopAfterDisconnectMs ? Double(p.stopAfterDisconnectMs) / 1000 : nil, networks: p.networks,
            endpointMode: try EndpointMode(parsing: p.endpointMode.isEmpty ? "vip" : p.endpointMode), publish: try p.publish.map(ServicePort.init(proto:)))
    }
}

extension UpdateStatus.State {
    public var proto: Berth_Controller_V1_UpdateState {
        switch self {
        case .updating: return .updating
        case .paused: return .paused
        case .completed: return .completed
        case .rollingBack: return .rollingBack
        case .rollbackPaused: return .rollbackPaused
        case .rolledBack: return .rolledBack
        }
    }

    /// nil for an unset state (no update yet).
    public init?(proto: Berth_Controller_V1_UpdateState) {
        switch proto {
        case .updating: self = .updating
        case .paused: self = .paused
        case .completed: self = .completed
        case .rollingBack: self = .rollingBack
        case .rollbackPaused: self = .rollbackPaused
        case .rolledBack: self = .rolledBack
        default: return nil
        }
    }
}

extension ClusterService {
    /// The service with what its replicas amount to.
    public func proto(
        running: Int, desired: Int, updated: Int, pending: Int, completed: Int, progress: Berth_Controller_V1_Progress, progressMessage: String
    ) -> Berth_Controller_V1_Service {
        .with {
            $0.id = id
            $0.spec = spec.proto
            $0.version = Int64(version)
            $0.revision = Int64(revision)
            $0.createdAt = Google_Protobuf_Timestamp(date: createdAt)
            $0.updatedAt = Google_Protobuf_Timestamp(date: updatedAt)
            $0.message = message
            $0.running = Int32(clamping: running)
            if let previous {
                $0.previousSpec = previous.spec.proto
                $0.previousVersion = Int64(previous.version)
            }
            if let update {
                $0.updateStatus = .with { status in
                    status.state = update.state.proto
                    status.startedAt = Google_Protobuf_Timestamp(date: update.startedAt)
                    if let completed = update.completedAt { status.completedAt = Google_Protobuf_Timestamp(date: completed) }
                    status.message = update.message
                    status.failed = update.failed
                }
            }
            $0.desired = Int32(clamping: desired)
            $0.updated = Int32(clamping: updated)
            $0.pending = Int32(clamping: pending)
            $0.completed = Int32(clamping: completed)
            $0.progress = progress
            $0.progressMessage = progressMessage
            $0.virtualIps = virtualIPs.proto
        }
    }
}

extension Replica {
    public func proto(hostname: String) -> Berth_Controller_V1_Replica {
        .with {
            $0.id = id
            $0.serviceID = serviceID
            $0.serviceName = serviceName
            $0.slot = Int32(clamping: slot)
            $0.version = Int64(version)
            $0.nodeID = nodeID
            $0.nodeHostname = hostname
            $0.containerName = containerName
            $0.desiredState = desiredState.rawValue
            $0.state = state.rawValue
            $0.message = message
            if let exitCode { $0.exitCode = Int32(clamping: exitCode) }
            $0.createdAt = Google_Protobuf_Timestamp(date: createdAt)
            $0.updatedAt = Google_Protobuf_Timestamp(date: updatedAt)
            if let notBefore { $0.notBefore = Google_Protobuf_Timestamp(date: notBefore) }
            $0.restartCount = Int32(clamping: restartCount)
            $0.attempt = Int32(clamping: attempt)
            $0.removed = removed
            $0.addresses = addresses.proto
        }
    }
}
