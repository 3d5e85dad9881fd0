import CBerthSyscalls
import Glibc

/// Writes files so that a crash at any moment leaves either the old content
/// or the new, never a mix: write a temporary file beside the target, fsync
/// it, rename it over the target, fsync the directory.
public enum AtomicFile {
    /// - Parameters:
    ///   - bytes: the new content.
    ///   - path: the file to replace or create.
    ///   - mode: permissions of the new file.
    ///   - durable: fsync the file and its directory, so that the new content
    ///     survives a power loss. Without it the replacement is still atomic
    ///     for every process (the rename), which is all that files living for
    ///     one boot (the state directory) or regenerated on each start need.
    /// - Throws: `SystemError` naming the step that failed; the target is untouched then.
    public static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644, durable: Bool = true) throws {
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let temporary = "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SystemError("open", path: temporary, errno: errno) }
        var failure: SystemError?
        if bytes.withUnsafeBytes({ berth_write_all(fd, $0.baseAddress, $0.count) }) != 0 {
            failure = SystemError("write", path: temporary, errno: errno)
        }
        if failure == nil && durable && fsync(fd) != 0 { failure = SystemError("fsync", path: temporary, errno: errno) }
        close(fd)
        if failure == nil && rename(temporary, path) != 0 { failure = SystemError("rename", path: path, errno: errno) }
        if let failure {
            unlink(temporary)
            throw failure
        }
        guard durable else { return }
        let dirfd = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd >= 0 {
            fsync(dirfd)
            close(dirfd)
        }
    }
}

/// Directory helpers with explicit modes.
public enum Directories {
    /// Creates `path` and missing parents (like `mkdir -p`). Directories it
    /// creates get exactly `mode` (whatever the umask); directories that
    /// existed are left as they are.
    ///
    /// - Throws: `SystemError` from mkdir or chmod.
    public static func create(_ path: String, mode: mode_t) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, mode) == 0 {
                if chmod(current, mode) != 0 { throw SystemError("chmod", path: current, errno: errno) }
            } else if errno != EEXIST {
                throw SystemError("mkdir", path: current, errno: errno)
            }
        }
    }
}
