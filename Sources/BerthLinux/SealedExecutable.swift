import CBerthSyscalls
import Glibc

/// A program's image copied into memory and sealed (a memfd no one can
/// write, shrink, grow or unseal), so that the processes that run it never
/// lead back to a file on the host.
///
/// A process about to become a container's is a clone of its shim until its
/// execve; /proc/self/exe of that process, and /proc/PID/exe seen from a
/// process already in the container, are the shim's image. Were it a host
/// file, a container could reopen it for writing and replace the runtime
/// for every later container (CVE-2019-5736). The agent therefore starts
/// every shim, and every init, from a sealed copy: one per agent, shared by
/// all the processes that run it.
public final class SealedExecutable: Sendable {
    /// The name the copy shows in /proc/PID/exe (`/memfd:NAME (deleted)`).
    public let name: String
    /// Where the copy came from (for messages).
    public let source: String
    /// The memfd (close-on-exec).
    public let descriptor: Int32
    /// The copy's identity: what an exec must never resolve to inside a container.
    public let identity: FileIdentity

    /// Copies and seals the file at `path`.
    ///
    /// - Throws: `SystemError` when it cannot be read, copied or sealed.
    public init(copying path: String, name: String) throws {
        let fd = berth_sealed_copy(path, name)
        guard fd >= 0 else { throw SystemError("copy into a sealed memfd", path: path, errno: errno) }
        var identity = berth_file_identity()
        guard berth_file_identity_of(fd, &identity) == 0 else {
            let saved = errno
            close(fd)
            throw SystemError("fstat", path: path, errno: saved)
        }
        self.name = name
        self.source = path
        self.descriptor = fd
        self.identity = FileIdentity(device: identity.dev, inode: identity.ino)
    }

    deinit { close(descriptor) }

    /// True while the copy is sealed against writes (always, once made).
    public var isSealed: Bool { berth_is_sealed(descriptor) == 1 }
}

/// A file by device and inode, as fstat(2) gives them.
public struct FileIdentity: Sendable, Hashable {
    public var device: UInt64
    public var inode: UInt64

    public init(device: UInt64, inode: UInt64) {
        self.device = device
        self.inode = inode
    }

    /// The identity of the file a descriptor refers to.
    ///
    /// - Throws: `SystemError` from fstat.
    public init(descriptor: Int32) throws {
        var identity = berth_file_identity()
        guard berth_file_identity_of(descriptor, &identity) == 0 else { throw SystemError("fstat", errno: errno) }
        self.init(device: identity.dev, inode: identity.ino)
    }
}
