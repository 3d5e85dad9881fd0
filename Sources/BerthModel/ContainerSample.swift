public import FoundationEssentials

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

/// The counters of one network interface in a container's namespace.
public struct InterfaceCounters: Sendable, Hashable {
    public var name: String
    public var rxBytes: UInt64 = 0
    public var rxPackets: UInt64 = 0
    public var txBytes: UInt64 = 0
    public var txPackets: UInt64 = 0

    public init(name: String, rxBytes: UInt64 = 0, rxPackets: UInt64 = 0, txBytes: UInt64 = 0, txPackets: UInt64 = 0) {
        self.name = name
        self.rxBytes = rxBytes
        self.rxPackets = rxPackets
        self.txBytes = txBytes
        self.txPackets = txPackets
    }
}

/// One container's resource use at one moment, as the kernel counts it.
public struct ContainerSample: Sendable {
    public var container: Container
    public var time: Date
    /// Zero for a container that is not running or paused (docker's way).
    public var cgroup: CgroupStats
    /// The container's interfaces except loopback.
    public var networks: [InterfaceCounters]
    /// Processes in the container's cgroup.
    public var processes: Int
    /// Cumulative CPU time of the whole host and its online CPUs: docker's
    /// CPU % is the container's share of the host's time between samples.
    public var hostCPUNanos: UInt64
    public var onlineCPUs: Int

    public init(
        container: Container, time: Date, cgroup: CgroupStats, networks: [InterfaceCounters], processes: Int, hostCPUNanos: UInt64,
        onlineCPUs: Int
    ) {
        self.container = container
        self.time = time
        self.cgroup = cgroup
        self.networks = networks
        self.processes = processes
        self.hostCPUNanos = hostCPUNanos
        self.onlineCPUs = onlineCPUs
    }
}

