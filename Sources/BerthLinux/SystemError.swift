import Glibc

/// A failed system call: which one, on what, and the errno.
public struct SystemError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The operation, as a person would name it: `open`, `pivot_root`, `mount`.
    public var operation: String
    /// The path or object the operation was applied to, when there is one.
    public var path: String?
    public var errno: Int32

    public init(_ operation: String, path: String? = nil, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    /// The errno's symbolic name, `EINVAL`, as runtimes print it.
    public var errnoName: String { Self.name(of: errno) }

    public var description: String {
        let subject = path.map { " \($0)" } ?? ""
        return "\(operation)\(subject): \(errnoName) (\(String(cString: strerror(errno))))"
    }

    public static func name(of code: Int32) -> String {
        let names: [Int32: String] = [
            EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", EINTR: "EINTR", EIO: "EIO", E2BIG: "E2BIG",
            ENOEXEC: "ENOEXEC", EBADF: "EBADF", ECHILD: "ECHILD", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM",
            EACCES: "EACCES", EFAULT: "EFAULT", EBUSY: "EBUSY", EEXIST: "EEXIST", EXDEV: "EXDEV",
            ENODEV: "ENODEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EINVAL: "EINVAL", ENFILE: "ENFILE",
            EMFILE: "EMFILE", ENOSPC: "ENOSPC", EROFS: "EROFS", EMLINK: "EMLINK", EPIPE: "EPIPE",
            ERANGE: "ERANGE", ENAMETOOLONG: "ENAMETOOLONG", ENOSYS: "ENOSYS", ENOTEMPTY: "ENOTEMPTY",
            ELOOP: "ELOOP", EOPNOTSUPP: "EOPNOTSUPP", EADDRINUSE: "EADDRINUSE", ECONNREFUSED: "ECONNREFUSED",
            ETIMEDOUT: "ETIMEDOUT", EDQUOT: "EDQUOT", ENOTTY: "ENOTTY", EADDRNOTAVAIL: "EADDRNOTAVAIL", ECONNRESET: "ECONNRESET",
        ]
        return names[code] ?? "errno \(code)"
    }
}
