public import BerthModel
import BerthLinux
import Foundation

/// What a pull reports as it goes.
public enum PullProgress: Sendable, Equatable {
    public enum Phase: Sendable, Equatable {
        case waiting, downloading, verifying, extracting, done, alreadyExists
    }

    /// A line for the person pulling ("Pulling from library/busybox", "Digest: …").
    case status(String)
    /// A layer, by its blob digest.
    case layer(digest: String, phase: Phase, current: Int64, total: Int64)
}

extension ImageStore {
    /// Pulls `reference` from its registry: the manifest (through an index
    /// to `platform`'s manifest), the config, and the layers, fetched at
    /// most `parallelLayers` at a time, each verified by digest, unpacked
    /// once, and checked against the config's diff IDs. The image becomes
    /// visible only when all of it is stored; a failed pull leaves no image
    /// and keeps what it downloaded for the next attempt to resume.
    ///
    /// - Throws: `BerthError` with the registry's or the content's problem.
    public func pull(
        _ reference: ImageReference, platform wanted: ImagePlatform? = nil, credentials: RegistryCredentials? = nil,
        parallelLayers: Int = 3,
        progress: @escaping @Sendable (PullProgress) -> Void = { _ in }
    ) async throws -> Image {
        try await RegistryClient.session(reference: reference, credentials: credentials, options: registryOptions) { client in
            try await pull(reference, platform: wanted, client: client, parallelLayers: parallelLayers, progress: progress)
        }
    }

    private func pull(
        _ reference: ImageReference, platform wanted: ImagePlatform?, client: RegistryClient, parallelLayers: Int,
        progress: @escaping @Sendable (PullProgress) -> Void
    ) async throws -> Image {
        let name = reference.familiar
        let platform = wanted ?? .host
        progress(.status("\(reference.tag ?? reference.digest ?? ""): Pulling from \(reference.repository)"))
        let top = try await client.manifest(reference.digest ?? reference.tag ?? "latest")
        var chosen = top
        var document = try ManifestDocument(bytes: top.bytes, mediaType: top.mediaType, what: name)
        var extraBlobs: [(Digest, [UInt8])] = [(top.digest, top.bytes)]
        if case .index(let index) = document {
            let candidates = index.manifests.filter {
                $0.mediaType == MediaType.ociManifest || $0.mediaType == MediaType.dockerManifest
            }
            guard let entry = candidates.first(where: { $0.platform.map(platform.matches) ?? false }) else {
                let offered = candidates.compactMap(\.platform?.description).filter { !$0.hasPrefix("unknown") }
                throw BerthError(
                    .notFound,
                    "\(name) has no image for \(platform)\(offered.isEmpty ? "" : "; it has \(offered.joined(separator: ", "))")")
            }
            chosen = try await client.manifest(entry.digest)
            document = try ManifestDocument(bytes: chosen.bytes, mediaType: chosen.mediaType, what: "\(name) (\(platform))")
            extraBlobs.append((chosen.digest, chosen.bytes))
        }
        guard case .manifest(let manifest) = document else {
            throw BerthError.invalid("\(name): an index inside an index is not supported")
        }

        // The config: small, fetched whole and verified.
        let configDigest = try Digest(manifest.config.digest)
        let configBytes = try content.contains(configDigest) ? Array(content.read(configDigest)) : await client.smallBlob(configDigest, size: manifest.config.size)
        let config: OCIImageConfig
        do {
            config = try JSONDecoder().decode(OCIImageConfig.self, from: Data(configBytes))
        } catch {
            throw BerthError.invalid("\(name): the image config does not parse: \(error)")
        }
        if top.digest == chosen.digest, !platform.matches(.init(architecture: config.architecture, os: config.os, variant: nil)) {
            // A single-platform image: refused when another was asked for, a warning otherwise.
            let actual = "\(config.os)/\(config.architecture)"
            if wanted != nil {
                throw BerthError(.notFound, "\(name) is for \(actual), not the \(platform) asked for")
            }
            progress(.status("WARNING: \(name) is for \(actual), which does not match this host (\(platform))"))
        }
        let diffIDs = try config.rootfs.diff_ids.map { try Digest($0) }
        guard diffIDs.count == manifest.layers.count else {
            throw BerthError.invalid("\(name): the manifest has \(manifest.layers.count) layers but the config lists \(diffIDs.count) diff IDs")
        }
        let layers = try manifest.layers.map { (try Digest($0.digest), $0.size) }
        let chains = Self.chainIDs(diffIDs)

        // The layers: those already unpacked are skipped; the rest are fetched
        // (resuming partial downloads) and unpacked in parallel.
        var missing: [Int] = []
        for (i, (digest, size)) in layers.enumerated() {
            if FileIO.isDirectory(layerPath(chains[i])) && content.contains(digest) {
                progress(.layer(digest: digest.description, phase: .alreadyExists, current: size, total: size))
            } else {
                progress(.layer(digest: digest.description, phase: .waiting, current: 0, total: size))
                missing.append(i)
            }
        }
        let pins = layers.map(\.0.description) + chains.map(\.hex) + [configDigest.description] + extraBlobs.map(\.0.description)
        return try await pinning(pins) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                var next = missing.makeIterator()
                func startNext() {
                    guard let i = next.next() else { return }
                    let (digest, size) = layers[i]
                    group.addTask {
                        try await self.fetchLayer(digest, size: size, diffID: diffIDs[i], chainID: chains[i], client: client, progress: progress)
                    }
                }
                for _ in 0..<max(1, parallelLayers) { startNext() }
                while try await group.next() != nil { startNext() }
            }

            // Manifests and config last: the image is complete before it is recorded.
            for (digest, bytes) in extraBlobs where !content.contains(digest) {
                try content.write(Data(bytes), expected: digest)
            }
            if !content.contains(configDigest) { try content.write(Data(configBytes), expected: configDigest) }
            progress(.status("Digest: \(top.digest)"))

            let image = Image(
                id: configDigest.description, names: [reference.canonical], digest: top.digest.description,
                sizeBytes: layers.reduce(0) { $0 + $1.1 }, layers: diffIDs.map(\.description), os: config.os,
                architecture: config.architecture, config: config.imageConfig,
                createdAt: config.created.flatMap(RFC3339.parse) ?? Date())
            let before = try? resolve(reference.canonical)
            try record(image, as: reference)
            progress(.status(before?.id == image.id ? "Status: Image is up to date for \(name)" : "Status: Downloaded newer image for \(name)"))
            return try resolve(image.id)
        }
    }

    /// Fetches one layer blob (unless stored) and unpacks it (unless unpacked).
    private func fetchLayer(
        _ digest: Digest, size: Int64, diffID: Digest, chainID: Digest, client: RegistryClient,
        progress: @escaping @Sendable (PullProgress) -> Void
    ) async throws {
        let id = digest.description
        while !content.contains(digest) {
            guard let ingest = try ResumableIngest(store: content, expected: digest) else {
                // Another pull fetches the same blob: wait for it.
                try await Task.sleep(for: .milliseconds(100))
                continue
            }
            try await client.fetchBlob(digest, size: size, into: ingest) { held in
                progress(.layer(digest: id, phase: .downloading, current: held, total: size))
            }
            progress(.layer(digest: id, phase: .verifying, current: size, total: size))
            try ingest.commit()
        }
        progress(.layer(digest: id, phase: .extracting, current: size, total: size))
        _ = try await Blocking.run { try self.unpackLayer(blob: digest, chainID: chainID, diffID: diffID) }
        progress(.layer(digest: id, phase: .done, current: size, total: size))
    }

    /// Checks that a registry accepts the credentials, as `login` does.
    public func checkLogin(registry: String, credentials: RegistryCredentials) async throws {
        // Any repository name will do: the check is of the registry's /v2/.
        let reference = try ImageReference(parsing: "\(registry)/login/check")
        try await RegistryClient.session(reference: reference, credentials: credentials, options: registryOptions) { try await $0.checkLogin() }
    }
}
