/// Everything a person asks for when creating a container: `docker run`'s
/// flags as one value.
public struct ContainerSpec: Codable, Sendable, Hashable {
    /// The container's name (`--name`); nil lets the agent choose one.
    public var name: String?
    /// The image reference (`busybox`, `busybox:1.36`, `registry:5000/app@sha256:…`).
    public var image: String
    /// Overrides the image's entrypoint when non-nil (`--entrypoint`).
    public var entrypoint: [String]?
    /// Overrides the image's command when non-empty (the arguments after IMAGE).
    public var command: [String]
    /// Environment entries, `KEY=VALUE`, in order (`-e`).
    public var env: [String]
    /// Working directory inside the container (`-w`); nil takes the image's.
    public var workingDir: String?
    /// `uid[:gid]` or `name[:group]` (`-u`); nil takes the image's.
    public var user: String?
    /// Free-form labels (`--label`).
    public var labels: [String: String]
    /// The UTS hostname (`-h`); nil means the short container ID.
    public var hostname: String?
    /// Limits and weights.
    public var resources: Resources
    /// Volumes, binds and tmpfs mounts.
    public var mounts: [Mount]
    /// Published ports (`-p`).
    public var ports: [PortMapping]
    /// Publish every port the image exposes on a free host port (`-P`).
    public var publishAll: Bool
    /// `none`, `host`, `bridge` or a user-defined network name (`--network`).
    public var network: String
    /// Extra names on the network (`--network-alias`).
    public var networkAliases: [String]
    /// A fixed address on the network (`--ip`); nil takes the next free one.
    public var ipv4Address: String?
    /// More networks, after `network` (`--network` given again; a
    /// service's replica on several overlays); nil for none.
    public var additionalNetworks: [NetworkAttachment]?
    /// Entries for /etc/hosts, `NAME:ADDRESS` (`--add-host`); nil for none.
    public var extraHosts: [String]?
    /// What happens when the main process exits (`--restart`).
    public var restartPolicy: RestartPolicy
    /// Sent first by stop (`--stop-signal`); nil takes the image's or SIGTERM.
    public var stopSignal: Signal?
    /// Seconds between the stop signal and SIGKILL (`--stop-timeout`); nil means 10.
    public var stopTimeout: Int?
    /// Mount the root filesystem read-only (`--read-only`).
    public var readOnlyRootfs: Bool
    /// Run a small init as PID 1 that reaps zombies and forwards signals (`--init`).
    public var initProcess: Bool
    /// Capabilities added to docker's default set (`--cap-add`).
    public var capAdd: [String]
    /// Capabilities removed from docker's default set (`--cap-drop`).
    public var capDrop: [String]
    /// `--security-opt` entries, such as `seccomp=unconfined` or `seccomp=FILE`.
    public var securityOpts: [String]
    /// Allocate a terminal (`-t`).
    public var tty: Bool
    /// Keep stdin open (`-i`).
    public var openStdin: Bool
    /// Remove the container when it exits (`--rm`).
    public var autoRemove: Bool
    /// Process limits (`--ulimit`); limits not given are inherited from the agent.
    public var ulimits: [Ulimit]
    /// Log rotation (`--log-opt`); nil takes the agent's.
    public var log: LogConfig?
    /// Host devices made in the container, with the access the container
    /// gets to them (`--device`).
    public var devices: [DeviceMapping]
    /// The health check (`--health-*`, `--no-healthcheck`); nil takes the
    /// image's. The agent stores the merged check at create.
    public var healthcheck: HealthCheck?
    /// What the agent does when the container turns unhealthy (`--health-on-failure`).
    public var healthOnFailure: HealthFailureAction

    public init(
        name: String? = nil,
        image: String,
        entrypoint: [String]? = nil,
        command: [String] = [],
        env: [String] = [],
        workingDir: String? = nil,
        user: String? = nil,
        labels: [String: String] = [:],
        hostname: String? = nil,
        resources: Resources = Resources(),
        mounts: [Mount] = [],
        ports: [PortMapping] = [],
        publishAll: Bool = false,
        network: String = "bridge",
        networkAliases: [String] = [],
        ipv4Address: String? = nil,
        additionalNetworks: [NetworkAttachment]? = nil, extraHosts: [String]? = nil,
        restartPolicy: RestartPolicy = .no,
        stopSignal: Signal? = nil,
        stopTimeout: Int? = nil,
        readOnlyRootfs: Bool = false,
        initProcess: Bool = false,
        capAdd: [String] = [],
        capDrop: [String] = [],
        securityOpts: [String] = [],
        tty: Bool = false,
        openStdin: Bool = false,
        autoRemove: Bool = false,
        ulimits: [Ulimit] = [],
        log: LogConfig? = nil,
        devices: [DeviceMapping] = [],
        healthcheck: HealthCheck? = nil,
        healthOnFailure: HealthFailureAction = .none
    ) {
        self.name = name
        self.image = image
        self.entrypoint = entrypoint
        self.command = command
        self.env = env
        self.workingDir = workingDir
        self.user = user
        self.labels = labels
        self.hostname = hostname
        self.resources = resources
        self.mounts = mounts
        self.ports = ports
        self.publishAll = publishAll
        self.network = network
        self.networkAliases = networkAliases
        self.ipv4Address = ipv4Address
        self.additionalNetworks = additionalNetworks
        self.extraHosts = extraHosts
        self.restartPolicy = restartPolicy
        self.stopSignal = stopSignal
        self.stopTimeout = stopTimeout
        self.readOnlyRootfs = readOnlyRootfs
        self.initProcess = initProcess
        self.capAdd = capAdd
        self.capDrop = capDrop
        self.securityOpts = securityOpts
        self.tty = tty
        self.openStdin = openStdin
        self.autoRemove = autoRemove
        self.ulimits = ulimits
        self.log = log
        self.devices = devices
        self.healthcheck = healthcheck
        self.healthOnFailure = healthOnFailure
    }

    enum CodingKeys: String, CodingKey {
        case name, image, entrypoint, command, env, workingDir, user, labels, hostname, resources, mounts, ports, publishAll
        case network, networkAliases, ipv4Address, additionalNetworks, extraHosts, restartPolicy, stopSignal, stopTimeout, readOnlyRootfs, initProcess, capAdd, capDrop
        case securityOpts, tty, openStdin, autoRemove, ulimits, log, devices, healthcheck, healthOnFailure
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            name: try c.decodeIfPresent(String.self, forKey: .name),
            image: try c.decode(String.self, forKey: .image),
            entrypoint: try c.decodeIfPresent([String].self, forKey: .entrypoint),
            command: try c.decodeIfPresent([String].self, forKey: .command) ?? [],
            env: try c.decodeIfPresent([String].self, forKey: .env) ?? [],
            workingDir: try c.decodeIfPresent(String.self, forKey: .workingDir),
            user: try c.decodeIfPresent(String.self, forKey: .user),
            labels: try c.decodeIfPresent([String: String].self, forKey: .labels) ?? [:],
            hostname: try c.decodeIfPresent(String.self, forKey: .hostname),
            resources: try c.decodeIfPresent(Resources.self, forKey: .resources) ?? Resources(),
            mounts: try c.decodeIfPresent([Mount].self, forKey: .mounts) ?? [],
            ports: try c.decodeIfPresent([PortMapping].self, forKey: .ports) ?? [],
            publishAll: try c.decodeIfPresent(Bool.self, forKey: .publishAll) ?? false,
            network: try c.decodeIfPresent(String.self, forKey: .network) ?? "bridge",
            networkAliases: try c.decodeIfPresent([String].self, forKey: .networkAliases) ?? [],
            ipv4Address: try c.decodeIfPresent(String.self, forKey: .ipv4Address),
            additionalNetworks: try c.decodeIfPresent([NetworkAttachment].self, forKey: .additionalNetworks),
            extraHosts: try c.decodeIfPresent([String].self, forKey: .extraHosts),
            restartPolicy: try c.decodeIfPresent(RestartPolicy.self, forKey: .restartPolicy) ?? .no,
            stopSignal: try c.decodeIfPresent(Signal.self, forKey: .stopSignal),
            stopTimeout: try c.decodeIfPresent(Int.self, forKey: .stopTimeout),
            readOnlyRootfs: try c.decodeIfPresent(Bool.self, forKey: .readOnlyRootfs) ?? false,
            initProcess: try c.decodeIfPresent(Bool.self, forKey: .initProcess) ?? false,
            capAdd: try c.decodeIfPresent([String].self, forKey: .capAdd) ?? [],
            capDrop: try c.decodeIfPresent([String].self, forKey: .capDrop) ?? [],
            securityOpts: try c.decodeIfPresent([String].self, forKey: .securityOpts) ?? [],
            tty: try c.decodeIfPresent(Bool.self, forKey: .tty) ?? false,
            openStdin: try c.decodeIfPresent(Bool.self, forKey: .openStdin) ?? false,
            autoRemove: try c.decodeIfPresent(Bool.self, forKey: .autoRemove) ?? false,
            ulimits: try c.decodeIfPresent([Ulimit].self, forKey: .ulimits) ?? [],
            log: try c.decodeIfPresent(LogConfig.self, forKey: .log),
            devices: try c.decodeIfPresent([DeviceMapping].self, forKey: .devices) ?? [],
            healthcheck: try c.decodeIfPresent(HealthCheck.self, forKey: .healthcheck),
            healthOnFailure: try c.decodeIfPresent(HealthFailureAction.self, forKey: .healthOnFailure) ?? .none)
    }

    /// The default grace period between the stop signal and SIGKILL.
    public static let defaultStopTimeout = 10

    /// Checks the spec on its own and, when given, against the host.
    ///
    /// - Throws: `BerthError.invalidArgument` naming the first problem.
    public func validate(on host: NodeCapacity? = nil) throws {
        if let name, !ObjectName.isValid(name, minimumLength: 1) {
            throw BerthError.invalid("container name \"\(name)\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        }
        if image.trimmingSpaces().isEmpty {
            throw BerthError.invalid("an image is required")
        }
        for entry in env where entry.hasPrefix("=") || entry.isEmpty {
            throw BerthError.invalid("environment entry \"\(entry)\": expected KEY=VALUE")
        }
        if let workingDir, !workingDir.hasPrefix("/") {
            throw BerthError.invalid("working directory \"\(workingDir)\": must be an absolute path")
        }
        if let hostname, !Hostname.isValid(hostname) {
            throw BerthError.invalid("hostname \"\(hostname)\": expected letters, digits and '-', at most 63 per label")
        }
        if let stopTimeout, stopTimeout < -1 {
            throw BerthError.invalid("stop timeout \(stopTimeout): must be -1 (wait forever) or more")
        }
        var targets: Set<String> = []
        for mount in mounts {
            guard targets.insert(mount.target).inserted else {
                throw BerthError.invalid("mount point \(mount.target) is used twice")
            }
        }
        var devicePaths: Set<String> = []
        for device in devices {
            guard devicePaths.insert(device.containerPath).inserted else {
                throw BerthError.invalid("device path \(device.containerPath) is given twice")
            }
        }
        var published: Set<String> = []
        for port in ports where port.hostPort != 0 {
            let key = "\(port.hostIP ?? "0.0.0.0"):\(port.hostPort)/\(port.transport.rawValue)"
            guard published.insert(key).inserted else {
                throw BerthError.invalid("host port \(key) is published twice")
            }
        }
        try Self.checkAutoRemove(autoRemove, restartPolicy: restartPolicy)
        try log?.validate()
        try healthcheck?.validate()
        try resources.validate(on: host)
    }

    /// `--rm` with a restart policy other than `no`: a container removed
    /// when it exits cannot be restarted then, and docker refuses the pair.
    ///
    /// - Throws: `BerthError.invalidArgument` with docker's words.
    public static func checkAutoRemove(_ autoRemove: Bool, restartPolicy: RestartPolicy) throws {
        if autoRemove && restartPolicy != .no {
            throw BerthError.invalid("conflicting options: cannot specify both --restart and --rm")
        }
    }
}

/// One more network a container is on, with its address there (nil: the
/// next free one) and its other names there.
public struct NetworkAttachment: Codable, Sendable, Hashable {
    public var network: String
    public var ipv4Address: String?
    public var aliases: [String]

    public init(network: String, ipv4Address: String? = nil, aliases: [String] = []) {
        self.network = network
        self.ipv4Address = ipv4Address
        self.aliases = aliases
    }
}

/// Rules for UTS hostnames (RFC 1123 labels).
enum Hostname {
    static func isValid(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.count <= 63 && label.first != "-" && label.last != "-"
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
    }
}
