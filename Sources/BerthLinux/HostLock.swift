import Glibc

/// An exclusive lock shared by the processes of one host: flock on a file.
public enum HostLock {
    /// Runs `body` holding the lock at `path` (the file is made when missing).
    ///
    /// - Throws: `SystemError` when the file cannot be opened or locked; what `body` throws.
    public static func withLock<T>(path: String, _ body: () throws -> T) throws -> T {
        if let slash = path.lastIndex(of: "/") { try? Directories.create(String(path[..<slash]), mode: 0o755) }
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw SystemError("flock", path: path, errno: errno) }
        }
        return try body()
    }
}

/// An exclusive lock held for as long as this process runs (or until
/// released): flock on a file that says who holds it, so that a second
/// process can say which process it waits for. The kernel lets go of it
/// when the process ends, however it ends.
public final class ProcessLock: Sendable {
    private let fd: Int32
    public let path: String

    /// Another process holds the lock; `holder` is what it wrote.
    public struct Held: Error, Sendable {
        public let path: String
        public let holder: String
    }

    /// Takes the lock at `path` (the file is made when missing) and writes
    /// `holder` into it.
    ///
    /// - Throws: `Held` when another process has it, `SystemError` when the
    ///   file cannot be opened, locked or written.
    public init(path: String, holder: String) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let failure = errno
            if failure == EINTR { continue }
            defer { close(fd) }
            if failure == EWOULDBLOCK {
                var bytes = [UInt8](repeating: 0, count: 4096)
                let count = pread(fd, &bytes, bytes.count, 0)
                let text = count > 0 ? String(decoding: bytes[..<count], as: UTF8.self) : "another process"
                var holder = Substring(text)
                while let last = holder.last, last == "\n" || last == " " || last == "\0" { holder = holder.dropLast() }
                throw Held(path: path, holder: String(holder))
            }
            throw SystemError("flock", path: path, errno: failure)
        }
        let text = Array((holder + "\n").utf8)
        guard ftruncate(fd, 0) == 0, pwrite(fd, text, text.count, 0) == text.count else {
            let failure = errno
            close(fd)
            throw SystemError("write", path: path, errno: failure)
        }
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }
}

