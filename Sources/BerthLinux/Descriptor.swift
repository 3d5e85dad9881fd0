import CBerthSyscalls
import Glibc

/// An errno, by name: `catch let e as SystemError where e.code == .noEntry`.
public struct Errno: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let notPermitted = Errno(rawValue: EPERM)
    public static let noEntry = Errno(rawValue: ENOENT)
    public static let noSuchProcess = Errno(rawValue: ESRCH)
    public static let interrupted = Errno(rawValue: EINTR)
    public static let io = Errno(rawValue: EIO)
    public static let wouldBlock = Errno(rawValue: EAGAIN)
    public static let accessDenied = Errno(rawValue: EACCES)
    public static let busy = Errno(rawValue: EBUSY)
    public static let exists = Errno(rawValue: EEXIST)
    public static let notADirectory = Errno(rawValue: ENOTDIR)
    public static let invalid = Errno(rawValue: EINVAL)
    public static let noSpace = Errno(rawValue: ENOSPC)
    public static let notEmpty = Errno(rawValue: ENOTEMPTY)
    public static let quotaExceeded = Errno(rawValue: EDQUOT)
    public static let addressInUse = Errno(rawValue: EADDRINUSE)
    public static let addressNotAvailable = Errno(rawValue: EADDRNOTAVAIL)
    public static let notATerminal = Errno(rawValue: ENOTTY)

    /// The calling thread's errno now.
    public static var current: Errno { Errno(rawValue: Glibc.errno) }

    /// `ENOENT`.
    public var description: String { SystemError.name(of: rawValue) }
}

extension SystemError {
    /// The errno, by name.
    public var code: Errno { Errno(rawValue: errno) }

    /// The error of the system call that just failed on this thread.
    public static func last(_ operation: String, path: String? = nil) -> SystemError {
        SystemError(operation, path: path, errno: Glibc.errno)
    }
}

/// Permission bits and file type bits, as `st_mode` holds them.
public typealias FileMode = UInt32

/// What kind of file a mode names.
public enum FileKind: Sendable, Hashable {
    case regular, directory, symlink, characterDevice, blockDevice, fifo, socket

    public init?(mode: FileMode) {
        switch mode & UInt32(S_IFMT) {
        case UInt32(S_IFREG): self = .regular
        case UInt32(S_IFDIR): self = .directory
        case UInt32(S_IFLNK): self = .symlink
        case UInt32(S_IFCHR): self = .characterDevice
        case UInt32(S_IFBLK): self = .blockDevice
        case UInt32(S_IFIFO): self = .fifo
        case UInt32(S_IFSOCK): self = .socket
        default: return nil
        }
    }

    /// The type bits of `st_mode` (`S_IFCHR`…).
    public var typeBits: FileMode {
        switch self {
        case .regular: return UInt32(S_IFREG)
        case .directory: return UInt32(S_IFDIR)
        case .symlink: return UInt32(S_IFLNK)
        case .characterDevice: return UInt32(S_IFCHR)
        case .blockDevice: return UInt32(S_IFBLK)
        case .fifo: return UInt32(S_IFIFO)
        case .socket: return UInt32(S_IFSOCK)
        }
    }
}

/// An open file, by its descriptor (swift-system calls its own type `FileDescriptor`). A value: whoever opened it closes it
/// (`close()`), once. Every descriptor Berth opens is close-on-exec.
public struct Descriptor: Sendable, Hashable {
    public let raw: Int32

    public init(_ raw: Int32) { self.raw = raw }

    public static let standardInput = Descriptor(STDIN_FILENO)
    public static let standardOutput = Descriptor(STDOUT_FILENO)
    public static let standardError = Descriptor(STDERR_FILENO)

    public struct Options: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let writeOnly = Options(rawValue: O_WRONLY)
        public static let readWrite = Options(rawValue: O_RDWR)
        public static let create = Options(rawValue: O_CREAT)
        public static let exclusive = Options(rawValue: O_EXCL)
        public static let truncate = Options(rawValue: O_TRUNC)
        public static let append = Options(rawValue: O_APPEND)
        public static let noFollow = Options(rawValue: O_NOFOLLOW)
        public static let directory = Options(rawValue: O_DIRECTORY)
        public static let nonBlocking = Options(rawValue: O_NONBLOCK)
        /// O_PATH: a handle on the file, not opened for reading or writing.
        public static let pathOnly = Options(rawValue: Int32(BERTH_O_PATH))
    }

    /// Opens `path` (for reading unless `options` say otherwise).
    /// - Throws: `SystemError` naming the path.
    public static func open(_ path: String, _ options: Options = [], permissions: FileMode = 0o644) throws -> Descriptor {
        while true {
            let fd = Glibc.open(path, options.rawValue | O_CLOEXEC, mode_t(permissions))
            if fd >= 0 { return Descriptor(fd) }
            if Glibc.errno != EINTR { throw SystemError.last("open", path: path) }
        }
    }

    public func close() { _ = Glibc.close(raw) }

    /// Reads what is there, up to the buffer's size; 0 at the end. EINTR is retried.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = Glibc.read(raw, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if Glibc.errno != EINTR { throw SystemError.last("read") }
        }
    }

    /// pread: reads at `offset` without moving the file's position.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        while true {
            let n = Glibc.pread(raw, buffer.baseAddress, buffer.count, off_t(offset))
            if n >= 0 { return n }
            if Glibc.errno != EINTR { throw SystemError.last("pread") }
        }
    }

    /// A read of a non-blocking descriptor: nil when nothing is there yet.
    public func tryRead(into buffer: UnsafeMutableRawBufferPointer) throws -> Int? {
        while true {
            let n = Glibc.read(raw, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if Glibc.errno == EINTR { continue }
            if Glibc.errno == EAGAIN { return nil }
            throw SystemError.last("read")
        }
    }

    /// Reads until the end (at most `limit` bytes).
    public func readToEnd(limit: Int = .max) throws -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while out.count < limit {
            let n = try buffer.withUnsafeMutableBytes { try read(into: $0) }
            if n == 0 { break }
            out += buffer[0..<min(n, limit - out.count)]
        }
        return out
    }

    /// Writes all of `bytes`, retrying on EINTR.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard berth_write_all(raw, bytes.baseAddress, bytes.count) == 0 else { throw SystemError.last("write") }
    }

    public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    /// A write to a non-blocking descriptor: what was written, nil when it would block.
    public func tryWrite(_ bytes: UnsafeRawBufferPointer) throws -> Int? {
        while true {
            let n = Glibc.write(raw, bytes.baseAddress, bytes.count)
            if n >= 0 { return n }
            if Glibc.errno == EINTR { continue }
            if Glibc.errno == EAGAIN { return nil }
            throw SystemError.last("write")
        }
    }

    public func seek(to offset: Int64) throws {
        guard lseek(raw, off_t(offset), SEEK_SET) >= 0 else { throw SystemError.last("lseek") }
    }

    public func truncate(to size: Int64) throws {
        guard ftruncate(raw, off_t(size)) == 0 else { throw SystemError.last("ftruncate") }
    }

    public func sync() throws {
        guard fsync(raw) == 0 else { throw SystemError.last("fsync") }
    }

    /// fstat.
    public func status() throws -> FileStatus {
        var st = stat()
        guard fstat(raw, &st) == 0 else { throw SystemError.last("fstat") }
        return FileStatus(st)
    }

    /// Another descriptor of the same open file (close-on-exec).
    public func duplicate() throws -> Descriptor {
        let fd = fcntl(raw, F_DUPFD_CLOEXEC, 0)
        guard fd >= 0 else { throw SystemError.last("fcntl F_DUPFD_CLOEXEC") }
        return Descriptor(fd)
    }

    public func setNonBlocking(_ on: Bool) throws {
        let flags = fcntl(raw, F_GETFL)
        guard flags >= 0, fcntl(raw, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) == 0 else {
            throw SystemError.last("fcntl F_SETFL")
        }
    }

    /// An exclusive flock; false when another holds it and `wait` is false.
    public func lock(wait: Bool) throws -> Bool {
        while true {
            if flock(raw, LOCK_EX | (wait ? 0 : LOCK_NB)) == 0 { return true }
            if Glibc.errno == EINTR { continue }
            if Glibc.errno == EWOULDBLOCK { return false }
            throw SystemError.last("flock")
        }
    }

    public var isTerminal: Bool { isatty(raw) == 1 }
}

/// A pipe, both ends close-on-exec.
public enum Pipe {
    public static func make() throws -> (read: Descriptor, write: Descriptor) {
        var fds: [Int32] = [0, 0]
        guard berth_pipe2_cloexec(&fds) == 0 else { throw SystemError.last("pipe2") }
        return (Descriptor(fds[0]), Descriptor(fds[1]))
    }
}

/// Waiting for descriptors to become readable.
public enum Poll {
    /// The descriptors of `fds` that are readable (or at their end), after
    /// waiting at most `timeoutMilliseconds` (-1: no limit); empty on a
    /// timeout. An interrupted wait starts again.
    public static func readable(_ fds: [Descriptor], timeoutMilliseconds: Int32) throws -> [Descriptor] {
        var set = fds.map { pollfd(fd: $0.raw, events: Int16(POLLIN), revents: 0) }
        while poll(&set, nfds_t(set.count), timeoutMilliseconds) < 0 {
            if Glibc.errno != EINTR { throw SystemError.last("poll") }
        }
        return set.filter { $0.revents != 0 }.map { Descriptor($0.fd) }
    }
}
