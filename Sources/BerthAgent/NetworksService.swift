import BerthAPI
import BerthModel
public import GRPCCore
import SwiftProtobuf

/// `berth.agent.v1.Networks`: a thin adapter from the wire to the network store.
public struct NetworksService: Berth_Agent_V1_Networks.SimpleServiceProtocol {
    let networking: ContainerNetworking
    let supervisor: ContainerSupervisor
    var networks: NetworkStore { networking.store }

    public init(networking: ContainerNetworking, supervisor: ContainerSupervisor) {
        self.networking = networking
        self.supervisor = supervisor
    }

    public func create(request: Berth_Agent_V1_CreateNetworkRequest, context: ServerContext) async throws -> Berth_Agent_V1_CreateNetworkResponse {
        switch request.driver {
        case "", "bridge": break
        case "overlay":
            throw BerthError(
                .failedPrecondition, "overlay networks are made on the controller (berth network create --driver overlay with BERTH_CONTROLLER set)")
        default: throw BerthError.invalid("network driver \"\(request.driver)\": expected bridge (overlay networks are made on the controller)")
        }
        let network = try await networking.create(
            name: request.name, subnet: request.subnet, gateway: request.gateway, internal: request.internal, labels: request.labels)
        return .with { $0.network = Self.proto(network, users: []) }
    }

    public func list(request: Berth_Agent_V1_ListNetworksRequest, context: ServerContext) async throws -> Berth_Agent_V1_ListNetworksResponse {
        var list = try networks.list()
        for filter in request.filters {
            for value in filter.values {
                switch filter.key {
                case "name": list = list.filter { $0.name.contains(value) }
                case "id": list = list.filter { $0.id.hasPrefix(value) }
                case "label":
                    list = list.filter { $0.labels.matches(labelFilter: value) }
                default:
                    throw BerthError.invalid("unknown network filter \"\(filter.key)\"; expected name, id or label")
                }
            }
        }
        let users = await supervisor.networkUsers
        return .with { $0.networks = list.map { Self.proto($0, users: users[$0.id] ?? []) } }
    }

    public func inspect(request: Berth_Agent_V1_InspectNetworkRequest, context: ServerContext) async throws -> Berth_Agent_V1_InspectNetworkResponse {
        let network = try networks.get(request.network)
        let users = await supervisor.networkUsers[network.id] ?? []
        return .with { $0.network = Self.proto(network, users: users) }
    }

    public func remove(request: Berth_Agent_V1_RemoveNetworkRequest, context: ServerContext) async throws -> Berth_Agent_V1_RemoveNetworkResponse {
        try await supervisor.removeNetwork(request.network)
        return .init()
    }

    public func connect(request: Berth_Agent_V1_ConnectNetworkRequest, context: ServerContext) async throws -> Berth_Agent_V1_ConnectNetworkResponse {
        _ = try await supervisor.connect(
            request.container, network: request.network, aliases: request.aliases,
            address: request.ipv4Address.isEmpty ? nil : request.ipv4Address)
        return .init()
    }

    public func setOverlays(request: Berth_Agent_V1_SetOverlaysRequest, context: ServerContext) async throws -> Berth_Agent_V1_SetOverlaysResponse {
        let states = try request.networks.map(OverlayState.init(proto:))
        try await supervisor.applyOverlays(states)
        return .init()
    }

    public func disconnect(request: Berth_Agent_V1_DisconnectNetworkRequest, context: ServerContext) async throws -> Berth_Agent_V1_DisconnectNetworkResponse {
        _ = try await supervisor.disconnect(request.container, network: request.network)
        return .init()
    }

    static func proto(_ network: Network, users: [Container]) -> Berth_Agent_V1_Network {
        .with {
            $0.id = network.id
            $0.name = network.name
            $0.driver = network.driver
            $0.subnet = network.subnet.description
            $0.gateway = network.gateway.description
            $0.bridge = network.bridge
            $0.internal = network.internal
            $0.labels = network.labels
            $0.createdAt = Google_Protobuf_Timestamp(date: network.createdAt)
            $0.vni = UInt32(clamping: network.vni ?? 0)
            $0.endpoints = users.compactMap { c in
                guard let endpoint = c.endpoints.first(where: { $0.networkID == network.id }) else { return nil }
                return .with {
                    $0.containerID = c.id.rawValue
                    $0.containerName = c.name
                    $0.ipv4Address = "\(endpoint.address)/\(endpoint.subnet.prefix)"
                    $0.macAddress = endpoint.address.macAddress
                    $0.aliases = endpoint.aliases
                }
            }
        }
    }
}
