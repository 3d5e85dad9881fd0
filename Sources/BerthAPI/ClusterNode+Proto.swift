public import BerthModel
import FoundationEssentials
import SwiftProtobuf

extension NodeCapacity {
    /// Whole CPUs as thousandths, for the controller's wire.
    public var clusterProto: Berth_Controller_V1_NodeResources {
        .with {
            $0.milliCpu = Int64(cpus) * 1000
            $0.memoryBytes = memoryBytes
        }
    }

    public init(clusterProto p: Berth_Controller_V1_NodeResources) {
        self.init(cpus: Int(p.milliCpu / 1000), memoryBytes: p.memoryBytes)
    }
}

extension ClusterNode {
    public var proto: Berth_Controller_V1_ClusterNode {
        .with {
            $0.id = id
            $0.hostname = hostname
            $0.address = address
            $0.labels = operatorLabels
            $0.agentLabels = agentLabels
            $0.capacity = capacity.clusterProto
            $0.allocatable = allocatable.clusterProto
            $0.state = state == .ready ? .ready : .down
            $0.availability = availability == .active ? .active : .drain
            $0.registeredAt = Google_Protobuf_Timestamp(date: registeredAt)
            $0.lastHeartbeat = Google_Protobuf_Timestamp(date: lastHeartbeat)
            $0.agentVersion = agentVersion
        }
    }
}

extension ClusterNode.Availability {
    /// nil for an unset availability (no change).
    public init?(proto: Berth_Controller_V1_NodeAvailability) {
        switch proto {
        case .active: self = .active
        case .drain: self = .drain
        default: return nil
        }
    }
}
