import BerthAPI
import BerthModel
import BerthTransport
public import GRPCCore
import SwiftProtobuf

/// `berth.controller.v1.Nodes`: a thin adapter from the wire to the
/// registry of the leader's term. Registrations and heartbeats carry the
/// caller's certificate (from the transport) to the registry, which decides
/// whom it speaks for.
public struct NodesService: Berth_Controller_V1_Nodes.ServiceProtocol {
    let seat: ControllerSeat
    /// Revoked certificates, handed to agents with every answer (they refuse them too).
    let revoked: RevocationList?
    /// Where heartbeats are recorded when controllers share a store.
    let heartbeats: (any HeartbeatRecords)?
    /// This controller's address, recorded with the heartbeats it takes.
    let address: String

    public init(seat: ControllerSeat, revoked: RevocationList? = nil, heartbeats: (any HeartbeatRecords)? = nil, address: String = "") {
        self.seat = seat
        self.revoked = revoked
        self.heartbeats = heartbeats
        self.address = address
    }

    private var revokedSerials: [String] { revoked?.serials.sorted() ?? [] }

    public func register(
        request: ServerRequest<Berth_Controller_V1_RegisterNodeRequest>, context: ServerContext
    ) async throws -> ServerResponse<Berth_Controller_V1_RegisterNodeResponse> {
        let message = request.message
        let registry = try await seat.serving().registry
        let node = try await registry.register(
            id: message.id, hostname: message.hostname, address: message.address, labels: message.labels,
            capacity: NodeCapacity(clusterProto: message.capacity), allocatable: NodeCapacity(clusterProto: message.allocatable),
            agentVersion: message.agentVersion, peer: PeerIdentity(metadata: request.metadata))
        let interval = registry.heartbeatInterval.components
        return ServerResponse(message: .with {
            $0.node = node.proto
            $0.heartbeatIntervalMs = Int32(interval.seconds * 1000 + interval.attoseconds / 1_000_000_000_000_000)
            $0.revokedSerials = revokedSerials
        })
    }

    public func heartbeat(
        request: ServerRequest<Berth_Controller_V1_HeartbeatNodeRequest>, context: ServerContext
    ) async throws -> ServerResponse<Berth_Controller_V1_HeartbeatNodeResponse> {
        let id = request.message.id
        let peer = PeerIdentity(metadata: request.metadata)
        let known: Bool
        if let term = seat.term {
            known = try await term.registry.heartbeat(id: id, peer: peer)
            // For the store's readers; the leader has it in memory already.
            if known { heartbeats?.recordLater(id, by: address) }
        } else if let heartbeats {
            // Any controller takes a heartbeat: it goes to the store, where the leader follows it.
            try NodeRegistry.authorize(peer, for: id)
            known = try await heartbeats.take(id, by: address)
        } else {
            known = try await seat.serving().registry.heartbeat(id: id, peer: peer)
        }
        return ServerResponse(message: .with {
            $0.known = known
            $0.revokedSerials = revokedSerials
        })
    }

    public func list(
        request: ServerRequest<Berth_Controller_V1_ListNodesRequest>, context: ServerContext
    ) async throws -> ServerResponse<Berth_Controller_V1_ListNodesResponse> {
        let view = try await seat.reading()
        let nodes = await view.registry.list()
        return ServerResponse(message: .with {
            $0.nodes = nodes.map(\.proto)
            $0.stale = view.stale ?? ""
        })
    }

    public func inspect(
        request: ServerRequest<Berth_Controller_V1_InspectNodeRequest>, context: ServerContext
    ) async throws -> ServerResponse<Berth_Controller_V1_InspectNodeResponse> {
        let view = try await seat.reading()
        let node = try await view.registry.get(request.message.node)
        return ServerResponse(message: .with {
            $0.node = node.proto
            $0.stale = view.stale ?? ""
        })
    }

    public func update(
        request: ServerRequest<Berth_Controller_V1_UpdateNodeRequest>, context: ServerContext
    ) async throws -> ServerResponse<Berth_Controller_V1_UpdateNodeResponse> {
        let message = request.message
        let node = try await seat.serving().registry.update(
            message.node, availability: ClusterNode.Availability(proto: message.availability), addLabels: message.addLabels,
            removeLabels: message.removeLabels)
        return ServerResponse(message: .with { $0.node = node.proto })
    }

    public func remove(
        request: ServerRequest<Berth_Controller_V1_RemoveNodeRequest>, context: ServerContext
    ) async throws -> ServerResponse<Berth_Controller_V1_RemoveNodeResponse> {
        let term = try await seat.serving()
        let node = try await term.registry.remove(request.message.node, force: request.message.force)
        // A node removed while its agent ran: its containers are to go.
        if node.state == .ready { await term.reconciler.evict(node) }
        return ServerResponse(message: .with { $0.id = node.id })
    }
}
