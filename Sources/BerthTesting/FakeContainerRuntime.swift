public import BerthModel
public import BerthRuntime
public import BerthShimProtocol
public import Foundation
import Synchronization

/// A `ContainerRuntime` that runs nothing: each container's "process" is a
/// record, and the test decides what it does (exit, ignore a signal, be
/// OOM-killed, lose its shim). It outlives a supervisor, as shims outlive an
/// agent, so a second supervisor on the same records tests live restore.
///
/// Signals act as on a process with default handlers: SIGTERM, SIGINT,
/// SIGQUIT, SIGHUP and SIGKILL end it (exit 128+n, killed by the signal),
/// others are recorded only; `ignore` makes it survive all but SIGKILL.
public final class FakeContainerRuntime: ContainerRuntime {
    public struct Process: Sendable {
        public var pid: Int32
        public var command: [String]
        public var exit: ShimExit?
        public var paused = false
        /// Signals it received, in order.
        public var signals: [Signal] = []
        /// The shim is gone without a record.
        public var lost = false
        public var retired = false
        public var resources: Resources?
        /// What the start ran, as admitted.
        public var admitted: AdmittedProcess?
    }

    private struct State {
        var processes: [ContainerID: Process] = [:]
        var waiters: [ContainerID: [UUID: CheckedContinuation<ShimExit, any Error>]] = [:]
        var nextPID: Int32 = 1000
        var created: Set<ContainerID> = []
        var deleted: [ContainerID] = []
        var starts = 0
        var ignored: Set<Int32> = []
        var missing: Set<String> = []
        var prepareFailure: BerthError?
        var oomCounters: [ContainerID: UInt64] = [:]
        var watched: Set<ContainerID> = []
        var pressure: (@Sendable (ContainerID) -> Void)?
        var released: [ContainerID] = []
        var prepared: [ContainerID: AdmittedProcess] = [:]
        var probes: [ContainerID: Int] = [:]
        var probeAnswers: [ContainerID: Int32] = [:]
        /// Starts wait here while held.
        var holding = false
        var held: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())
    private let now: @Sendable () -> Date

    /// - Parameter now: the time of starts and exits.
    public init(now: @escaping @Sendable () -> Date = { Date() }) {
        self.now = now
    }

    // MARK: What the test decides

    /// Programs that do not exist: a start of one fails as docker's does.
    public func missing(_ program: String) { state.withLock { _ = $0.missing.insert(program) } }
    /// Signals processes survive (never SIGKILL).
    public func ignore(_ signals: Signal...) { state.withLock { $0.ignored.formUnion(signals.map(\.number).filter { $0 != SIGKILL }) } }
    /// The next prepare fails with this error.
    public func failNextPrepare(_ error: BerthError) { state.withLock { $0.prepareFailure = error } }

    /// Starts wait until `releaseStarts` (a start under way, for races with it).
    public func holdStarts() { state.withLock { $0.holding = true } }

    public func releaseStarts() {
        let held = state.withLock { s in
            s.holding = false
            defer { s.held = [] }
            return s.held
        }
        held.forEach { $0.resume() }
    }

    /// How many starts wait to be released.
    public var startsHeld: Int { state.withLock { $0.held.count } }

    /// The container's process exits.
    public func exit(_ id: ContainerID, code: Int32, signal: Int32 = 0, oomKilled: Bool = false) {
        finish(id, ShimExit(code: code, signal: signal, oomKilled: oomKilled, finishedAt: nanos(now())))
    }

    /// The kernel OOM-kills `processes` processes in the container's
    /// cgroup; with `main`, the container's own process is one of them.
    public func oomKill(_ id: ContainerID, processes: UInt64 = 1, main: Bool = false) {
        let handler = state.withLock { s -> (@Sendable (ContainerID) -> Void)? in
            s.oomCounters[id, default: 0] += processes
            return s.watched.contains(id) ? s.pressure : nil
        }
        if main { exit(id, code: 137, signal: SIGKILL, oomKilled: true) }
        handler?(id)
    }

    /// The shim dies without a record (kill -9 of the shim, a reboot).
    public func loseShim(_ id: ContainerID) {
        let waiters = state.withLock { s -> [CheckedContinuation<ShimExit, any Error>] in
            s.processes[id]?.lost = true
            return Array((s.waiters.removeValue(forKey: id) ?? [:]).values)
        }
        for waiter in waiters { waiter.resume(throwing: RuntimeLost(reason: "its shim stopped answering (test)")) }
    }

    public func process(_ id: ContainerID) -> Process? { state.withLock { $0.processes[id] } }
    public var starts: Int { state.withLock { $0.starts } }
    public var deleted: [ContainerID] { state.withLock { $0.deleted } }
    public var released: [ContainerID] { state.withLock { $0.released } }
    /// Containers whose directories exist.
    public var created: Set<ContainerID> { state.withLock { $0.created } }
    /// Whether anything waits for the container's exit.
    public func waited(_ id: ContainerID) -> Bool { state.withLock { !($0.waiters[id] ?? [:]).isEmpty } }

    private func nanos(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970 * 1e9) }

    private func finish(_ id: ContainerID, _ exit: ShimExit) {
        let waiters = state.withLock { s -> [CheckedContinuation<ShimExit, any Error>] in
            guard var process = s.processes[id], process.exit == nil, !process.lost else { return [] }
            process.exit = exit
            s.processes[id] = process
            return Array((s.waiters.removeValue(forKey: id) ?? [:]).values)
        }
        for waiter in waiters { waiter.resume(returning: exit) }
    }

    // MARK: ContainerRuntime

    public func create(_ id: ContainerID) throws { state.withLock { _ = $0.created.insert(id) } }

    public func prepare(_ request: RuntimeStartRequest) async throws -> PreparedStart {
        if let failure = state.withLock({ s -> BerthError? in defer { s.prepareFailure = nil }; return s.prepareFailure }) { throw failure }
        state.withLock { $0.prepared[request.container.id] = request.process }
        return PreparedStart(id: request.container.id, command: request.process.command, config: nil)
    }

    public func start(_ prepared: PreparedStart) async throws -> RuntimeStart {
        await withCheckedContinuation { continuation in
            let go = state.withLock { s in
                if s.holding { s.held.append(continuation) }
                return !s.holding
            }
            if go { continuation.resume() }
        }
        let started = now()
        return state.withLock { s in
            s.starts += 1
            let program = prepared.command.first ?? ""
            if s.missing.contains(program) {
                return .failed(message: "exec: \"\(program)\": executable file not found in $PATH", exitCode: 127)
            }
            s.nextPID += 1
            s.processes[prepared.id] = Process(pid: s.nextPID, command: prepared.command, admitted: s.prepared[prepared.id])
            return .started(pid: s.nextPID, startedAtNanos: nanos(started), warnings: [])
        }
    }

    public func signal(_ id: ContainerID, _ signal: Signal) async throws {
        let ends = try state.withLock { s -> Bool in
            guard var process = s.processes[id], process.exit == nil, !process.lost else {
                throw BerthError(.internal, "cannot send \(signal.name): no such process")
            }
            process.signals.append(signal)
            s.processes[id] = process
            let fatal: Set<Int32> = [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGKILL]
            return fatal.contains(signal.number) && !s.ignored.contains(signal.number)
        }
        if ends { exit(id, code: 128 + signal.number, signal: signal.number) }
    }

    public func wait(_ id: ContainerID) async throws -> ShimExit {
        let token = UUID()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ShimExit, any Error>) in
                enum Now { case exited(ShimExit), lost, none, wait }
                let now = state.withLock { s -> Now in
                    guard let process = s.processes[id] else { return .none }
                    if let exit = process.exit { return .exited(exit) }
                    if process.lost { return .lost }
                    s.waiters[id, default: [:]][token] = continuation
                    return .wait
                }
                switch now {
                case .exited(let exit): continuation.resume(returning: exit)
                case .lost, .none: continuation.resume(throwing: RuntimeLost(reason: "its shim stopped answering (test)"))
                case .wait: break
                }
            }
        } onCancel: {
            state.withLock { $0.waiters[id]?.removeValue(forKey: token) }?.resume(throwing: CancellationError())
        }
    }

    public func state(_ id: ContainerID) async -> RuntimeState {
        state.withLock { s in
            guard let process = s.processes[id], !process.retired else { return .gone }
            if let exit = process.exit { return .exited(exit) }
            return process.lost ? .gone : .running(pid: process.pid)
        }
    }

    public func retire(_ id: ContainerID) async -> Bool {
        state.withLock { s in
            s.processes[id]?.retired = true
            return !(s.processes[id]?.lost ?? true)
        }
    }

    public func delete(_ id: ContainerID, shimRetired: Bool) async throws {
        finishIfRunning(id)
        state.withLock { s in
            s.processes.removeValue(forKey: id)
            s.created.remove(id)
            s.deleted.append(id)
        }
    }

    private func finishIfRunning(_ id: ContainerID) {
        if let process = process(id), process.exit == nil { exit(id, code: 137, signal: SIGKILL) }
    }

    public func release(_ id: ContainerID) async { state.withLock { $0.released.append(id) } }

    public func followOutput(
        _ id: ContainerID, attached: () async throws -> Void, _ deliver: (ShimClient.OutputChunk) async throws -> Void
    ) async throws {
        try await attached()
        _ = try? await wait(id)
    }

    public func pause(_ id: ContainerID) throws { try setPaused(id, true) }
    public func resume(_ id: ContainerID) throws { try setPaused(id, false) }

    private func setPaused(_ id: ContainerID, _ paused: Bool) throws {
        try state.withLock { s in
            guard s.processes[id]?.exit == nil, s.processes[id] != nil else { throw BerthError(.internal, "no cgroup to freeze") }
            s.processes[id]?.paused = paused
        }
    }

    public func update(_ id: ContainerID, resources: Resources) throws { state.withLock { $0.processes[id]?.resources = resources } }

    public func oomKills(_ id: ContainerID) -> UInt64? { state.withLock { $0.oomCounters[id] ?? 0 } }
    public func onMemoryPressure(_ handler: @escaping @Sendable (ContainerID) -> Void) { state.withLock { $0.pressure = handler } }
    public func watchMemory(_ id: ContainerID) throws { state.withLock { _ = $0.watched.insert(id) } }
    public func unwatchMemory(_ id: ContainerID) { state.withLock { _ = $0.watched.remove(id) } }

    public func isRunning(pid: Int32) -> Bool {
        state.withLock { s in s.processes.values.contains { $0.pid == pid && $0.exit == nil && !$0.lost } }
    }

    public var shimPIDs: [Int32] {
        state.withLock { s in s.processes.values.filter { !$0.retired && !$0.lost }.map { $0.pid + 100_000 } }
    }

    public func exec(_ id: ContainerID, mainPID: Int32, _ request: ExecRequestSpec) async throws -> ExecProcess {
        throw BerthError(.failedPrecondition, "the fake runtime runs no processes: exec is tested on ShimRuntime (ExecTests)")
    }

    public func probe(_ id: ContainerID, mainPID: Int32, command: [String], timeout: Duration) async -> HealthProbe {
        let started = now()
        let code = state.withLock { s -> Int32 in
            s.probes[id, default: 0] += 1
            return s.probeAnswers[id] ?? 0
        }
        return HealthProbe(start: started, end: now(), exitCode: code, output: code == 0 ? "ok\n" : "failed\n")
    }

    /// What the container's health probes exit with from now on (0 by default).
    public func answerProbes(_ id: ContainerID, exitCode: Int32) { state.withLock { $0.probeAnswers[id] = exitCode } }

    /// Probes run in the container so far.
    public func probes(_ id: ContainerID) -> Int { state.withLock { $0.probes[id] ?? 0 } }

    /// The agent stops: its waits on the shims end (as its connections to
    /// them close), the processes run on; a later agent waits anew.
    public func shutdown() {
        let waiters = state.withLock { s -> [CheckedContinuation<ShimExit, any Error>] in
            defer { s.waiters = [:] }
            return s.waiters.values.flatMap { $0.values }
        }
        for waiter in waiters { waiter.resume(throwing: CancellationError()) }
    }
}
