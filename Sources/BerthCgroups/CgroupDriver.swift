public import BerthModel

/// Resource use of one cgroup, as the kernel counts it.
public struct CgroupStats: Sendable, Hashable {
    /// Total CPU time, nanoseconds.
    public var cpuUsageNanos: UInt64 = 0
    public var cpuUserNanos: UInt64 = 0
    public var cpuSystemNanos: UInt64 = 0
    /// CFS enforcement periods, how many were throttled, and for how long.
    public var cpuPeriods: UInt64 = 0
    public var cpuThrottledPeriods: UInt64 = 0
    public var cpuThrottledNanos: UInt64 = 0
    /// Memory charged to the cgroup (page cache included).
    public var memoryUsage: UInt64 = 0
    /// Usage minus inactive file cache: what the OOM killer weighs.
    public var memoryWorkingSet: UInt64 = 0
    public var memoryRSS: UInt64 = 0
    public var memoryCache: UInt64 = 0
    /// 0 when unlimited.
    public var memoryLimit: UInt64 = 0
    public var memorySwap: UInt64 = 0
    /// Times the limit was hit (v2 memory.events `oom`; v1 memory.failcnt).
    public var oomEvents: UInt64 = 0
    /// Processes the OOM killer killed in this cgroup.
    public var oomKills: UInt64 = 0
    public var pidsCurrent: UInt64 = 0
    /// 0 when unlimited.
    public var pidsLimit: UInt64 = 0
    public var ioReadBytes: UInt64 = 0
    public var ioWriteBytes: UInt64 = 0

    public init() {}
}

/// One way of placing containers in cgroups and holding them to limits.
/// Drivers work under their own subtree (`berth/` by default) of a root
/// that is a parameter, so tests run them on temporary trees.
///
/// Every method names the container's cgroup by a name (its ID); nothing
/// outside the driver's subtree is ever written.
/// How a new process enters a container's cgroup without being migrated by
/// PID: a migration by PID takes the kernel's global threadgroup lock for
/// writing, which waits for an RCU grace period (milliseconds) each time.
public struct CgroupPlacement: Sendable, Equatable {
    /// cgroup v2: the directory to clone the process into (CLONE_INTO_CGROUP).
    public var cloneInto: String?
    /// cgroup v1: one `tasks` file per hierarchy; the process writes "0"
    /// (itself) to each before it does anything else.
    public var selfJoinTasks: [String]

    public init(cloneInto: String? = nil, selfJoinTasks: [String] = []) {
        self.cloneInto = cloneInto
        self.selfJoinTasks = selfJoinTasks
    }
}

public protocol CgroupDriver: Sendable {
    /// v1, v2 or hybrid (v1 controllers).
    var mode: CgroupMode { get }

    /// Creates the cgroup and applies the limits.
    ///
    /// - Throws: `BerthError.invalidArgument` for a limit this host cannot
    ///   enforce; `BerthError.internal` naming the file the kernel refused.
    ///   A failed create leaves nothing behind.
    func create(_ name: String, resources: Resources) throws

    /// Changes limits of an existing cgroup (only those given).
    func update(_ name: String, resources: Resources) throws

    /// How a container's first process gets into the cgroup.
    func placement(_ name: String) -> CgroupPlacement

    /// The file holding the `oom_kill` counter.
    func oomCounterFile(_ name: String) -> String

    /// Stops every process of the cgroup (pause); returns once frozen.
    func freeze(_ name: String) throws
    func thaw(_ name: String) throws
    func isFrozen(_ name: String) throws -> Bool

    /// PIDs in the cgroup.
    func processes(_ name: String) throws -> [Int32]

    func stats(_ name: String) throws -> CgroupStats

    /// Removes the cgroup, retrying while the kernel says EBUSY.
    ///
    /// - Throws: `BerthError.failedPrecondition` if processes remain.
    func remove(_ name: String) throws

    func exists(_ name: String) -> Bool

    /// What to mount at /sys/fs/cgroup inside a container (in its cgroup
    /// namespace, read-only): the container sees its own cgroup as the root.
    var containerMounts: [CgroupMount] { get }
}

/// One filesystem to mount inside a container for its cgroups.
public struct CgroupMount: Sendable, Hashable {
    public var fstype: String
    public var target: String
    public var data: String
    public var readOnly: Bool
}

extension CgroupV1Driver {
    /// Picks the driver for this host's cgroup mode.
    ///
    /// - Throws: `BerthError.unavailable` when cgroups are not mounted.
    public static func detectDriver(root: String = "/sys/fs/cgroup", parent: String = "berth") throws -> any CgroupDriver {
        switch try CgroupModeDetector.detectHost() {
        case .v2: return try CgroupV2Driver(root: root, parent: parent)
        case .v1: return try CgroupV1Driver(root: root, parent: parent, mode: .v1)
        case .hybrid: return try CgroupV1Driver(root: root, parent: parent, mode: .hybrid)
        }
    }
}

/// Parsing the kernel's flat key/value files (memory.stat, cpu.stat…).
enum KernelFormat {
    static func keyValues(_ text: String) -> [String: UInt64] {
        var result: [String: UInt64] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let v = UInt64(parts[1]) { result[String(parts[0])] = v }
        }
        return result
    }

    static func number(_ text: String) -> UInt64? {
        UInt64(text.trimmingWhitespace())
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
