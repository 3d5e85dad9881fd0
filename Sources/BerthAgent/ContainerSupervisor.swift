import BerthImages
import BerthLinux
public import BerthModel
public import BerthRuntime
import BerthShimProtocol
import Foundation
public import Logging

/// Owns every container of this host: their records, every state
/// transition (each one persisted with its event), the waiters for their
/// exits and the restart policy. What runs their processes is the
/// runtime it is given; it decides, the runtime does.
///
/// State is re-checked after every `await`: other calls may have run.
public actor ContainerSupervisor {
    private struct Live {
        var monitor: Task<Void, Never>?
        var restart: Task<Void, Never>?
        /// The shim of an exited container being let go, and its cgroup
        /// removed: a start or a removal waits for it, as the next shim's
        /// socket and the next cgroup are where these are.
        var retiring: Task<Void, Never>?
        /// That shim was asked to leave, and answered.
        var retired = false
        /// The container is being stopped because it turned unhealthy
        /// with `--health-on-failure restart`: it starts again after the
        /// restart policy's backoff, whatever the policy.
        var restartForHealth = false
    }

    let database: AgentDatabase
    let images: ImageStore
    public let volumes: VolumeStore
    public let networking: ContainerNetworking
    public nonisolated var networks: NetworkStore { networking.store }
    let runtime: any ContainerRuntime
    let host: NodeCapacity
    let logger: Logger
    private var containers: [ContainerID: Container] = [:]
    private var live: [ContainerID: Live] = [:]
    private var waiters: [ContainerID: [UUID: CheckedContinuation<Container?, Never>]] = [:]
    private var listeners: [UUID: @Sendable ([Event]) -> Void] = [:]
    /// What has been reported of each watched running container's OOM kills.
    private var oomAccounts: [ContainerID: OOMAccount] = [:]
    /// Restart delays, and the wait for an OOM kill's victim, are measured on it.
    private let clock: any Clock<Duration>
    /// The time of records and events.
    private let now: @Sendable () -> Date
    /// Runs the health probes of running containers that have a check.
    private let prober: HealthProber

    /// - Throws: `BerthError` when the records cannot be read.
    /// - Parameters:
    ///   - clock: what restart delays are measured on.
    ///   - now: the time records and events carry.
    public init(
        database: AgentDatabase, images: ImageStore, volumes: VolumeStore, runtime: any ContainerRuntime, host: NodeCapacity,
        networking: ContainerNetworking, logger: Logger, clock: any Clock<Duration> = ContinuousClock(),
        now: @escaping @Sendable () -> Date = { Date() }, metrics: AgentMetrics = AgentMetrics()
    ) throws {
        self.clock = clock
        self.prober = HealthProber(runtime: runtime, clock: clock, metrics: metrics)
        self.now = now
        self.database = database
        self.images = images
        self.volumes = volumes
        self.networking = networking
        self.runtime = runtime
        self.host = host
        self.logger = logger
        for container in try database.allContainers() { containers[container.id] = container }
    }

    /// Lets the standby shim go; containers and their shims stay, and so
    /// do their networks.
    public nonisolated func shutdown() {
        prober.stopAll()
        runtime.shutdown()
        networking.shutdown()
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
        return AgentDatabase.PendingEvent(type: .container, action: action, actorID: container.id.rawValue, attributes: attributes, time: now())
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
    public nonisolated var shimPIDs: [Int32] { runtime.shimPIDs }

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
    /// The controller's word on this node's overlay networks (`SetOverlays`).
    public func applyOverlays(_ states: [OverlayState]) async throws {
        try await networking.applyOverlays(states, users: networkUsers)
    }

    public func removeNetwork(_ reference: String) throws {
        let network = try networking.store.get(reference)
        try networking.remove(network.id, users: (networkUsers[network.id] ?? []).map(\.name))
    }

    /// Removes an image's name, and the image with its last name, unless a
    /// container uses it (`force` untags an image in use and keeps it).
    public func removeImage(_ reference: String, force: Bool) throws -> (untagged: [String], deleted: [String]) {
        let used = imagesInUse
        let (untagged, deleted) = try images.remove(reference, force: force, inUse: { used.contains($0) })
        var events: [AgentDatabase.PendingEvent] = untagged.map { .init(type: .image, action: .untag, actorID: reference, attributes: ["name": $0], time: now()) }
        events += deleted.filter { $0.hasPrefix("sha256:") }.prefix(1).map { .init(type: .image, action: .delete, actorID: $0, time: now()) }
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
        let names = Set(containers.values.map(\.name))
        var checked = try ContainerAdmission.check(requested, capacity: host, names: names)
        let image = try images.resolve(checked.image)
        let name = checked.name ?? NameGenerator.make(avoiding: names)
        checked.name = name
        let network = try networking.network(for: checked)
        let layers = try images.lowerDirectories(of: image)
        let admission = try ContainerAdmission.admit(
            checked, image: image, onNetwork: network != nil, users: UserDatabase(layers: layers), host: LiveAdmissionHost())
        var spec = admission.spec
        // The check in effect, as docker stores it: the container's over the image's.
        spec.healthcheck = (spec.healthcheck ?? HealthCheck()).merged(over: image.config.healthcheck)
        _ = try ContainerNetworking.requestedPorts(spec, exposed: image.config.exposedPorts, onNetwork: network != nil)
        var endpoints: [ContainerEndpoint] = []
        if let network {
            try Self.checkOverlay(network, for: spec)
            let requested = try spec.ipv4Address.map { try IPv4Address(parsing: $0) }
            endpoints.append(
                try networking.endpoint(
                    on: network, aliases: spec.networkAliases, requested: requested, existing: [], others: Array(containers.values)))
            for attachment in spec.additionalNetworks ?? [] {
                let more = try networking.userNetwork(attachment.network)
                try Self.checkOverlay(more, for: spec)
                endpoints.append(
                    try networking.endpoint(
                        on: more, aliases: attachment.aliases, requested: try attachment.ipv4Address.map { try IPv4Address(parsing: $0) },
                        existing: endpoints, others: Array(containers.values)))
            }
        } else if !(spec.additionalNetworks ?? []).isEmpty {
            throw BerthError.invalid("--network \(spec.network): a container on it can be on no other network")
        }

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
            id: id, name: name, spec: spec, imageID: image.id, status: ContainerStatus(createdAt: now()), endpoints: endpoints,
            admitted: admission.process)
        var made = false
        do {
            try runtime.create(id)
            made = true
            steps.lap("directories")
            let recorded = try database.insert(container, events: [event(.create, container)])
            containers[id] = container
            publish(recorded)
            steps.lap("record")
            logger.debug("container created", metadata: steps.metadata.merging(["container.id": "\(id.short)"]) { $1 })
        } catch {
            if made {
                let runtime = self.runtime
                Task { try? await runtime.delete(id, shimRetired: true) }
            }
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
        var steps = StepTimes()
        var attachment: ContainerNetworking.Attachment?
        let prepared: PreparedStart
        do {
            let ports = try ContainerNetworking.requestedPorts(spec, exposed: image.config.exposedPorts, onNetwork: !container.endpoints.isEmpty)
            attachment = try networking.attach(container, ports: ports)
            steps.lap("network")
            let hostname = spec.hostname ?? id.short
            let layers = try images.lowerDirectories(of: image)
            // Admitted at create; a record from before admissions were kept is admitted now.
            let process = try container.admitted
                ?? ContainerAdmission.process(of: container, image: image, users: UserDatabase(layers: layers), host: LiveAdmissionHost())
            prepared = try await runtime.prepare(
                RuntimeStartRequest(
                    container: container, image: image, process: process, lowerDirs: layers, netnsPath: attachment?.netnsPath,
                    hostname: hostname,
                    hosts: RuntimePlanner.hostsFile(
                        hostname: hostname, address: attachment?.address.description, extra: spec.extraHosts ?? [],
                        gateway: container.endpoints.first?.gateway.description),
                    resolvConf: attachment?.resolvConf ?? RuntimePlanner.resolvConf(host: (try? FileIO.read("/etc/resolv.conf")) ?? ""),
                    attachGate: attaching))
            steps.lap("prepare")
        } catch {
            if attachment != nil { networking.detach(&container) }
            throw error
        }
        var attached = container
        attached.publishedPorts = attachment?.publishedPorts ?? []
        let outcome: RuntimeStart
        do {
            outcome = try await runtime.start(prepared)
        } catch {
            networking.detach(&attached)
            throw error
        }
        steps.lap("start")
        // Other calls may have run while the process started.
        guard let current = containers[id] else {
            _ = await runtime.retire(id)
            throw BerthError.notFound("container", id.short)
        }
        container = current
        container.publishedPorts = attached.publishedPorts
        switch outcome {
        case .failed(let message, let exitCode):
            networking.detach(&container)
            try container.status.markStartFailed(message, exitCode: exitCode, at: now())
            try commit(container, [event(.die, container, ["exitCode": String(container.status.exitCode ?? 127), "reason": "StartFailed", "error": message])])
            resumeWaiters(id)
            throw BerthError(.failedPrecondition, message)
        case .started(let pid, let startedAt, let warnings):
            try container.status.markStarted(
                pid: pid, at: Date(timeIntervalSince1970: Double(startedAt) / 1e9), restart: restart, healthChecked: Self.probeCommand(container, image) != nil)
            var events = [event(.start, container)]
            if restart { events.insert(event(.restart, container, ["restartCount": String(container.status.restartCount)]), at: 0) }
            try commit(container, events)
            live[id, default: Live()].retired = false
            monitor(id)
            watchMemory(id, fresh: true)
            startProbing(container, image: image, fresh: true)
            steps.lap("record")
            logger.debug("container started", metadata: steps.metadata.merging(["container.id": "\(id.short)"]) { $1 })
            for warning in warnings { logger.warning("container limit not applied", metadata: ["container.id": "\(id.short)", "warning": "\(warning)"]) }
            return (container, warnings)
        }
    }

    // MARK: OOM kills

    /// Starts watching a running container's OOM kills.
    ///
    /// - Parameter fresh: the container was just started in a cgroup made
    ///   for this run: every kill its counter shows is this run's, even one
    ///   that came before the watch began (a process that fills its limit
    ///   in the milliseconds between the start and this call). Otherwise (a
    ///   re-adopted container) counting starts from the counter's value now.
    private func watchMemory(_ id: ContainerID, fresh: Bool) {
        runtime.onMemoryPressure { [weak self] id in Task { await self?.memoryPressure(id) } }
        oomAccounts[id] = OOMAccount(startingAt: fresh ? 0 : runtime.oomKills(id) ?? 0)
        do {
            try runtime.watchMemory(id)
        } catch {
            logger.warning("OOM kills are reported at exit only", metadata: ["container.id": "\(id.short)", "error": "\(error)"])
        }
    }

    /// One `oom` event per out-of-memory episode, with how many processes
    /// the kernel killed in it.
    private func oomEvent(_ container: Container, kills: UInt64) -> AgentDatabase.PendingEvent {
        event(.oom, container, ["kills": String(kills)])
    }

    /// How long a process the kernel OOM-killed may take to die before its
    /// container's process is known to have survived.
    static let oomVictimGrace = Duration.milliseconds(100)

    /// The kernel reported memory pressure in a container's cgroup: a
    /// process may have been OOM-killed while the container runs on.
    private func memoryPressure(_ id: ContainerID) async {
        // A kill of the container's own process is its exit's to report
        // (as OOMKilled): give the victim time to die, and leave the count
        // alone when the container's process is the one gone.
        try? await clock.sleep(for: Self.oomVictimGrace)
        guard let container = containers[id], container.status.state.isActive, let pid = container.status.pid,
            runtime.isRunning(pid: pid)
        else { return }
        guard let kills = oomAccounts[id]?.pressure(counter: runtime.oomKills(id), at: now()), kills > 0 else { return }
        do {
            publish(try database.append([oomEvent(container, kills: kills)]))
        } catch {
            logger.error("oom event not recorded", metadata: ["container.id": "\(id.short)", "error": "\(error)"])
        }
    }

    /// Waits on the runtime for the process's exit, then records it.
    private func monitor(_ id: ContainerID) {
        let runtime = self.runtime
        live[id, default: Live()].monitor = Task { [weak self] in
            do {
                let exit = try await runtime.wait(id)
                await self?.exited(id, exit: exit)
            } catch let lost as RuntimeLost {
                await self?.lost(id, reason: lost.reason)
            } catch {
                // Cancelled: the agent is stopping; the process runs on.
            }
        }
    }

    /// The shim vanished without an exit record (host reboot, kill -9 of the shim).
    private func lost(_ id: ContainerID, reason: String) async {
        guard var container = containers[id], container.status.state.isActive else { return }
        logger.error("container lost", metadata: ["container.id": "\(id.short)", "reason": "\(reason)"])
        prober.stop(id)
        try? container.status.markExited(ProcessExit(exitCode: 255), at: now())
        oomAccounts[id] = nil
        runtime.unwatchMemory(id)
        networking.detach(&container, processesGone: false)
        try? commit(container, [event(.die, container, ["exitCode": "255", "error": reason])])
        live[id]?.monitor = nil
        resumeWaiters(id)
        _ = await runtime.retire(id)
    }

    private func exited(_ id: ContainerID, exit: ShimExit) async {
        guard var container = containers[id], container.status.state.isActive else { return }
        prober.stop(id)
        let signal = exit.signal > 0 ? Signal(number: exit.signal) : nil
        let finished = Date(timeIntervalSince1970: Double(exit.finishedAt) / 1e9)
        let counter = runtime.oomKills(id)
        let oom = oomAccounts.removeValue(forKey: id).map {
            $0.exit(counter: counter, shimSaysOOM: exit.oomKilled, killed: exit.signal == Signal.kill.number || exit.code == 137, finishedAt: finished)
        } ?? OOMAccount.unwatchedExit(shimSaysOOM: exit.oomKilled)
        runtime.unwatchMemory(id)
        var events: [AgentDatabase.PendingEvent] = []
        if let kills = oom.eventKills { events.append(oomEvent(container, kills: kills)) }
        let processExit = ProcessExit(exitCode: exit.code, signal: signal, oomKilled: oom.oomKilled)
        if container.status.state == .paused { try? runtime.resume(id) }
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
        // The exit is recorded: waiters hear of it while the runtime lets
        // the process's supervision go and removes its cgroup.
        live[id]?.monitor = nil
        let runtime = self.runtime
        let retiring = Task {
            let answered = await runtime.retire(id)
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

    private func scheduleRestartIfNeeded(_ id: ContainerID) {
        guard let container = containers[id], container.status.state == .exited else { return }
        let status = container.status
        let forHealth = live[id]?.restartForHealth ?? false
        live[id]?.restartForHealth = false
        switch container.spec.restartPolicy.afterExit(
            exitCode: status.exitCode ?? 0, restartCount: status.restartCount, stoppedByUser: status.stoppedByUser, autoRemove: container.spec.autoRemove,
            restartForHealth: forHealth)
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

    // MARK: Health

    /// The probe command of a container's health check; nil without one (or with `NONE`).
    static func probeCommand(_ container: Container, _ image: Image) -> [String]? {
        guard let check = container.spec.healthcheck, !check.isDisabled else { return nil }
        return check.probeCommand(shell: image.config.shell)
    }

    /// Starts a running container's probes: one interval (or start
    /// interval) after a start; for a re-adopted one, at a random point of
    /// its interval, so that containers re-adopted together spread out.
    private func startProbing(_ container: Container, image: Image, fresh: Bool) {
        guard let check = container.spec.healthcheck, let command = Self.probeCommand(container, image), let health = container.status.health,
            let started = container.status.startedAt
        else { return }
        let timings = check.effective
        let first: Double
        if fresh {
            first = timings.nextDelay(status: .starting, sinceStart: 0)
        } else {
            first = Double.random(in: 0..<1) * timings.nextDelay(status: health.status, sinceStart: now().timeIntervalSince(started))
        }
        prober.watch(container.id, command: command, timings: timings, firstDelay: first, supervisor: self)
    }

    /// What the next probe of a container goes to.
    func probeTarget(_ id: ContainerID) -> HealthProber.Target {
        guard let status = containers[id]?.status else { return .gone }
        switch status.state {
        case .running:
            guard let pid = status.pid, let started = status.startedAt else { return .gone }
            return .running(pid: pid, run: started)
        case .paused: return .paused
        default: return .gone
        }
    }

    /// Records a probe of the run that started at `run`, with a
    /// `health_status` event when the status changes, and acts on the
    /// container turning unhealthy (`--health-on-failure`).
    ///
    /// - Returns: when the next probe is due; `.stop` when that run is over.
    func recordProbe(_ id: ContainerID, _ probe: HealthProbe, run: Date) -> HealthProber.Next {
        guard var container = containers[id], container.status.state.isActive, container.status.startedAt == run,
            let check = container.spec.healthcheck
        else { return .stop }
        let timings = check.effective
        // Frozen while it ran: the result says nothing of the service.
        guard container.status.state == .running else { return .after(seconds: timings.interval) }
        let changed = container.status.recordProbe(probe, timings: timings)
        do {
            if let changed {
                try commit(container, [event(.healthStatus(changed), container)])
            } else if let health = container.status.health {
                // Only the probe log moved: its small row, not the whole record.
                try database.updateHealth(id, health)
                containers[id] = container
            }
        } catch {
            logger.error("health probe not recorded", metadata: ["container.id": "\(id.short)", "error": "\(error)"])
        }
        if changed == .unhealthy { actOnUnhealthy(container) }
        let status = container.status.health?.status ?? .starting
        return .after(seconds: timings.nextDelay(status: status, sinceStart: now().timeIntervalSince(run)))
    }

    /// `--health-on-failure`: nothing, SIGKILL (the restart policy then
    /// applies), a stop as a person's, or a stop followed by a start after
    /// the restart policy's backoff.
    private func actOnUnhealthy(_ container: Container) {
        let id = container.id
        let action = container.spec.healthOnFailure
        guard action != .none else { return }
        logger.warning("container unhealthy", metadata: ["container.id": "\(id.short)", "action": "\(action.rawValue)"])
        if action == .restart { live[id, default: Live()].restartForHealth = true }
        Task { [weak self] in await self?.stopUnhealthy(id, action: action, run: container.status.startedAt) }
    }

    private func stopUnhealthy(_ id: ContainerID, action: HealthFailureAction, run: Date?) async {
        guard let container = containers[id], container.status.state.isActive, container.status.startedAt == run else { return }
        if action == .stop {
            do { _ = try await stop(id.rawValue) } catch {
                logger.error("unhealthy container not stopped", metadata: ["container.id": "\(id.short)", "error": "\(error)"])
            }
            return
        }
        let signal = action == .kill ? Signal.kill : (try? stopSignal(of: container)) ?? .terminate
        do {
            try commit(container, [event(.kill, container, ["signal": signal.name, "reason": "unhealthy"])])
            try await sendSignal(id, signal)
            guard signal != .kill else { return }
            let grace = container.spec.stopTimeout ?? ContainerSpec.defaultStopTimeout
            if await stoppedRecord(id, timeout: grace < 0 ? nil : .seconds(grace)) == nil, let current = containers[id],
                current.status.state.isActive, current.status.startedAt == run
            {
                try commit(current, [event(.kill, current, ["signal": "SIGKILL", "reason": "unhealthy"])])
                try await sendSignal(id, .kill)
            }
        } catch {
            logger.error("unhealthy container not stopped", metadata: ["container.id": "\(id.short)", "error": "\(error)"])
        }
    }

    /// The signal a stop sends first: the container's, the image's, or SIGTERM.
    private func stopSignal(of container: Container) throws -> Signal {
        let image = try? images.resolve(container.imageID)
        return try container.spec.stopSignal ?? (image.flatMap { $0.config.stopSignal.isEmpty ? nil : try Signal(parsing: $0.config.stopSignal) }) ?? .terminate
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
        let signal = try stopSignal(of: container)
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
        do {
            try await runtime.signal(id, signal)
        } catch {
            // A process that has just exited (its shim may be gone already) is
            // not a failure: its exit reaches the record within moments.
            if await !waitForExit(id, timeout: .seconds(2)) { throw error }
        }
        // A frozen process handles a signal only once thawed: as docker
        // does, the container is unpaused to take it, whatever the signal.
        if var container = containers[id], container.status.state == .paused {
            do {
                try runtime.resume(id)
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
        try runtime.pause(container.id)
        try container.status.markPaused()
        try commit(container, [event(.pause, container)])
    }

    public func resume(_ reference: String) throws {
        var container = try find(reference)
        guard container.status.state == .paused else {
            throw BerthError(.failedPrecondition, "container \(container.name) is not paused")
        }
        try runtime.resume(container.id)
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
                try? await self.clock.sleep(for: timeout)
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
                    try? await self.clock.sleep(for: timeout)
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
            try runtime.update(container.id, resources: resources)
        }
        container.spec.resources = merged
        if let restartPolicy { container.spec.restartPolicy = restartPolicy }
        try commit(container, [event(.update, container)])
        return container
    }

    // MARK: Networks

    /// An overlay network's addresses are the controller's: only its own
    /// containers (a replica's, at the address it was given) join one.
    static func checkOverlay(_ network: Network, for spec: ContainerSpec) throws {
        guard network.vni != nil else { return }
        guard spec.labels[ReplicaLabel.cluster] != nil else {
            throw BerthError(
                .failedPrecondition, "\(network.name) is an overlay network: its addresses are the controller's, and only a service's replicas join it (berth service create --network \(network.name))")
        }
    }

    /// Puts a container on one more network (at once when it runs).
    ///
    /// - Throws: `BerthError` for a container on the host's network or on
    ///   none, one already on the network, an address that cannot be had.
    public func connect(_ reference: String, network networkReference: String, aliases: [String], address: String?) throws -> Container {
        var container = try find(reference)
        let network = try networks.get(networkReference)
        if network.vni != nil {
            throw BerthError(.failedPrecondition, "\(network.name) is an overlay network: its addresses are the controller's, and only a service's replicas join it")
        }
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
            attributes: ["name": network.name, "container": container.id.rawValue, "containerName": container.name], time: now())
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
            networking.detach(&current)
            steps.lap("network")
            try await runtime.delete(id, shimRetired: live[id]?.retired == true)
            steps.lap("runtime")
            let recorded = try database.delete(container: id, events: [event(.destroy, current)])
            steps.lap("record")
            logger.debug("container removed", metadata: steps.metadata.merging(["container.id": "\(id.short)"]) { $1 })
            containers.removeValue(forKey: id)
            live.removeValue(forKey: id)
            prober.stop(id)
            for waiter in (waiters.removeValue(forKey: id) ?? [:]).values { waiter.resume(returning: current) }
            publish(recorded)
            if removeVolumes { removeAnonymousVolumes(of: current) }
            if current.endpoints.contains(where: { networking.isOverlay($0.networkID) }) { networking.releaseOverlays(users: networkUsers) }
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
    /// restart policy asks for it. Their networks are restored first
    /// (`ContainerNetworking.reconcile`).
    public func restore() async {
        for container in containers.values where container.status.state.isActive {
            switch await runtime.state(container.id) {
            case .exited(let exit):
                await exited(container.id, exit: exit)
            case .running(let pid):
                logger.info("container re-adopted", metadata: ["container.id": "\(container.id.short)", "pid": "\(pid)"])
                monitor(container.id)
                watchMemory(container.id, fresh: false)
                if let image = try? images.resolve(container.imageID) { startProbing(container, image: image, fresh: false) }
                // An attached run's caller is gone with the agent that
                // served it: the output it held goes to the log.
                await runtime.release(container.id)
            case .gone:
                await lost(container.id, reason: "its shim is gone (was the host restarted?)")
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
