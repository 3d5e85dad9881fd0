import BerthAPI
import BerthModel
public import GRPCCore
import SwiftProtobuf

/// `berth.controller.v1.Networks`: a thin adapter from the wire to the
/// overlay networks of the leader's term.
public struct ControllerNetworksService: Berth_Controller_V1_Networks.SimpleServiceProtocol {
    let seat: ControllerSeat

    public init(seat: ControllerSeat) {
        self.seat = seat
    }

    public func create(request: Berth_Agent_V1_CreateNetworkRequest, context: ServerContext) async throws -> Berth_Agent_V1_CreateNetworkResponse {
        guard request.driver == "overlay" else {
            throw BerthError.invalid(
                "network driver \"\(request.driver.isEmpty ? "bridge" : request.driver)\": the controller makes overlay networks (--driver overlay); bridge networks are each agent's")
        }
        let term = try await seat.serving()
        let network = try await term.services.createNetwork(
            name: request.name, subnet: request.subnet, gateway: request.gateway, internal: request.internal, labels: request.labels)
        return .with { $0.network = network.proto }
    }

    public func list(request: Berth_Agent_V1_ListNetworksRequest, context: ServerContext) async throws -> Berth_Agent_V1_ListNetworksResponse {
        let view = try await seat.reading()
        var list = await view.services.networkList()
        for filter in request.filters {
            for value in filter.values {
                switch filter.key {
                case "name": list = list.filter { $0.name.contains(value) }
                case "id": list = list.filter { $0.id.hasPrefix(value) }
                case "label": list = list.filter { $0.labels.matches(labelFilter: value) }
                case "driver": list = value == "overlay" ? list : []
                default: throw BerthError.invalid("unknown network filter \"\(filter.key)\"; expected name, id, label or driver")
                }
            }
        }
        return .with { $0.networks = list.map(\.proto) }
    }

    public func inspect(request: Berth_Agent_V1_InspectNetworkRequest, context: ServerContext) async throws -> Berth_Agent_V1_InspectNetworkResponse {
        let view = try await seat.reading()
        let network = try await view.services.network(request.network)
        return .with { $0.network = network.proto }
    }

    public func remove(request: Berth_Agent_V1_RemoveNetworkRequest, context: ServerContext) async throws -> Berth_Agent_V1_RemoveNetworkResponse {
        let term = try await seat.serving()
        _ = try await term.services.removeNetwork(request.network)
        term.reconciler.wake()
        return .init()
    }
}
