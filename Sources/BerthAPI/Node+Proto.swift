public import BerthModel
import SwiftProtobuf

extension CgroupMode {
    /// The wire form.
    public var proto: Berth_Agent_V1_CgroupMode {
        switch self {
        case .v1: return .v1
        case .v2: return .v2
        case .hybrid: return .hybrid
        }
    }

    /// Reads the wire form.
    ///
    /// - Throws: `BerthError.invalidArgument` for an unset or unknown value.
    public init(proto: Berth_Agent_V1_CgroupMode) throws {
        switch proto {
        case .v1: self = .v1
        case .v2: self = .v2
        case .hybrid: self = .hybrid
        default: throw BerthError.invalid("cgroup mode is not set")
        }
    }
}

extension NodeCapacity {
    public var proto: Berth_Agent_V1_NodeCapacity {
        .with {
            $0.cpus = Int32(clamping: cpus)
            $0.memoryBytes = memoryBytes
        }
    }

    public init(proto: Berth_Agent_V1_NodeCapacity) {
        self.init(cpus: Int(proto.cpus), memoryBytes: proto.memoryBytes)
    }
}

extension ContainerCounts {
    public var proto: Berth_Agent_V1_ContainerCounts {
        .with {
            $0.total = Int32(clamping: total)
            $0.running = Int32(clamping: running)
            $0.paused = Int32(clamping: paused)
            $0.stopped = Int32(clamping: stopped)
        }
    }

    public init(proto: Berth_Agent_V1_ContainerCounts) {
        self.init(total: Int(proto.total), running: Int(proto.running), paused: Int(proto.paused), stopped: Int(proto.stopped))
    }
}

extension VersionInfo {
    public var proto: Berth_Agent_V1_VersionInfo {
        .with {
            $0.version = version
            $0.apiVersion = apiVersion
            $0.gitCommit = gitCommit
            $0.swiftVersion = swiftVersion
            $0.nghttp2Version = nghttp2Version
            $0.os = os
            $0.architecture = architecture
        }
    }

    public init(proto: Berth_Agent_V1_VersionInfo) {
        self.init(
            version: proto.version, apiVersion: proto.apiVersion, gitCommit: proto.gitCommit,
            swiftVersion: proto.swiftVersion, nghttp2Version: proto.nghttp2Version, os: proto.os,
            architecture: proto.architecture)
    }
}

extension NodeInfo {
    public var proto: Berth_Agent_V1_NodeInfo {
        .with {
            $0.id = id
            $0.hostname = hostname
            $0.kernelVersion = kernelVersion
            $0.operatingSystem = operatingSystem
            $0.architecture = architecture
            $0.cgroupMode = cgroupMode.proto
            $0.capacity = capacity.proto
            $0.allocatable = allocatable.proto
            $0.labels = labels
            $0.containers = containers.proto
            $0.images = Int32(clamping: images)
            $0.rootDir = rootDir
            $0.stateDir = stateDir
            $0.version = version.proto
        }
    }

    /// - Throws: `BerthError.invalidArgument` when a required field is missing.
    public init(proto: Berth_Agent_V1_NodeInfo) throws {
        self.init(
            id: proto.id, hostname: proto.hostname, kernelVersion: proto.kernelVersion,
            operatingSystem: proto.operatingSystem, architecture: proto.architecture,
            cgroupMode: try CgroupMode(proto: proto.cgroupMode), capacity: NodeCapacity(proto: proto.capacity),
            allocatable: NodeCapacity(proto: proto.allocatable), labels: proto.labels,
            containers: ContainerCounts(proto: proto.containers), images: Int(proto.images),
            rootDir: proto.rootDir, stateDir: proto.stateDir, version: VersionInfo(proto: proto.version))
    }
}
