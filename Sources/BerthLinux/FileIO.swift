import Glibc

/// Small whole-file reads and writes, for kernel interfaces (cgroup files,
/// /proc) where every write is one value and errors carry the path.
public enum FileIO {
    /// Reads a whole (small) file.
    ///
    /// - Throws: `SystemError` naming the file.
    public static func read(_ path: String, limit: Int = 16 << 20) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while out.count < limit {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("read", path: path, errno: errno)
            }
            if n == 0 { break }
            out += buffer[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Writes `value` to an existing file in one write(2), as kernel
    /// interfaces expect. With `create`, a missing file is created and an
    /// existing one truncated (for test trees that stand in for the kernel's).
    ///
    /// - Throws: `SystemError` naming the file (EINVAL, EBUSY, ENOSPC… as the kernel said).
    public static func write(_ value: String, to path: String, create: Bool = false) throws {
        let fd = create ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) : open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
        defer { close(fd) }
        let bytes = Array(value.utf8)
        while true {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n >= 0 { return }
            if errno == EINTR { continue }
            throw SystemError("write \"\(value)\" to", path: path, errno: errno)
        }
    }

    public static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// mkdir; an existing directory is fine.
    ///
    /// - Throws: `SystemError` for anything but EEXIST.
    public static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws {
        if mkdir(path, mode) != 0 && errno != EEXIST { throw SystemError("mkdir", path: path, errno: errno) }
    }

    /// rmdir; a missing directory is fine.
    ///
    /// - Throws: `SystemError` (EBUSY while a cgroup still has members).
    public static func removeDirectory(_ path: String) throws {
        if rmdir(path) != 0 && errno != ENOENT { throw SystemError("rmdir", path: path, errno: errno) }
    }

    /// The names in a directory (no "." or "..").
    ///
    /// - Throws: `SystemError` naming the directory.
    public static func list(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw SystemError("opendir", path: path, errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}

/// Sleeping without Foundation, for retry loops in kernel-facing code.
public enum Pause {
    public static func milliseconds(_ ms: Int) {
        var request = timespec(tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}

extension FileIO {
    /// unlink; a missing file is fine.
    ///
    /// - Throws: `SystemError` for anything but ENOENT.
    public static func removeFile(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw SystemError("unlink", path: path, errno: errno) }
    }
}
