public import BerthModel
import FoundationEssentials
import SwiftProtobuf

extension ImageConfig {
    public var proto: Berth_Agent_V1_ImageConfig {
        .with {
            $0.entrypoint = entrypoint ?? []
            $0.cmd = cmd ?? []
            $0.env = env
            $0.workingDir = workingDir
            $0.user = user
            $0.exposedPorts = exposedPorts
            $0.stopSignal = stopSignal
            $0.labels = labels
            $0.volumes = volumes
            if let healthcheck { $0.healthcheck = healthcheck.proto }
            $0.shell = shell
        }
    }

    /// - Throws: `BerthError.invalidArgument` for a health check docker would refuse.
    public init(proto p: Berth_Agent_V1_ImageConfig) throws {
        self.init(
            entrypoint: p.entrypoint.isEmpty ? nil : p.entrypoint, cmd: p.cmd.isEmpty ? nil : p.cmd, env: p.env,
            workingDir: p.workingDir, user: p.user, exposedPorts: p.exposedPorts, stopSignal: p.stopSignal, labels: p.labels,
            volumes: p.volumes, healthcheck: p.hasHealthcheck ? try HealthCheck(proto: p.healthcheck) : nil, shell: p.shell)
    }
}

extension Image {
    public var proto: Berth_Agent_V1_Image {
        .with {
            $0.id = id
            $0.names = names
            $0.digest = digest
            $0.sizeBytes = sizeBytes
            $0.layers = layers
            $0.os = os
            $0.architecture = architecture
            $0.config = config.proto
            $0.createdAt = Google_Protobuf_Timestamp(date: createdAt)
        }
    }

    /// - Throws: `BerthError.invalidArgument` for a malformed config.
    public init(proto p: Berth_Agent_V1_Image) throws {
        self.init(
            id: p.id, names: p.names, digest: p.digest, sizeBytes: p.sizeBytes, layers: p.layers, os: p.os,
            architecture: p.architecture, config: try ImageConfig(proto: p.config), createdAt: p.createdAt.date)
    }
}
