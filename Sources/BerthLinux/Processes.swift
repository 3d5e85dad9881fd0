import CBerthLinux
import Glibc

/// Starting, signalling and reaping processes.
public enum Processes {
    /// A process started in its own session, with a pipe whose read end the
    /// caller holds and whose write end the child sees as fd 3.
    public struct Spawned: Sendable {
        public var pid: Int32
        /// The read end of the child's fd 3.
        public var pipe: Int32
    }

    /// Starts `executable` detached from the caller's session (it survives
    /// the caller), with stderr appended to `stderrPath`.
    ///
    /// - Throws: `SystemError` from pipe, open or posix_spawn.
    public static func spawnSession(executable: String, arguments: [String], environment: [String], stderrPath: String?) throws -> Spawned {
        var fds: [Int32] = [0, 0]
        guard berth_pipe2_cloexec(&fds) == 0 else { throw SystemError("pipe2", errno: errno) }
        var logFD: Int32 = -1
        if let stderrPath {
            logFD = open(stderrPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            if logFD < 0 {
                close(fds[0])
                close(fds[1])
                throw SystemError("open", path: stderrPath, errno: errno)
            }
        }
        defer {
            close(fds[1])
            if logFD >= 0 { close(logFD) }
        }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let pid = berth_spawn_session(executable, argv, envp, fds[1], logFD)
        guard pid > 0 else {
            close(fds[0])
            throw SystemError("spawn", path: executable, errno: errno)
        }
        return Spawned(pid: pid, pipe: fds[0])
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

    /// Whether a process with this pid exists.
    public static func isAlive(_ pid: Int32) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
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
