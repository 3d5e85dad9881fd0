import CBerthSyscalls
import Glibc

/// Starting, signalling and reaping processes.
public enum Processes {
    /// A process started in its own session, with a pipe whose read end the
    /// caller holds and whose write end the child sees as fd 3.
    public struct Spawned: Sendable {
        public var pid: Int32
        /// The read end of the child's fd 3.
        public var pipe: Int32
        /// With `input`: the write end of a pipe the child reads as fd 4.
        public var input: Int32?
    }

    /// The descriptor number a child of `spawnSession` sees for
    /// `passing[index]`: after fd 3 (the report pipe) and, with `input`, fd 4.
    public static func passedDescriptor(_ index: Int, input: Bool) -> Int32 { Int32(3 + (input ? 2 : 1) + index) }

    /// Starts `executable` detached from the caller's session (it survives
    /// the caller), with stderr appended to `stderrPath` (nil: /dev/null).
    ///
    /// - Parameters:
    ///   - argv0: the child's argv[0]; nil gives `executable`.
    ///   - input: also give the child a pipe to read as fd 4.
    ///   - passing: descriptors the child also gets, numbered as
    ///     `passedDescriptor` says. `executable` may name one of them as
    ///     `/proc/self/fd/N` (a sealed image): it is resolved in the child.
    /// - Throws: `SystemError` from pipe, open or posix_spawn.
    public static func spawnSession(
        executable: String, argv0: String? = nil, arguments: [String], environment: [String], stderrPath: String?, input: Bool = false,
        passing extra: [Int32] = []
    ) throws -> Spawned {
        var fds: [Int32] = [0, 0]
        guard berth_pipe2_cloexec(&fds) == 0 else { throw SystemError("pipe2", errno: errno) }
        var inputFDs: [Int32] = [-1, -1]
        if input && berth_pipe2_cloexec(&inputFDs) != 0 {
            let saved = errno
            close(fds[0])
            close(fds[1])
            throw SystemError("pipe2", errno: saved)
        }
        var logFD: Int32 = -1
        if let stderrPath {
            logFD = open(stderrPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            if logFD < 0 {
                let saved = errno
                for fd in fds + inputFDs where fd >= 0 { close(fd) }
                throw SystemError("open", path: stderrPath, errno: saved)
            }
        }
        defer {
            close(fds[1])
            if inputFDs[0] >= 0 { close(inputFDs[0]) }
            if logFD >= 0 { close(logFD) }
        }
        let argv = ([argv0 ?? executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let passed = (input ? [fds[1], inputFDs[0]] : [fds[1]]) + extra
        let pid = berth_spawn_session(executable, argv, envp, passed, Int32(passed.count), logFD)
        guard pid > 0 else {
            let saved = errno
            close(fds[0])
            if inputFDs[1] >= 0 { close(inputFDs[1]) }
            throw SystemError("spawn", path: executable, errno: saved)
        }
        return Spawned(pid: pid, pipe: fds[0], input: input ? inputFDs[1] : nil)
    }

    /// What a finished command did.
    public struct Output: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Starts `executable` with stdio on the given descriptors (-1: /dev/null)
    /// and no other descriptor of this process.
    ///
    /// - Throws: `SystemError` from posix_spawn.
    public static func spawn(
        executable: String, arguments: [String], environment: [String], stdin: Int32 = -1, stdout: Int32 = -1, stderr: Int32 = -1,
        newSession: Bool = false
    ) throws -> Int32 {
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let pid = berth_spawn(executable, argv, envp, stdin, stdout, stderr, newSession ? 1 : 0)
        guard pid > 0 else { throw SystemError("spawn", path: executable, errno: errno) }
        return pid
    }

    /// Runs a command to completion, collecting its output, without holding
    /// a Swift concurrency thread while it runs; killed after `timeout`.
    ///
    /// - Throws: `SystemError` when it cannot be started.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String], timeout: Duration = .seconds(120)
    ) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            OwnThread.start(name: "berth-run") {
                continuation.resume(with: Result { try runBlocking(executable, arguments, environment: environment, timeout: timeout) })
            }
        }
    }

    /// Runs a command to completion on the calling thread; killed after `timeout`.
    ///
    /// - Throws: `SystemError` when it cannot be started.
    public static func runBlocking(_ executable: String, _ arguments: [String], environment: [String], timeout: Duration = .seconds(120)) throws -> Output {
        var out: [Int32] = [0, 0]
        var err: [Int32] = [0, 0]
        guard berth_pipe2_cloexec(&out) == 0 else { throw SystemError("pipe2", errno: errno) }
        guard berth_pipe2_cloexec(&err) == 0 else {
            close(out[0])
            close(out[1])
            throw SystemError("pipe2", errno: errno)
        }
        let pid: Int32
        do {
            pid = try spawn(executable: executable, arguments: arguments, environment: environment, stdout: out[1], stderr: err[1])
        } catch {
            [out[0], out[1], err[0], err[1]].forEach { close($0) }
            throw error
        }
        close(out[1])
        close(err[1])
        var collected: [[UInt8]] = [[], []]
        var open = [out[0], err[0]]
        let deadline = time(nil) + Int(timeout.components.seconds)
        var killed = false
        while open.contains(where: { $0 >= 0 }) {
            var fds = open.filter { $0 >= 0 }.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let remaining = killed ? -1 : Int32(max(0, deadline - time(nil)) * 1000)
            let n = poll(&fds, nfds_t(fds.count), remaining)
            if n == 0 && !killed {
                kill(pid, SIGKILL)
                killed = true
                continue
            }
            for entry in fds where entry.revents != 0 {
                let index = entry.fd == open[0] ? 0 : 1
                var buffer = [UInt8](repeating: 0, count: 65536)
                let r = buffer.withUnsafeMutableBytes { read(entry.fd, $0.baseAddress, $0.count) }
                if r > 0 {
                    collected[index] += buffer[0..<r]
                } else if r == 0 || errno != EINTR {
                    close(entry.fd)
                    open[index] = -1
                }
            }
        }
        var status: Int32 = 0
        let code = berth_wait_status(pid, &status) == 0 ? berth_wexitstatus(status) : -1
        return Output(status: code, stdout: String(decoding: collected[0], as: UTF8.self), stderr: String(decoding: collected[1], as: UTF8.self))
    }

    /// Reads everything from `fd` until end of file, then closes it.
    public static func readToEnd(_ fd: Int32) -> [UInt8] {
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return out }
            out += buffer[0..<n]
        }
    }

    /// waitpid without blocking: true when the child has been reaped (or is not ours).
    @discardableResult
    public static func reap(_ pid: Int32) -> Bool {
        var status: Int32 = 0
        let rc = waitpid(pid, &status, WNOHANG)
        return rc == pid || (rc < 0 && errno == ECHILD)
    }

    /// Ends this process now with `code` (exit(3): buffered output is flushed).
    public static func exit(_ code: Int32) -> Never { Glibc.exit(code) }

    /// Sends `signal` to the process (kill(2)).
    public static func signal(_ pid: Int32, _ signal: Int32) throws {
        guard kill(pid, signal) == 0 else { throw SystemError.last("kill \(pid)") }
    }

    /// Sends `signal` to every process of the process group `group` (kill(2) of -group).
    public static func signal(group: Int32, _ signal: Int32) throws {
        guard group > 1, kill(-group, signal) == 0 else { throw SystemError.last("kill -\(group)") }
    }

    /// Waits for a child to exit and reaps it: its exit code, or 128 plus
    /// the signal that ended it; nil when it is not the caller's child.
    @discardableResult
    public static func waitForExit(_ pid: Int32) -> Int32? {
        var status: Int32 = 0
        while true {
            if waitpid(pid, &status, 0) == pid { return berth_wexitstatus(status) }
            if errno != EINTR { return nil }
        }
    }

    /// The exit code a wait status stands for (128 plus a signal).
    public static func exitCode(waitStatus status: Int32) -> Int32 { berth_wexitstatus(status) }

    /// Whether a process with this pid exists.
    public static func isAlive(_ pid: Int32) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
    }

    /// Whether a process exists and is running: not gone, not a zombie or
    /// dying (its state in /proc/PID/stat is not Z or X).
    public static func isRunning(_ pid: Int32) -> Bool {
        guard let text = try? FileIO.read("/proc/\(pid)/stat", limit: 4096), let close = text.lastIndex(of: ")") else { return false }
        let state = text[text.index(after: close)...].drop { $0 == " " }.first
        return state != nil && state != "Z" && state != "X"
    }

    /// The parent of a process (PPid in /proc/PID/stat); nil when the
    /// process is gone.
    public static func parent(of pid: Int32) -> Int32? {
        guard let text = try? FileIO.read("/proc/\(pid)/stat", limit: 4096), let close = text.lastIndex(of: ")") else { return nil }
        // After the command's ')' come the state, then the parent.
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 1 ? Int32(fields[1]) : nil
    }

    /// The kernel's start time of a process (clock ticks since boot), to tell
    /// a process from a later one that reuses its pid.
    public static func startTime(_ pid: Int32) -> UInt64? {
        guard let text = try? FileIO.read("/proc/\(pid)/stat") else { return nil }
        // The command may hold spaces and parentheses: fields follow the last ')'.
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After ')' come: state(3) … starttime is field 22 overall, i.e. index 19 here.
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    /// The path of the running executable.
    public static var currentExecutable: String {
        (try? FileIO.readLink("/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// `uname -r`.
    public static var kernelRelease: String {
        var u = utsname()
        uname(&u)
        return withUnsafeBytes(of: u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}
