import ArgumentParser
import BerthLinux
import BerthModel
import FoundationEssentials

/// The limit flags `run`, `create` and `update` share, with docker's spelling.
struct ResourceFlags: ParsableArguments {
    @Option(name: [.customShort("m"), .long], help: "Memory limit (e.g. 64m, 1g).") var memory: String?
    @Option(help: "Memory plus swap limit; -1 for unlimited swap.") var memorySwap: String?
    @Option(help: "Number of CPUs (e.g. 0.5).") var cpus: String?
    @Option(name: [.customShort("c"), .long], help: "CPU shares (relative weight).") var cpuShares: Int?
    @Option(help: "CPUs in which to allow execution (0-3, 0,1).") var cpusetCpus: String?
    @Option(help: "Memory nodes in which to allow execution (0-3, 0,1).") var cpusetMems: String?
    @Option(help: "Tune the container's pids limit (-1 for unlimited).") var pidsLimit: Int64?
    @Option(help: "Block I/O weight (10-1000).") var blkioWeight: Int?

    /// - Throws: `BerthError.invalidArgument` with docker-like wording for a malformed limit.
    func resources() throws -> Resources {
        var resources = Resources()
        if let memory { resources.memory = try ByteSize(parsing: memory, for: "memory limit") }
        if let memorySwap {
            resources.memorySwap = memorySwap == "-1" ? ByteSize(bytes: -1) : try ByteSize(parsing: memorySwap, for: "memory-swap")
        }
        if let cpus { resources.cpus = try CPUQuantity(parsing: cpus) }
        resources.cpuShares = cpuShares
        if let cpusetCpus { resources.cpusetCPUs = try CPUSet(parsing: cpusetCpus, for: "cpuset-cpus") }
        if let cpusetMems { resources.cpusetMems = try CPUSet(parsing: cpusetMems, for: "cpuset-mems") }
        resources.pidsLimit = pidsLimit
        resources.ioWeight = blkioWeight
        return resources
    }

    /// Sets in `resources` the limits given here, leaving the others.
    ///
    /// - Throws: `BerthError.invalidArgument` as `resources()` does.
    func apply(to resources: inout Resources) throws {
        let given = try self.resources()
        if memory != nil { resources.memory = given.memory }
        if memorySwap != nil { resources.memorySwap = given.memorySwap }
        if cpus != nil { resources.cpus = given.cpus }
        if cpuShares != nil { resources.cpuShares = given.cpuShares }
        if cpusetCpus != nil { resources.cpusetCPUs = given.cpusetCPUs }
        if cpusetMems != nil { resources.cpusetMems = given.cpusetMems }
        if pidsLimit != nil { resources.pidsLimit = given.pidsLimit }
        if blkioWeight != nil { resources.ioWeight = given.ioWeight }
    }
}

/// The flags `run` and `create` share, with docker's spelling.
struct ContainerFlags: ParsableArguments {
    @Option(help: "Assign a name to the container.") var name: String?
    @Option(help: "Pull the image before creating: missing (when the agent lacks it), always, or never.") var pull = "missing"
    @Option(help: "The platform to pull (OS/ARCH[/VARIANT]).") var platform: String?
    @OptionGroup var limits: ResourceFlags
    @Option(name: [.customShort("e"), .long], help: "Set an environment variable (KEY=VALUE, or KEY to take it from here).") var env: [String] = []
    @Option(help: "Read environment variables from a file: KEY=VALUE lines (KEY alone takes it from here; # starts a comment).") var envFile: [String] = []
    @Option(name: [.customShort("w"), .long], help: "Working directory inside the container.") var workdir: String?
    @Option(name: [.customShort("u"), .long], help: "Username or UID (format: <name|uid>[:<group|gid>]).") var user: String?
    @Option(name: [.customShort("h"), .long], help: "Container host name.") var hostname: String?
    @Option(name: [.customShort("l"), .long], help: "Set a label (KEY=VALUE).") var label: [String] = []
    @Option(help: "Overwrite the image's entrypoint.") var entrypoint: String?
    @Option(name: [.customShort("v"), .long], help: "Mount a volume (NAME:/path[:ro], made on first use), an anonymous volume (/path), or a host path (/host:/path[:ro]).") var volume: [String] = []
    @Option(help: "Mount a filesystem: type=volume|bind|tmpfs,source=…,target=…[,readonly][,tmpfs-size=…].") var mount: [String] = []
    @Option(help: "Mount a tmpfs: /path[:size=64m].") var tmpfs: [String] = []
    @Flag(help: "Mount the container's root filesystem as read only.") var readOnly = false
    @Flag(help: "Run an init inside the container that forwards signals and reaps processes.") var `init` = false
    @Option(help: "Restart policy: no (the default; always for a service's replicas), on-failure[:N], always, unless-stopped.") var restart: String?
    @Option(help: "Signal to stop the container (default SIGTERM).") var stopSignal: String?
    @Option(help: "Seconds to wait for the stop signal before SIGKILL.") var stopTimeout: Int?
    @Option(help: "Add a Linux capability.") var capAdd: [String] = []
    @Option(help: "Drop a Linux capability.") var capDrop: [String] = []
    @Option(help: "Security options: seccomp=unconfined, seccomp=PROFILE.json, no-new-privileges.") var securityOpt: [String] = []
    @Option(help: "Network: bridge (the default network), a user-defined network, none (loopback only), or host (the host's own); again for more user-defined networks.")
    var network: [String] = []
    @Option(help: "Another name for the container on its user-defined network.") var networkAlias: [String] = []
    @Option(help: "Add an /etc/hosts entry, NAME:ADDRESS (host-gateway: the gateway of the container's network).") var addHost: [String] = []
    @Option(help: "The container's IPv4 address on its network (the next free one when left out).") var ip: String?
    @Option(name: [.customShort("p"), .customLong("publish")], help: "Publish a container's port on the host: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp].") var publish: [String] = []
    @Flag(name: [.customShort("P"), .customLong("publish-all")], help: "Publish every port the image exposes on a free host port.") var publishAll = false
    @Flag(name: [.customShort("t"), .long], help: "Allocate a pseudo-TTY (not supported yet).") var tty = false
    @Flag(name: [.customShort("i"), .long], help: "Keep STDIN open (not supported yet).") var interactive = false
    @Flag(help: "Automatically remove the container when it exits.") var rm = false
    @Option(help: "A process limit, NAME=SOFT[:HARD] (e.g. nofile=1024:2048).") var ulimit: [String] = []
    @Option(help: "Log rotation: max-size=SIZE (e.g. 10m), max-file=N.") var logOpt: [String] = []
    @Option(help: "Add a host device to the container: HOST[:CONTAINER][:PERMISSIONS] (permissions: any of r, w, m; default rwm).") var device: [String] = []
    @OptionGroup var health: HealthFlags

    /// - Throws: `BerthError.invalidArgument` with docker-like wording for a malformed flag.
    func spec(image: String, command: [String], environment: [String: String], defaultRestart: String = "no") throws -> ContainerSpec {
        if tty || interactive {
            throw BerthError(.unimplemented, "-t and -i need an attached terminal, which this release does not offer yet; run without them (output is streamed)")
        }
        let resources = try limits.resources()
        let labels = KeyValues.labels(label)
        let envs = EnvironmentFlag.resolve(try envFile.flatMap { try EnvironmentFlag.read($0) } + env, from: environment)
        var mounts = try volume.map { try Mount(parsingVolume: EnvironmentFlag.absoluteSource($0)) }
        mounts += try mount.map { try Mount(parsingMount: $0) }
        mounts += try tmpfs.map { try Mount(parsingTmpfs: $0) }
        if let ip { _ = try IPv4Address(parsing: ip) }
        for entry in addHost { _ = try ExtraHost(parsing: entry) }
        let restartPolicy = try RestartPolicy(parsing: restart ?? defaultRestart)
        try ContainerSpec.checkAutoRemove(rm, restartPolicy: restartPolicy)
        return ContainerSpec(
            name: name, image: image, entrypoint: entrypoint.map { $0.isEmpty ? [] : [$0] }, command: command, env: envs,
            workingDir: workdir, user: user, labels: labels, hostname: hostname, resources: resources, mounts: mounts,
            ports: try publish.map { try PortMapping(parsing: $0) }, publishAll: publishAll,
            network: network.first ?? "bridge", networkAliases: networkAlias, ipv4Address: ip,
            additionalNetworks: network.count > 1 ? network.dropFirst().map { NetworkAttachment(network: $0) } : nil,
            extraHosts: addHost.isEmpty ? nil : addHost.map { (try? ExtraHost(parsing: $0))?.description ?? $0 }, restartPolicy: restartPolicy,
            stopSignal: try stopSignal.map { try Signal(parsing: $0) }, stopTimeout: stopTimeout, readOnlyRootfs: readOnly,
            initProcess: `init`, capAdd: capAdd, capDrop: capDrop, securityOpts: securityOpt, autoRemove: rm,
            ulimits: try ulimit.map { try Ulimit(parsing: $0) },
            log: logOpt.isEmpty ? nil : try LogConfig(parsingOptions: logOpt),
            devices: try device.map { try DeviceMapping(parsing: $0) },
            healthcheck: try health.check(), healthOnFailure: try health.healthOnFailure.map { try HealthFailureAction(parsing: $0) } ?? .none)
    }
}

/// docker's `--health-*` flags, and podman's `--health-on-failure`.
struct HealthFlags: ParsableArguments {
    @Option(help: "Command to run to check health (run with the container's shell).") var healthCmd: String?
    @Option(help: "Time between running the check (ms|s|m|h) (default 30s).") var healthInterval: String?
    @Option(help: "Maximum time to allow one check to run (ms|s|m|h) (default 30s).") var healthTimeout: String?
    @Option(help: "Consecutive failures needed to report unhealthy (default 3).") var healthRetries: Int?
    @Option(help: "Start period for the container to initialize before starting health-retries countdown (ms|s|m|h) (default 0s).") var healthStartPeriod: String?
    @Option(help: "Time between running the check during the start period (ms|s|m|h) (default 5s).") var healthStartInterval: String?
    @Flag(help: "Disable any container-specified HEALTHCHECK.") var noHealthcheck = false
    @Option(help: "What to do when the container turns unhealthy: none (the default), kill, restart or stop.") var healthOnFailure: String?

    /// The check these flags give; nil when none was given.
    func check() throws -> HealthCheck? {
        try HealthCheck(
            command: healthCmd, interval: healthInterval, timeout: healthTimeout, startPeriod: healthStartPeriod,
            startInterval: healthStartInterval, retries: healthRetries, disabled: noHealthcheck)
    }
}

/// `-e` as docker takes it: KEY=VALUE as given; a bare KEY takes this
/// process's value, and is left out when it has none.
enum EnvironmentFlag {
    static func resolve(_ entries: [String], from environment: [String: String]) -> [String] {
        entries.compactMap { entry in
            entry.contains("=") ? entry : environment[entry].map { "\(entry)=\($0)" }
        }
    }

    /// `--env-file`: its entries, blank lines and `#` comments left out.
    ///
    /// - Throws: `BerthError.invalidArgument` naming a file that cannot be read.
    static func read(_ path: String) throws -> [String] {
        let text: String
        do {
            text = try FileIO.read(path)
        } catch {
            throw BerthError.invalid("--env-file: \(error)")
        }
        return text.split(separator: "\n", omittingEmptySubsequences: false).compactMap { line in
            let text = String(line.drop { $0 == " " || $0 == "\t" })
            return text.isEmpty || text.hasPrefix("#") ? nil : String(text.hasSuffix("\r") ? text.dropLast() : Substring(text))
        }
    }

    /// `-v ./data:/x`: a source starting with `.` is a path from the
    /// current directory (docker 23's rule).
    static func absoluteSource(_ volume: String) -> String {
        guard volume.hasPrefix("."), let colon = volume.firstIndex(of: ":") else { return volume }
        let source = String(volume[..<colon])
        var parts = FileManager.default.currentDirectoryPath.split(separator: "/").map(String.init)
        for part in source.split(separator: "/") where part != "." {
            if part == ".." { _ = parts.popLast() } else { parts.append(String(part)) }
        }
        return "/" + parts.joined(separator: "/") + volume[colon...]
    }
}
