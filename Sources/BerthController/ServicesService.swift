import BerthAPI
import BerthScheduler
import BerthModel
public import GRPCCore
import SwiftProtobuf

/// `berth.controller.v1.Services`: a thin adapter from the wire to the
/// service manager; every change wakes the reconciler.
public struct ServicesService: Berth_Controller_V1_Services.SimpleServiceProtocol {
    let services: ServiceManager
    let registry: NodeRegistry
    let wake: @Sendable () -> Void

    public init(services: ServiceManager, registry: NodeRegistry, wake: @escaping @Sendable () -> Void) {
        self.services = services
        self.registry = registry
        self.wake = wake
    }

    public func create(request: Berth_Controller_V1_CreateServiceRequest, context: ServerContext) async throws -> Berth_Controller_V1_CreateServiceResponse {
        let spec = try ServiceSpec(proto: request.spec)
        let nodes = await registry.list()
        let (service, verdicts, placements, unplaced) = try await services.create(spec, nodes: nodes, dryRun: request.dryRun)
        if service != nil { wake() }
        let hostnames = Dictionary(nodes.map { ($0.id, $0.hostname) }, uniquingKeysWith: { a, _ in a })
        var created: Berth_Controller_V1_Service?
        if let service { created = await proto(service) }
        return .with {
            if let created { $0.service = created }
            $0.verdicts = verdicts.map { verdict in
                .with {
                    $0.nodeID = verdict.node
                    $0.hostname = hostnames[verdict.node] ?? ""
                    $0.rejection = verdict.rejection?.description ?? ""
                    $0.score = verdict.score
                    $0.chosen = verdict.chosen
                }
            }
            $0.placements = placements
            $0.unplaced = unplaced
        }
    }

    public func list(request: Berth_Controller_V1_ListServicesRequest, context: ServerContext) async throws -> Berth_Controller_V1_ListServicesResponse {
        let all = await services.list()
        return .with { $0.services = all.map { $0.0.proto(running: $0.running) } }
    }

    public func inspect(request: Berth_Controller_V1_InspectServiceRequest, context: ServerContext) async throws -> Berth_Controller_V1_InspectServiceResponse {
        let service = try await services.get(request.service)
        let reply = await proto(service)
        return .with { $0.service = reply }
    }

    public func update(request: Berth_Controller_V1_UpdateServiceRequest, context: ServerContext) async throws -> Berth_Controller_V1_UpdateServiceResponse {
        let service = try await services.update(
            request.service, spec: try ServiceSpec(proto: request.spec), expectedVersion: request.expectedVersion == 0 ? nil : Int(request.expectedVersion),
            force: request.force, nodes: await registry.list())
        wake()
        let reply = await proto(service)
        return .with { $0.service = reply }
    }

    public func scale(request: Berth_Controller_V1_ScaleServiceRequest, context: ServerContext) async throws -> Berth_Controller_V1_ScaleServiceResponse {
        let service = try await services.scale(request.service, replicas: Int(request.replicas), nodes: await registry.list())
        wake()
        let reply = await proto(service)
        return .with { $0.service = reply }
    }

    public func remove(request: Berth_Controller_V1_RemoveServiceRequest, context: ServerContext) async throws -> Berth_Controller_V1_RemoveServiceResponse {
        let id = try await services.remove(request.service)
        wake()
        return .with { $0.id = id }
    }

    public func listReplicas(request: Berth_Controller_V1_ListReplicasRequest, context: ServerContext) async throws -> Berth_Controller_V1_ListReplicasResponse {
        let replicas = try await services.replicaList(service: request.service.isEmpty ? nil : request.service, all: request.all)
        let hostnames = Dictionary(await registry.list().map { ($0.id, $0.hostname) }, uniquingKeysWith: { a, _ in a })
        return .with { $0.replicas = replicas.map { $0.proto(hostname: hostnames[$0.nodeID] ?? "") } }
    }

    private func proto(_ service: ClusterService) async -> Berth_Controller_V1_Service {
        service.proto(running: await services.running(of: service))
    }
}
