public import BerthModel
import Foundation

/// Tells how a host mounts its cgroups, from `/proc/self/mountinfo`.
///
/// - `v2`: `/sys/fs/cgroup` is a cgroup2 mount.
/// - `hybrid`: `/sys/fs/cgroup` holds v1 hierarchies and a cgroup2 mount at
///   `/sys/fs/cgroup/unified`.
/// - `v1`: only v1 hierarchies.
public enum CgroupModeDetector {
    /// One line of mountinfo that matters here.
    struct MountEntry: Equatable {
        var mountPoint: String
        var fsType: String
    }

    /// Reads the mode from a mountinfo text.
    ///
    /// - Parameter root: where cgroups are mounted (`/sys/fs/cgroup`).
    /// - Throws: `BerthError.unavailable` when no cgroup filesystem is mounted there.
    public static func detect(mountInfo: String, root: String = "/sys/fs/cgroup") throws -> CgroupMode {
        let mounts = parse(mountInfo)
        if mounts.contains(MountEntry(mountPoint: root, fsType: "cgroup2")) { return .v2 }
        let hasV1 = mounts.contains { $0.fsType == "cgroup" && $0.mountPoint.hasPrefix(root + "/") }
        let hasUnified = mounts.contains(MountEntry(mountPoint: root + "/unified", fsType: "cgroup2"))
        if hasV1 && hasUnified { return .hybrid }
        if hasV1 { return .v1 }
        throw BerthError(.unavailable, "no cgroup filesystem is mounted at \(root); Berth needs cgroup v1 or v2")
    }

    /// Reads the mode of this host.
    ///
    /// - Throws: `BerthError.unavailable` when mountinfo cannot be read or has no cgroups.
    public static func detectHost() throws -> CgroupMode {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else {
            throw BerthError(.unavailable, "cannot read /proc/self/mountinfo")
        }
        return try detect(mountInfo: text)
    }

    static func parse(_ text: String) -> [MountEntry] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 7, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { return nil }
            return MountEntry(mountPoint: unescape(String(fields[4])), fsType: String(fields[dash + 1]))
        }
    }

    /// mountinfo escapes space, tab, newline and backslash as octal.
    static func unescape(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        var out: [UInt8] = []
        let bytes = Array(s.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 3 < bytes.count,
                let value = UInt8(String(decoding: bytes[(i + 1)...(i + 3)], as: UTF8.self), radix: 8)
            {
                out.append(value)
                i += 4
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
