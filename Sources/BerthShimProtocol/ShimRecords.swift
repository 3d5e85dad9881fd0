/// How the container's process ended, as the shim records it in `exit` in
/// the bundle and reports it on its socket.
public struct ShimExit: Sendable, Hashable {
    /// The shell-style exit code: the process's own, or 128 + signal.
    public var code: Int32
    /// The signal that ended it, 0 for none.
    public var signal: Int32
    /// True when the cgroup's OOM-kill counter rose during the run.
    public var oomKilled: Bool
    /// Nanoseconds since the epoch.
    public var finishedAt: Int64

    public init(code: Int32, signal: Int32, oomKilled: Bool, finishedAt: Int64) {
        self.code = code
        self.signal = signal
        self.oomKilled = oomKilled
        self.finishedAt = finishedAt
    }

    public var record: LineRecord {
        var r = LineRecord()
        r.add("code", code)
        r.add("signal", signal)
        r.add("oom", oomKilled)
        r.add("finished", finishedAt)
        return r
    }

    public init(record r: LineRecord) throws(LineRecordError) {
        guard let code = r.int("code"), let signal = r.int("signal"), let finished = r["finished"].flatMap({ Int64($0) }) else {
            throw LineRecordError(line: 0, reason: "malformed exit record")
        }
        self.init(code: Int32(code), signal: Int32(signal), oomKilled: r.bool("oom"), finishedAt: finished)
    }
}

/// The outcome of starting, written once to the ready pipe (and to `state`).
public enum ShimStart: Sendable, Hashable {
    case started(pid: Int32, startedAt: Int64, warnings: [String])
    case failed(stage: String, errno: Int32, errnoName: String, detail: String)

    public var record: LineRecord {
        var r = LineRecord()
        switch self {
        case .started(let pid, let startedAt, let warnings):
            r.add("result", "started")
            r.add("pid", pid)
            r.add("started", startedAt)
            r.add("warning", warnings)
        case .failed(let stage, let errno, let name, let detail):
            r.add("result", "failed")
            r.add("stage", stage)
            r.add("errno", errno)
            r.add("errno_name", name)
            r.add("detail", detail)
        }
        return r
    }

    public init(record r: LineRecord) throws(LineRecordError) {
        switch r["result"] {
        case "started":
            guard let pid = r.int("pid"), let started = r["started"].flatMap({ Int64($0) }) else {
                throw LineRecordError(line: 0, reason: "malformed start record")
            }
            self = .started(pid: Int32(pid), startedAt: started, warnings: r.all("warning"))
        case "failed":
            self = .failed(
                stage: r["stage"] ?? "", errno: Int32(r.int("errno") ?? 0), errnoName: r["errno_name"] ?? "",
                detail: r["detail"] ?? "")
        default:
            throw LineRecordError(line: 0, reason: "malformed start record")
        }
    }
}

/// The shim's control socket speaks one request line and one reply line
/// (a `LineRecord` on one line, fields separated by tabs).
public enum ShimRequest: Sendable, Hashable {
    /// Reply: `state=running pid=…` or `state=exited …` (the exit record).
    case state
    /// Sends a signal to the container's first process. Reply: `ok=1` or `error=…`.
    case signal(Int32)
    /// Blocks until the process exits. Reply: the exit record.
    case wait
    /// Kills the process if it still runs, then the shim exits. Reply: `ok=1`.
    case delete
    /// Starts a process in the container (exec), described by `process`
    /// on the request's line (`exec ID RECORD`, the record on one line), or
    /// by the file `exec-ID` in the bundle when the line has none (as
    /// agents before the inline form wrote it), with the stdio descriptors
    /// it names attached to the request (SCM_RIGHTS). Reply: a `ShimStart`
    /// (with the process's pidfd attached when started); then, on the same
    /// connection, its `ShimExit` when it has ended.
    case exec(id: String, process: ShimExec?)
    /// Follows the container's output from now on: the connection receives
    /// `ShimAttach` frames, and the end frame once the output has ended.
    /// The shim reads the container's output no faster than the slowest
    /// attached connection takes it (the container waits, nothing is dropped).
    case attach
    /// No attach is coming (the caller of `Run` went away, or the agent
    /// restarted): the output held for one is read from now on, into the
    /// log. Reply: `ok=1`.
    case release

    public var line: String {
        switch self {
        case .state: return "state"
        case .signal(let s): return "signal \(s)"
        case .wait: return "wait"
        case .delete: return "delete"
        case .exec(let id, let process): return "exec \(id)" + (process.map { " " + $0.record.singleLine } ?? "")
        case .attach: return "attach"
        case .release: return "release"
        }
    }

    public init?(line: Substring) {
        let parts = line.split(separator: " ", maxSplits: 2)
        switch parts.first {
        case "state": self = .state
        case "wait": self = .wait
        case "delete": self = .delete
        case "signal":
            guard parts.count == 2, let s = Int32(parts[1]) else { return nil }
            self = .signal(s)
        case "exec":
            guard parts.count >= 2, ShimExec.isValidID(parts[1]) else { return nil }
            if parts.count == 3 {
                guard let record = try? LineRecord(singleLine: String(parts[2])), let process = try? ShimExec(record: record) else { return nil }
                self = .exec(id: String(parts[1]), process: process)
            } else {
                self = .exec(id: String(parts[1]), process: nil)
            }
        case "attach": self = .attach
        case "release": self = .release
        default: return nil
        }
    }
}

/// What an attached connection receives: frames of `tag` (1 stdout, 2
/// stderr, 0 the end), a little-endian u32 length, then that many bytes.
public enum ShimAttach {
    public static let headerSize = 5

    public static func frame(_ tag: UInt8, _ payload: UnsafeRawBufferPointer) -> [UInt8] {
        var out: [UInt8] = [tag]
        out.reserveCapacity(headerSize + payload.count)
        out.appendLittleEndian(UInt32(payload.count))
        out.append(contentsOf: payload)
        return out
    }

    public static let endFrame: [UInt8] = [0, 0, 0, 0, 0]

    /// The frame at the start of `bytes`: its tag and payload range, or nil
    /// while it is not all there.
    public static func parse(_ bytes: ArraySlice<UInt8>) -> (tag: UInt8, payload: Range<Int>)? {
        guard bytes.count >= headerSize else { return nil }
        let start = bytes.startIndex
        var length = 0
        for i in 0..<4 { length |= Int(bytes[start + 1 + i]) << (8 * i) }
        guard bytes.count >= headerSize + length else { return nil }
        return (bytes[start], (start + headerSize)..<(start + headerSize + length))
    }
}

/// A process the shim starts in its running container (exec): the
/// container's own configuration with the exec's command, environment,
/// working directory and identity, and how its stdio comes.
public struct ShimExec: Sendable, Hashable {
    /// The process (the container's config, changed as the exec asks; its
    /// root filesystem fields are not used).
    public var process: ShimConfig
    /// Which of fds 0, 1 and 2 come with the request, in that order; the
    /// others are /dev/null.
    public var stdin: Bool
    public var stdout: Bool
    public var stderr: Bool
    /// stdin is a terminal that becomes the process's controlling terminal.
    public var controllingTerminal: Bool

    public init(process: ShimConfig, stdin: Bool, stdout: Bool, stderr: Bool, controllingTerminal: Bool) {
        self.process = process
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.controllingTerminal = controllingTerminal
    }

    /// The file in the bundle that describes exec `id`.
    public static func file(_ id: String, in bundle: String) -> String { "\(bundle)/exec-\(id)" }

    /// IDs are letters and digits only, so that `exec-ID` stays in the bundle.
    public static func isValidID(_ id: Substring) -> Bool {
        !id.isEmpty && id.count <= 64 && id.utf8.allSatisfy { (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0) }
    }

    public var record: LineRecord {
        var r = process.record
        r.add("exec_stdio", [stdin, stdout, stderr].map { $0 ? "1" : "0" }.joined())
        r.add("exec_tty", controllingTerminal)
        return r
    }

    /// - Throws: `LineRecordError` for a malformed record.
    public init(record r: LineRecord) throws(LineRecordError) {
        let stdio = Array((r["exec_stdio"] ?? "").utf8)
        guard stdio.count == 3, stdio.allSatisfy({ $0 == UInt8(ascii: "0") || $0 == UInt8(ascii: "1") }) else {
            throw LineRecordError(line: 0, reason: "malformed exec_stdio")
        }
        var process = try ShimConfig(record: r)
        // An exec'd process is never an init.
        process.initProcess = false
        self.init(
            process: process, stdin: stdio[0] == UInt8(ascii: "1"), stdout: stdio[1] == UInt8(ascii: "1"),
            stderr: stdio[2] == UInt8(ascii: "1"), controllingTerminal: r.bool("exec_tty"))
    }
}

extension LineRecord {
    /// One line: entries separated by tabs (values are escaped, so no tab or
    /// newline survives unescaped... tabs are escaped here as \t).
    public var singleLine: String {
        // The text form with tabs for its newlines and tabs in values escaped,
        // made byte by byte (an exec's request line is one, at every probe).
        var out: [UInt8] = []
        out.reserveCapacity(512)
        for (index, entry) in entries.enumerated() {
            if index > 0 { out.append(UInt8(ascii: "\t")) }
            out += entry.key.utf8
            out.append(UInt8(ascii: "="))
            for byte in entry.value.utf8 {
                switch byte {
                case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
                case UInt8(ascii: "\n"): out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
                case UInt8(ascii: "\r"): out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
                case UInt8(ascii: "\t"): out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
                default: out.append(byte)
                }
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    public init(singleLine: String) throws(LineRecordError) {
        let text = singleLine.split(separator: "\t").map { String($0).restoringTabs() }.joined(separator: "\n")
        try self.init(parsing: text)
    }
}

extension String {
    func restoringTabs() -> String {
        guard contains("\\t") else { return self }
        var out = ""
        var escaped = false
        for ch in unicodeScalars {
            if escaped {
                if ch == "t" { out += "\t" } else { out += "\\"; out.unicodeScalars.append(ch) }
                escaped = false
            } else if ch == "\\" {
                escaped = true
            } else {
                out.unicodeScalars.append(ch)
            }
        }
        if escaped { out += "\\" }
        return out
    }
}
