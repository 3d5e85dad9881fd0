public import BerthModel
public import BerthShimProtocol

/// What runs containers' processes for the supervisor: it makes what a
/// start needs, starts, signals, waits for and deletes a container's first
/// process, execs others beside it, and reports the kernel's OOM kills. The
/// supervisor decides when; a runtime only does, and says what happened.
///
/// `ShimRuntime` is the real one (a `berth-shim` per container, cgroups,
/// seccomp); `FakeContainerRuntime` (BerthTesting) runs nothing and lets a
/// test decide what each process does.
public protocol ContainerRuntime: Sendable {
    /// Makes a new container's directories (its writable layer, its logs).
    /// - Throws: `SystemError`; nothing is left behind then.
    func create(_ id: ContainerID) throws

    /// Makes everything a start needs but the process: the bundle, the
    /// cgroup with its limits, /etc's name files, the plan.
    /// - Throws: `BerthError`; what it made is undone then.
    func prepare(_ request: RuntimeStartRequest) async throws -> PreparedStart

    /// Starts a prepared container's first process. A process that could not
    /// be started is an outcome (with what was made for it undone), not an
    /// error; an error means the runtime itself failed.
    func start(_ prepared: PreparedStart) async throws -> RuntimeStart

    /// Sends a signal to the container's first process.
    /// - Throws: `BerthError` when it cannot be delivered (the process may
    ///   have just exited).
    func signal(_ id: ContainerID, _ signal: Signal) async throws

    /// The first process's exit, when it comes.
    /// - Throws: `RuntimeLost` when nothing can tell it any more (the shim
    ///   is gone without a record); `CancellationError` when cancelled.
    func wait(_ id: ContainerID) async throws -> ShimExit

    /// Where a container's first process stands, asked after an agent restart.
    func state(_ id: ContainerID) async -> RuntimeState

    /// Lets go of an exited process's supervision (its shim) and removes its
    /// cgroup. True when the shim answered (it is gone for certain).
    func retire(_ id: ContainerID) async -> Bool

    /// Removes everything the runtime holds of a container: its shim if it
    /// is still there (`shimRetired` false), its cgroup, its bundle and its
    /// directories.
    func delete(_ id: ContainerID, shimRetired: Bool) async throws

    /// An attached run's caller is gone: the output the shim held goes to the log.
    func release(_ id: ContainerID) async

    /// Follows the first process's output until it ends (see `ShimClient.followOutput`).
    func followOutput(
        _ id: ContainerID, attached: () async throws -> Void, _ deliver: (ShimClient.OutputChunk) async throws -> Void
    ) async throws

    /// Freezes the container's processes.
    func pause(_ id: ContainerID) throws
    /// Thaws them.
    func resume(_ id: ContainerID) throws
    /// Applies new limits to a running container.
    func update(_ id: ContainerID, resources: Resources) throws

    /// The kernel's count of OOM kills in the container's cgroup.
    func oomKills(_ id: ContainerID) -> UInt64?
    /// Tells `handler` (on any thread) when a container's cgroup reports
    /// memory pressure.
    func onMemoryPressure(_ handler: @escaping @Sendable (ContainerID) -> Void)
    /// Starts reporting a running container's memory pressure.
    /// - Throws: when the kernel refuses; OOM kills are then seen at exit only.
    func watchMemory(_ id: ContainerID) throws
    func unwatchMemory(_ id: ContainerID)

    /// Whether the process still runs (an OOM kill may have taken it).
    func isRunning(pid: Int32) -> Bool

    /// The PIDs of the shims supervising containers.
    var shimPIDs: [Int32] { get }

    /// Starts `request` beside the container's first process (`mainPID`),
    /// as that was started.
    func exec(_ id: ContainerID, mainPID: Int32, _ request: ExecRequestSpec) async throws -> ExecProcess

    /// Runs a health probe in the container: `command` as an exec (the
    /// container's namespaces, cgroup, identity and seccomp filter), killed
    /// when it runs past `timeout`. Never throws: a probe that cannot run,
    /// or runs out of time, is a failed probe (exit code -1) saying why.
    func probe(_ id: ContainerID, mainPID: Int32, command: [String], timeout: Duration) async -> HealthProbe

    /// Lets go of what was made ahead of need; containers keep running.
    func shutdown()
}

/// What a start needs to know that the runtime does not.
public struct RuntimeStartRequest: Sendable {
    public var container: Container
    public var image: Image
    /// What its process is, as admitted.
    public var process: AdmittedProcess
    /// The image's layers, lowest last (overlayfs's order).
    public var lowerDirs: [String]
    /// The namespace the process joins (a container on a network).
    public var netnsPath: String?
    /// The container's /etc/hostname, /etc/hosts and /etc/resolv.conf.
    public var hostname: String
    public var hosts: String
    public var resolvConf: String
    /// A caller will attach to the output: the shim holds it until then.
    public var attachGate: Bool

    public init(
        container: Container, image: Image, process: AdmittedProcess, lowerDirs: [String], netnsPath: String?, hostname: String, hosts: String,
        resolvConf: String, attachGate: Bool
    ) {
        self.container = container
        self.image = image
        self.process = process
        self.lowerDirs = lowerDirs
        self.netnsPath = netnsPath
        self.hostname = hostname
        self.hosts = hosts
        self.resolvConf = resolvConf
        self.attachGate = attachGate
    }
}

/// A start made ready by `prepare`.
public struct PreparedStart: Sendable {
    public var id: ContainerID
    /// The command the process runs (for messages).
    public var command: [String]
    /// The shim's configuration (nil for a runtime without shims).
    public var config: ShimConfig?

    public init(id: ContainerID, command: [String], config: ShimConfig?) {
        self.id = id
        self.command = command
        self.config = config
    }
}

/// How a start went.
public enum RuntimeStart: Sendable, Hashable {
    case started(pid: Int32, startedAtNanos: Int64, warnings: [String])
    /// Not started, in docker's words where docker has them; exit code 127
    /// for a program not found, 126 otherwise.
    case failed(message: String, exitCode: Int32)
}

/// Where a container's first process stands.
public enum RuntimeState: Sendable, Hashable {
    case running(pid: Int32)
    case exited(ShimExit)
    /// Nothing tells: the shim is gone without an exit record.
    case gone
}

/// A container's process can no longer be followed.
public struct RuntimeLost: Error, CustomStringConvertible {
    public var reason: String
    public init(reason: String) { self.reason = reason }
    public var description: String { reason }
}
