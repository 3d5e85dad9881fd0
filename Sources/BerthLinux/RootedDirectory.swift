import CBerthSyscalls
import Glibc

/// A directory that file operations cannot leave: every path is resolved
/// beneath it by the kernel (openat2 with RESOLVE_IN_ROOT), so `..`,
/// absolute symlinks and symlinks planted earlier all stay inside. This is
/// how untrusted image layers are unpacked.
public final class RootedDirectory {
    public let path: String
    private let fd: Int32

    /// Opens an existing directory.
    ///
    /// - Throws: `SystemError` naming it.
    public init(path: String) throws {
        self.path = path
        fd = Glibc.open(path, Int32(BERTH_O_PATH) | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
    }

    deinit {
        close(fd)
        forgetParent()
    }

    /// The directory the last `createFileInCachedParent` wrote into, kept
    /// open for the next file in the same directory (tars list a
    /// directory's files together). Any other change drops it.
    private var cachedParent: (path: String, fd: Int32)?

    /// Drops the cached parent directory.
    public func forgetParent() {
        if let cached = cachedParent { close(cached.fd) }
        cachedParent = nil
    }

    /// Creates a regular file (replacing what is there) and returns its
    /// descriptor, opened for writing. The parent is resolved beneath the
    /// root once per directory while files follow each other.
    public func createFileInCachedParent(_ path: String, mode: mode_t) throws -> Int32 {
        let (parentPath, name) = Self.split(path)
        guard name != "." && name != ".." else { throw SystemError("resolve", path: "\(self.path)/\(path)", errno: EINVAL) }
        let parentFD: Int32
        if let cached = cachedParent, cached.path == parentPath {
            parentFD = cached.fd
        } else {
            forgetParent()
            parentFD = try parent(of: path).fd
            cachedParent = (parentPath, parentFD)
        }
        var fd = openat(parentFD, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        if fd < 0 && errno == EEXIST {
            try Self.removeAt(parentFD, name, display: "\(self.path)/\(path)")
            fd = openat(parentFD, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        }
        guard fd >= 0 else { throw SystemError("create", path: "\(self.path)/\(path)", errno: errno) }
        return fd
    }

    /// Owner, then mode (chown clears setuid bits), then times, on an open file.
    public static func setAttributes(fd: Int32, display: String, uid: UInt32, gid: UInt32, mode: mode_t, mtime: Int64) throws {
        if fchown(fd, uid, gid) != 0 { throw SystemError("chown", path: display, errno: errno) }
        if fchmod(fd, mode) != 0 { throw SystemError("chmod", path: display, errno: errno) }
        var times = [timespec(tv_sec: Int(mtime), tv_nsec: 0), timespec(tv_sec: Int(mtime), tv_nsec: 0)]
        if futimens(fd, &times) != 0 { throw SystemError("utimensat", path: display, errno: errno) }
    }

    /// An extended attribute on an open file.
    public static func setXattr(fd: Int32, display: String, name attribute: String, value: [UInt8]) throws {
        let rc = value.withUnsafeBytes { berth_fsetxattr_path(fd, attribute, $0.baseAddress, $0.count) }
        if rc != 0 { throw SystemError("setxattr \(attribute)", path: display, errno: errno) }
    }

    /// Splits "a/b/c" into the parent "a/b" and the last name "c".
    public static func split(_ path: String) -> (parent: String, name: String) {
        let trimmed = path.split(separator: "/", omittingEmptySubsequences: true)
        guard let last = trimmed.last else { return (".", ".") }
        let parent = trimmed.dropLast().joined(separator: "/")
        return (parent.isEmpty ? "." : parent, String(last))
    }

    /// Opens `path` beneath the root.
    func open(_ path: String, flags: Int32, mode: mode_t = 0) throws -> Int32 {
        let fd = berth_openat2_in_root(self.fd, path, flags | O_CLOEXEC, UInt64(mode))
        guard fd >= 0 else { throw SystemError("open", path: "\(self.path)/\(path)", errno: errno) }
        return fd
    }

    /// Opens the parent of `path` (resolved in the root), creating missing
    /// directories on the way with `mode`.
    func parent(of path: String, createMode: mode_t = 0o755) throws -> (fd: Int32, name: String) {
        let (parent, name) = Self.split(path)
        guard name != "." && name != ".." else {
            throw SystemError("resolve", path: "\(self.path)/\(path)", errno: EINVAL)
        }
        if let fd = try? open(parent, flags: Int32(BERTH_O_PATH) | O_DIRECTORY) { return (fd, name) }
        try createDirectories(parent, mode: createMode)
        return (try open(parent, flags: Int32(BERTH_O_PATH) | O_DIRECTORY), name)
    }

    /// `mkdir -p` beneath the root. A component that is a symlink to a
    /// missing directory gets that directory made where the link points,
    /// resolved inside the root, as the container will see it.
    public func createDirectories(_ path: String, mode: mode_t = 0o755) throws {
        try createDirectories(path, mode: mode, depth: 0)
    }

    private func createDirectories(_ path: String, mode: mode_t, depth: Int) throws {
        guard depth < 40 else { throw SystemError("mkdir (too many levels of symbolic links)", path: "\(self.path)/\(path)", errno: ELOOP) }
        var prefix = ""
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            let next = prefix.isEmpty ? String(component) : prefix + "/" + component
            if let fd = try? open(next, flags: Int32(BERTH_O_PATH) | O_DIRECTORY) {
                close(fd)
                prefix = next
                continue
            }
            let parentFD = try open(prefix.isEmpty ? "." : prefix, flags: Int32(BERTH_O_PATH) | O_DIRECTORY)
            defer { close(parentFD) }
            if mkdirat(parentFD, String(component), mode) == 0 {
                prefix = next
                continue
            }
            guard errno == EEXIST else { throw SystemError("mkdir", path: "\(self.path)/\(next)", errno: errno) }
            // It exists but is not a directory we can open: a symlink to nowhere yet?
            var buffer = [CChar](repeating: 0, count: 4097)
            let n = readlinkat(parentFD, String(component), &buffer, 4096)
            guard n > 0 else { throw SystemError("mkdir (not a directory)", path: "\(self.path)/\(next)", errno: ENOTDIR) }
            let target = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let resolved = Self.normalize(target.hasPrefix("/") ? target : (prefix.isEmpty ? target : prefix + "/" + target))
            try createDirectories(resolved, mode: mode, depth: depth + 1)
            prefix = next
        }
    }

    /// Folds "." and ".." the way the kernel does inside a root: ".." at the
    /// top stays at the top.
    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." {
                if !parts.isEmpty { parts.removeLast() }
                continue
            }
            parts.append(part)
        }
        return parts.joined(separator: "/")
    }

    /// What is at `path` (not following a final symlink), nil if nothing.
    public func kind(of path: String) throws -> mode_t? {
        let (parentFD, name) = try parent(of: path)
        defer { close(parentFD) }
        var st = stat()
        if fstatat(parentFD, name, &st, AT_SYMLINK_NOFOLLOW) != 0 {
            if errno == ENOENT { return nil }
            throw SystemError("stat", path: "\(self.path)/\(path)", errno: errno)
        }
        return st.st_mode & S_IFMT
    }

    /// Removes what is at `path`, recursively for a directory; nothing there is fine.
    public func remove(_ path: String) throws {
        let (parentFD, name) = try parent(of: path)
        defer { close(parentFD) }
        try Self.removeAt(parentFD, name, display: "\(self.path)/\(path)")
    }

    static func removeAt(_ dirFD: Int32, _ name: String, display: String) throws {
        if unlinkat(dirFD, name, 0) == 0 || errno == ENOENT { return }
        guard errno == EISDIR else { throw SystemError("unlink", path: display, errno: errno) }
        let child = openat(dirFD, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard child >= 0 else { throw SystemError("open", path: display, errno: errno) }
        guard let dir = fdopendir(child) else {
            close(child)
            throw SystemError("opendir", path: display, errno: errno)
        }
        var names: [String] = []
        while let entry = readdir(dir) {
            let n = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if n != "." && n != ".." { names.append(n) }
        }
        for n in names { try removeAt(dirfd(dir), n, display: display + "/" + n) }
        closedir(dir)
        if unlinkat(dirFD, name, AT_REMOVEDIR) != 0 && errno != ENOENT {
            throw SystemError("rmdir", path: display, errno: errno)
        }
    }

    /// Makes a directory (an existing one is kept and its mode set).
    public func makeDirectory(_ path: String, mode: mode_t) throws {
        let (parentFD, name) = try parent(of: path)
        defer { close(parentFD) }
        if mkdirat(parentFD, name, mode) != 0 {
            guard errno == EEXIST else { throw SystemError("mkdir", path: "\(self.path)/\(path)", errno: errno) }
            var st = stat()
            if fstatat(parentFD, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && (st.st_mode & S_IFMT) != S_IFDIR {
                try Self.removeAt(parentFD, name, display: "\(self.path)/\(path)")
                if mkdirat(parentFD, name, mode) != 0 { throw SystemError("mkdir", path: "\(self.path)/\(path)", errno: errno) }
            }
        }
        if fchmodat(parentFD, name, mode, 0) != 0 { throw SystemError("chmod", path: "\(self.path)/\(path)", errno: errno) }
    }

    public func symlink(_ path: String, target: String) throws {
        let (parentFD, name) = try parent(of: path)
        defer { close(parentFD) }
        try Self.removeAt(parentFD, name, display: "\(self.path)/\(path)")
        if symlinkat(target, parentFD, name) != 0 { throw SystemError("symlink", path: "\(self.path)/\(path)", errno: errno) }
    }

    /// A hard link to `existing`, which is resolved beneath the root too: a
    /// link can never reach a file outside it.
    public func hardlink(_ path: String, to existing: String) throws {
        let source = try open(existing, flags: Int32(BERTH_O_PATH) | O_NOFOLLOW)
        defer { close(source) }
        var st = stat()
        guard fstat(source, &st) == 0 else { throw SystemError("stat", path: "\(self.path)/\(existing)", errno: errno) }
        guard (st.st_mode & S_IFMT) != S_IFDIR else {
            throw SystemError("link (to a directory)", path: "\(self.path)/\(existing)", errno: EPERM)
        }
        let (parentFD, name) = try parent(of: path)
        defer { close(parentFD) }
        try Self.removeAt(parentFD, name, display: "\(self.path)/\(path)")
        if linkat(source, "", parentFD, name, Int32(BERTH_AT_EMPTY_PATH)) != 0 {
            throw SystemError("link", path: "\(self.path)/\(path)", errno: errno)
        }
    }

    /// A device node, FIFO or whiteout (a character device 0:0).
    public func makeNode(_ path: String, kind: FileKind, permissions: FileMode, major: UInt32, minor: UInt32) throws {
        try makeNode(path, mode: kind.typeBits | permissions, major: major, minor: minor)
    }

    /// What kind of file `path` is (without following a last symlink); nil when there is none.
    public func fileKind(of path: String) throws -> FileKind? {
        try kind(of: path).flatMap { FileKind(mode: $0) }
    }

    public func makeNode(_ path: String, mode: mode_t, major: UInt32, minor: UInt32) throws {
        let (parentFD, name) = try parent(of: path)
        defer { close(parentFD) }
        try Self.removeAt(parentFD, name, display: "\(self.path)/\(path)")
        if mknodat(parentFD, name, mode, dev_t(berth_makedev(major, minor))) != 0 {
            throw SystemError("mknod", path: "\(self.path)/\(path)", errno: errno)
        }
    }

    /// Owner, mode (not for symlinks) and modification time of `path`,
    /// without following a final symlink.
    public func setAttributes(_ path: String, uid: UInt32, gid: UInt32, mode: mode_t?, mtime: Int64) throws {
        let (parentFD, name) = try parent(of: path)
        defer { close(parentFD) }
        if fchownat(parentFD, name, uid, gid, AT_SYMLINK_NOFOLLOW) != 0 {
            throw SystemError("chown", path: "\(self.path)/\(path)", errno: errno)
        }
        // chown clears setuid/setgid bits; the mode is set after it.
        if let mode, fchmodat(parentFD, name, mode, 0) != 0 {
            throw SystemError("chmod", path: "\(self.path)/\(path)", errno: errno)
        }
        var times = [timespec(tv_sec: Int(mtime), tv_nsec: 0), timespec(tv_sec: Int(mtime), tv_nsec: 0)]
        if utimensat(parentFD, name, &times, AT_SYMLINK_NOFOLLOW) != 0 {
            throw SystemError("utimensat", path: "\(self.path)/\(path)", errno: errno)
        }
    }

    /// Sets an extended attribute on `path` (not following a final symlink).
    public func setXattr(_ path: String, name attribute: String, value: [UInt8]) throws {
        let fd = try open(path, flags: Int32(BERTH_O_PATH) | O_NOFOLLOW)
        defer { close(fd) }
        let rc = value.withUnsafeBytes { berth_fsetxattr_path(fd, attribute, $0.baseAddress, $0.count) }
        if rc != 0 { throw SystemError("setxattr \(attribute)", path: "\(self.path)/\(path)", errno: errno) }
    }
}

/// Writes all of `bytes` to `fd`.
public func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws {
    guard berth_write_all(fd, bytes.baseAddress, bytes.count) == 0 else { throw SystemError("write", errno: errno) }
}
