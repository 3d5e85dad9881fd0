import BerthModel
import Foundation

/// The OCI image config document (application/vnd.oci.image.config.v1+json).
struct OCIImageConfig: Codable {
    struct Config: Codable {
        var User: String?
        var ExposedPorts: [String: Empty]?
        var Env: [String]?
        var Entrypoint: [String]?
        var Cmd: [String]?
        var Volumes: [String: Empty]?
        var WorkingDir: String?
        var Labels: [String: String]?
        var StopSignal: String?
        var Healthcheck: Healthcheck?
        var Shell: [String]?
    }

    /// docker's `HEALTHCHECK`, durations in nanoseconds (0: the default).
    struct Healthcheck: Codable {
        var Test: [String]?
        var Interval: Int64?
        var Timeout: Int64?
        var StartPeriod: Int64?
        var StartInterval: Int64?
        var Retries: Int?

        init(_ check: HealthCheck) {
            func nanos(_ seconds: Double?) -> Int64? { seconds.map { Int64(($0 * 1e9).rounded()) } }
            Test = check.test
            Interval = nanos(check.interval)
            Timeout = nanos(check.timeout)
            StartPeriod = nanos(check.startPeriod)
            StartInterval = nanos(check.startInterval)
            Retries = check.retries
        }

        /// nil for a check without a test (docker treats it as none given).
        var check: HealthCheck? {
            guard let test = Test, !test.isEmpty else { return nil }
            func seconds(_ nanos: Int64?) -> Double? { nanos.flatMap { $0 > 0 ? Double($0) / 1e9 : nil } }
            let check = HealthCheck(
                test: test, interval: seconds(Interval), timeout: seconds(Timeout), startPeriod: seconds(StartPeriod),
                startInterval: seconds(StartInterval), retries: Retries.flatMap { $0 > 0 ? $0 : nil })
            // A check Berth cannot run is left out rather than failing the image.
            return (try? check.validate()) == nil ? nil : check
        }
    }

    struct Empty: Codable {}

    struct RootFS: Codable {
        var type: String
        var diff_ids: [String]
    }

    struct History: Codable {
        var created: String?
        var created_by: String?
        var comment: String?
    }

    var created: String?
    var architecture: String
    var os: String
    var config: Config?
    var rootfs: RootFS
    var history: [History]?

    init(image: ImageConfig, diffIDs: [Digest], architecture: String, os: String, created: Date, comment: String) {
        self.created = RFC3339.format(created)
        self.architecture = architecture
        self.os = os
        self.config = Config(
            User: image.user.isEmpty ? nil : image.user,
            ExposedPorts: image.exposedPorts.isEmpty ? nil : Dictionary(uniqueKeysWithValues: image.exposedPorts.map { ($0, Empty()) }),
            Env: image.env.isEmpty ? nil : image.env, Entrypoint: image.entrypoint, Cmd: image.cmd,
            Volumes: image.volumes.isEmpty ? nil : Dictionary(uniqueKeysWithValues: image.volumes.map { ($0, Empty()) }),
            WorkingDir: image.workingDir.isEmpty ? nil : image.workingDir, Labels: image.labels.isEmpty ? nil : image.labels,
            StopSignal: image.stopSignal.isEmpty ? nil : image.stopSignal, Healthcheck: image.healthcheck.map(Healthcheck.init),
            Shell: image.shell.isEmpty ? nil : image.shell)
        self.rootfs = RootFS(type: "layers", diff_ids: diffIDs.map(\.description))
        self.history = [History(created: self.created, created_by: "berth image import", comment: comment)]
    }

    var imageConfig: ImageConfig {
        ImageConfig(
            entrypoint: config?.Entrypoint, cmd: config?.Cmd, env: config?.Env ?? [], workingDir: config?.WorkingDir ?? "",
            user: config?.User ?? "", exposedPorts: (config?.ExposedPorts ?? [:]).keys.sorted(), stopSignal: config?.StopSignal ?? "",
            labels: config?.Labels ?? [:], volumes: (config?.Volumes ?? [:]).keys.sorted(), healthcheck: config?.Healthcheck?.check,
            shell: config?.Shell ?? [])
    }

    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}

/// The media types of OCI and docker v2 images.
public enum MediaType {
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let ociLayer = "application/vnd.oci.image.layer.v1.tar"
    public static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let ociLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    public static let dockerSchema1 = "application/vnd.docker.distribution.manifest.v1+json"
    public static let dockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"

    static let layers: Set<String> = [
        ociLayer, ociLayerGzip, ociLayerZstd, dockerLayerGzip,
        "application/vnd.docker.image.rootfs.diff.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ]
}

/// A content descriptor: what a manifest or index points at.
struct OCIDescriptor: Codable {
    struct Platform: Codable {
        var architecture: String
        var os: String
        var variant: String?

        var description: String { "\(os)/\(architecture)\(variant.map { "/\($0)" } ?? "")" }
    }

    var mediaType: String
    var digest: String
    var size: Int64
    var platform: Platform?
    var annotations: [String: String]?
    var urls: [String]?
}

/// The OCI image manifest (application/vnd.oci.image.manifest.v1+json).
struct OCIManifest: Codable {
    typealias Descriptor = OCIDescriptor

    var schemaVersion: Int = 2
    var mediaType: String? = MediaType.ociManifest
    var config: Descriptor
    var layers: [Descriptor]
}

/// An OCI image index or a docker manifest list.
struct OCIIndex: Codable {
    var schemaVersion: Int = 2
    var mediaType: String? = MediaType.ociIndex
    var manifests: [OCIDescriptor]
}

/// What a manifest or index document is, told by its media type or, when
/// the server gave none, by its fields.
enum ManifestDocument {
    case index(OCIIndex)
    case manifest(OCIManifest)

    /// - Throws: `BerthError.invalidArgument` naming what did not parse.
    init(bytes: [UInt8], mediaType: String, what: String) throws {
        struct Probe: Decodable {
            var schemaVersion: Int?
            var mediaType: String?
            var manifests: [OCIDescriptor]?
            var config: OCIDescriptor?
        }
        let probe: Probe
        do {
            probe = try JSONDecoder().decode(Probe.self, from: Data(bytes))
        } catch {
            throw BerthError.invalid("\(what): the manifest does not parse as JSON: \(error)")
        }
        let type = probe.mediaType ?? mediaType
        if type == MediaType.dockerSchema1 || type == MediaType.dockerSchema1Signed || probe.schemaVersion == 1 {
            throw BerthError.invalid("\(what): docker schema 1 manifests are not supported; push the image again with a current tool")
        }
        guard probe.schemaVersion == 2 else {
            throw BerthError.invalid("\(what): unsupported manifest schemaVersion \(probe.schemaVersion.map(String.init) ?? "(none)")")
        }
        do {
            if type == MediaType.ociIndex || type == MediaType.dockerManifestList || (probe.manifests != nil && probe.config == nil) {
                self = .index(try JSONDecoder().decode(OCIIndex.self, from: Data(bytes)))
            } else if type == MediaType.ociManifest || type == MediaType.dockerManifest || probe.config != nil {
                let manifest = try JSONDecoder().decode(OCIManifest.self, from: Data(bytes))
                for layer in manifest.layers where !MediaType.layers.contains(layer.mediaType) {
                    throw BerthError.invalid("\(what): layer \(layer.digest) has media type \(layer.mediaType), which is not an image layer")
                }
                self = .manifest(manifest)
            } else {
                throw BerthError.invalid("\(what): unknown manifest media type \(type.isEmpty ? "(none)" : type)")
            }
        } catch let error as BerthError {
            throw error
        } catch {
            throw BerthError.invalid("\(what): the manifest is not a valid \(type): \(error)")
        }
    }
}

/// An image platform, `os/architecture[/variant]`.
public struct ImagePlatform: Sendable, Equatable, CustomStringConvertible {
    public var os: String
    public var architecture: String
    public var variant: String?

    /// The host's own platform.
    public static var host: ImagePlatform {
        ImagePlatform(os: "linux", architecture: Platform.architecture, variant: Platform.architecture == "arm64" ? "v8" : nil)
    }

    public init(os: String, architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
    }

    /// - Throws: `BerthError.invalidArgument` for anything but `os/arch[/variant]`.
    public init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else {
            throw BerthError.invalid("platform \"\(text)\": expected OS/ARCHITECTURE[/VARIANT], such as linux/amd64")
        }
        self.init(os: parts[0], architecture: parts[1], variant: parts.count == 3 ? parts[2] : nil)
    }

    public var description: String { "\(os)/\(architecture)\(variant.map { "/\($0)" } ?? "")" }

    /// Whether an index entry serves this platform (a variant asked for must
    /// match; arm64's v8 is its default).
    func matches(_ p: OCIDescriptor.Platform) -> Bool {
        guard p.os == os, p.architecture == architecture else { return false }
        guard let variant else { return true }
        return p.variant == variant || (p.variant == nil && architecture == "arm64" && variant == "v8")
    }
}

