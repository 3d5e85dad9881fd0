import BerthAPI
import BerthModel
public import GRPCCore
import SwiftProtobuf

/// `berth.controller.v1.Nodes`: a thin adapter from the wire to the registry.
public struct NodesService: Berth_Controller_V1_Nodes.SimpleServiceProtocol {
    let registry: NodeRegistry

    public init(registry: NodeRegistry) {
        self.registry = registry
    }

    public func register(request: Berth_Controller_V1_RegisterNodeRequest, context: ServerContext) async throws -> Berth_Controller_V1_RegisterNodeResponse {
        let node = try await registry.register(
            id: request.id, hostname: request.hostname, address: request.address, labels: request.labels,
            capacity: NodeCapacity(clusterProto: request.capacity), allocatable: NodeCapacity(clusterProto: request.allocatable),
            agentVersion: request.agentVersion)
        let interval = registry.heartbeatInterval.components
        return .with {
            $0.node = node.proto
            $0.heartbeatIntervalMs = Int32(interval.seconds * 1000 + interval.attoseconds / 1_000_000_000_000_000)
        }
    }

    public func heartbeat(request: Berth_Controller_V1_HeartbeatNodeRequest, context: ServerContext) async throws -> Berth_Controller_V1_HeartbeatNodeResponse {
        let known = try await registry.heartbeat(id: request.id)
        return .with { $0.known = known }
    }

    public func list(request: Berth_Controller_V1_ListNodesRequest, context: ServerContext) async throws -> Berth_Controller_V1_ListNodesResponse {
        let nodes = await registry.list()
        return .with { $0.nodes = nodes.map(\.proto) }
    }

    public func inspect(request: Berth_Controller_V1_InspectNodeRequest, context: ServerContext) async throws -> Berth_Controller_V1_InspectNodeResponse {
        let node = try await registry.get(request.node)
        return .with { $0.node = node.proto }
    }

    public func update(request: Berth_Controller_V1_UpdateNodeRequest, context: ServerContext) async throws -> Berth_Controller_V1_UpdateNodeResponse {
        let node = try await registry.update(
            request.node, availability: ClusterNode.Availability(proto: request.availability), addLabels: request.addLabels,
            removeLabels: request.removeLabels)
        return .with { $0.node = node.proto }
    }
}
