import BerthCgroups
import BerthImages
import BerthLinux
public import BerthModel
import BerthRuntime
import BerthShimProtocol
import Foundation
public import Logging

/// Where the agent keeps things, and how it starts shims.
public struct RuntimeEnvironment: Sendable {
    public var rootDir: String
    public var stateDir: String
    public var shimExecutable: String
    /// berth-init, PID 1 of containers run with `--init`.
    public var initExecutable: String
    public var logMaxBytes: Int
    public var logMaxFiles: Int

    public init(
        rootDir: String, stateDir: String, shimExecutable: String, initExecutable: String, logMaxBytes: Int = 10 << 20, logMaxFiles: Int = 3
    ) {
        self.rootDir = rootDir
        self.stateDir = stateDir
        self.shimExecutable = shimExecutable
        self.initExecutable = initExecutable
        self.logMaxBytes = logMaxBytes
        self.logMaxFiles = logMaxFiles
    }

    func containerDir(_ id: ContainerID) -> String { "\(rootDir)/containers/\(id.rawValue)" }
    func bundleDir(_ id: ContainerID) -> String { "\(stateDir)/containers/\(id.rawValue)" }
    func logFile(_ id: ContainerID) -> String { "\(containerDir(id))/logs/container.log" }
}

/// Owns every container of this host: their records, their shims, their
/// cgroups, and every state transition (each one persisted with its event).
///
/// State is re-checked after every `await`: other calls may have run.
public actor ContainerSupervisor {
    private struct Live {
        var shimPID: Int32?
        var monitor: Task<Void, Never>?
        var restart: Task<Void, Never>?
        /// The shim of an exited container being let go, and its cgroup
        /// removed: a start or a removal waits for it, as the next shim's
        /// socket and the next cgroup are where these are.
        var retiring: Task<Void, Never>?
        /// That shim was asked to leave, and answered.
        var retired = false
    }

    let database: AgentDatabase
    let images: ImageStore
    public let volumes: VolumeStore
    public let networking: ContainerNetworking
    public nonisolated var networks: NetworkStore { networking.store }
    let cgroups: any CgroupDriver
    let environment: RuntimeEnvironment
    let host: NodeCapacity
    let logger: Logger
    /// Starts shims, one kept ready ahead of need.
    let launcher: ShimLauncher
    /// Removed containers' directories, deleted in the background.
    private let rootTrash: Trash
    private let stateTrash: Trash
    private var containers: [ContainerID: Container] = [:]
    private var live: [ContainerID: Live] = [:]
    private var waiters: [ContainerID: [UUID: CheckedContinuation<Container?, Never>]] = [:]
    private var listeners: [UUID: @Sendable ([Event]) -> Void] = [:]
    /// What has been reported of each watched running container's OOM kills.
    private var oomAccounts: [ContainerID: OOMAccount] = [:]
    private let oomWatcher: OOMWatcher?
    /// Restart delays are measured on it.
    private let clock: any Clock<Duration>

    /// - Throws: `BerthError` when the records cannot be read.
    /// - Parameter clock: what restart delays are measured on.
    public init(
        database: AgentDatabase, images: ImageStore, cgroups: any CgroupDriver, environment: RuntimeEnvironment, host: NodeCapacity,
        networking: ContainerNetworking, logger: Logger, clock: any Clock<Duration> = ContinuousClock()
    ) throws {
        self.clock = clock
        self.database = database
        self.images = images
        self.volumes = try VolumeStore(root: "\(environment.rootDir)/volumes", database: database)
        self.networking = networking
        self.cgroups = cgroups
        self.environment = environment
        self.host = host
        self.logger = logger
        for container in try database.allContainers() { containers[container.id] = container }
        try Directories.create("\(environment.rootDir)/containers", mode: 0o700)
        try Directories.create("\(environment.stateDir)/containers", mode: 0o700)
        rootTrash = try Trash(dir: "\(environment.rootDir)/trash", logger: logger)
        stateTrash = try Trash(dir: "\(environment.stateDir)/trash", logger: logger)
        rootTrash.empty()
        stateTrash.empty()
        launcher = try ShimLauncher(
            shimExecutable: environment.shimExecutable, initExecutable: environment.initExecutable, bundles: "\(environment.stateDir)/containers")
        launcher.prepare()
        cgroups.removeSpares(closing: false)
        oomWatcher = OOMWatcher(unified: cgroups.mode == .v2)
    }

    /// Lets the standby shim go; containers and their shims stay, and so
    /// do their networks.
    public nonisolated func shutdown() {
        launcher.shutdown()
        networking.shutdown()
        cgroups.removeSpares(closing: true)
    }

    // MARK: Events

    /// Calls `listener` with every event recorded from now on; returns a token to stop.
    public func subscribe(_ listener: @escaping @Sendable ([Event]) -> Void) -> UUID {
        let id = UUID()
        listeners[id] = listener
        return id
    }

    public func unsubscribe(_ id: UUID) { listeners.removeValue(forKey: id) }

    private func publish(_ events: [Event]) {
        guard !events.isEmpty else { return }
        for listener in listeners.values { listener(events) }
    }

    private func event(_ action: EventAction, _ container: Container, _ extra: [String: String] = [:]) -> AgentDatabase.PendingEvent {
        var attributes = ["name": container.name, "image": container.spec.image]
        attributes.merge(extra) { _, new in new }
        return AgentDatabase.PendingEvent(type: .container, action: action, actorID: container.id.rawValue, attributes: attributes)
    }

    /// Persists a container and its events together, then tells listeners.
    private func commit(_ container: Container, _ events: [AgentDatabase.PendingEvent] = []) throws {
        let recorded = try database.update(container, events: events)
        containers[container.id] = container
        publish(recorded)
    }

    // MARK: Lookup

    /// Finds a container by ID, unique ID prefix, or name.
    ///
    /// - Throws: `BerthError.notFound`, or `invalidArgument` for an ambiguous prefix.
    public func find(_ reference: String) throws -> Container {
        guard !reference.isEmpty else { throw BerthError.invalid("a container name or ID is required") }
        if let byName = containers.values.first(where: { $0.name == reference || "/" + $0.name == reference }) { return byName }
        let matches = containers.values.filter { $0.id.rawValue.hasPrefix(reference) }
        if matches.count == 1 { return matches[0] }
        if matches.count > 1 { throw BerthError.invalid("container ID prefix \"\(reference)\" matches \(matches.count) containers") }
        throw BerthError.notFound("container", reference)
    }

    public func list(all: Bool) -> [Container] {
        containers.values.filter { all || $0.status.state.isActive }.sorted { $0.status.createdAt > $1.status.createdAt }
    }

    public func inspect(_ reference: String) throws -> Container { try find(reference) }

    /// The container an exec goes into and its main process's PID: it must
    /// be running (a paused container's processes are frozen).
    ///
    /// - Throws: `BerthError.notFound`, or `failedPrecondition` for a
    ///   container that is paused or not running.
    public func execTarget(_ reference: String) throws -> (Container, Int32) {
        let container = try find(reference)
        switch container.status.state {
        case .running:
            guard let pid = container.status.pid else { break }
            return (container, pid)
        case .paused:
            throw BerthError(.failedPrecondition, "container \(container.name) is paused; unpause it before exec")
        default: break
        }
        throw BerthError(.failedPrecondition, "container \(container.name) is not running (it is \(container.status.state))")
    }

    /// Records an exec's start or end in the event log.
    public func recordExec(_ action: EventAction, _ container: Container, _ attributes: [String: String]) {
        do {
            publish(try database.append([event(action, container, attributes)]))
        } catch {
            logger.error("exec event not recorded", metadata: ["container.id": "\(container.id.short)", "error": "\(error)"])
        }
    }

    /// The shims of active containers.
    public var shimPIDs: [Int32] { live.values.compactMap(\.shimPID) }

    /// Reads containers' figures from the kernel. It works outside the
    /// actor: reading a cgroup takes longer than any change of state.
    public nonisolated var statsReader: StatsReader { StatsReader(cgroups: cgroups) }

    /// Waits until the container stops running or `timeout` passes,
    /// whichever is first (for followers of its output).
    public func waitForStop(_ id: ContainerID, timeout: Duration) async {
        _ = await waitForExit(id, timeout: timeout)
    }

    public var counts: ContainerCounts {
        var c = ContainerCounts()
        for container in containers.values {
            c.total += 1
            switch container.status.state {
            case .running: c.running += 1
            case .paused: c.paused += 1
            default: c.stopped += 1
            }
        }
        return c
    }

    /// The containers (in any state) that use each volume.
    public var volumeUsers: [String: [Container]] {
        var users: [String: [Container]] = [:]
        for container in containers.values {
            for mount in container.spec.mounts where mount.kind == .volume { users[mount.source, default: []].append(container) }
        }
        return users
    }

    /// The containers (in any state) on each network, by network ID.
    public var networkUsers: [String: [Container]] {
        var users: [String: [Container]] = [:]
        for container in containers.values {
            for endpoint in container.endpoints { users[endpoint.networkID, default: []].append(container) }
        }
        return users
    }

    /// Removes the anonymous volumes a removed container had, unless another uses them.
    private func removeAnonymousVolumes(of container: Container) {
        let users = volumeUsers
        for mount in container.spec.mounts where mount.kind == .volume {
            guard let volume = try? volumes.get(mount.source), volume.anonymous else { continue }
            do {
                try volumes.remove(volume.name, users: (users[volume.name] ?? []).map(\.name))
            } catch {
                logger.warning("anonymous volume kept", metadata: ["volume": "\(volume.name)", "error": "\(error)"])
            }
        }
    }

    /// Image IDs used by any container: for `removeImage`, in the same turn.
    private var imagesInUse: Set<String> { Set(containers.values.map(\.imageID)) }

    // MARK: Removing what containers use
    //
    // Whether any container uses a volume, a network or an image, and its
    // removal, are one turn of this actor, with no suspension between; a
    // create is one turn too. So a create and a removal are ordered: either
    // the container exists and the removal is refused, or the removal came
    // first and the create makes the volume again or fails with a clear
    // error. Never a container whose volume, network or image is gone.

    /// Removes a volume no container (in any state) uses.
    /// - Throws: `notFound`, or `failedPrecondition` naming its users.
    public func removeVolume(_ name: String) throws {
        try volumes.remove(name, users: (volumeUsers[name] ?? []).map(\.name))
    }

    /// Removes the anonymous volumes no container uses, as docker's prune
    /// does: their names and the bytes they held.
    public func pruneVolumes() throws -> (removed: [String], reclaimed: Int64) {
        let users = volumeUsers
        var removed: [String] = []
        var reclaimed: Int64 = 0
        for volume in try volumes.list() where volume.anonymous && (users[volume.name] ?? []).isEmpty {
            let size = volumes.usage(volume.name)
            do {
                try volumes.remove(volume.name, users: [])
            } catch let error as BerthError where error.code == .notFound {
                continue  // its directory went behind the agent's back
            }
            removed.append(volume.name)
            reclaimed += size
        }
        return (removed, reclaimed)
    }

    /// Removes a network no container is attached to.
    /// - Throws: `notFound`, or `failedPrecondition` naming its users.
    public func removeNetwork(_ reference: String) throws {
        let network = try networking.store.get(reference)
        try networking.remove(network.id, users: (networkUsers[network.id] ?? []).map(\.name))
    }

    /// Removes an image's name, and the image with its last name, unless a
    /// container uses it (`force` untags an image in use and keeps it).
    public func removeImage(_ reference: String, force: Bool) throws -> (untagged: [String], deleted: [String]) {
        let used = imagesInUse
        let (untagged, deleted) = try images.remove(reference, force: force, inUse: { used.contains($0) })
        var events: [AgentDatabase.PendingEvent] = untagged.map { .init(type: .image, action: .untag, actorID: reference, attributes: ["name": $0]) }
        events += deleted.filter { $0.hasPrefix("sha256:") }.prefix(1).map { .init(type: .image, action: .delete, actorID: $0) }
        publish(try database.append(events))
        return (untagged, deleted)
    }

    // MARK: Create

    /// Creates a container (state `created`) from a present image.
    ///
    /// - Returns: the container and warnings for the person.
    /// - Throws: `BerthError` for an invalid spec, an unknown image, a taken
    ///   name; nothing is left behind then.
    public func create(_ requested: ContainerSpec) throws -> (Container, [String]) {
        var steps = StepTimes()
        var spec = requested
        try spec.validate(on: host)
        let image = try images.resolve(spec.image)
        if let name = spec.name, containers.values.contains(where: { $0.name == name }) {
            throw BerthError(.alreadyExists, "container name \"\(name)\" is already in use; remove that container or choose another name")
        }
        let name = spec.name ?? NameGenerator.make(avoiding: Set(containers.values.map(\.name)))
        spec.name = name
        if spec.network == "default" || spec.network.isEmpty { spec.network = "bridge" }
        let network = try networking.network(for: spec)
        if network == nil && !spec.networkAliases.isEmpty {
            throw BerthError.invalid("--network-alias needs a user-defined network")
        }
        _ = try ContainerNetworking.requestedPorts(spec, exposed: image.config.exposedPorts, onNetwork: network != nil)
        var endpoints: [ContainerEndpoint] = []
        if let network {
            let requested = try spec.ipv4Address.map { try IPv4Address(parsing: $0) }
            endpoints.append(
                try networking.endpoint(
                    on: network, aliases: spec.networkAliases, requested: requested, existing: [], others: Array(containers.values)))
        }
        for mount in spec.mounts where mount.kind == .bind {
            guard FileIO.exists(mount.source) else {
                throw BerthError.invalid("bind source path does not exist: \(mount.source)")
            }
        }
        // The image's labels, under the container's own, as docker merges them.
        spec.labels = image.config.labels.merging(spec.labels) { _, own in own }
        // The image's VOLUME paths that no mount covers get anonymous volumes.
        let targets = Set(spec.mounts.map(\.target))
        for path in image.config.volumes where !targets.contains(path) && path.hasPrefix("/") {
            spec.mounts.append(Mount(kind: .volume, target: path))
        }
        _ = try Capabilities.resolve(add: spec.capAdd, drop: spec.capDrop)
        _ = try SecurityOptions(spec.securityOpts)
        _ = try HostDevices.resolve(spec.devices)
        let layers = try images.lowerDirectories(of: image)
        _ = try UserDatabase(layers: layers).resolve(spec.user ?? image.config.user)
        _ = try RuntimePlanner.command(spec: spec, image: image.config)

        // Volumes: named ones made on first use, anonymous ones made for this
        // container; a new volume gets what the image has at its path.
        var madeVolumes: [String] = []
        do {
            for index in spec.mounts.indices where spec.mounts[index].kind == .volume {
                let named = spec.mounts[index].source
                let (volume, created) = try volumes.create(named.isEmpty ? nil : named)
                spec.mounts[index].source = volume.name
                if created {
                    madeVolumes.append(volume.name)
                    try volumes.populate(volume.name, fromLayers: layers, at: spec.mounts[index].target)
                }
            }
        } catch {
            for name in madeVolumes { try? volumes.remove(name, users: []) }
            throw error
        }
        steps.lap("check")
        let id = ContainerID.random()
        let container = Container(
            id: id, name: name, spec: spec, imageID: image.id, status: ContainerStatus(createdAt: Date()), endpoints: endpoints)
        let dir = environment.containerDir(id)
        do {
            // The upper directory is the container's "/": others must be able to enter it.
            try Directories.create(dir, mode: 0o711)
            for (sub, mode) in [("/upper", 0o755), ("/work", 0o700), ("/rootfs", 0o755), ("/logs", 0o700)] {
                try Directories.create(dir + sub, mode: mode_t(mode))
            }
            steps.lap("directories")
            let recorded = try database.insert(container, events: [event(.create, container)])
            containers[id] = container
            publish(recorded)
            steps.lap("record")
            logger.debug("container created", metadata: steps.metadata.merging(["container.id": "\(id.short)"]) { $1 })
        } catch {
            try? RootedDirectory(path: "\(environment.rootDir)/containers").remove(id.rawValue)
            for name in madeVolumes { try? volumes.remove(name, users: []) }
            throw error
        }
        return (container, [])
    }

    // MARK: Start

    /// created or exited → running.
    ///
    /// - Returns: the container and warnings (limits that could not be applied).
    /// - Parameter attaching: a caller will attach to the output (`Run`):
    ///   the shim reads none of it until then, so that none is missed.
    /// - Throws: `BerthError.failedPrecondition` from another state; the
    ///   child's stage and errno when the process cannot be started (the
    ///   container is then `exited` with reason StartFailed).
    public func start(_ reference: String, attaching: Bool = false) async throws -> (Container, [String]) {
        await awaitRetired(try find(reference).id)
        let container = try find(reference)
        guard container.status.state == .created || container.status.state == .exited else {
            throw BerthError(.failedPrecondition, "container \(container.name) is \(container.status.state); only a created or exited container can be started")
        }
        live[container.id]?.restart?.cancel()
        return try await launch(container.id, restart: false, attaching: attaching)
    }

    private func launch(_ id: ContainerID, restart: Bool, attaching: Bool = false) async throws -> (Container, [String]) {
        guard var container = containers[id] else { throw BerthError.notFound("container", id.short) }
        let image = try images.resolve(container.imageID)
        let spec = container.spec
        let bundle = environment.bundleDir(id)
        let shim = ShimClient(bundleDir: bundle)
        var config: ShimConfig
        var steps = StepTimes()
        var attachment: ContainerNetworking.Attachment?
        do {
            try? RootedDirectory(path: "\(environment.stateDir)/containers").remove(id.rawValue)
            try Directories.create(bundle, mode: 0o700)
            steps.lap("bundle")
            let ports = try ContainerNetworking.requestedPorts(spec, exposed: image.config.exposedPorts, onNetwork: !container.endpoints.isEmpty)
            attachment = try networking.attach(container, ports: ports)
            steps.lap("network")
            try writeNameFiles(container, attachment)
            let devices = try HostDevices.resolve(spec.devices)
            if cgroups.exists(id.rawValue) { try cgroups.remove(id.rawValue) }
            try cgroups.create(id.rawValue, resources: spec.resources, devices: devices.rules)
            cgroups.prepareSpare()
            steps.lap("cgroups")
            let capabilities = try Capabilities.resolve(add: spec.capAdd, drop: spec.capDrop)
            let security = try SecurityOptions(spec.securityOpts)
            var seccompPath: String?
            if let profile = try security.seccompProfile() {
                seccompPath = try seccompProgram(profile, key: security.profileKey, capabilities: capabilities)
            }
            let layers = try images.lowerDirectories(of: image)
            let user = try UserDatabase(layers: layers).resolve(spec.user ?? image.config.user)
            let paths = RuntimePaths(
                containerDir: environment.containerDir(id), bundleDir: bundle, lowerDirs: layers,
                cgroup: cgroups.placement(id.rawValue), oomCounterFile: cgroups.oomCounterFile(id.rawValue),
                seccompProgram: seccompPath, logFile: environment.logFile(id),
                logMaxBytes: spec.log?.maxSize.map { Int($0.bytes) } ?? environment.logMaxBytes,
                logMaxFiles: spec.log?.maxFiles ?? environment.logMaxFiles, cgroupMounts: cgroups.containerMounts,
                volumesDir: volumes.root, netnsPath: attachment?.netnsPath, devices: devices.nodes)
            config = try RuntimePlanner.plan(container: container, image: image, user: user, capabilities: capabilities, paths: paths)
            config.attachGate = attaching
            steps.lap("plan")
        } catch {
            try? cgroups.remove(id.rawValue)
            if attachment != nil { networking.detach(&container) }
            throw error
        }
        var attached = container
        attached.publishedPorts = attachment?.publishedPorts ?? []
        let shimPID: Int32
        let outcome: ShimStart
        do {
            (shimPID, outcome) = try await shim.start(config: config, launcher: launcher)
        } catch {
            networking.detach(&attached)
            throw error
        }
        steps.lap("shim")
        // Other calls may have run while the shim started.
        guard let current = containers[id] else {
            _ = try? await shim.request(.delete)
            throw BerthError.notFound("container", id.short)
        }
        container = current
        container.publishedPorts = attached.publishedPorts
        switch outcome {
        case .failed(let stage, let errno, let name, let detail):
            Processes.reap(shimPID)
            try? cgroups.remove(id.rawValue)
            networking.detach(&container)
            let message = Self.startFailure(stage: stage, errno: errno, errnoName: name, detail: detail, command: config.args)
            try container.status.markStartFailed(message, exitCode: errno == 2 ? 127 : 126, at: Date())
            try commit(container, [event(.die, container, ["exitCode": String(container.status.exitCode ?? 127), "reason": "StartFailed", "error": message])])
            resumeWaiters(id)
            throw BerthError(.failedPrecondition, message)
        case .started(let pid, let startedAt, let warnings):
            try container.status.markStarted(pid: pid, at: Date(timeIntervalSince1970: Double(startedAt) / 1e9), restart: restart)
            var events = [event(.start, container)]
            if restart { events.insert(event(.restart, container, ["restartCount": String(container.status.restartCount)]), at: 0) }
            try commit(container, events)
            live[id, default: Live()].shimPID = shimPID
            live[id]?.retired = false
            monitor(id, shim: shim)
            watchMemory(id, fresh: true)
            steps.lap("record")
            logger.debug("container started", metadata: steps.metadata.merging(["container.id": "\(id.short)"]) { $1 })
            for warning in warnings { logger.warning("container limit not applied", metadata: ["container.id": "\(id.short)", "warning": "\(warning)"]) }
            return (container, warnings)
        }
    }

    /// /etc/hostname, /etc/hosts and /etc/resolv.conf of the container,
    /// written afresh at every start as docker does (the host's resolvers may
    /// have changed). Regenerated, so not fsynced.
    private func writeNameFiles(_ container: Container, _ attachment: ContainerNetworking.Attachment?) throws {
        let dir = environment.containerDir(container.id)
        let hostname = container.spec.hostname ?? container.id.short
        let resolv = attachment?.resolvConf ?? RuntimePlanner.resolvConf(host: (try? FileIO.read("/etc/resolv.conf")) ?? "")
        for (file, text) in [
            ("hostname", "\(hostname)\n"), ("hosts", RuntimePlanner.hostsFile(hostname: hostname, address: attachment?.address.description)),
            ("resolv.conf", resolv),
        ] {
            try AtomicFile.write(Array(text.utf8), to: "\(dir)/\(file)", durable: false)
        }
    }

    /// The compiled program for a profile and a capability set, compiled
    /// once and kept under the state directory (compiling costs milliseconds
    /// on every start otherwise).
    private func seccompProgram(_ profile: SeccompProfile, key: String, capabilities: UInt64) throws -> String {
        let dir = "\(environment.stateDir)/seccomp"
        let path = "\(dir)/\(key)-\(String(capabilities, radix: 16)).bpf"
        if FileIO.exists(path) { return path }
        try Directories.create(dir, mode: 0o700)
        let temporary = path + ".\(UUID().uuidString)"
        try SeccompCompiler.compile(profile, capabilities: Capabilities.names(in: capabilities), to: temporary, kernel: Processes.kernelRelease)
        try FileIO.rename(temporary, to: path)
        return path
    }

    /// docker's wording for start failures where docker has one.
    static func startFailure(stage: String, errno: Int32, errnoName: String, detail: String, command: [String]) -> String {
        let program = command.first ?? ""
        if stage.hasPrefix("exec") {
            if errno == 2 {
                return program.contains("/")
                    ? "exec: \"\(program)\": no such file or directory"
                    : "exec: \"\(program)\": executable file not found in $PATH"
            }
            if errno == 13 { return "exec: \"\(program)\": permission denied" }
        }
        if errno == 0 { return detail.isEmpty ? stage : "\(stage): \(detail)" }
        let what = detail.isEmpty ? stage : "\(stage) (\(detail))"
        return "\(what): \(errnoName.isEmpty ? "errno \(errno)" : errnoName)"
    }

    // MARK: OOM kills

    /// The cgroup's OOM-kill counter.
    private func oomKills(_ id: ContainerID) -> UInt64? {
        KernelText(cgroups.oomCounterFile(id.rawValue))?.value("oom_kill")
    }

    /// Starts watching a running container's OOM kills.
    ///
    /// - Parameter fresh: the container was just started in a cgroup made
    ///   for this run: every kill its counter shows is this run's, even one
    ///   that came before the watch began (a process that fills its limit
    ///   in the milliseconds between the start and this call). Otherwise (a
    ///   re-adopted container) counting starts from the counter's value now.
    private func watchMemory(_ id: ContainerID, fresh: Bool) {
        oomWatcher?.onPressure { [weak self] id in Task { await self?.memoryPressure(id) } }
        oomAccounts[id] = OOMAccount(startingAt: fresh ? 0 : oomKills(id) ?? 0)
        do {
            try oomWatcher?.watch(id, counterFile: cgroups.oomCounterFile(id.rawValue))
        } catch {
            logger.warning("OOM kills are reported at exit only", metadata: ["container.id": "\(id.short)", "error": "\(error)"])
        }
    }

    /// One `oom` event per out-of-memory episode, with how many processes
    /// the kernel killed in it.
    private func oomEvent(_ container: Container, kills: UInt64) -> AgentDatabase.PendingEvent {
        event(.oom, container, ["kills": String(kills)])
    }

    /// The kernel reported memory pressure in a container's cgroup: a
    /// process may have been OOM-killed while the container runs on.
    private func memoryPressure(_ id: ContainerID) async {
        // A kill of the container's own process is its exit's to report
        // (as OOMKilled): give the victim time to die, and leave the count
        // alone when the container's process is the one gone.
        try? await Task.sleep(for: .milliseconds(100))
        guard let container = containers[id], container.status.state.isActive, let pid = container.status.pid,
            Processes.isRunning(pid)
        else { return }
        guard let kills = oomAccounts[id]?.pressure(counter: oomKills(id), at: Date()), kills > 0 else { return }
        do {
            publish(try database.append([oomEvent(container, kills: kills)]))
        } catch {
            logger.error("oom event not recorded", metadata: ["container.id": "\(id.short)", "error": "\(error)"])
        }
    }

    /// Waits on the shim for the process's exit, then records it.
    private func monitor(_ id: ContainerID, shim: ShimClient) {
        live[id, default: Live()].monitor = Task { [weak self] in
            var attempts = 0
            while !Task.isCancelled {
                do {
                    let reply = try await shim.request(.wait)
                    let exit = try ShimExit(record: reply)
                    await self?.exited(id, exit: exit)
                    return
                } catch {
                    // The shim may be gone; it leaves its exit record behind if the process ended.
                    if let exit = shim.recordedExit() {
                        await self?.exited(id, exit: exit)
                        return
                    }
                    attempts += 1
                    if attempts > 5 {
                        await self?.lost(id, reason: "its shim stopped answering (\(error))")
                        return
                    }
                    try? await Task.sleep(for: .milliseconds(200 * attempts))
                }
            }
        }
    }

    /// The shim vanished without an exit record (host reboot, kill -9 of the shim).
    private func lost(_ id: ContainerID, reason: String) {
        guard var container = containers[id], container.status.state.isActive else { return }
        logger.error("container lost", metadata: ["container.id": "\(id.short)", "reason": "\(reason)"])
        try? container.status.markExited(ProcessExit(exitCode: 255), at: Date())
        oomAccounts[id] = nil
        oomWatcher?.unwatch(id)
        networking.detach(&container, processesGone: false)
        try? commit(container, [event(.die, container, ["exitCode": "255", "error": reason])])
        try? cgroups.remove(id.rawValue)
        live[id]?.monitor = nil
        resumeWaiters(id)
    }

    private func exited(_ id: ContainerID, exit: ShimExit) async {
        guard var container = containers[id], container.status.state.isActive else { return }
        let signal = exit.signal > 0 ? Signal(number: exit.signal) : nil
        let finished = Date(timeIntervalSince1970: Double(exit.finishedAt) / 1e9)
        let oom = oomAccounts.removeValue(forKey: id).map {
            $0.exit(counter: oomKills(id), shimSaysOOM: exit.oomKilled, killed: exit.signal == SIGKILL || exit.code == 137, finishedAt: finished)
        } ?? OOMAccount.unwatchedExit(shimSaysOOM: exit.oomKilled)
        oomWatcher?.unwatch(id)
        var events: [AgentDatabase.PendingEvent] = []
        if let kills = oom.eventKills { events.append(oomEvent(container, kills: kills)) }
        let processExit = ProcessExit(exitCode: exit.code, signal: signal, oomKilled: oom.oomKilled)
        if container.status.state == .paused { try? cgroups.thaw(id.rawValue) }
        do {
            try container.status.markExited(processExit, at: finished)
        } catch {
            logger.error("exit could not be recorded", metadata: ["container.id": "\(id.short)", "error": "\(error)"])
            return
        }
        var attributes = ["exitCode": String(exit.code), "reason": processExit.reason.rawValue]
        if let signal { attributes["signal"] = signal.name }
        events.append(event(.die, container, attributes))
        var steps = StepTimes()
        networking.detach(&container)
        steps.lap("network")
        do {
            try commit(container, events)
        } catch {
            logger.error("exit could not be persisted", metadata: ["container.id": "\(id.short)", "error": "\(error)"])
        }
        steps.lap("record")
        logger.debug("container exited", metadata: steps.metadata.merging(["container.id": "\(id.short)"]) { $1 })
        // The exit is recorded: waiters hear of it while the shim is let go
        // and the cgroup removed, off the actor.
        let shim = ShimClient(bundleDir: environment.bundleDir(id))
        let shimPID = live[id]?.shimPID
        live[id]?.shimPID = nil
        live[id]?.monitor = nil
        let (cgroups, logger) = (self.cgroups, self.logger)
        let retiring = Task {
            async let cgroupRemoved: Void = Self.removeCgroup(id, cgroups, logger)
            let answered = (try? await shim.request(.delete)) != nil
            if let shimPID { Self.reap(shimPID) }
            await cgroupRemoved
            live[id]?.retired = answered
        }
        live[id]?.retiring = retiring
        resumeWaiters(id)
        await retiring.value
        if live[id]?.retiring == retiring { live[id]?.retiring = nil }
        scheduleRestartIfNeeded(id)
    }

    /// Waits until an exited container's previous shim has left and its cgroup is gone.
    private func awaitRetired(_ id: ContainerID) async {
        if let retiring = live[id]?.retiring { await retiring.value }
    }

    private nonisolated static func removeCgroup(_ id: ContainerID, _ cgroups: any CgroupDriver, _ logger: Logger) async {
        do {
            try cgroups.remove(id.rawValue)
        } catch {
            logger.warning("cgroup not removed", metadata: ["container.id": "\(id.short)", "error": "\(error)"])
        }
    }

    private static func reap(_ pid: Int32) {
        Task.detached {
            for _ in 0..<100 {
                if Processes.reap(pid) { return }
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    private func scheduleRestartIfNeeded(_ id: ContainerID) {
        guard let container = containers[id], container.status.state == .exited else { return }
        let status = container.status
        switch container.spec.restartPolicy.afterExit(
            exitCode: status.exitCode ?? 0, restartCount: status.restartCount, stoppedByUser: status.stoppedByUser, autoRemove: container.spec.autoRemove)
        {
        case .restart(let delay):
            let clock = self.clock
            live[id, default: Live()].restart = Task { [weak self] in
                try? await clock.sleep(for: delay)
                guard !Task.isCancelled else { return }
                await self?.restartAfterExit(id)
            }
        case .remove:
            Task { [weak self] in try? await self?.remove(id.rawValue, force: false, volumes: true) }
        case .stay:
            break
        }
    }

    private func restartAfterExit(_ id: ContainerID) async {
        guard let container = containers[id], container.status.state == .exited, !container.status.stoppedByUser else { return }
        do {
            _ = try await launch(id, restart: true)
        } catch {
            logger.error("restart failed", metadata: ["container.id": "\(id.short)", "error": "\(error)"])
            scheduleRestartIfNeeded(id)
        }
    }

    // MARK: Stop, kill, pause

    /// Sends the stop signal, waits the grace period, then SIGKILL.
    ///
    /// - Parameter timeout: seconds; nil uses the container's (10 by default); -1 waits forever.
    public func stop(_ reference: String, timeout: Int? = nil) async throws -> Container {
        var container = try find(reference)
        let id = container.id
        if let pending = live[id]?.restart {
            // The restart policy starts no new run from now on; a run it is
            // already launching finishes first, and is then stopped like any.
            if container.status.state == .exited && !container.status.stoppedByUser {
                container.status.noteStopRequested()
                try commit(container)
            }
            pending.cancel()
            await pending.value
            live[id]?.restart?.cancel()
            container = try find(reference)
        }
        guard container.status.state.isActive else {
            if container.status.state == .exited && !container.status.stoppedByUser {
                container.status.noteStopRequested()
                try commit(container)
            }
            return container
        }
        container.status.noteStopRequested()
        let image = try? images.resolve(container.imageID)
        let signal = try container.spec.stopSignal ?? (image.flatMap { $0.config.stopSignal.isEmpty ? nil : try Signal(parsing: $0.config.stopSignal) }) ?? .terminate
        let grace = timeout ?? container.spec.stopTimeout ?? ContainerSpec.defaultStopTimeout
        try commit(container, [event(.kill, container, ["signal": signal.name])])
        try await sendSignal(id, signal)
        var stopped = await stoppedRecord(id, timeout: grace < 0 ? nil : .seconds(grace))
        if stopped == nil {
            // Cancelled (the agent is stopping): the stop signal is sent, and
            // no SIGKILL cuts its grace period short.
            try Task.checkCancellation()
            if let current = containers[id], current.status.state.isActive {
                try? commit(current, [event(.kill, current, ["signal": "SIGKILL"])])
                try await sendSignal(id, .kill)
                stopped = await stoppedRecord(id, timeout: .seconds(30))
            }
        }
        guard let final = containers[id] else {
            // Removed as it exited (--rm, or an attached run's removal): it
            // stopped all the same, and that is the answer.
            let last = stopped ?? container
            publish(try database.append([event(.stop, last)]))
            return last
        }
        try commit(final, [event(.stop, final)])
        return final
    }

    private func sendSignal(_ id: ContainerID, _ signal: Signal) async throws {
        let shim = ShimClient(bundleDir: environment.bundleDir(id))
        let failure: String?
        do {
            failure = try await shim.request(.signal(signal.number))["error"]
        } catch {
            failure = "\(error)"
        }
        // A process that has just exited (its shim may be gone already) is
        // not a failure: its exit reaches the record within moments.
        if let failure, await !waitForExit(id, timeout: .seconds(2)) {
            throw BerthError(.internal, "cannot send \(signal.name): \(failure)")
        }
        // A frozen process handles a signal only once thawed: as docker
        // does, the container is unpaused to take it, whatever the signal.
        if var container = containers[id], container.status.state == .paused {
            do {
                try cgroups.thaw(id.rawValue)
                try container.status.markResumed()
                try commit(container, [event(.unpause, container)])
            } catch {
                logger.warning("container not thawed for a signal", metadata: ["container.id": "\(id.short)", "error": "\(error)"])
            }
        }
    }

    /// Sends a signal (SIGKILL by default).
    public func kill(_ reference: String, signal: Signal = .kill) async throws {
        var container = try find(reference)
        guard container.status.state.isActive else {
            throw BerthError(.failedPrecondition, "container \(container.name) is not running")
        }
        container.status.noteStopRequested()
        try commit(container, [event(.kill, container, ["signal": signal.name])])
        try await sendSignal(container.id, signal)
    }

    public func pause(_ reference: String) throws {
        var container = try find(reference)
        guard container.status.state == .running else {
            throw BerthError(.failedPrecondition, "container \(container.name) is \(container.status.state); only a running container can be paused")
        }
        try cgroups.freeze(container.id.rawValue)
        try container.status.markPaused()
        try commit(container, [event(.pause, container)])
    }

    public func resume(_ reference: String) throws {
        var container = try find(reference)
        guard container.status.state == .paused else {
            throw BerthError(.failedPrecondition, "container \(container.name) is not paused")
        }
        try cgroups.thaw(container.id.rawValue)
        try container.status.markResumed()
        try commit(container, [event(.unpause, container)])
    }

    // MARK: Wait

    private func resumeWaiters(_ id: ContainerID) {
        let container = containers[id]
        for waiter in (waiters.removeValue(forKey: id) ?? [:]).values { waiter.resume(returning: container) }
    }

    /// The container as it was when it stopped running, if that happened
    /// within `timeout` (it may have been removed since); nil when it is
    /// still active, was removed before this was asked, or the wait was
    /// cancelled.
    private func stoppedRecord(_ id: ContainerID, timeout: Duration?) async -> Container? {
        if let container = containers[id], !container.status.state.isActive { return container }
        guard let timeout else { return await exitRecord(id) }
        return await withTaskGroup(of: Container?.self) { group in
            group.addTask { await self.exitRecord(id) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// Waits until the container is not active; true when it happened within `timeout`.
    private func waitForExit(_ id: ContainerID, timeout: Duration?) async -> Bool {
        if containers[id]?.status.state.isActive != true { return true }
        if let timeout {
            let finished = await withTaskGroup(of: Bool.self) { group in
                group.addTask { await self.exitRecord(id) != nil }
                group.addTask {
                    try? await Task.sleep(for: timeout)
                    return false
                }
                let first = await group.next() ?? false
                group.cancelAll()
                return first
            }
            return finished || containers[id]?.status.state.isActive != true
        }
        _ = await exitRecord(id)
        return true
    }

    /// The container as it was when it stopped running (nil if it was
    /// removed first, or if the waiting task was cancelled).
    private func exitRecord(_ id: ContainerID) async -> Container? {
        let token = UUID()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                if Task.isCancelled {
                    continuation.resume(returning: nil)
                } else if let container = containers[id], !container.status.state.isActive {
                    continuation.resume(returning: container)
                } else if containers[id] == nil {
                    continuation.resume(returning: nil)
                } else {
                    waiters[id, default: [:]][token] = continuation
                }
            }
        } onCancel: {
            Task { await self.cancelWaiter(id, token) }
        }
    }

    private func cancelWaiter(_ id: ContainerID, _ token: UUID) {
        waiters[id]?.removeValue(forKey: token)?.resume(returning: nil)
    }

    /// Blocks until the container is no longer running (it may never have
    /// started), then returns it as it was at that moment, even if it was
    /// removed right after (`--rm`).
    public func wait(_ reference: String) async throws -> Container {
        let container = try find(reference)
        return await exitRecord(container.id) ?? container
    }

    // MARK: Update

    public func update(_ reference: String, resources: Resources, restartPolicy: RestartPolicy?) throws -> Container {
        var container = try find(reference)
        var merged = container.spec.resources
        if let v = resources.memory { merged.memory = v }
        if let v = resources.memorySwap { merged.memorySwap = v }
        if let v = resources.cpus { merged.cpus = v }
        if let v = resources.cpuShares { merged.cpuShares = v }
        if let v = resources.cpusetCPUs { merged.cpusetCPUs = v }
        if let v = resources.cpusetMems { merged.cpusetMems = v }
        if let v = resources.pidsLimit { merged.pidsLimit = v }
        if let v = resources.ioWeight { merged.ioWeight = v }
        try merged.validate(on: host)
        if let restartPolicy, restartPolicy != .no, container.spec.autoRemove {
            throw BerthError.invalid("restart policy cannot be updated because AutoRemove is enabled for the container (--rm)")
        }
        if container.status.state.isActive {
            try cgroups.update(container.id.rawValue, resources: resources)
        }
        container.spec.resources = merged
        if let restartPolicy { container.spec.restartPolicy = restartPolicy }
        try commit(container, [event(.update, container)])
        return container
    }

    // MARK: Networks

    /// Puts a container on one more network (at once when it runs).
    ///
    /// - Throws: `BerthError` for a container on the host's network or on
    ///   none, one already on the network, an address that cannot be had.
    public func connect(_ reference: String, network networkReference: String, aliases: [String], address: String?) throws -> Container {
        var container = try find(reference)
        let network = try networks.get(networkReference)
        guard container.spec.network != "host" && container.spec.network != "none" else {
            throw BerthError(.failedPrecondition, "container \(container.name) is on --network \(container.spec.network); it cannot join other networks")
        }
        if container.status.state.isActive && container.endpoints.isEmpty {
            throw BerthError(.failedPrecondition, "container \(container.name) runs without a network namespace of the agent's; stop it before connecting it")
        }
        let endpoint = try networking.endpoint(
            on: network, aliases: aliases, requested: try address.map { try IPv4Address(parsing: $0) }, existing: container.endpoints,
            others: containers.values.filter { $0.id != container.id })
        if container.status.state.isActive { try networking.connect(container, endpoint) }
        container.endpoints.append(endpoint)
        try commit(container, [networkEvent(.connect, network, container)])
        return container
    }

    /// Takes a container off a network (at once when it runs).
    public func disconnect(_ reference: String, network networkReference: String) throws -> Container {
        var container = try find(reference)
        let network = try networks.get(networkReference)
        guard let endpoint = container.endpoints.first(where: { $0.networkID == network.id }) else {
            throw BerthError(.failedPrecondition, "container \(container.name) is not on network \(network.name)")
        }
        if container.status.state.isActive { try networking.disconnect(container, endpoint) }
        container.endpoints.removeAll { $0.networkID == network.id }
        try commit(container, [networkEvent(.disconnect, network, container)])
        return container
    }

    private func networkEvent(_ action: EventAction, _ network: Network, _ container: Container) -> AgentDatabase.PendingEvent {
        AgentDatabase.PendingEvent(
            type: .network, action: action, actorID: network.id,
            attributes: ["name": network.name, "container": container.id.rawValue, "containerName": container.name])
    }

    // MARK: Remove

    /// Removes a container that is not active (with `force`, kills it first).
    ///
    /// - Throws: `BerthError.failedPrecondition` for an active container without
    ///   force; a removal that fails half-way leaves the container `dead`.
    public func remove(_ reference: String, force: Bool, volumes removeVolumes: Bool = false) async throws {
        let container = try find(reference)
        let id = container.id
        live[id]?.restart?.cancel()
        if container.status.state.isActive {
            guard force else {
                throw BerthError(.failedPrecondition, "cannot remove container \(container.name): it is \(container.status.state); stop it first or use --force")
            }
            var stopping = container
            stopping.status.noteStopRequested()
            try commit(stopping, [event(.kill, stopping, ["signal": "SIGKILL"])])
            try? await sendSignal(id, .kill)
            if !(await waitForExit(id, timeout: .seconds(30))) {
                throw BerthError(.internal, "container \(container.name) did not exit after SIGKILL")
            }
        }
        await awaitRetired(id)
        guard var current = containers[id] else { return }
        do {
            var steps = StepTimes()
            // A shim let go at the exit has left already; one that did not answer then is asked again.
            if live[id]?.retired != true { _ = try? await ShimClient(bundleDir: environment.bundleDir(id)).request(.delete) }
            steps.lap("shim")
            networking.detach(&current)
            if cgroups.exists(id.rawValue) { try cgroups.remove(id.rawValue) }
            steps.lap("cgroups")
            try stateTrash.discard(id.rawValue, from: "\(environment.stateDir)/containers")
            try rootTrash.discard(id.rawValue, from: "\(environment.rootDir)/containers")
            steps.lap("directories")
            let recorded = try database.delete(container: id, events: [event(.destroy, current)])
            steps.lap("record")
            logger.debug("container removed", metadata: steps.metadata.merging(["container.id": "\(id.short)"]) { $1 })
            containers.removeValue(forKey: id)
            live.removeValue(forKey: id)
            for waiter in (waiters.removeValue(forKey: id) ?? [:]).values { waiter.resume(returning: current) }
            publish(recorded)
            if removeVolumes { removeAnonymousVolumes(of: current) }
        } catch {
            let message = "removal failed: \(error)"
            if (try? current.status.markDead(message)) != nil {
                try? commit(current, [event(.die, current, ["error": message])])
            }
            throw BerthError(.internal, "cannot remove container \(current.name)", underlying: error)
        }
    }

    /// docker's --rm for a caller that went away before the end: the
    /// container is removed now if it has exited, else when it exits.
    public func removeWhenExited(_ id: ContainerID) async {
        guard var container = containers[id] else { return }
        if container.status.state.isActive {
            container.spec.autoRemove = true
            do { try commit(container) } catch {
                logger.warning("--rm not recorded", metadata: ["container.id": "\(id.short)", "error": "\(error)"])
            }
        } else {
            do { try await remove(id.rawValue, force: false, volumes: true) } catch {
                logger.warning("container not removed", metadata: ["container.id": "\(id.short)", "error": "\(error)"])
            }
        }
    }

    // MARK: Live restore

    /// Re-adopts the shims of containers that ran while the agent was away,
    /// records exits that happened meanwhile, and starts containers whose
    /// restart policy asks for it.
    public func restore() async {
        for problem in await networking.reconcile(containers: Array(containers.values)) {
            logger.error("network not restored", metadata: ["error": "\(problem)"])
        }
        for container in containers.values where container.status.state.isActive {
            let shim = ShimClient(bundleDir: environment.bundleDir(container.id))
            do {
                let state = try await shim.request(.state)
                if state["state"] == "exited" {
                    await exited(container.id, exit: try ShimExit(record: state))
                } else {
                    logger.info("container re-adopted", metadata: ["container.id": "\(container.id.short)", "pid": "\(state["pid"] ?? "?")"])
                    // The shim that answered is the parent of the container's process.
                    live[container.id, default: Live()].shimPID = state["pid"].flatMap { Int32($0) }.flatMap(Processes.parent(of:))
                    monitor(container.id, shim: shim)
                    watchMemory(container.id, fresh: false)
                    // An attached run's caller is gone with the agent that
                    // served it: the output it held goes to the log.
                    _ = try? await shim.request(.release)
                }
            } catch {
                if let exit = shim.recordedExit() {
                    await exited(container.id, exit: exit)
                } else {
                    lost(container.id, reason: "its shim is gone (was the host restarted?)")
                }
            }
        }
        for container in containers.values where container.status.state == .exited {
            let policy = container.spec.restartPolicy
            if (policy == .always || policy == .unlessStopped) && !container.status.stoppedByUser {
                _ = try? await launch(container.id, restart: true)
            }
        }
    }
}

/// `--security-opt` values Berth understands.
struct SecurityOptions {
    enum Seccomp {
        case defaultProfile
        case unconfined
        case file(String)
    }

    var seccomp: Seccomp = .defaultProfile

    /// Names the profile's content, for caching its compiled form.
    var profileKey: String {
        switch seccomp {
        case .defaultProfile: return "default"
        case .unconfined: return "unconfined"
        case .file(let path):
            let data = (try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data()
            return "file-" + Digest.of(data).hex
        }
    }

    /// - Throws: `BerthError.invalidArgument` for an option Berth does not know.
    init(_ options: [String]) throws {
        for option in options {
            let parts = option.split(separator: option.contains("=") ? "=" : ":", maxSplits: 1).map(String.init)
            switch (parts.first, parts.count) {
            case ("seccomp", 2):
                seccomp = parts[1] == "unconfined" ? .unconfined : .file(parts[1])
                if case .file(let path) = seccomp { _ = try SeccompProfile.load(path: path) }
            case ("no-new-privileges", _):
                if parts.count == 2 && parts[1] == "false" {
                    throw BerthError.invalid("--security-opt no-new-privileges=false: Berth always sets no_new_privs")
                }
            default:
                throw BerthError.invalid("--security-opt \"\(option)\": supported are seccomp=unconfined, seccomp=PROFILE.json and no-new-privileges")
            }
        }
    }

    func seccompProfile() throws -> SeccompProfile? {
        switch seccomp {
        case .defaultProfile: return .default
        case .unconfined: return nil
        case .file(let path): return try SeccompProfile.load(path: path)
        }
    }
}
