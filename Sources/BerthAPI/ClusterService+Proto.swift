public import BerthModel
import FoundationEssentials
import SwiftProtobuf

extension ServiceSpec {
    public var proto: Berth_Controller_V1_ServiceSpec {
        .with {
            $0.name = name
            $0.replicas = Int32(clamping: replicas)
            $0.container = container.proto
            $0.constraints = constraints
            $0.placementPreferences = placementPreferences
            $0.updateParallelism = Int32(clamping: updateParallelism)
        }
    }

    /// - Throws: `BerthError.invalidArgument` for a container spec that does not convert.
    public init(proto p: Berth_Controller_V1_ServiceSpec) throws {
        self.init(
            name: p.name, replicas: Int(p.replicas), container: try ContainerSpec(proto: p.container), constraints: p.constraints,
            placementPreferences: p.placementPreferences, updateParallelism: p.updateParallelism == 0 ? 1 : Int(p.updateParallelism))
    }
}

extension ClusterService {
    /// - Parameter running: replicas of the current version that run.
    public func proto(running: Int) -> Berth_Controller_V1_Service {
        .with {
            $0.id = id
            $0.spec = spec.proto
            $0.version = Int64(version)
            $0.createdAt = Google_Protobuf_Timestamp(date: createdAt)
            $0.updatedAt = Google_Protobuf_Timestamp(date: updatedAt)
            $0.message = message
            $0.running = Int32(clamping: running)
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
        }
    }
}
