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
            StopSignal: image.stopSignal.isEmpty ? nil : image.stopSignal)
        self.rootfs = RootFS(type: "layers", diff_ids: diffIDs.map(\.description))
        self.history = [History(created: self.created, created_by: "berth image import", comment: comment)]
    }

    var imageConfig: ImageConfig {
        ImageConfig(
            entrypoint: config?.Entrypoint, cmd: config?.Cmd, env: config?.Env ?? [], workingDir: config?.WorkingDir ?? "",
            user: config?.User ?? "", exposedPorts: (config?.ExposedPorts ?? [:]).keys.sorted(), stopSignal: config?.StopSignal ?? "",
            labels: config?.Labels ?? [:], volumes: (config?.Volumes ?? [:]).keys.sorted())
    }

    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}

/// The OCI image manifest (application/vnd.oci.image.manifest.v1+json).
struct OCIManifest: Codable {
    struct Descriptor: Codable {
        var mediaType: String
        var digest: String
        var size: Int64
    }

    var schemaVersion: Int = 2
    var mediaType: String = "application/vnd.oci.image.manifest.v1+json"
    var config: Descriptor
    var layers: [Descriptor]
}

