import FoundationEssentials

/// A container's health check: docker's `HEALTHCHECK` in an image, and
/// `--health-cmd`, `--health-interval`, `--health-timeout`,
/// `--health-retries`, `--health-start-period`, `--health-start-interval`
/// and `--no-healthcheck` on a container. A field left out takes the
/// image's, then docker's default.
public struct HealthCheck: Codable, Sendable, Hashable {
    /// `["CMD", program, args…]` runs the program; `["CMD-SHELL", command]`
    /// runs the command with the container's shell; `["NONE"]` turns an
    /// image's check off; empty takes the image's.
    public var test: [String]
    /// Seconds between probes once the start period is over (30 s).
    public var interval: Double?
    /// Seconds a probe may take before it is killed and counted as failed (30 s).
    public var timeout: Double?
    /// Seconds after a start during which failures do not count (0 s).
    public var startPeriod: Double?
    /// Seconds between probes during the start period (5 s).
    public var startInterval: Double?
    /// Failures in a row that make the container unhealthy (3).
    public var retries: Int?

    public static let defaultInterval = 30.0
    public static let defaultTimeout = 30.0
    public static let defaultStartPeriod = 0.0
    public static let defaultStartInterval = 5.0
    public static let defaultRetries = 3

    public init(
        test: [String] = [], interval: Double? = nil, timeout: Double? = nil, startPeriod: Double? = nil, startInterval: Double? = nil,
        retries: Int? = nil
    ) {
        self.test = test
        self.interval = interval
        self.timeout = timeout
        self.startPeriod = startPeriod
        self.startInterval = startInterval
        self.retries = retries
    }

    /// `--no-healthcheck`: the image's check is not run.
    public static let disabled = HealthCheck(test: ["NONE"])

    /// True for `NONE`: no probes.
    public var isDisabled: Bool { test.first == "NONE" }

    /// From the command line's flags, as docker reads them: `--health-cmd`
    /// is a shell command (`CMD-SHELL`); durations are Go's (`10s`,
    /// `1m30s`, `500ms`); nil when no flag was given.
    ///
    /// - Throws: `BerthError.invalidArgument` for a bad duration, a negative
    ///   retry count, or `--no-healthcheck` with any `--health-*` flag.
    public init?(
        command: String?, interval: String?, timeout: String?, startPeriod: String?, startInterval: String?, retries: Int?,
        disabled: Bool
    ) throws {
        let given = command != nil || interval != nil || timeout != nil || startPeriod != nil || startInterval != nil || retries != nil
        if disabled {
            guard !given else { throw BerthError.invalid("--no-healthcheck conflicts with --health-* options") }
            self = .disabled
            return
        }
        guard given else { return nil }
        func seconds(_ text: String?, _ flag: String) throws -> Double? {
            try text.map { try DurationText.seconds(parsing: $0, for: flag) }
        }
        self.init(
            test: command.map { ["CMD-SHELL", $0] } ?? [], interval: try seconds(interval, "--health-interval"),
            timeout: try seconds(timeout, "--health-timeout"), startPeriod: try seconds(startPeriod, "--health-start-period"),
            startInterval: try seconds(startInterval, "--health-start-interval"), retries: retries)
        try validate()
    }

    /// A Dockerfile's `HEALTHCHECK` arguments (what `import --change` and
    /// `commit --change` take): `[--interval=D] [--timeout=D]
    /// [--start-period=D] [--start-interval=D] [--retries=N] CMD command`,
    /// the command in shell form or as a JSON array; or `NONE`.
    ///
    /// - Throws: `BerthError.invalidArgument` for an unknown option, a bad
    ///   value, or no `CMD`/`NONE`.
    public init(parsingInstruction text: String) throws {
        var rest = Substring(text.trimmingSpaces())
        var check = HealthCheck()
        while rest.hasPrefix("--") {
            let word = rest.prefix { $0 != " " }
            rest = rest.dropFirst(word.count).drop { $0 == " " }
            let parts = word.dropFirst(2).split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw BerthError.invalid("HEALTHCHECK \(word): expected --NAME=VALUE") }
            let flag = "--health-" + parts[0]
            switch parts[0] {
            case "interval": check.interval = try DurationText.seconds(parsing: parts[1], for: flag)
            case "timeout": check.timeout = try DurationText.seconds(parsing: parts[1], for: flag)
            case "start-period": check.startPeriod = try DurationText.seconds(parsing: parts[1], for: flag)
            case "start-interval": check.startInterval = try DurationText.seconds(parsing: parts[1], for: flag)
            case "retries":
                guard let n = Int(parts[1]) else { throw BerthError.invalid("HEALTHCHECK --retries=\(parts[1]): expected a number") }
                check.retries = n
            default:
                throw BerthError.invalid("HEALTHCHECK --\(parts[0]): unknown option; expected interval, timeout, start-period, start-interval or retries")
            }
        }
        let kind = rest.prefix { $0 != " " }.uppercased()
        let command = String(rest.dropFirst(kind.count)).trimmingSpaces()
        switch kind {
        case "NONE":
            guard command.isEmpty, check == HealthCheck() else { throw BerthError.invalid("HEALTHCHECK NONE takes no options or command") }
            check.test = ["NONE"]
        case "CMD":
            if command.hasPrefix("["), let array = try? JSONDecoder().decode([String].self, from: Data(command.utf8)) {
                check.test = ["CMD"] + array
            } else {
                check.test = ["CMD-SHELL", command]
            }
        default:
            throw BerthError.invalid("HEALTHCHECK \"\(text)\": expected [OPTIONS] CMD command, or NONE")
        }
        try check.validate()
        self = check
    }

    /// - Throws: `BerthError.invalidArgument` for an unknown test form, a
    ///   duration that is neither 0 (the default) nor at least 1 ms, or a
    ///   negative retry count (docker's rules).
    public func validate() throws {
        if let kind = test.first {
            switch kind {
            case "NONE": break
            case "CMD":
                guard test.count > 1, !test[1].isEmpty else { throw BerthError.invalid("health check CMD needs a program to run") }
            case "CMD-SHELL":
                guard test.count == 2, !test[1].trimmingSpaces().isEmpty else {
                    throw BerthError.invalid("health check CMD-SHELL needs one shell command")
                }
            default:
                throw BerthError.invalid("health check test \"\(kind)\": expected CMD, CMD-SHELL or NONE")
            }
        }
        for (value, flag) in [(interval, "--health-interval"), (timeout, "--health-timeout"), (startPeriod, "--health-start-period"), (startInterval, "--health-start-interval")] {
            guard let value else { continue }
            if value < 0 { throw BerthError.invalid("\(flag) cannot be negative") }
            if value != 0 && value < 0.001 { throw BerthError.invalid("\(flag) should be at least 1ms") }
        }
        if let retries, retries < 0 { throw BerthError.invalid("--health-retries cannot be negative") }
    }

    /// This check over an image's, as docker merges them at create: the
    /// container's test, or the image's when the container gives none;
    /// each timing the container leaves out, the image's. nil when neither
    /// has a test.
    public func merged(over image: HealthCheck?) -> HealthCheck? {
        guard let image else { return test.isEmpty ? nil : self }
        var result = self
        if result.test.isEmpty { result.test = image.test }
        if result.interval ?? 0 == 0 { result.interval = image.interval }
        if result.timeout ?? 0 == 0 { result.timeout = image.timeout }
        if result.startPeriod ?? 0 == 0 { result.startPeriod = image.startPeriod }
        if result.startInterval ?? 0 == 0 { result.startInterval = image.startInterval }
        if result.retries ?? 0 == 0 { result.retries = image.retries }
        return result.test.isEmpty ? nil : result
    }

    /// The probe's command in the container: the program and its arguments,
    /// or the shell (the image's `SHELL`, else `/bin/sh -c`) with the
    /// command; nil for `NONE` or no test.
    public func probeCommand(shell: [String]) -> [String]? {
        guard let kind = test.first else { return nil }
        switch kind {
        case "CMD": return Array(test.dropFirst())
        case "CMD-SHELL": return (shell.isEmpty ? ["/bin/sh", "-c"] : shell) + test.dropFirst()
        default: return nil
        }
    }

    /// The timings in effect, defaults filled in.
    public var effective: HealthTimings {
        func or(_ value: Double?, _ fallback: Double) -> Double { (value ?? 0) > 0 ? value! : fallback }
        return HealthTimings(
            interval: or(interval, Self.defaultInterval), timeout: or(timeout, Self.defaultTimeout),
            startPeriod: or(startPeriod, Self.defaultStartPeriod), startInterval: or(startInterval, Self.defaultStartInterval),
            retries: (retries ?? 0) > 0 ? retries! : Self.defaultRetries)
    }

    /// `CMD-SHELL curl -f http://localhost/`, as `inspect` readers expect it.
    public var testDescription: String { test.joined(separator: " ") }
}

/// A health check's timings with docker's defaults applied (seconds).
public struct HealthTimings: Sendable, Hashable {
    public var interval: Double
    public var timeout: Double
    public var startPeriod: Double
    public var startInterval: Double
    public var retries: Int

    public init(interval: Double, timeout: Double, startPeriod: Double, startInterval: Double, retries: Int) {
        self.interval = interval
        self.timeout = timeout
        self.startPeriod = startPeriod
        self.startInterval = startInterval
        self.retries = retries
    }

    /// Whether `time` (since the container's start) is in the start period.
    public func inStartPeriod(_ sinceStart: Double) -> Bool { sinceStart < startPeriod }

    /// Seconds until the probe after one that began `sinceStart` seconds
    /// after the start: the start interval while the container is still
    /// `starting` within its start period, else the interval.
    public func nextDelay(status: HealthStatus, sinceStart: Double) -> Double {
        status == .starting && inStartPeriod(sinceStart) ? startInterval : interval
    }
}

/// What the agent does when a container turns unhealthy
/// (`--health-on-failure`, podman's option).
public enum HealthFailureAction: String, Codable, Sendable, Hashable, CaseIterable {
    /// Nothing: the container is marked unhealthy (docker's behaviour).
    case none
    /// SIGKILL; the restart policy then applies as to any exit.
    case kill
    /// Stopped (stop signal, grace, SIGKILL) and started again after the
    /// restart policy's backoff, whatever the policy.
    case restart
    /// Stopped, and left stopped as if a person had stopped it.
    case stop

    /// - Throws: `BerthError.invalidArgument` naming the choices.
    public init(parsing text: String) throws {
        guard let action = HealthFailureAction(rawValue: text.trimmingSpaces().lowercased()) else {
            throw BerthError.invalid("--health-on-failure \"\(text)\": expected none, kill, restart or stop")
        }
        self = action
    }
}

/// A container's health, as docker names it.
public enum HealthStatus: String, Codable, Sendable, Hashable, CaseIterable {
    case starting
    case healthy
    case unhealthy
}

/// One probe's outcome, as docker's `State.Health.Log` shows it.
public struct HealthProbe: Codable, Sendable, Hashable {
    public var start: Date
    public var end: Date
    /// 0 healthy; anything else failed; -1 when the probe could not run or
    /// exceeded its timeout.
    public var exitCode: Int32
    /// The probe's output (stdout and stderr), at most 4 KiB.
    public var output: String

    /// Output beyond this is cut (docker's limit).
    public static let maxOutput = 4096

    public init(start: Date, end: Date, exitCode: Int32, output: String) {
        self.start = start
        self.end = end
        self.exitCode = exitCode
        self.output = output
    }

    enum CodingKeys: String, CodingKey {
        case start = "Start", end = "End", exitCode = "ExitCode", output = "Output"
    }

    /// The output as text, cut at `maxOutput` bytes, never inside a UTF-8 sequence.
    public static func text(of bytes: [UInt8]) -> String {
        var cut = Array(bytes.prefix(maxOutput))
        if bytes.count > maxOutput, var i = cut.indices.last {
            while i > 0 && cut.count - i < 4 && cut[i] & 0xC0 == 0x80 { i -= 1 }
            let lead = cut[i]
            let length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
            if i + length > cut.count { cut.removeSubrange(i...) }
        }
        return String(decoding: cut, as: UTF8.self)
    }
}

/// A container's health while it has a check: its status, the failures in
/// a row, and the last five probes. Encoded with docker's names
/// (`Status`, `FailingStreak`, `Log`), as `inspect` readers expect.
public struct Health: Codable, Sendable, Hashable {
    public private(set) var status: HealthStatus
    public private(set) var failingStreak: Int
    /// Oldest first; at most `kept`.
    public private(set) var log: [HealthProbe]

    /// Probes kept in the log (docker keeps five).
    public static let kept = 5

    enum CodingKeys: String, CodingKey {
        case status = "Status", failingStreak = "FailingStreak", log = "Log"
    }

    /// A container just started: `starting`, with no probes yet.
    public init() {
        status = .starting
        failingStreak = 0
        log = []
    }

    /// Exactly as recorded.
    public init(restoring status: HealthStatus, failingStreak: Int, log: [HealthProbe]) {
        self.status = status
        self.failingStreak = failingStreak
        self.log = log
    }

    /// Takes a probe's result, by docker's rules: a success makes the
    /// container healthy; a failure counts toward `retries` unless the
    /// container is still `starting` within its start period, and at
    /// `retries` failures in a row it is unhealthy.
    ///
    /// - Parameter sinceStart: seconds from the container's start to the probe's start.
    /// - Returns: the new status when it changed.
    @discardableResult
    public mutating func record(_ probe: HealthProbe, timings: HealthTimings, sinceStart: Double) -> HealthStatus? {
        log.append(probe)
        if log.count > Self.kept { log.removeFirst(log.count - Self.kept) }
        let before = status
        if probe.exitCode == 0 {
            failingStreak = 0
            status = .healthy
        } else if !(status == .starting && timings.inStartPeriod(sinceStart)) {
            failingStreak += 1
            if failingStreak >= timings.retries { status = .unhealthy }
        }
        return status == before ? nil : status
    }
}
