import BerthImages
import BerthLinux
import BerthModel

/// The agent's images as its handlers use them: each change to the store
/// and its event, made together by the code that makes the change (the
/// supervisor does it for a removal, which must also know what containers
/// use). Handlers only translate between the wire and these calls.
struct ImageCatalog: Sendable {
    let store: ImageStore
    let database: AgentDatabase

    /// Pulls `reference` and records a `pull` event.
    func pull(
        _ reference: ImageReference, platform: ImagePlatform?, credentials: RegistryCredentials?, progress: @escaping @Sendable (PullProgress) -> Void
    ) async throws -> Image {
        let image = try await store.pull(reference, platform: platform, credentials: credentials, progress: progress)
        try database.append([.init(type: .image, action: .pull, actorID: image.id, attributes: ["name": reference.familiar])])
        return image
    }

    /// Names an image `reference` and records a `tag` event.
    func tag(_ source: String, as reference: ImageReference) throws {
        try store.tag(source, as: reference)
        let image = try store.resolve(reference.canonical)
        try database.append([.init(type: .image, action: .tag, actorID: image.id, attributes: ["name": reference.familiar])])
    }

    /// Imports what `path` on this host holds (an image archive or layout,
    /// or a root filesystem to make an image of) and records an `import`
    /// event per image.
    ///
    /// - Parameter config: image settings for a root filesystem (`--change`);
    ///   nil when none were given.
    /// - Throws: `BerthError.invalidArgument` for a relative path, a root
    ///   filesystem without a name, or settings given for an archive.
    func importImages(from path: String, reference: ImageReference?, config: ImageConfig?) async throws -> [ImageStore.ImportResult] {
        guard path.hasPrefix("/") else { throw BerthError.invalid("import path \"\(path)\" must be absolute on the agent's host") }
        let store = self.store
        // File-system work, off the threads that serve RPCs.
        let results = try await Blocking.run { () throws -> [ImageStore.ImportResult] in
            let kind = try ImageStore.kind(of: path)
            if kind == .rootfs {
                guard let reference else { throw BerthError.invalid("importing a root filesystem needs a NAME[:TAG] for the image") }
                return [try store.importRootfs(from: path, reference: reference, config: config ?? ImageConfig())]
            }
            if let config, config != ImageConfig() {
                throw BerthError.invalid("image settings (--change) apply to root filesystems; \(path) is an image archive with its own")
            }
            return try store.importArchive(from: path, kind: kind, reference: reference)
        }
        try database.append(results.map {
            .init(type: .image, action: .import, actorID: $0.image.id, attributes: ["name": $0.names.first.flatMap { try? ImageReference(parsing: $0).familiar } ?? ""])
        })
        return results
    }
}
