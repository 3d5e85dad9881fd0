/// What to do when a container's main process exits, with docker's names:
/// `no`, `on-failure[:N]`, `always`, `unless-stopped`.
public enum RestartPolicy: Sendable, Hashable, CustomStringConvertible {
    /// Never restart (the default).
    case no
    /// Restart when the exit code is not 0, at most `maxRetries` times
    /// (nil: without limit).
    case onFailure(maxRetries: Int?)
    /// Restart whenever the process exits, unless stopped by a person.
    case always
    /// Like `always`, but a container a person stopped stays stopped across
    /// agent restarts.
    case unlessStopped

    /// Parses docker's spelling.
    ///
    /// - Throws: `BerthError.invalidArgument` for an unknown policy or a bad
    ///   retry count.
    public init(parsing text: String) throws {
        let parts = text.trimmingSpaces().split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        let name = parts[0].lowercased()
        let expected = "expected no, on-failure[:N], always or unless-stopped"
        switch name {
        case "", "no":
            guard parts.count == 1 else { throw BerthError.invalid("restart policy \"\(text)\": \"no\" takes no retry count") }
            self = .no
        case "always", "unless-stopped":
            guard parts.count == 1 else {
                throw BerthError.invalid("restart policy \"\(text)\": only on-failure takes a retry count")
            }
            self = name == "always" ? .always : .unlessStopped
        case "on-failure":
            if parts.count == 2 {
                guard let n = Int(parts[1]), n >= 0 else {
                    throw BerthError.invalid("restart policy \"\(text)\": the retry count must be a whole number >= 0")
                }
                self = .onFailure(maxRetries: n)
            } else {
                self = .onFailure(maxRetries: nil)
            }
        default:
            throw BerthError.invalid("restart policy \"\(text)\": \(expected)")
        }
    }

    public var description: String {
        switch self {
        case .no: return "no"
        case .always: return "always"
        case .unlessStopped: return "unless-stopped"
        case .onFailure(let max?): return "on-failure:\(max)"
        case .onFailure(nil): return "on-failure"
        }
    }

    /// What follows a container's run that just ended, by docker's rules: a
    /// stop or kill asked for by a person never restarts; a container that
    /// does not restart is removed when it was started with `--rm`.
    ///
    /// - Parameters:
    ///   - exitCode: the exit code of the main process.
    ///   - restartCount: restarts already made under this policy.
    ///   - stoppedByUser: true when a person asked for the stop or kill.
    ///   - autoRemove: the container was started with `--rm`.
    ///   - restartForHealth: the agent stopped it for turning unhealthy
    ///     with `--health-on-failure restart`: it restarts after the
    ///     backoff whatever the policy, unless a person stopped it since.
    public func afterExit(exitCode: Int32, restartCount: Int, stoppedByUser: Bool, autoRemove: Bool, restartForHealth: Bool = false) -> AfterExit {
        if restartForHealth && !stoppedByUser { return .restart(after: Self.backoff(attempt: restartCount)) }
        if shouldRestart(exitCode: exitCode, restartCount: restartCount, stoppedByUser: stoppedByUser) {
            return .restart(after: Self.backoff(attempt: restartCount))
        }
        return autoRemove ? .remove : .stay
    }

    /// Decides whether a container that just exited should be restarted.
    ///
    /// - Parameters:
    ///   - exitCode: the exit code of the main process.
    ///   - restartCount: restarts already made under this policy.
    ///   - stoppedByUser: true when a person asked for the stop or kill.
    public func shouldRestart(exitCode: Int32, restartCount: Int, stoppedByUser: Bool) -> Bool {
        if stoppedByUser { return false }
        switch self {
        case .no: return false
        case .always, .unlessStopped: return true
        case .onFailure(let max):
            guard exitCode != 0 else { return false }
            if let max { return restartCount < max }
            return true
        }
    }

    /// The delay before restart number `attempt` (0-based): 100 ms doubling
    /// each time, capped at one minute.
    public static func backoff(attempt: Int) -> Duration {
        let cap = Duration.seconds(60)
        guard attempt < 20 else { return cap }
        let delay = Duration.milliseconds(100 * (1 << attempt))
        return min(delay, cap)
    }
}

extension RestartPolicy: Codable {
    public init(from decoder: any Decoder) throws {
        try self.init(parsing: decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// What follows the end of a container's run.
public enum AfterExit: Sendable, Hashable {
    /// It runs again after this delay (the policy's backoff).
    case restart(after: Duration)
    /// It is removed (`--rm`).
    case remove
    /// It stays exited.
    case stay
}
