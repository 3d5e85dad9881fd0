public import BerthModel
import BerthLinux
import Foundation
public import Logging
import Synchronization

/// Where image records are kept (the agent's database).
public protocol ImageIndex: Sendable {
    func allImages() throws -> [Image]
    /// Inserts or replaces the image with this ID.
    func save(_ image: Image) throws
    func deleteImage(id: String) throws
}

/// Images of one agent: blobs in a content store, layers unpacked once per
/// chain ID under `layers/`, records in an `ImageIndex`.
public final class ImageStore: Sendable {
    public let root: String
    public let content: ContentStore
    /// How pulls reach registries.
    public let registryOptions: RegistryClient.Options
    let logger: Logger
    private let index: any ImageIndex
    private let lock = Mutex(())
    /// Blobs and layers (by chain ID hex) that pulls under way hold: not
    /// yet named by an image, and not to be collected.
    private let pinned = Mutex<[String: Int]>([:])

    /// - Throws: `BerthError` when the directories cannot be made.
    public init(
        root: String, index: any ImageIndex, registryOptions: RegistryClient.Options = .init(),
        logger: Logger = Logger(label: "berth.images")
    ) throws {
        self.root = root
        self.logger = logger
        self.index = index
        self.registryOptions = registryOptions
        do {
            self.content = try ContentStore(root: "\(root)/content")
            try Directories.create("\(root)/layers", mode: 0o700)
            // Writes a crash interrupted (no pull or import runs yet): blobs
            // being written are thrown away; partial downloads are kept a day
            // for a pull to resume.
            let ingest = "\(root)/content/ingest"
            for name in try FileIO.list(ingest) {
                let path = "\(ingest)/\(name)"
                let stale = (try? FileIO.status(path)).map { Date().timeIntervalSince1970 - Double($0.mtime) > 86_400 } ?? true
                if !name.hasSuffix(".partial") || stale { try? FileIO.removeFile(path) }
            }
            // Unpacks a crash interrupted: no pull runs yet.
            let layers = try RootedDirectory(path: "\(root)/layers")
            for name in try FileIO.list("\(root)/layers") where name.hasPrefix(".tmp-") {
                try layers.remove(name)
            }
        } catch {
            throw BerthError(.internal, "cannot prepare the image store under \(root)", underlying: error)
        }
    }

    /// The chain ID of each layer: chain(0) = diff(0); chain(n) = sha256(chain(n-1) + " " + diff(n)).
    public static func chainIDs(_ diffIDs: [Digest]) -> [Digest] {
        var chains: [Digest] = []
        for diff in diffIDs {
            if let last = chains.last {
                chains.append(Digest.of(Data("\(last) \(diff)".utf8)))
            } else {
                chains.append(diff)
            }
        }
        return chains
    }

    public func layerPath(_ chainID: Digest) -> String { "\(root)/layers/\(chainID.hex)" }

    /// The overlay lowerdirs of an image: top layer first, as overlayfs wants them.
    public func lowerDirectories(of image: Image) throws -> [String] {
        let diffs = try image.layers.map { try Digest($0) }
        let dirs = Self.chainIDs(diffs).map(layerPath)
        for dir in dirs where !FileIO.isDirectory(dir) {
            throw BerthError(.internal, "image \(image.shortID): layer \(dir) is missing; remove the image and import it again")
        }
        return dirs.reversed()
    }

    // MARK: Lookup

    public func list() throws -> [Image] {
        try index.allImages().sorted { $0.createdAt > $1.createdAt }
    }

    /// Finds an image by name (`busybox`, `busybox:1`), full ID, `sha256:` ID,
    /// or an unambiguous ID prefix of at least 4 hex digits.
    ///
    /// - Throws: `BerthError.notFound`, or `invalidArgument` for an ambiguous prefix.
    public func resolve(_ text: String) throws -> Image {
        let images = try index.allImages()
        if let reference = try? ImageReference(parsing: text), let match = images.first(where: { $0.names.contains(reference.canonical) }) {
            return match
        }
        let hex = text.hasPrefix("sha256:") ? String(text.dropFirst(7)) : text
        if hex.count >= 4, hex.allSatisfy(\.isHexDigit) {
            let matches = images.filter { $0.id.dropFirst(7).hasPrefix(hex.lowercased()) }
            if matches.count == 1 { return matches[0] }
            if matches.count > 1 { throw BerthError.invalid("image ID prefix \"\(text)\" matches \(matches.count) images; give more digits") }
        }
        throw BerthError.notFound("image", text)
    }

    // MARK: Import

    /// What an import made.
    public struct ImportResult: Sendable {
        /// The image as stored: with every name it has, those it had
        /// before this import included.
        public var image: Image
        /// The names this import gave it (canonical), which is what docker
        /// load reports; empty for an image the source did not name.
        public var names: [String]
        public var warnings: [String]
    }

    /// Imports a root filesystem (a tar archive or a directory) as a
    /// single-layer image named `reference`, as `docker import` does.
    ///
    /// - Throws: `BerthError` for a missing or unreadable source, a malformed
    ///   or hostile archive; nothing is left behind then, and images already
    ///   stored are untouched.
    public func importRootfs(from path: String, reference: ImageReference, config: ImageConfig = ImageConfig()) throws -> ImportResult {
        let status: FileStatus
        do {
            status = try FileIO.status(path)
        } catch {
            throw BerthError(.notFound, "cannot import \(path): no such file or directory")
        }
        let writer = try content.ingest()
        let blob: Digest
        do {
            if status.isDirectory {
                var tar = TarWriter { bytes in try bytes.withUnsafeBytes { try writer.append($0) } }
                try DirectoryArchiver.archive(path, into: &tar)
            } else {
                try writer.append(file: path)
            }
            blob = try writer.commit()
        } catch let error as BerthError {
            writer.abandon()
            throw error
        } catch {
            writer.abandon()
            throw BerthError(.invalidArgument, "cannot read \(path)", underlying: error)
        }
        let layerSize = writer.bytesWritten
        let diffID = blob
        var warnings: [String] = []
        let chain = Self.chainIDs([diffID])[0]
        do {
            warnings = try unpackLayer(blob: blob, chainID: chain)
        } catch {
            // A layer that did not unpack is not kept in the store either.
            try? content.delete(blob)
            throw error
        }

        var imageConfig = config
        if imageConfig.env.isEmpty { imageConfig.env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] }
        let created = Date()
        let oci = OCIImageConfig(
            image: imageConfig, diffIDs: [diffID], architecture: Platform.architecture, os: "linux", created: created,
            comment: "imported from \(status.isDirectory ? "a directory" : "a tar archive")")
        let configBytes = try OCIImageConfig.encoder().encode(oci)
        let configDigest = try content.write(configBytes)
        let manifest = OCIManifest(
            config: .init(mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest.description, size: Int64(configBytes.count)),
            layers: [.init(mediaType: "application/vnd.oci.image.layer.v1.tar", digest: blob.description, size: layerSize)])
        let manifestBytes = try OCIImageConfig.encoder().encode(manifest)
        let manifestDigest = try content.write(manifestBytes)

        let image = Image(
            id: configDigest.description, names: [reference.canonical], digest: manifestDigest.description, sizeBytes: layerSize,
            layers: [diffID.description], os: "linux", architecture: Platform.architecture, config: oci.imageConfig, createdAt: created)
        try record(image, as: reference)
        return ImportResult(image: try resolve(image.id), names: [reference.canonical], warnings: warnings)
    }

    /// Records `image`, moving the name from any other image that held it
    /// (an image left without names stays, like docker's dangling images).
    private func assign(_ reference: ImageReference, to image: Image) throws {
        var existing = try index.allImages()
        for var other in existing where other.id != image.id && other.names.contains(reference.canonical) {
            other.names.removeAll { $0 == reference.canonical }
            try index.save(other)
        }
        existing = try index.allImages()
        var record = existing.first { $0.id == image.id } ?? image
        if !record.names.contains(reference.canonical) { record.names.append(reference.canonical) }
        try index.save(record)
    }

    /// Unpacks a layer blob once: into a temporary directory, renamed into
    /// place only when complete. The blob may be a plain, gzip or zstd tar
    /// (told by its first bytes); when `diffID` is given, the uncompressed
    /// stream must have that digest, or nothing is kept.
    func unpackLayer(blob: Digest, chainID: Digest, diffID: Digest? = nil) throws -> [String] {
        let target = layerPath(chainID)
        if FileIO.isDirectory(target) { return [] }
        let temporary = "\(root)/layers/.tmp-\(UUID().uuidString)"
        do {
            try FileIO.makeDirectory(temporary, mode: 0o755)
            let blobFile = try Descriptor.open(content.path(blob))
            defer { blobFile.close() }
            var magic = [UInt8](repeating: 0, count: 4)
            let n = try magic.withUnsafeMutableBytes { try blobFile.read(into: $0, at: 0) }
            let file = FileByteSource(fd: blobFile.raw)
            let started = ContinuousClock.now
            let compression = LayerCompression.detect(magic.prefix(max(0, n)))
            let report: LayerUnpacker.Report
            switch compression {
            case .none: report = try Self.unpack(file, into: temporary, diffID: diffID)
            case .gzip: report = try Self.unpack(GzipByteSource(file), into: temporary, diffID: diffID)
            case .zstd: report = try Self.unpack(ZstdByteSource(file), into: temporary, diffID: diffID)
            }
            let elapsed = ContinuousClock.now - started
            logger.info(
                "layer unpacked",
                metadata: [
                    "layer": "\(blob)", "compression": "\(compression)", "entries": "\(report.entries)", "bytes": "\(report.bytes)",
                    "seconds": "\(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)",
                ])
            do {
                try FileIO.rename(temporary, to: target)
            } catch let error as SystemError where error.code == .exists || error.code == .notEmpty {
                // Another import unpacked the same layer meanwhile.
                try? RootedDirectory(path: "\(root)/layers").remove(String(temporary.split(separator: "/").last!))
            }
            return report.warnings
        } catch {
            try? RootedDirectory(path: "\(root)/layers").remove(String(temporary.split(separator: "/").last!))
            if let hostile = error as? LayerUnpacker.HostileEntry {
                throw BerthError.invalid("refused a hostile layer: \(hostile)")
            }
            if let malformed = error as? TarError {
                throw BerthError.invalid("not a valid layer: \(malformed)")
            }
            if let error = error as? BerthError { throw error }
            if let error = error as? SystemError, error.code == .noSpace || error.code == .quotaExceeded {
                throw BerthError(.resourceExhausted, "no space left to unpack layer \(blob.short) under \(root)", underlying: error)
            }
            throw BerthError(.internal, "cannot unpack layer \(blob.short)", underlying: error)
        }
    }

    private static func unpack<S: ByteSource>(_ source: S, into directory: String, diffID: Digest?) throws -> LayerUnpacker.Report {
        let digesting = DigestingByteSource(source)
        let digest = digesting.digest
        var reader = TarReader(digesting)
        let report = try LayerUnpacker.unpack(&reader, into: directory)
        if let diffID {
            try reader.readToEnd()
            guard digest() == diffID else {
                throw BerthError.invalid("layer content does not match the image config: its diff ID is \(digest()), the config says \(diffID)")
            }
        }
        return report
    }

    /// Keeps `keys` (blob digests, chain ID hexes) from garbage collection
    /// while `body` runs.
    func pinning<T>(_ keys: [String], _ body: () async throws -> T) async throws -> T {
        pinned.withLock { for key in keys { $0[key, default: 0] += 1 } }
        defer {
            pinned.withLock {
                for key in keys {
                    $0[key, default: 1] -= 1
                    if $0[key] == 0 { $0[key] = nil }
                }
            }
        }
        return try await body()
    }

    /// Records a complete image that has no name (or keeps the names it has).
    func recordUnnamed(_ image: Image) throws {
        try lock.withLock { _ in
            if try index.allImages().contains(where: { $0.id == image.id }) { return }
            try index.save(image)
        }
    }

    /// Records a complete image under `reference`'s name.
    func record(_ image: Image, as reference: ImageReference) throws {
        try lock.withLock { _ in try assign(reference, to: image) }
    }

    // MARK: Removal

    /// Removes a name, or the image with all its names when given an ID.
    /// The image's layers and blobs go with its last name unless a container
    /// uses it.
    ///
    /// - Parameter inUse: whether a container uses the image ID.
    /// - Throws: `BerthError.failedPrecondition` when a container uses the
    ///   image, or when an ID names an image with several names, and
    ///   `force` is not set.
    public func remove(_ text: String, force: Bool, inUse: (String) -> Bool) throws -> (untagged: [String], deleted: [String]) {
        try lock.withLock { _ in
            var image = try resolve(text)
            var untagged: [String] = []
            let byName = (try? ImageReference(parsing: text)).map { image.names.contains($0.canonical) } ?? false
            if byName && image.names.count > 1, let reference = try? ImageReference(parsing: text) {
                image.names.removeAll { $0 == reference.canonical }
                try index.save(image)
                return ([reference.familiar], [])
            }
            if !byName && image.names.count > 1 && !force {
                // By ID, an image with several names would lose them all: docker asks for force.
                throw BerthError(
                    .failedPrecondition,
                    "conflict: unable to delete \(image.shortID) (must be forced) - image is referenced in multiple repositories")
            }
            if inUse(image.id) && !force {
                throw BerthError(
                    .failedPrecondition,
                    "image \(image.names.first.flatMap { try? ImageReference(parsing: $0).familiar } ?? image.shortID) is used by a container; remove the container first or use --force"
                )
            }
            untagged = image.names.compactMap { try? ImageReference(parsing: $0).familiar }
            if inUse(image.id) {
                // Forced while a container uses it: the names go, the image
                // stays (dangling, as docker keeps it) so its layers do too.
                image.names = []
                try index.save(image)
                return (untagged, [])
            }
            try index.deleteImage(id: image.id)
            return (untagged, [image.id] + (try collectGarbage().filter { $0 != image.id }))
        }
    }

    /// Deletes blobs and layers no image refers to. Returns what went.
    ///
    /// An image keeps its config, its manifest (or index, and the manifests
    /// it lists that are stored), every blob those manifests name, and the
    /// unpacked layers of its diff IDs.
    public func collectGarbage() throws -> [String] {
        let images = try index.allImages()
        var keepBlobs = Set<String>()
        var keepLayers = Set<String>()
        for image in images {
            keepBlobs.insert(image.id)
            let diffs = image.layers.compactMap { try? Digest($0) }
            keepBlobs.formUnion(diffs.map(\.description))
            keepLayers.formUnion(Self.chainIDs(diffs).map(\.hex))
            for (digest, document) in documents(from: image.digest) {
                keepBlobs.insert(digest.description)
                if case .manifest(let manifest) = document {
                    keepBlobs.formUnion([manifest.config.digest] + manifest.layers.map(\.digest))
                }
            }
        }
        let pinned = self.pinned.withLock { Set($0.keys) }
        keepBlobs.formUnion(pinned)
        keepLayers.formUnion(pinned)
        var removed: [String] = []
        for digest in try content.all() where !keepBlobs.contains(digest.description) {
            try content.delete(digest)
            removed.append(digest.description)
        }
        let layers = try RootedDirectory(path: "\(root)/layers")
        for name in try FileIO.list("\(root)/layers") where !keepLayers.contains(name) && !name.hasPrefix(".tmp-") {
            try layers.remove(name)
        }
        return removed
    }

    /// The stored manifests and indexes reachable from `root` (a manifest or
    /// index digest, through the indexes), each once; what is not stored or
    /// does not parse is passed over.
    func documents(from root: String) -> [(Digest, ManifestDocument)] {
        var seen = Set<String>()
        var found: [(Digest, ManifestDocument)] = []
        var pending = [root]
        while let next = pending.popLast() {
            guard seen.insert(next).inserted, let digest = try? Digest(next), content.contains(digest),
                let bytes = try? content.read(digest), let document = try? ManifestDocument(bytes: Array(bytes), mediaType: "", what: next)
            else { continue }
            found.append((digest, document))
            if case .index(let index) = document { pending += index.manifests.map(\.digest) }
        }
        return found
    }

    /// Adds a name to an image.
    public func tag(_ text: String, as reference: ImageReference) throws {
        try lock.withLock { _ in try assign(reference, to: try resolve(text)) }
    }
}
