public import BerthCgroups
import BerthLinux
public import BerthModel
public import BerthShimProtocol
import Foundation
public import Logging
import Synchronization

/// Where the agent keeps containers, and what it starts them with.
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

    /// The container's writable layer, root mount point, logs and /etc name files.
    public func containerDir(_ id: ContainerID) -> String { "\(rootDir)/containers/\(id.rawValue)" }
    /// Its bundle: the shim's configuration, socket and exit record (one boot).
    public func bundleDir(_ id: ContainerID) -> String { "\(stateDir)/containers/\(id.rawValue)" }
    public func logFile(_ id: ContainerID) -> String { "\(containerDir(id))/logs/container.log" }
}

/// The real runtime: a `berth-shim` per container (started from a sealed
/// copy, one kept ready ahead of need), its cgroup, its compiled seccomp
/// program, its bundle and directories.
public final class ShimRuntime: ContainerRuntime {
    public let environment: RuntimeEnvironment
    public let cgroups: any CgroupDriver
    private let launcher: ShimLauncher
    /// Removed containers' directories, deleted in the background.
    private let rootTrash: Trash
    private let stateTrash: Trash
    private let oomWatcher: OOMWatcher?
    private let shims = Mutex<[ContainerID: Int32]>([:])
    /// Each running container's start configuration, for its execs (read
    /// from its bundle once, not at every exec or health probe).
    private let configs = Mutex<[ContainerID: ShimConfig]>([:])
    private let logger: Logger

    /// Makes the directories it keeps containers in, empties what a
    /// previous agent left in the trash, and removes spare cgroups.
    public init(environment: RuntimeEnvironment, cgroups: any CgroupDriver, logger: Logger) throws {
        self.environment = environment
        self.cgroups = cgroups
        self.logger = logger
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

    public func shutdown() {
        launcher.shutdown()
        cgroups.removeSpares(closing: true)
    }

    private func shim(_ id: ContainerID) -> ShimClient { ShimClient(bundleDir: environment.bundleDir(id)) }

    // MARK: Create and start

    public func create(_ id: ContainerID) throws {
        let dir = environment.containerDir(id)
        do {
            // The upper directory is the container's "/": others must be able to enter it.
            try Directories.create(dir, mode: 0o711)
            for (sub, mode) in [("/upper", 0o755), ("/work", 0o700), ("/rootfs", 0o755), ("/logs", 0o700)] {
                try Directories.create(dir + sub, mode: FileMode(mode))
            }
        } catch {
            try? RootedDirectory(path: "\(environment.rootDir)/containers").remove(id.rawValue)
            throw error
        }
    }

    public func prepare(_ request: RuntimeStartRequest) async throws -> PreparedStart {
        let container = request.container
        let id = container.id
        let spec = container.spec
        let bundle = environment.bundleDir(id)
        do {
            try? RootedDirectory(path: "\(environment.stateDir)/containers").remove(id.rawValue)
            try Directories.create(bundle, mode: 0o700)
            // Written afresh at every start, as docker does (the host's
            // resolvers may have changed). Regenerated, so not fsynced.
            let dir = environment.containerDir(id)
            for (file, text) in [("hostname", "\(request.hostname)\n"), ("hosts", request.hosts), ("resolv.conf", request.resolvConf)] {
                try AtomicFile.write(Array(text.utf8), to: "\(dir)/\(file)", durable: false)
            }
            let devices = try HostDevices.resolve(spec.devices)
            if cgroups.exists(id.rawValue) { try cgroups.remove(id.rawValue) }
            try cgroups.create(id.rawValue, resources: spec.resources, devices: devices.rules)
            cgroups.prepareSpare()
            let process = request.process
            var seccompPath: String?
            if process.seccomp != .unconfined {
                seccompPath = try seccompProgram(process.seccomp, capabilities: process.capabilities)
            }
            let paths = RuntimePaths(
                containerDir: dir, bundleDir: bundle, lowerDirs: request.lowerDirs,
                cgroup: cgroups.placement(id.rawValue), oomCounterFile: cgroups.oomCounterFile(id.rawValue),
                seccompProgram: seccompPath, logFile: environment.logFile(id),
                logMaxBytes: spec.log?.maxSize.map { Int($0.bytes) } ?? environment.logMaxBytes,
                logMaxFiles: spec.log?.maxFiles ?? environment.logMaxFiles, cgroupMounts: cgroups.containerMounts,
                volumesDir: "\(environment.rootDir)/volumes", netnsPath: request.netnsPath, devices: devices.nodes)
            var config = try RuntimePlanner.plan(container: container, image: request.image, process: process, paths: paths)
            config.attachGate = request.attachGate
            return PreparedStart(id: id, command: config.args, config: config)
        } catch {
            try? cgroups.remove(id.rawValue)
            throw error
        }
    }

    public func start(_ prepared: PreparedStart) async throws -> RuntimeStart {
        let id = prepared.id
        guard let config = prepared.config else { throw BerthError(.internal, "a start prepared without a shim configuration") }
        let (shimPID, outcome) = try await shim(id).start(config: config, launcher: launcher)
        switch outcome {
        case .failed(let stage, let errno, let name, let detail):
            Processes.reap(shimPID)
            try? cgroups.remove(id.rawValue)
            let message = Self.startFailure(stage: stage, errno: errno, errnoName: name, detail: detail, command: config.args)
            return .failed(message: message, exitCode: errno == 2 ? 127 : 126)
        case .started(let pid, let startedAt, let warnings):
            shims.withLock { $0[id] = shimPID }
            configs.withLock { $0[id] = config }
            return .started(pid: pid, startedAtNanos: startedAt, warnings: warnings)
        }
    }

    /// The compiled program for a profile and a capability set, compiled
    /// once and kept under the state directory (compiling costs milliseconds
    /// on every start otherwise).
    private func seccompProgram(_ choice: SeccompChoice, capabilities: UInt64) throws -> String? {
        let dir = "\(environment.stateDir)/seccomp"
        let path = "\(dir)/\(choice.key)-\(String(capabilities, radix: 16)).bpf"
        if FileIO.exists(path) { return path }
        guard let profile = try choice.profile() else { return nil }
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

    // MARK: A running process

    public func signal(_ id: ContainerID, _ signal: Signal) async throws {
        let failure: String?
        do {
            failure = try await shim(id).request(.signal(signal.number))["error"]
        } catch {
            failure = "\(error)"
        }
        if let failure { throw BerthError(.internal, "cannot send \(signal.name): \(failure)") }
    }

    public func wait(_ id: ContainerID) async throws -> ShimExit {
        let shim = shim(id)
        var attempts = 0
        while true {
            try Task.checkCancellation()
            do {
                return try ShimExit(record: try await shim.request(.wait))
            } catch {
                // The shim may be gone; it leaves its exit record behind if the process ended.
                if let exit = shim.recordedExit() { return exit }
                try Task.checkCancellation()
                attempts += 1
                if attempts > 5 { throw RuntimeLost(reason: "its shim stopped answering (\(error))") }
                try await Task.sleep(for: .milliseconds(200 * attempts))
            }
        }
    }

    public func state(_ id: ContainerID) async -> RuntimeState {
        let shim = shim(id)
        do {
            let state = try await shim.request(.state)
            if state["state"] == "exited" { return .exited(try ShimExit(record: state)) }
            guard let pid = state["pid"].flatMap({ Int32($0) }) else { throw BerthError(.internal, "the shim named no process") }
            // The shim that answered is the parent of the container's process.
            if let shimPID = Processes.parent(of: pid) { shims.withLock { $0[id] = shimPID } }
            return .running(pid: pid)
        } catch {
            return shim.recordedExit().map(RuntimeState.exited) ?? .gone
        }
    }

    public func retire(_ id: ContainerID) async -> Bool {
        let shimPID = shims.withLock { $0.removeValue(forKey: id) }
        configs.withLock { _ = $0.removeValue(forKey: id) }
        let (cgroups, logger) = (self.cgroups, self.logger)
        async let cgroupRemoved: Void = Self.removeCgroup(id, cgroups, logger)
        let answered = (try? await shim(id).request(.delete)) != nil
        if let shimPID { Self.reap(shimPID) }
        await cgroupRemoved
        return answered
    }

    public func delete(_ id: ContainerID, shimRetired: Bool) async throws {
        // A shim let go at the exit has left already; one that did not answer then is asked again.
        if !shimRetired { _ = try? await shim(id).request(.delete) }
        configs.withLock { _ = $0.removeValue(forKey: id) }
        if let shimPID = shims.withLock({ $0.removeValue(forKey: id) }) { Self.reap(shimPID) }
        if cgroups.exists(id.rawValue) { try cgroups.remove(id.rawValue) }
        try stateTrash.discard(id.rawValue, from: "\(environment.stateDir)/containers")
        try rootTrash.discard(id.rawValue, from: "\(environment.rootDir)/containers")
    }

    public func release(_ id: ContainerID) async {
        _ = try? await shim(id).request(.release)
    }

    public func followOutput(
        _ id: ContainerID, attached: () async throws -> Void, _ deliver: (ShimClient.OutputChunk) async throws -> Void
    ) async throws {
        try await shim(id).followOutput(attached: attached, deliver)
    }

    private static func removeCgroup(_ id: ContainerID, _ cgroups: any CgroupDriver, _ logger: Logger) async {
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

    // MARK: Cgroup

    public func pause(_ id: ContainerID) throws { try cgroups.freeze(id.rawValue) }
    public func resume(_ id: ContainerID) throws { try cgroups.thaw(id.rawValue) }
    public func update(_ id: ContainerID, resources: Resources) throws { try cgroups.update(id.rawValue, resources: resources) }

    public func oomKills(_ id: ContainerID) -> UInt64? {
        KernelText(cgroups.oomCounterFile(id.rawValue))?.value("oom_kill")
    }

    public func onMemoryPressure(_ handler: @escaping @Sendable (ContainerID) -> Void) {
        oomWatcher?.onPressure(handler)
    }

    public func watchMemory(_ id: ContainerID) throws {
        guard let oomWatcher else { throw BerthError(.unavailable, "the agent could not open its OOM watcher (epoll or inotify)") }
        try oomWatcher.watch(id, counterFile: cgroups.oomCounterFile(id.rawValue))
    }

    public func unwatchMemory(_ id: ContainerID) { oomWatcher?.unwatch(id) }

    public func isRunning(pid: Int32) -> Bool { Processes.isRunning(pid) }

    public var shimPIDs: [Int32] { shims.withLock { Array($0.values) } }

    // MARK: Exec

    public func exec(_ id: ContainerID, mainPID: Int32, _ request: ExecRequestSpec) async throws -> ExecProcess {
        let config: ShimConfig
        if let known = configs.withLock({ $0[id] }) {
            config = known
        } else {
            do {
                config = try ShimConfig(record: LineRecord(parsing: FileIO.read(environment.bundleDir(id) + "/config")))
            } catch {
                throw BerthError(.failedPrecondition, "the container has no runtime configuration to exec with: \(error)")
            }
            configs.withLock { $0[id] = config }
        }
        return try await ExecProcess.start(request: request, config: config, targetPID: mainPID, shim: shim(id))
    }

    public func probe(_ id: ContainerID, mainPID: Int32, command: [String], timeout: Duration) async -> HealthProbe {
        await ExecProcess.probe(command: command, timeout: timeout) { try await exec(id, mainPID: mainPID, $0) }
    }
}
