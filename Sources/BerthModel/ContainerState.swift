/// Where a container is in its life.
///
/// Allowed transitions (everything else is rejected):
///
/// | from      | to        | how                                        |
/// |-----------|-----------|--------------------------------------------|
/// | created   | running   | start                                      |
/// | created   | exited    | start failed                               |
/// | created   | dead      | removal failed                             |
/// | running   | paused    | pause (freezer)                            |
/// | running   | exited    | the main process ended                     |
/// | paused    | running   | unpause                                    |
/// | paused    | exited    | killed while frozen                        |
/// | exited    | running   | start again, or a restart policy           |
/// | exited    | dead      | removal failed                             |
public enum ContainerState: String, Codable, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case created
    case running
    case paused
    case exited
    case dead

    /// The states reachable from this one in one step.
    public var successors: Set<ContainerState> {
        switch self {
        case .created: return [.running, .exited, .dead]
        case .running: return [.paused, .exited]
        case .paused: return [.running, .exited]
        case .exited: return [.running, .dead]
        case .dead: return []
        }
    }

    /// True when `next` is one step away from this state.
    public func canTransition(to next: ContainerState) -> Bool { successors.contains(next) }

    /// True while the container has live processes (running or paused).
    public var isActive: Bool { self == .running || self == .paused }

    public var description: String { rawValue }
}

/// Why a container's main process stopped.
public enum ExitReason: String, Codable, Sendable, Hashable, CaseIterable {
    /// Exit code 0.
    case completed = "Completed"
    /// A non-zero exit code.
    case error = "Error"
    /// Ended by a signal, not by the OOM killer.
    case killed = "Killed"
    /// The cgroup's own OOM counter rose while the container ran.
    case oomKilled = "OOMKilled"
    /// The process could not be started (missing executable, bad working directory…).
    case startFailed = "StartFailed"
}

/// How a process ended, as its supervisor saw it.
public struct ProcessExit: Codable, Sendable, Hashable {
    /// The exit code as shells report it: the process's own code, or
    /// 128 + the signal number when a signal ended it.
    public var exitCode: Int32
    /// The signal that ended the process, if one did.
    public var signal: Signal?
    /// True only when the cgroup's OOM-kill counter rose; never inferred from
    /// exit code 137.
    public var oomKilled: Bool

    public init(exitCode: Int32, signal: Signal? = nil, oomKilled: Bool = false) {
        self.exitCode = exitCode
        self.signal = signal
        self.oomKilled = oomKilled
    }

    /// An exit by signal: exit code 128 + signal number.
    public static func signaled(_ signal: Signal, oomKilled: Bool = false) -> ProcessExit {
        ProcessExit(exitCode: 128 + signal.number, signal: signal, oomKilled: oomKilled)
    }

    /// The reason this exit is recorded with.
    public var reason: ExitReason {
        if oomKilled { return .oomKilled }
        if signal != nil { return .killed }
        return exitCode == 0 ? .completed : .error
    }
}
