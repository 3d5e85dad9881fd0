import Glibc

/// Mounts the agent makes for itself (not a container's: those are the
/// container child's, in C).
public enum Mounts {
    /// A read-only overlay of `lower` (top first) at `target`.
    public static func overlay(lower: [String], at target: String, readOnly: Bool) throws {
        guard mount("overlay", target, "overlay", readOnly ? UInt(MS_RDONLY) : 0, "lowerdir=\(lower.joined(separator: ":"))") == 0 else {
            throw SystemError.last("mount", path: target)
        }
    }

    /// Unmounts `target`; `detach` lets it go once no one uses it (MNT_DETACH).
    public static func unmount(_ target: String, detach: Bool) throws {
        guard umount2(target, detach ? Int32(MNT_DETACH) : 0) == 0 else { throw SystemError.last("umount", path: target) }
    }
}

extension FileIO {
    /// chown(2), following a last symlink.
    public static func setOwner(_ path: String, uid: UInt32, gid: UInt32) throws {
        guard chown(path, uid, gid) == 0 else { throw SystemError.last("chown", path: path) }
    }

    /// chmod(2): the permission bits (and setuid, setgid, sticky).
    public static func setPermissions(_ path: String, _ mode: FileMode) throws {
        guard chmod(path, mode_t(mode & 0o7777)) == 0 else { throw SystemError.last("chmod", path: path) }
    }
}

/// Figures of the host.
public enum SystemInfo {
    /// The CPUs online now.
    public static var onlineCPUs: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
    /// The size of a memory page, in bytes.
    public static var pageSize: Int { Int(sysconf(Int32(_SC_PAGESIZE))) }
    /// This process's ID.
    public static var processID: Int32 { getpid() }
}
