import FoundationEssentials

/// The parts of an image's configuration that shape a container
/// (the OCI image config's `config` object).
public struct ImageConfig: Codable, Sendable, Hashable {
    public var entrypoint: [String]?
    public var cmd: [String]?
    public var env: [String]
    public var workingDir: String
    public var user: String
    /// "80/tcp", "53/udp".
    public var exposedPorts: [String]
    public var stopSignal: String
    public var labels: [String: String]
    public var volumes: [String]
    /// The image's `HEALTHCHECK` (docker's `Healthcheck`), if it has one.
    public var healthcheck: HealthCheck?
    /// The shell `CMD-SHELL` checks run with (docker's `Shell`); empty: `/bin/sh -c`.
    public var shell: [String]

    public init(
        entrypoint: [String]? = nil, cmd: [String]? = nil, env: [String] = [], workingDir: String = "", user: String = "",
        exposedPorts: [String] = [], stopSignal: String = "", labels: [String: String] = [:], volumes: [String] = [],
        healthcheck: HealthCheck? = nil, shell: [String] = []
    ) {
        self.entrypoint = entrypoint
        self.cmd = cmd
        self.env = env
        self.workingDir = workingDir
        self.user = user
        self.exposedPorts = exposedPorts
        self.stopSignal = stopSignal
        self.labels = labels
        self.volumes = volumes
        self.healthcheck = healthcheck
        self.shell = shell
    }

    enum CodingKeys: String, CodingKey {
        case entrypoint, cmd, env, workingDir, user, exposedPorts, stopSignal, labels, volumes, healthcheck, shell
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            entrypoint: try c.decodeIfPresent([String].self, forKey: .entrypoint), cmd: try c.decodeIfPresent([String].self, forKey: .cmd),
            env: try c.decode([String].self, forKey: .env), workingDir: try c.decode(String.self, forKey: .workingDir),
            user: try c.decode(String.self, forKey: .user), exposedPorts: try c.decode([String].self, forKey: .exposedPorts),
            stopSignal: try c.decode(String.self, forKey: .stopSignal), labels: try c.decode([String: String].self, forKey: .labels),
            volumes: try c.decode([String].self, forKey: .volumes), healthcheck: try c.decodeIfPresent(HealthCheck.self, forKey: .healthcheck),
            shell: try c.decodeIfPresent([String].self, forKey: .shell) ?? [])
    }
}

/// An image in the agent's store.
public struct Image: Codable, Sendable, Hashable, Identifiable {
    /// The config digest, `sha256:…`.
    public var id: String
    /// Canonical references that name it (`docker.io/library/busybox:latest`).
    public var names: [String]
    /// The manifest digest, when there is a manifest.
    public var digest: String
    public var sizeBytes: Int64
    /// Layer diff IDs, bottom first.
    public var layers: [String]
    public var os: String
    public var architecture: String
    public var config: ImageConfig
    public var createdAt: Date

    public init(
        id: String, names: [String], digest: String, sizeBytes: Int64, layers: [String], os: String, architecture: String,
        config: ImageConfig, createdAt: Date
    ) {
        self.id = id
        self.names = names
        self.digest = digest
        self.sizeBytes = sizeBytes
        self.layers = layers
        self.os = os
        self.architecture = architecture
        self.config = config
        self.createdAt = createdAt
    }

    /// The first 12 hex digits of the ID, as `docker images` shows.
    public var shortID: String { String(id.dropFirst(7).prefix(12)) }
}
