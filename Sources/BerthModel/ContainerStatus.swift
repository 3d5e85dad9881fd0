import FoundationEssentials

/// The observed state of one container, changed only through the
/// transitions `ContainerState` allows.
public struct ContainerStatus: Codable, Sendable, Hashable {
    public private(set) var state: ContainerState
    /// The main process's PID in the host's PID namespace while active.
    public private(set) var pid: Int32?
    /// The last exit code, once the container has exited.
    public private(set) var exitCode: Int32?
    /// The signal that ended the last run, if a signal did.
    public private(set) var signal: Signal?
    /// Why the last run ended.
    public private(set) var reason: ExitReason?
    /// A failure message (why a start or a removal failed).
    public private(set) var error: String?
    public private(set) var createdAt: Date
    public private(set) var startedAt: Date?
    public private(set) var finishedAt: Date?
    /// Restarts made by the restart policy since the last manual start.
    public private(set) var restartCount: Int
    /// True when a person stopped or killed the container (restart policies
    /// then leave it stopped).
    public private(set) var stoppedByUser: Bool
    /// The health of a container with a health check, from its last start;
    /// nil without a check.
    public private(set) var health: Health?

    /// A fresh container in `created`.
    public init(createdAt: Date) {
        self.state = .created
        self.createdAt = createdAt
        self.restartCount = 0
        self.stoppedByUser = false
    }

    /// Restores a status exactly as it was recorded (from the state store or
    /// the wire); no transition is checked.
    public init(
        restoring state: ContainerState, pid: Int32?, exitCode: Int32?, signal: Signal?, reason: ExitReason?,
        error: String?, createdAt: Date, startedAt: Date?, finishedAt: Date?, restartCount: Int, stoppedByUser: Bool,
        health: Health? = nil
    ) {
        self.state = state
        self.pid = pid
        self.exitCode = exitCode
        self.signal = signal
        self.reason = reason
        self.error = error
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.restartCount = restartCount
        self.stoppedByUser = stoppedByUser
        self.health = health
    }

    /// True when the last run ended because the cgroup ran out of memory.
    public var oomKilled: Bool { reason == .oomKilled }

    private mutating func move(to next: ContainerState, _ verb: String) throws {
        guard state.canTransition(to: next) else {
            throw BerthError(
                .failedPrecondition,
                "cannot \(verb) a container that is \(state) (\(state) → \(next) is not allowed)")
        }
        state = next
    }

    /// created or exited → running.
    ///
    /// - Parameters:
    ///   - restart: true when a restart policy (not a person) starts it.
    ///   - healthChecked: the container has a health check: its health
    ///     starts over as `starting`.
    /// - Throws: `BerthError.failedPrecondition` from any other state.
    public mutating func markStarted(pid: Int32, at time: Date, restart: Bool = false, healthChecked: Bool = false) throws {
        try move(to: .running, "start")
        self.pid = pid
        self.startedAt = time
        self.finishedAt = nil
        self.exitCode = nil
        self.signal = nil
        self.reason = nil
        self.error = nil
        self.stoppedByUser = false
        self.health = healthChecked ? Health() : nil
        if restart { restartCount += 1 } else { restartCount = 0 }
    }

    /// Restores the health as it was recorded apart from the rest of the
    /// status (after probes that changed nothing else); no rule is checked.
    public mutating func restoreHealth(_ health: Health) { self.health = health }

    /// Takes a health probe's result while the container runs.
    ///
    /// - Parameter timings: the check's, defaults applied.
    /// - Returns: the new health status when it changed; nil when it did
    ///   not, or when the container is not running or has no check.
    public mutating func recordProbe(_ probe: HealthProbe, timings: HealthTimings) -> HealthStatus? {
        guard state == .running, var health, let startedAt else { return nil }
        let changed = health.record(probe, timings: timings, sinceStart: probe.start.timeIntervalSince(startedAt))
        self.health = health
        return changed
    }

    /// created → exited, recording why the process could not be started.
    public mutating func markStartFailed(_ message: String, exitCode: Int32 = 127, at time: Date) throws {
        try move(to: .exited, "fail to start")
        self.pid = nil
        self.exitCode = exitCode
        self.signal = nil
        self.reason = .startFailed
        self.error = message
        self.finishedAt = time
    }

    /// running → paused.
    public mutating func markPaused() throws { try move(to: .paused, "pause") }

    /// paused → running.
    public mutating func markResumed() throws { try move(to: .running, "unpause") }

    /// running or paused → exited, with how the process ended.
    public mutating func markExited(_ exit: ProcessExit, at time: Date) throws {
        try move(to: .exited, "record the exit of")
        self.pid = nil
        self.exitCode = exit.exitCode
        self.signal = exit.signal
        self.reason = exit.reason
        self.finishedAt = time
    }

    /// Notes that a person asked for this stop or kill, so restart policies
    /// leave the container stopped.
    public mutating func noteStopRequested() { stoppedByUser = true }

    /// created or exited → dead, when removal failed half-way.
    public mutating func markDead(_ message: String) throws {
        try move(to: .dead, "mark dead")
        self.error = message
        self.pid = nil
    }
}
