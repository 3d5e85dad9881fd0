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
