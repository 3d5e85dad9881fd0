import BerthLinux
import BerthModel
public import BerthShimProtocol
import Foundation
import Synchronization

/// What `berth exec` asks for.
public struct ExecRequestSpec: Sendable {
    public var command: [String]
    /// KEY=VALUE entries that override the container's.
    public var env: [String]
    public var workingDir: String?
    public var user: String?
    public var tty: Bool
    public var attachStdin: Bool
    public var rows: UInt16
    public var columns: UInt16

    public init(
        command: [String], env: [String] = [], workingDir: String? = nil, user: String? = nil, tty: Bool = false,
        attachStdin: Bool = false, rows: UInt16 = 0, columns: UInt16 = 0
    ) {
        self.command = command
        self.env = env
        self.workingDir = workingDir
        self.user = user
        self.tty = tty
        self.attachStdin = attachStdin
        self.rows = rows
        self.columns = columns
    }
}

/// One output chunk of an exec'd process, or its end.
public enum ExecOutput: Sendable {
    case stdout([UInt8])
    case stderr([UInt8])
    case exit(Int32)
}

/// A process running inside a container (exec): it joined the container's
/// cgroups and namespaces and took the identity, capabilities, limits,
/// no_new_privs and seccomp filter the container's process has. The agent
/// holds its stdio: pipes, or the master side of a pseudo-terminal.
public final class ExecProcess: Sendable {
    public let id: String
    public let pid: Int32
    /// The process's pidfd, for signals; -1 once it has ended.
    private let pidfd: Mutex<Int32>
    /// The shim's connection that tells the process's end; -1 once told.
    private let endConnection: Mutex<Int32>
    /// The process's stdin (a pipe, or the terminal's master); -1 when closed.
    private let input: Mutex<Int32>
    /// The terminal's master (its own descriptor), for resizing; -1 once closed.
    private let terminal: Mutex<Int32>
    private let outputs: [(fd: Int32, stream: Int)]
    /// The exit code once known, and who waits for it.
    private let ending = Mutex<(code: Int32?, waiters: [CheckedContinuation<Int32, Never>])>((nil, []))

    private init(id: String, process: ShimExecProcess, input: Int32, terminal: Int32?, outputs: [(fd: Int32, stream: Int)]) {
        self.id = id
        self.pid = process.pid
        self.pidfd = Mutex(process.pidfd)
        self.endConnection = Mutex(process.connection)
        self.input = Mutex(input)
        self.terminal = Mutex(terminal ?? -1)
        self.outputs = outputs
    }

    /// Starts `request` in the container whose main process is `targetPID`,
    /// as the container's own process was started (`config`, from its
    /// bundle): its shim starts it (a clone of the shim until its exec, so
    /// that no image of a host file is ever in the container), and the
    /// agent holds its stdio.
    ///
    /// - Throws: `BerthError` naming the stage that failed; the missing
    ///   program as docker words it.
    public static func start(request: ExecRequestSpec, config: ShimConfig, targetPID: Int32, shim: ShimClient) async throws -> ExecProcess {
        guard let program = request.command.first, !program.isEmpty else {
            throw BerthError.invalid("exec needs a command")
        }
        var process = config
        process.args = request.command
        // docker's: with a terminal, TERM=xterm unless the container's or the exec's environment says otherwise.
        process.env = Self.merge(Self.merge(request.tty ? ["TERM=xterm"] : [], config.env), request.env)
        process.path = process.env.last { $0.hasPrefix("PATH=") }.map { String($0.dropFirst(5)) } ?? config.path
        if let dir = request.workingDir {
            guard dir.hasPrefix("/") else { throw BerthError.invalid("working directory \"\(dir)\": must be an absolute path") }
            process.cwd = dir
        }
        if let user = request.user, !user.isEmpty {
            let resolved = try UserDatabase(layers: ["/proc/\(targetPID)/root"]).resolve(user)
            process.uid = resolved.uid
            process.gid = resolved.gid
            process.groups = resolved.additionalGroups
            if !process.env.contains(where: { $0.hasPrefix("HOME=") }) { process.env.append("HOME=\(resolved.home)") }
        }

        // stdio: a terminal, or three pipes (stdin only when attached).
        var parentEnds: [Int32] = []
        var childEnds: [Int32] = []
        defer { childEnds.forEach { Descriptor($0).close() } }
        func pipePair() throws -> (read: Int32, write: Int32) {
            do {
                let pipe = try Pipe.make()
                return (pipe.read.raw, pipe.write.raw)
            } catch {
                parentEnds.forEach { Descriptor($0).close() }
                throw error
            }
        }
        let stdio: (stdin: Int32, stdout: Int32, stderr: Int32)
        let input: Int32
        let terminal: Int32?
        let outputs: [(fd: Int32, stream: Int)]
        if request.tty {
            let pair: (master: Descriptor, slave: Descriptor)
            do {
                pair = try PseudoTerminal.open(root: "/proc/\(targetPID)/root", rows: request.rows, columns: request.columns)
            } catch let error as SystemError {
                throw BerthError(.failedPrecondition, "cannot open a terminal in the container's /dev/pts: \(error.errnoName)")
            }
            let master = pair.master.raw
            let slave = pair.slave.raw
            parentEnds = [master]
            childEnds = [slave]
            stdio = (slave, slave, slave)
            input = request.attachStdin ? (try? pair.master.duplicate().raw) ?? -1 : -1
            terminal = (try? pair.master.duplicate().raw) ?? -1
            outputs = [(master, 1)]
        } else {
            let out = try pipePair()
            parentEnds.append(out.read)
            childEnds.append(out.write)
            let err = try pipePair()
            parentEnds.append(err.read)
            childEnds.append(err.write)
            var stdinChild: Int32 = -1
            var stdinParent: Int32 = -1
            if request.attachStdin {
                let pipe = try pipePair()
                stdinChild = pipe.read
                stdinParent = pipe.write
                childEnds.append(pipe.read)
                parentEnds.append(pipe.write)
            }
            stdio = (stdinChild, out.write, err.write)
            input = stdinParent
            terminal = nil
            outputs = [(out.read, 1), (err.read, 2)]
        }

        let id = ContainerID.random().rawValue
        let exec = ShimExec(
            process: process, stdin: stdio.stdin >= 0, stdout: stdio.stdout >= 0, stderr: stdio.stderr >= 0, controllingTerminal: request.tty)
        let passed = [stdio.stdin, stdio.stdout, stdio.stderr].filter { $0 >= 0 }
        let started: (start: ShimStart, process: ShimExecProcess?)
        do {
            started = try await shim.exec(exec, id: id, stdio: passed)
        } catch {
            parentEnds.forEach { Descriptor($0).close() }
            throw error
        }
        guard let handle = started.process else {
            parentEnds.forEach { Descriptor($0).close() }
            guard case .failed(let stage, let error, let name, let detail) = started.start else {
                throw BerthError(.internal, "the container's shim started the exec but gave no process")
            }
            if stage.hasPrefix("exec") {
                // docker's words for a program that is missing or not executable.
                switch error {
                case Errno.noEntry.rawValue where program.contains("/"):
                    throw BerthError(.notFound, "exec: \"\(program)\": no such file or directory")
                case Errno.noEntry.rawValue: throw BerthError(.notFound, "exec: \"\(program)\": executable file not found in $PATH")
                case Errno.accessDenied.rawValue: throw BerthError(.permissionDenied, "exec: \"\(program)\": permission denied")
                default: break
                }
            }
            if error == Errno.noSuchProcess.rawValue { throw BerthError(.failedPrecondition, "the container is not running") }
            throw BerthError(.internal, "exec failed at \(stage): \(name.isEmpty ? "" : name)\(detail.isEmpty ? "" : " \(detail)")")
        }
        if let master = outputs.first?.fd, request.tty { try? Descriptor(master).setNonBlocking(true) }
        return ExecProcess(id: id, process: handle, input: input, terminal: terminal, outputs: outputs)
    }

    /// The container's environment with `overrides` (KEY=VALUE) replacing
    /// or adding entries.
    static func merge(_ base: [String], _ overrides: [String]) -> [String] {
        var result = base
        for entry in overrides {
            let key = entry.prefix { $0 != "=" }
            result.removeAll { $0.prefix { $0 != "=" } == key }
            result.append(entry)
        }
        return result
    }

    /// Writes to the process's stdin, waiting (without holding a thread)
    /// while the pipe or terminal is full.
    public func write(_ bytes: [UInt8]) async throws {
        var offset = 0
        while offset < bytes.count {
            enum Outcome { case wrote(Int), full, gone }
            let outcome = input.withLock { fd -> Outcome in
                guard fd >= 0 else { return .gone }
                do {
                    guard let n = try bytes[offset...].withUnsafeBytes({ try Descriptor(fd).tryWrite($0) }) else { return .full }
                    return .wrote(n)
                } catch {
                    // The process closed its stdin (or exited): the rest is dropped, as a pipe would.
                    return .gone
                }
            }
            switch outcome {
            case .wrote(let n): offset += n
            case .full: try await Task.sleep(for: .milliseconds(2))
            case .gone: return
            }
        }
    }

    public func closeInput() {
        input.withLock { fd in
            if fd >= 0 { Descriptor(fd).close() }
            fd = -1
        }
    }

    public func resize(rows: UInt16, columns: UInt16) {
        terminal.withLock { fd in
            if fd >= 0 { Terminal.setSize(of: Descriptor(fd), rows: rows, columns: columns) }
        }
    }

    public func kill() {
        pidfd.withLock { fd in
            if fd >= 0 { try? ProcessDescriptor.signal(Descriptor(fd), Signal.kill.number) }
        }
    }

    /// SIGKILL to every process of the process's group (it leads a session
    /// of its own, so this is what a shell it runs started, unless they made
    /// groups of their own), then to the process. The group is signalled
    /// only while its leader is not reaped (its pidfd still takes a signal),
    /// so that its ID cannot have gone to another process.
    public func killGroup() {
        pidfd.withLock { fd in
            guard fd >= 0 else { return }
            if (try? ProcessDescriptor.signal(Descriptor(fd), 0)) != nil {
                try? Processes.signal(group: pid, Signal.kill.number)
            }
            try? ProcessDescriptor.signal(Descriptor(fd), Signal.kill.number)
        }
    }

    /// The process's end as its shim tells it: its exit code, or 128 + the
    /// signal that ended it (-1 when the shim went away without telling);
    /// nil while it runs (without `block`).
    private func reap(block: Bool) -> Int32? {
        endConnection.withLock { fd -> Int32? in
            guard fd >= 0 else { return nil }
            guard let code = ShimExecProcess.readEnd(fd, blocking: block) else { return nil }
            Descriptor(fd).close()
            fd = -1
            pidfd.withLock { pidfd in
                if pidfd >= 0 { Descriptor(pidfd).close() }
                pidfd = -1
            }
            return code
        }
    }

    /// The process's output, then its exit code. A thread of its own polls
    /// the descriptors; at most `window` chunks wait for the consumer, so a
    /// slow client slows the process's output instead of growing memory.
    public func output(window: Int = 16) -> AsyncStream<ExecOutput> {
        let (stream, continuation) = AsyncStream<ExecOutput>.makeStream()
        let credits = DispatchSemaphore(value: window)
        OwnThread.start(name: "berth-exec-\(id.prefix(4))") { [self] in
            self.pump(continuation, credits: credits)
        }
        return AsyncStream { () async -> ExecOutput? in
            var iterator = stream.makeAsyncIterator()
            let next = await iterator.next()
            credits.signal()
            return next
        }
    }

    private func pump(_ continuation: AsyncStream<ExecOutput>.Continuation, credits: DispatchSemaphore) {
        var open = outputs
        var exitCode: Int32?
        var exited: Bool { exitCode != nil }
        var buffer = [UInt8](repeating: 0, count: 32 << 10)
        while !open.isEmpty {
            var watched = open.map { Descriptor($0.fd) }
            let processFD = exitCode == nil ? endConnection.withLock { $0 } : -1
            if processFD >= 0 { watched.append(Descriptor(processFD)) }
            // Once the process has exited, what is still in the pipes is
            // read, however long a slow reader takes; descriptors a
            // background process keeps open are given up once nothing has
            // come for 50 ms.
            let timeout: Int32 = exited ? 50 : -1
            let ready = Set(((try? Poll.readable(watched, timeoutMilliseconds: timeout)) ?? []).map(\.raw))
            if processFD >= 0, ready.contains(processFD), let code = reap(block: false) {
                exitCode = code
            }
            var closed: [Int32] = []
            for entry in open where ready.contains(entry.fd) {
                let n: Int?
                do { n = try buffer.withUnsafeMutableBytes { try Descriptor(entry.fd).tryRead(into: $0) } } catch {
                    n = 0  // a terminal whose last writer is gone says EIO: its end
                }
                if let n, n > 0 {
                    credits.wait()
                    let chunk = Array(buffer[..<n])
                    continuation.yield(entry.stream == 1 ? .stdout(chunk) : .stderr(chunk))
                } else if n == 0 {
                    closed.append(entry.fd)
                }
            }
            for fd in closed {
                Descriptor(fd).close()
                open.removeAll { $0.fd == fd }
            }
            if exited && ready.isEmpty {
                for entry in open { Descriptor(entry.fd).close() }
                open = []
            }
        }
        if exitCode == nil { exitCode = reap(block: true) }
        closeInput()
        terminal.withLock { fd in
            if fd >= 0 { Descriptor(fd).close() }
            fd = -1
        }
        let code = exitCode ?? -1
        let waiters = ending.withLock { state in
            state.code = code
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: code) }
        continuation.yield(.exit(code))
        continuation.finish()
    }

    /// A health probe: `command` started by `start` (without stdin or a
    /// terminal), its output kept up to `HealthProbe.maxOutput` bytes (the
    /// rest read and dropped), and SIGKILL when it runs past `timeout`.
    static func probe(command: [String], timeout: Duration, start: (ExecRequestSpec) async throws -> ExecProcess) async -> HealthProbe {
        let begun = Date()
        let process: ExecProcess
        do {
            process = try await start(ExecRequestSpec(command: command))
        } catch {
            return HealthProbe(start: begun, end: Date(), exitCode: -1, output: (error as? BerthError)?.message ?? "\(error)")
        }
        let timedOut = Mutex(false)
        let deadline = Task {
            try await Task.sleep(for: timeout)
            timedOut.withLock { $0 = true }
            process.killGroup()
        }
        var output: [UInt8] = []
        var code: Int32 = -1
        for await part in process.output() {
            switch part {
            case .stdout(let bytes), .stderr(let bytes):
                if output.count <= HealthProbe.maxOutput { output += bytes.prefix(HealthProbe.maxOutput + 1 - output.count) }
            case .exit(let exit):
                code = exit
            }
        }
        deadline.cancel()
        if timedOut.withLock({ $0 }) {
            let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
            return HealthProbe(start: begun, end: Date(), exitCode: -1, output: "Health check exceeded timeout (\(DurationText.format(seconds)))")
        }
        return HealthProbe(start: begun, end: Date(), exitCode: code, output: HealthProbe.text(of: output))
    }

    /// The process's exit code (or 128 + the signal that ended it), once
    /// it has ended and its output has been read.
    public func exitCode() async -> Int32 {
        await withCheckedContinuation { continuation in
            let known = ending.withLock { state -> Int32? in
                if let code = state.code { return code }
                state.waiters.append(continuation)
                return nil
            }
            if let known { continuation.resume(returning: known) }
        }
    }
}
