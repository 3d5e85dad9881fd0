/// How the host's cgroups are mounted.
public enum CgroupMode: String, Codable, Sendable, Hashable, CaseIterable {
    /// Only the v1 hierarchies.
    case v1
    /// Only the unified (v2) hierarchy.
    case v2
    /// v1 hierarchies for the controllers, plus a v2 mount beside them.
    case hybrid
}

/// What a host offers for containers.
public struct NodeCapacity: Codable, Sendable, Hashable {
    /// Logical CPUs.
    public var cpus: Int
    /// Physical memory in bytes.
    public var memoryBytes: Int64

    public init(cpus: Int, memoryBytes: Int64) {
        self.cpus = cpus
        self.memoryBytes = memoryBytes
    }
}

/// The build of a Berth component.
public struct VersionInfo: Codable, Sendable, Hashable {
    /// Berth's version (`0.1.0`).
    public var version: String
    /// The agent API version (`v1`).
    public var apiVersion: String
    /// The source revision the binary was built from, when known.
    public var gitCommit: String
    /// The Swift compiler's version.
    public var swiftVersion: String
    /// The nghttp2 library in use.
    public var nghttp2Version: String
    /// `linux`.
    public var os: String
    /// `x86_64`, `aarch64`.
    public var architecture: String

    public init(
        version: String, apiVersion: String, gitCommit: String, swiftVersion: String,
        nghttp2Version: String, os: String, architecture: String
    ) {
        self.version = version
        self.apiVersion = apiVersion
        self.gitCommit = gitCommit
        self.swiftVersion = swiftVersion
        self.nghttp2Version = nghttp2Version
        self.os = os
        self.architecture = architecture
    }
}

/// Counts of containers by state, as `docker info` shows them.
public struct ContainerCounts: Codable, Sendable, Hashable {
    public var total: Int
    public var running: Int
    public var paused: Int
    public var stopped: Int

    public init(total: Int = 0, running: Int = 0, paused: Int = 0, stopped: Int = 0) {
        self.total = total
        self.running = running
        self.paused = paused
        self.stopped = stopped
    }
}

/// A host as its agent describes it.
public struct NodeInfo: Codable, Sendable, Hashable {
    /// A stable ID for the host, kept under the agent's root.
    public var id: String
    public var hostname: String
    /// `uname -r`.
    public var kernelVersion: String
    /// `PRETTY_NAME` from os-release.
    public var operatingSystem: String
    public var architecture: String
    public var cgroupMode: CgroupMode
    /// What the host has.
    public var capacity: NodeCapacity
    /// What the host offers to containers after the agent's reservation.
    public var allocatable: NodeCapacity
    public var labels: [String: String]
    public var containers: ContainerCounts
    public var images: Int
    /// The agent's `--root` and `--state` directories.
    public var rootDir: String
    public var stateDir: String
    public var version: VersionInfo

    public init(
        id: String, hostname: String, kernelVersion: String, operatingSystem: String,
        architecture: String, cgroupMode: CgroupMode, capacity: NodeCapacity, allocatable: NodeCapacity,
        labels: [String: String] = [:], containers: ContainerCounts = ContainerCounts(), images: Int = 0,
        rootDir: String, stateDir: String, version: VersionInfo
    ) {
        self.id = id
        self.hostname = hostname
        self.kernelVersion = kernelVersion
        self.operatingSystem = operatingSystem
        self.architecture = architecture
        self.cgroupMode = cgroupMode
        self.capacity = capacity
        self.allocatable = allocatable
        self.labels = labels
        self.containers = containers
        self.images = images
        self.rootDir = rootDir
        self.stateDir = stateDir
        self.version = version
    }
}
