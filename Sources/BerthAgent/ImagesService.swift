import BerthAPI
import Foundation
import BerthImages
import BerthLinux
import BerthModel
public import GRPCCore
import SwiftProtobuf
import Synchronization

/// `berth.agent.v1.Images`: a thin adapter from the wire to the image store.
public struct ImagesService: Berth_Agent_V1_Images.SimpleServiceProtocol {
    let images: ImageStore
    let catalog: ImageCatalog
    let supervisor: ContainerSupervisor

    public init(images: ImageStore, supervisor: ContainerSupervisor, database: AgentDatabase) {
        self.images = images
        self.catalog = ImageCatalog(store: images, database: database)
        self.supervisor = supervisor
    }

    public func pull(request: Berth_Agent_V1_PullImageRequest, response: RPCWriter<Berth_Agent_V1_PullImageResponse>, context: ServerContext) async throws {
        let reference = try ImageReference(parsing: request.reference)
        let platform = request.platform.isEmpty ? nil : try ImagePlatform(parsing: request.platform)
        let credentials =
            request.hasCredentials && !request.credentials.username.isEmpty
            ? RegistryCredentials(username: request.credentials.username, password: request.credentials.password) : nil
        let (updates, continuation) = AsyncStream<PullProgress>.makeStream()
        let throttle = ProgressThrottle()
        let catalog = self.catalog
        let image = try await withThrowingTaskGroup(of: Image?.self) { group in
            group.addTask {
                for await update in updates {
                    try await response.write(.init(update))
                }
                return nil
            }
            group.addTask {
                defer { continuation.finish() }
                return try await catalog.pull(reference, platform: platform, credentials: credentials) { update in
                    if throttle.admit(update) { continuation.yield(update) }
                }
            }
            var pulled: Image?
            while let result = try await group.next() {
                if let result { pulled = result }
            }
            return pulled!
        }
        try await response.write(.with { $0.image = image.proto })
    }

    public func checkLogin(request: Berth_Agent_V1_CheckLoginRequest, context: ServerContext) async throws -> Berth_Agent_V1_CheckLoginResponse {
        let registry = request.registry.isEmpty ? ImageReference.defaultRegistry : request.registry
        guard !request.credentials.username.isEmpty else { throw BerthError.invalid("login needs a user name") }
        try await images.checkLogin(
            registry: registry, credentials: RegistryCredentials(username: request.credentials.username, password: request.credentials.password))
        return .init()
    }

    public func save(request: Berth_Agent_V1_SaveImagesRequest, response: RPCWriter<Berth_Agent_V1_SaveImagesResponse>, context: ServerContext) async throws {
        // Written to a file under the agent's root first, then streamed: the
        // archive's writer is synchronous, the stream is not.
        let images = self.images
        let path = "\(images.root)/tmp-save-\(UUID().uuidString).tar"
        defer { try? FileIO.removeFile(path) }
        try await Blocking.run {
            guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]),
                let out = FileHandle(forWritingAtPath: path)
            else {
                throw BerthError(.internal, "cannot create \(path)")
            }
            defer { try? out.close() }
            var tar = TarWriter { bytes in try out.write(contentsOf: bytes) }
            try images.save(request.images, into: &tar)
        }
        guard let input = FileHandle(forReadingAtPath: path) else { throw BerthError(.internal, "cannot read \(path)") }
        defer { try? input.close() }
        while let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty {
            try await response.write(.with { $0.data = chunk })
        }
    }

    public func importImage(request: Berth_Agent_V1_ImportImageRequest, context: ServerContext) async throws -> Berth_Agent_V1_ImportImageResponse {
        let reference = try request.reference.isEmpty ? nil : ImageReference(parsing: request.reference)
        let results = try await catalog.importImages(
            from: request.path, reference: reference, config: request.hasConfig ? try ImageConfig(proto: request.config) : nil)
        // Each image with the names this import gave it, not those it had
        // before (docker load reports what the archive held).
        return .with {
            $0.images = results.map { result in
                var image = result.image.proto
                image.names = result.names
                return image
            }
        }
    }

    public func list(request: Berth_Agent_V1_ListImagesRequest, context: ServerContext) async throws -> Berth_Agent_V1_ListImagesResponse {
        .with { $0.images = ((try? images.list()) ?? []).map(\.proto) }
    }

    public func inspect(request: Berth_Agent_V1_InspectImageRequest, context: ServerContext) async throws -> Berth_Agent_V1_InspectImageResponse {
        try .with { $0.image = (try images.resolve(request.image)).proto }
    }

    public func tag(request: Berth_Agent_V1_TagImageRequest, context: ServerContext) async throws -> Berth_Agent_V1_TagImageResponse {
        try catalog.tag(request.image, as: try ImageReference(parsing: request.reference))
        return .init()
    }

    public func remove(request: Berth_Agent_V1_RemoveImageRequest, context: ServerContext) async throws -> Berth_Agent_V1_RemoveImageResponse {
        let (untagged, deleted) = try await supervisor.removeImage(request.image, force: request.force)
        return .with {
            $0.untagged = untagged
            $0.deleted = deleted
        }
    }
}

/// Lets through every phase change of a layer, and its download progress
/// at most every 100 ms.
final class ProgressThrottle: Sendable {
    private let last = Mutex<[String: ContinuousClock.Instant]>([:])

    func admit(_ update: PullProgress) -> Bool {
        guard case .layer(let digest, .downloading, let current, let total) = update, current < total else { return true }
        let now = ContinuousClock.now
        return last.withLock {
            if let previous = $0[digest], now - previous < .milliseconds(100) { return false }
            $0[digest] = now
            return true
        }
    }
}

extension Berth_Agent_V1_PullImageResponse {
    init(_ update: PullProgress) {
        switch update {
        case .status(let text):
            self = .with { $0.status = text }
        case .layer(let digest, let phase, let current, let total):
            self = .with {
                $0.progress = .with {
                    $0.digest = digest
                    $0.currentBytes = current
                    $0.totalBytes = total
                    switch phase {
                    case .waiting: $0.phase = .waiting
                    case .downloading: $0.phase = .downloading
                    case .verifying: $0.phase = .verifying
                    case .extracting: $0.phase = .extracting
                    case .done: $0.phase = .done
                    case .alreadyExists: $0.phase = .alreadyExists
                    }
                }
            }
        }
    }
}
