import BerthAPI
import BerthModel
public import GRPCCore
import SwiftProtobuf

/// `berth.agent.v1.Volumes`: a thin adapter from the wire to the volume store.
public struct VolumesService: Berth_Agent_V1_Volumes.SimpleServiceProtocol {
    let volumes: VolumeStore
    let supervisor: ContainerSupervisor

    public init(volumes: VolumeStore, supervisor: ContainerSupervisor) {
        self.volumes = volumes
        self.supervisor = supervisor
    }

    public func create(request: Berth_Agent_V1_CreateVolumeRequest, context: ServerContext) async throws -> Berth_Agent_V1_CreateVolumeResponse {
        let (volume, _) = try volumes.create(request.name.isEmpty ? nil : request.name, labels: request.labels)
        let users = await supervisor.volumeUsers[volume.name] ?? []
        return .with { $0.volume = Self.proto(volume, users: users) }
    }

    public func list(request: Berth_Agent_V1_ListVolumesRequest, context: ServerContext) async throws -> Berth_Agent_V1_ListVolumesResponse {
        let users = await supervisor.volumeUsers
        var list = try volumes.list()
        for filter in request.filters {
            for value in filter.values {
                switch filter.key {
                case "name": list = list.filter { $0.name.contains(value) }
                case "dangling":
                    guard let dangling = ["true": true, "1": true, "false": false, "0": false][value] else {
                        throw BerthError.invalid("filter dangling=\(value): expected true or false")
                    }
                    list = list.filter { (users[$0.name] ?? []).isEmpty == dangling }
                case "label":
                    list = list.filter { $0.labels.matches(labelFilter: value) }
                default:
                    throw BerthError.invalid("unknown volume filter \"\(filter.key)\"; expected name, dangling or label")
                }
            }
        }
        return .with { $0.volumes = list.map { Self.proto($0, users: users[$0.name] ?? []) } }
    }

    public func inspect(request: Berth_Agent_V1_InspectVolumeRequest, context: ServerContext) async throws -> Berth_Agent_V1_InspectVolumeResponse {
        let volume = try volumes.get(request.name)
        let users = await supervisor.volumeUsers[volume.name] ?? []
        return .with { $0.volume = Self.proto(volume, users: users) }
    }

    public func remove(request: Berth_Agent_V1_RemoveVolumeRequest, context: ServerContext) async throws -> Berth_Agent_V1_RemoveVolumeResponse {
        try await supervisor.removeVolume(request.name)
        return .init()
    }

    public func prune(request: Berth_Agent_V1_PruneVolumesRequest, context: ServerContext) async throws -> Berth_Agent_V1_PruneVolumesResponse {
        let (removed, reclaimed) = try await supervisor.pruneVolumes()
        return .with {
            $0.removed = removed
            $0.reclaimedBytes = reclaimed
        }
    }

    static func proto(_ volume: Volume, users: [Container]) -> Berth_Agent_V1_Volume {
        .with {
            $0.name = volume.name
            $0.driver = "local"
            $0.mountpoint = volume.mountpoint
            $0.labels = volume.labels
            $0.anonymous = volume.anonymous
            $0.createdAt = Google_Protobuf_Timestamp(date: volume.createdAt)
            $0.usedBy = users.map(\.id.rawValue).sorted()
        }
    }
}
