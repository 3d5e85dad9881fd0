import BerthAPI
import BerthModel
import BerthScheduler
import BerthTransport
import Foundation
public import GRPCCore
import SwiftProtobuf

/// `berth.controller.v1.Services`: a thin adapter from the wire to the
/// service manager of the leader's term; every change wakes the reconciler.
public struct ServicesService: Berth_Controller_V1_Services.SimpleServiceProtocol {
    let seat: ControllerSeat

    public init(seat: ControllerSeat) {
        self.seat = seat
    }

    public func create(request: Berth_Controller_V1_CreateServiceRequest, context: ServerContext) async throws -> Berth_Controller_V1_CreateServiceResponse {
        let spec = try ServiceSpec(proto: request.spec)
        let term = try await seat.serving()
        let nodes = await term.registry.list()
        let (service, verdicts, placements, unplaced) = try await term.services.create(spec, nodes: nodes, dryRun: request.dryRun)
        if service != nil { term.reconciler.wake() }
        let hostnames = Dictionary(nodes.map { ($0.id, $0.hostname) }, uniquingKeysWith: { a, _ in a })
        var created: Berth_Controller_V1_Service?
        if let service { created = await Self.proto(service, nodes: nodes, services: term.services) }
        return .with {
            if let created { $0.service = created }
            $0.verdicts = verdicts.map { verdict in
                .with {
                    $0.nodeID = verdict.node
                    $0.hostname = hostnames[verdict.node] ?? ""
                    $0.rejection = verdict.rejection?.description ?? ""
                    $0.score = verdict.score
                    $0.chosen = verdict.chosen
                    $0.replicas = Int32(clamping: verdict.replicas)
                }
            }
            $0.placements = placements
            $0.unplaced = unplaced
        }
    }

    public func list(request: Berth_Controller_V1_ListServicesRequest, context: ServerContext) async throws -> Berth_Controller_V1_ListServicesResponse {
        let view = try await seat.reading()
        let all = await view.services.list(nodes: view.registry.list())
        return .with {
            $0.services = all.map(Self.proto)
            $0.stale = view.stale ?? ""
        }
    }

    public func inspect(request: Berth_Controller_V1_InspectServiceRequest, context: ServerContext) async throws -> Berth_Controller_V1_InspectServiceResponse {
        let view = try await seat.reading()
        let service = try await view.services.get(request.service)
        let reply = await Self.proto(service, nodes: view.registry.list(), services: view.services)
        return .with {
            $0.service = reply
            $0.stale = view.stale ?? ""
        }
    }

    public func update(request: Berth_Controller_V1_UpdateServiceRequest, context: ServerContext) async throws -> Berth_Controller_V1_UpdateServiceResponse {
        let term = try await seat.serving()
        let nodes = await term.registry.list()
        let service = try await term.services.update(
            request.service, spec: try ServiceSpec(proto: request.spec), expectedRevision: request.expectedVersion == 0 ? nil : Int(request.expectedVersion),
            force: request.force, nodes: nodes)
        term.reconciler.wake()
        let reply = await Self.proto(service, nodes: nodes, services: term.services)
        return .with { $0.service = reply }
    }

    public func scale(request: Berth_Controller_V1_ScaleServiceRequest, context: ServerContext) async throws -> Berth_Controller_V1_ScaleServiceResponse {
        let term = try await seat.serving()
        let nodes = await term.registry.list()
        let service = try await term.services.scale(request.service, replicas: Int(request.replicas), nodes: nodes)
        term.reconciler.wake()
        let reply = await Self.proto(service, nodes: nodes, services: term.services)
        return .with { $0.service = reply }
    }

    public func rollback(request: Berth_Controller_V1_RollbackServiceRequest, context: ServerContext) async throws -> Berth_Controller_V1_RollbackServiceResponse {
        let term = try await seat.serving()
        let service = try await term.services.rollback(request.service)
        term.reconciler.wake()
        let reply = await Self.proto(service, nodes: term.registry.list(), services: term.services)
        return .with { $0.service = reply }
    }

    public func remove(request: Berth_Controller_V1_RemoveServiceRequest, context: ServerContext) async throws -> Berth_Controller_V1_RemoveServiceResponse {
        let term = try await seat.serving()
        let id = try await term.services.remove(request.service)
        term.reconciler.wake()
        return .with { $0.id = id }
    }

    public func listReplicas(request: Berth_Controller_V1_ListReplicasRequest, context: ServerContext) async throws -> Berth_Controller_V1_ListReplicasResponse {
        let view = try await seat.reading()
        let replicas = try await view.services.replicaList(service: request.service.isEmpty ? nil : request.service, all: request.all)
        let hostnames = Dictionary(await view.registry.list().map { ($0.id, $0.hostname) }, uniquingKeysWith: { a, _ in a })
        return .with {
            $0.replicas = replicas.map { $0.proto(hostname: hostnames[$0.nodeID] ?? "") }
            $0.stale = view.stale ?? ""
        }
    }

    public func logs(
        request: Berth_Controller_V1_ServiceLogsRequest, response: RPCWriter<Berth_Controller_V1_ServiceLogsResponse>, context: ServerContext
    ) async throws {
        let lines = try await seat.serving().logs.lines(
            of: request.service, follow: request.follow, tail: request.hasTail ? Int(request.tail) : nil,
            since: request.hasSince ? request.since.date : nil)
        try await untilRPCCancelled {
            for try await line in lines {
                try await response.write(Self.proto(line))
            }
        }
    }

    static func proto(_ line: ServiceLogs.Line) -> Berth_Controller_V1_ServiceLogsResponse {
            .with {
                $0.replicaID = line.replica.id
                $0.replicaName = line.replica.containerName
                $0.nodeID = line.replica.nodeID
                $0.nodeHostname = line.hostname
                $0.stream = line.line.stream == .stderr ? .stderr : .stdout
                $0.time = Google_Protobuf_Timestamp(date: line.line.time)
                $0.line = Data(line.line.bytes)
            }
    }

    private static func proto(_ service: ClusterService, nodes: [ClusterNode], services: ServiceManager) async -> Berth_Controller_V1_Service {
        proto(await services.status(of: service, nodes: nodes))
    }

    static func proto(_ status: ServiceStatus) -> Berth_Controller_V1_Service {
        let progress: Berth_Controller_V1_Progress =
            switch status.progress {
            case .converged: .converged
            case .progressing: .progressing
            case .stalled: .stalled
            }
        return status.service.proto(
            running: status.running, desired: status.desired, updated: status.updated, pending: status.pending, completed: status.completed,
            progress: progress, progressMessage: status.progressMessage)
    }
}
