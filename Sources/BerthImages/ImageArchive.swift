public import BerthModel
import BerthLinux
import Foundation

/// What an image file on the host is.
public enum ImageSourceKind: Sendable, Equatable {
    /// A root filesystem, as a directory or a tar archive (`docker import`).
    case rootfs
    /// An OCI image layout, as a directory or a tar archive.
    case ociLayout
    /// `docker save` output: manifest.json with RepoTags, configs and layer tars.
    case dockerArchive
}

extension ImageStore {
    /// Tells a root filesystem from an OCI layout or a docker archive.
    public static func kind(of path: String) throws -> ImageSourceKind {
        let status: FileStatus
        do {
            status = try FileIO.status(path)
        } catch {
            throw BerthError(.notFound, "cannot import \(path): no such file or directory")
        }
        if status.isDirectory {
            if FileIO.exists("\(path)/oci-layout") && FileIO.exists("\(path)/index.json") { return .ociLayout }
            if FileIO.exists("\(path)/manifest.json") && FileIO.isDirectory("\(path)/blobs") { return .ociLayout }
            return .rootfs
        }
        // A tar's first entries tell: an archive starts with its metadata or
        // its blobs, never with a root filesystem's directories like bin/.
        let file: Descriptor
        do { file = try Descriptor.open(path) } catch { throw BerthError(.invalidArgument, "cannot read \(path)", underlying: error) }
        defer { file.close() }
        let fd = file.raw
        var magic = [UInt8](repeating: 0, count: 4)
        let n = (try? magic.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }) ?? 0
        guard LayerCompression.detect(magic.prefix(max(0, n))) == .none else { return .rootfs }
        var reader = TarReader(FileByteSource(fd: fd))
        var names: [String] = []
        while names.count < 4096, let entry = try? reader.next() {
            let name = (try? LayerUnpacker.clean(entry.name)) ?? entry.name
            if name == "oci-layout" { return .ociLayout }
            names.append(name)
        }
        if names.contains("manifest.json") { return .dockerArchive }
        return .rootfs
    }

    /// Imports every image of an OCI layout (directory or tar) or a docker
    /// archive: each blob stored and verified by its digest, each layer
    /// unpacked once and checked against its config's diff IDs. Images are
    /// named by their `org.opencontainers.image.ref.name` (or
    /// `io.containerd.image.name`) annotations or docker's RepoTags; with
    /// `reference`, the single image in the source is named that.
    ///
    /// - Throws: `BerthError` for a malformed or hostile source; images
    ///   already stored are untouched and none of the source's is recorded.
    public func importArchive(from path: String, kind: ImageSourceKind, reference: ImageReference?) throws -> [ImportResult] {
        let files = try ArchiveFiles(path: path, store: content)
        var found: [(manifest: OCIManifest, manifestBytes: [UInt8], names: [ImageReference])] = []
        switch kind {
        case .ociLayout:
            guard let indexBytes = try files.small("index.json") else {
                throw BerthError.invalid("\(path) is not an OCI layout: it has no index.json")
            }
            let index: OCIIndex
            do {
                index = try JSONDecoder().decode(OCIIndex.self, from: Data(indexBytes))
            } catch {
                throw BerthError.invalid("\(path): index.json does not parse: \(error)")
            }
            var pending = index.manifests.map { ($0, [String]()) }
            while !pending.isEmpty {
                let (descriptor, inherited) = pending.removeFirst()
                let names = inherited + [descriptor.annotations?["io.containerd.image.name"] ?? descriptor.annotations?["org.opencontainers.image.ref.name"]].compactMap { $0 }
                let digest = try Digest(descriptor.digest)
                let bytes = try files.blobBytes(digest, limit: RegistryClient.manifestLimit)
                switch try ManifestDocument(bytes: bytes, mediaType: descriptor.mediaType, what: "\(path): \(descriptor.digest)") {
                case .index(let nested):
                    // A nested index: its entry for this host, as a pull would choose.
                    let host = ImagePlatform.host
                    if let entry = nested.manifests.first(where: { $0.platform.map(host.matches) ?? false }) ?? nested.manifests.first {
                        pending.append((entry, names))
                    }
                case .manifest(let manifest):
                    found.append((manifest, bytes, try names.compactMap { try Self.layoutName($0) }))
                }
            }
        case .dockerArchive:
            guard let manifestBytes = try files.small("manifest.json") else {
                throw BerthError.invalid("\(path) is not a docker archive: it has no manifest.json")
            }
            struct Entry: Decodable {
                var Config: String
                var RepoTags: [String]?
                var Layers: [String]
            }
            let entries: [Entry]
            do {
                entries = try JSONDecoder().decode([Entry].self, from: Data(manifestBytes))
            } catch {
                throw BerthError.invalid("\(path): manifest.json does not parse: \(error)")
            }
            for entry in entries {
                let config = try files.digest(of: entry.Config)
                let layers = try entry.Layers.map { layer in
                    let digest = try files.digest(of: layer)
                    let size = try FileIO.status(content.path(digest)).size
                    return OCIDescriptor(mediaType: MediaType.ociLayer, digest: digest.description, size: size)
                }
                let manifest = OCIManifest(
                    config: .init(mediaType: MediaType.ociConfig, digest: config.description, size: try FileIO.status(content.path(config)).size),
                    layers: layers)
                let bytes = Array(try OCIImageConfig.encoder().encode(manifest))
                found.append((manifest, bytes, try (entry.RepoTags ?? []).map { try ImageReference(parsing: $0) }))
            }
        case .rootfs:
            throw BerthError(.internal, "importArchive called for a root filesystem")
        }
        guard !found.isEmpty else { throw BerthError.invalid("\(path) holds no image") }
        if reference != nil && found.count > 1 {
            throw BerthError.invalid("\(path) holds \(found.count) images; a name can be given to one only")
        }

        // Everything is checked and unpacked before any image is recorded.
        var prepared: [(Image, [ImageReference], [String])] = []
        for (manifest, bytes, names) in found {
            let manifestDigest = try content.write(Data(bytes))
            let configDigest = try Digest(manifest.config.digest)
            let configBytes = try files.blobBytes(configDigest, limit: RegistryClient.manifestLimit)
            let config: OCIImageConfig
            do {
                config = try JSONDecoder().decode(OCIImageConfig.self, from: Data(configBytes))
            } catch {
                throw BerthError.invalid("\(path): the image config \(configDigest.short) does not parse: \(error)")
            }
            let diffIDs = try config.rootfs.diff_ids.map { try Digest($0) }
            guard diffIDs.count == manifest.layers.count else {
                throw BerthError.invalid("\(path): a manifest has \(manifest.layers.count) layers but its config lists \(diffIDs.count) diff IDs")
            }
            var warnings: [String] = []
            for ((layer, diffID), chainID) in zip(zip(manifest.layers, diffIDs), Self.chainIDs(diffIDs)) {
                let blob = try Digest(layer.digest)
                try files.ensure(blob)
                warnings += try unpackLayer(blob: blob, chainID: chainID, diffID: diffID)
            }
            let image = Image(
                id: configDigest.description, names: [], digest: manifestDigest.description,
                sizeBytes: manifest.layers.reduce(0) { $0 + $1.size }, layers: diffIDs.map(\.description), os: config.os,
                architecture: config.architecture, config: config.imageConfig, createdAt: config.created.flatMap(RFC3339.parse) ?? Date())
            prepared.append((image, reference.map { [$0] } ?? names, warnings))
        }
        var results: [ImportResult] = []
        for (image, names, warnings) in prepared {
            if names.isEmpty {
                try recordUnnamed(image)
            }
            for name in names { try record(image, as: name) }
            results.append(ImportResult(image: try resolve(image.id), names: names.map(\.canonical), warnings: warnings))
        }
        return results
    }

    /// A layout's ref name when it is a full reference (`registry/name:tag`,
    /// `name:tag`); a bare tag like `v1` names nothing on its own.
    static func layoutName(_ text: String) throws -> ImageReference? {
        guard text.contains(":") || text.contains("/") else { return nil }
        do {
            return try ImageReference(parsing: text)
        } catch {
            throw BerthError.invalid("the layout names an image \"\(text)\", which is not a valid reference: \(error)")
        }
    }
}

/// The files of an image layout or archive, as a directory or a tar. A tar
/// is read once: every file goes into the content store (verified against
/// its name when it is `blobs/sha256/<hex>`), small metadata files are also
/// kept in memory, and symlinks are followed by name within the archive.
struct ArchiveFiles {
    let store: ContentStore
    let directory: String?
    private var digests: [String: Digest] = [:]
    private var metadata: [String: [UInt8]] = [:]

    static let metadataNames: Set<String> = ["index.json", "manifest.json", "oci-layout", "repositories"]

    init(path: String, store: ContentStore) throws {
        self.store = store
        if FileIO.isDirectory(path) {
            directory = path
            return
        }
        directory = nil
        let file: Descriptor
        do { file = try Descriptor.open(path) } catch { throw BerthError(.invalidArgument, "cannot read \(path)", underlying: error) }
        defer { file.close() }
        let fd = file.raw
        var reader = TarReader(FileByteSource(fd: fd))
        var links: [String: String] = [:]
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        do {
            while let entry = try reader.next() {
                let name = try LayerUnpacker.clean(entry.name)
                switch entry.kind {
                case .file:
                    let writer = try store.ingest()
                    var small: [UInt8] = []
                    let keep = Self.metadataNames.contains(name) && entry.size <= RegistryClient.manifestLimit
                    do {
                        while true {
                            let n = try buffer.withUnsafeMutableBytes { try reader.readData(into: $0) }
                            if n == 0 { break }
                            try buffer.withUnsafeBytes { try writer.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                            if keep { small += buffer[0..<n] }
                        }
                        let expected = Self.blobDigest(name)
                        let digest = try writer.commit(expected: expected)
                        digests[name] = digest
                        if keep { metadata[name] = small }
                    } catch {
                        writer.abandon()
                        throw error
                    }
                case .symlink, .hardlink:
                    // docker save links a layer seen twice: "ID/layer.tar -> ../OTHER/layer.tar".
                    let base = entry.kind == .hardlink || entry.linkName.hasPrefix("/") ? [] : name.split(separator: "/").dropLast().map(String.init)
                    guard let target = Self.resolve(entry.linkName, from: base) else {
                        throw LayerUnpacker.HostileEntry(name: entry.name, reason: "a link to \"\(entry.linkName)\", outside the archive")
                    }
                    links[name] = target
                default:
                    continue
                }
            }
        } catch let error as TarError {
            throw BerthError.invalid("\(path) is not a valid archive: \(error)")
        } catch let error as LayerUnpacker.HostileEntry {
            throw BerthError.invalid("\(path): \(error)")
        }
        for (name, target) in links {
            var resolved = target
            var hops = 0
            while let next = links[resolved], hops < 16 {
                resolved = next
                hops += 1
            }
            if let digest = digests[resolved] { digests[name] = digest }
            if let bytes = metadata[resolved] { metadata[name] = bytes }
        }
    }

    /// A link's target as a path inside the archive, nil when it climbs out.
    static func resolve(_ link: String, from directory: [String]) -> String? {
        var parts = directory
        for part in link.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." {
                guard !parts.isEmpty else { return nil }
                parts.removeLast()
            } else {
                parts.append(String(part))
            }
        }
        return parts.joined(separator: "/")
    }

    /// The digest a layout's `blobs/sha256/<hex>` path promises.
    static func blobDigest(_ name: String) -> Digest? {
        guard name.hasPrefix("blobs/sha256/") else { return nil }
        return try? Digest("sha256:" + name.dropFirst("blobs/sha256/".count))
    }

    /// A metadata file's bytes, nil when absent.
    func small(_ name: String) throws -> [UInt8]? {
        if let directory {
            let path = "\(directory)/\(name)"
            guard FileIO.exists(path) else { return nil }
            guard try FileIO.status(path).size <= Int64(RegistryClient.manifestLimit) else {
                throw BerthError.invalid("\(path) is larger than \(RegistryClient.manifestLimit) bytes")
            }
            return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        }
        return metadata[name]
    }

    /// Stores the file `name` (a path inside the source) and returns its digest.
    func digest(of name: String) throws -> Digest {
        let clean = try LayerUnpacker.clean(name)
        if let directory {
            let path = "\(directory)/\(clean)"
            guard FileIO.exists(path) else { throw BerthError.invalid("the archive names \(name), which it does not hold") }
            return try store.store(file: path, expected: Self.blobDigest(clean))
        }
        guard let digest = digests[clean] else { throw BerthError.invalid("the archive names \(name), which it does not hold") }
        return digest
    }

    /// Makes sure the blob is in the store (a layout directory's is copied in, verified).
    func ensure(_ digest: Digest) throws {
        if store.contains(digest) { return }
        guard let directory else { throw BerthError.invalid("the archive lacks blob \(digest)") }
        let path = "\(directory)/blobs/sha256/\(digest.hex)"
        guard FileIO.exists(path) else { throw BerthError.invalid("the layout lacks blob \(digest)") }
        try store.store(file: path, expected: digest)
    }

    /// A small blob's bytes, verified.
    func blobBytes(_ digest: Digest, limit: Int) throws -> [UInt8] {
        try ensure(digest)
        guard try FileIO.status(store.path(digest)).size <= Int64(limit) else {
            throw BerthError.invalid("blob \(digest) is larger than the \(limit) bytes a manifest or config may be")
        }
        return Array(try store.read(digest))
    }
}

extension ImageStore {
    /// Writes images as an OCI image layout archive: `oci-layout`,
    /// `index.json` naming each image (`io.containerd.image.name` and
    /// `org.opencontainers.image.ref.name`), and every blob they need.
    ///
    /// - Throws: `BerthError.notFound` for an unknown image; `internal` when a
    ///   blob an image needs is missing from the store.
    public func save(_ names: [String], into tar: inout TarWriter) throws {
        guard !names.isEmpty else { throw BerthError.invalid("save needs at least one image") }
        var descriptors: [OCIDescriptor] = []
        var blobs: [Digest] = []
        for text in names {
            let image = try resolve(text)
            let (manifestDigest, manifest) = try manifest(of: image)
            var annotations: [String: String] = [:]
            let named = (try? ImageReference(parsing: text)).flatMap { ref in image.names.contains(ref.canonical) ? ref : nil }
                ?? image.names.first.flatMap { try? ImageReference(parsing: $0) }
            if let named {
                annotations["io.containerd.image.name"] = named.canonical
                if let tag = named.tag { annotations["org.opencontainers.image.ref.name"] = tag }
            }
            let size = try FileIO.status(content.path(manifestDigest)).size
            descriptors.append(
                OCIDescriptor(
                    mediaType: manifest.mediaType ?? MediaType.ociManifest, digest: manifestDigest.description, size: size,
                    platform: .init(architecture: image.architecture, os: image.os), annotations: annotations.isEmpty ? nil : annotations))
            for digest in [manifestDigest, try Digest(manifest.config.digest)] + (try manifest.layers.map { try Digest($0.digest) })
            where !blobs.contains(digest) {
                guard content.contains(digest) else {
                    throw BerthError(.internal, "image \(image.shortID): blob \(digest) is missing from the store; pull or import the image again")
                }
                blobs.append(digest)
            }
        }
        let encoder = OCIImageConfig.encoder()
        try tar.append(TarEntry(name: "oci-layout", kind: .file), data: Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8))
        try tar.append(TarEntry(name: "index.json", kind: .file), data: Array(try encoder.encode(OCIIndex(manifests: descriptors))))
        try tar.append(TarEntry(name: "blobs", kind: .directory, mode: 0o755))
        try tar.append(TarEntry(name: "blobs/sha256", kind: .directory, mode: 0o755))
        for digest in blobs {
            let path = content.path(digest)
            let size = try FileIO.status(path).size
            try tar.appendHeader(TarEntry(name: "blobs/sha256/\(digest.hex)", kind: .file, size: size))
            let file = try Descriptor.open(path)
            defer { file.close() }
            let fd = file.raw
            var written: Int64 = 0
            try FileByteSource(fd: fd).forEachChunk { chunk in
                try tar.appendData(Array(chunk))
                written += Int64(chunk.count)
            }
            guard written == size else { throw BerthError(.internal, "blob \(digest) changed size while it was saved") }
            try tar.padData(size: size)
        }
        try tar.finish()
    }

    /// The image manifest of an image: its own, or the entry of its index
    /// whose config is the image's.
    func manifest(of image: Image) throws -> (Digest, OCIManifest) {
        for (digest, document) in documents(from: image.digest) {
            if case .manifest(let manifest) = document, manifest.config.digest == image.id { return (digest, manifest) }
        }
        throw BerthError(.internal, "image \(image.shortID): its manifest is missing from the store; pull or import the image again")
    }
}
