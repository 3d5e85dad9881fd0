import CBerthSyscalls
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

    /// Reads a whole small file as bytes: kernel interface files, where a
    /// read is cheap and every allocation shows on a busy scrape.
    ///
    /// - Throws: `SystemError` naming the file.
    public static func readBytes(_ path: String, limit: Int = 1 << 20) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
        defer { close(fd) }
        var capacity = 4096
        var out = [UInt8]()
        while true {
            var failure: Int32 = 0
            let chunk = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
                let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
                if n < 0 { failure = errno }
                count = max(0, n)
            }
            if failure == EINTR { continue }
            if failure != 0 { throw SystemError("read", path: path, errno: failure) }
            if chunk.isEmpty { return out }
            if out.isEmpty { out = chunk } else { out += chunk }
            if out.count >= limit { return out }
            capacity = min(capacity * 2, 1 << 16)
        }
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

/// What lstat(2) says about a file.
public struct FileStatus: Sendable, Hashable {
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: Int64
    public var mtime: Int64
    public var inode: UInt64
    public var device: UInt64
    public var links: UInt64
    public var rdevMajor: UInt32
    public var rdevMinor: UInt32

    public var isDirectory: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFDIR) }
    public var isRegular: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFREG) }
    public var isSymlink: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFLNK) }
    public var isCharacterDevice: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFCHR) }
    public var isBlockDevice: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFBLK) }
    public var isFIFO: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFIFO) }
    public var isSocket: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFSOCK) }
}

extension FileIO {
    /// lstat(2).
    ///
    /// - Throws: `SystemError` naming the path.
    public static func status(_ path: String) throws -> FileStatus {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw SystemError("stat", path: path, errno: errno) }
        return FileStatus(st)
    }

    /// stat(2): as `status`, but a final symlink is followed.
    ///
    /// - Throws: `SystemError` naming the path.
    public static func statusFollowingLinks(_ path: String) throws -> FileStatus {
        var st = stat()
        guard stat(path, &st) == 0 else { throw SystemError("stat", path: path, errno: errno) }
        return FileStatus(st)
    }
}

extension FileStatus {
    init(_ st: stat) {
        self.init(
            mode: st.st_mode, uid: st.st_uid, gid: st.st_gid, size: Int64(st.st_size), mtime: Int64(st.st_mtim.tv_sec),
            inode: UInt64(st.st_ino), device: UInt64(st.st_dev), links: UInt64(st.st_nlink),
            rdevMajor: UInt32((st.st_rdev >> 8) & 0xFFF) | UInt32((st.st_rdev >> 32) & ~0xFFF),
            rdevMinor: UInt32(st.st_rdev & 0xFF) | UInt32((st.st_rdev >> 12) & ~0xFF))
    }
}

extension FileIO {
    /// The bytes a tree takes on disk (allocated blocks, each inode once),
    /// without following symlinks; 0 for what cannot be read.
    public static func diskUsage(_ path: String) -> Int64 {
        var seen = Set<UInt64>()
        func walk(_ path: String) -> Int64 {
            var st = stat()
            guard lstat(path, &st) == 0 else { return 0 }
            if st.st_nlink > 1 && !seen.insert(UInt64(st.st_ino)).inserted { return 0 }
            var total = Int64(st.st_blocks) * 512
            if st.st_mode & S_IFMT == S_IFDIR, let names = try? list(path) {
                for name in names { total += walk(path + "/" + name) }
            }
            return total
        }
        return walk(path)
    }

    /// readlink(2).
    public static func readLink(_ path: String) throws -> String {
        var buffer = [CChar](repeating: 0, count: 4097)
        let n = readlink(path, &buffer, 4096)
        guard n >= 0 else { throw SystemError("readlink", path: path, errno: errno) }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// rename(2).
    public static func rename(_ from: String, to: String) throws {
        guard Glibc.rename(from, to) == 0 else { throw SystemError("rename", path: "\(from) → \(to)", errno: errno) }
    }
}

extension FileIO {
    /// An extended attribute of `path` (not following a final symlink); nil when absent.
    public static func xattr(_ path: String, name: String) -> [UInt8]? {
        var value = [UInt8](repeating: 0, count: 4096)
        let n = value.withUnsafeMutableBytes { berth_lgetxattr(path, name, $0.baseAddress, $0.count) }
        return n >= 0 ? Array(value[0..<n]) : nil
    }
}
