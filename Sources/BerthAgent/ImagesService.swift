import BerthAPI
import BerthImages
import BerthModel
public import GRPCCore
import SwiftProtobuf

/// `berth.agent.v1.Images`: a thin adapter from the wire to the image store.
public struct ImagesService: Berth_Agent_V1_Images.SimpleServiceProtocol {
    let images: ImageStore
    let supervisor: ContainerSupervisor
    let database: AgentDatabase

    public init(images: ImageStore, supervisor: ContainerSupervisor, database: AgentDatabase) {
        self.images = images
        self.supervisor = supervisor
        self.database = database
    }

    public func pull(request: Berth_Agent_V1_PullImageRequest, response: RPCWriter<Berth_Agent_V1_PullImageResponse>, context: ServerContext) async throws {
        throw RPCError(code: .unimplemented, message: "berth.agent.v1.Images/Pull is not implemented by this agent yet; import a root filesystem with ImportImage")
    }

    public func importImage(request: Berth_Agent_V1_ImportImageRequest, context: ServerContext) async throws -> Berth_Agent_V1_ImportImageResponse {
        guard !request.reference.isEmpty else { throw BerthError.invalid("import needs a NAME[:TAG] for the image") }
        let reference = try ImageReference(parsing: request.reference)
        guard request.path.hasPrefix("/") else { throw BerthError.invalid("import path \"\(request.path)\" must be absolute on the agent's host") }
        let images = self.images
        let config = ImageConfig(proto: request.config)
        let result = try await Task.detached { try images.importRootfs(from: request.path, reference: reference, config: config) }.value
        try database.append([
            .init(type: .image, action: .import, actorID: result.image.id, attributes: ["name": reference.familiar])
        ])
        return .with { $0.images = [result.image.proto] }
    }

    public func list(request: Berth_Agent_V1_ListImagesRequest, context: ServerContext) async throws -> Berth_Agent_V1_ListImagesResponse {
        .with { $0.images = ((try? images.list()) ?? []).map(\.proto) }
    }

    public func inspect(request: Berth_Agent_V1_InspectImageRequest, context: ServerContext) async throws -> Berth_Agent_V1_InspectImageResponse {
        try .with { $0.image = (try images.resolve(request.image)).proto }
    }

    public func tag(request: Berth_Agent_V1_TagImageRequest, context: ServerContext) async throws -> Berth_Agent_V1_TagImageResponse {
        let reference = try ImageReference(parsing: request.reference)
        try images.tag(request.image, as: reference)
        let image = try images.resolve(reference.canonical)
        try database.append([.init(type: .image, action: .tag, actorID: image.id, attributes: ["name": reference.familiar])])
        return .init()
    }

    public func remove(request: Berth_Agent_V1_RemoveImageRequest, context: ServerContext) async throws -> Berth_Agent_V1_RemoveImageResponse {
        let used = await supervisor.imagesInUse
        let (untagged, deleted) = try images.remove(request.image, force: request.force, inUse: { used.contains($0) })
        var events: [AgentDatabase.PendingEvent] = untagged.map { .init(type: .image, action: .untag, actorID: request.image, attributes: ["name": $0]) }
        events += deleted.filter { $0.hasPrefix("sha256:") }.prefix(1).map { .init(type: .image, action: .delete, actorID: $0) }
        try database.append(events)
        return .with {
            $0.untagged = untagged
            $0.deleted = deleted
        }
    }
}
