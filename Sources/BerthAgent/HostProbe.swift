public import BerthModel
import BerthCgroups
import Foundation

/// Reads what the agent reports about its host from /proc and /sys.
public struct HostProbe: Sendable {
    /// Where /proc is (tests point it at a fixture tree).
    public var procRoot: String
    public var sysRoot: String

    public init(procRoot: String = "/proc", sysRoot: String = "/sys") {
        self.procRoot = procRoot
        self.sysRoot = sysRoot
    }

    private func read(_ path: String) -> String? {
        try? String(contentsOfFile: path, encoding: .utf8)
    }

    public var hostname: String {
        read("\(procRoot)/sys/kernel/hostname")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ProcessInfo.processInfo.hostName
    }

    public var kernelVersion: String {
        read("\(procRoot)/sys/kernel/osrelease")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown"
    }

    /// `PRETTY_NAME` from /etc/os-release.
    public var operatingSystem: String {
        guard let text = read("/etc/os-release") ?? read("/usr/lib/os-release") else { return "Linux" }
        for line in text.split(separator: "\n") where line.hasPrefix("PRETTY_NAME=") {
            return String(line.dropFirst(12)).trimmingCharacters(in: CharacterSet(charactersIn: "\"'"))
        }
        return "Linux"
    }

    public var architecture: String {
        #if arch(x86_64)
        return "x86_64"
        #elseif arch(arm64)
        return "aarch64"
        #else
        return "unknown"
        #endif
    }

    /// Online CPUs, from /sys/devices/system/cpu/online (`0-1`).
    public var cpus: Int {
        if let text = read("\(sysRoot)/devices/system/cpu/online"),
            let set = try? CPUSet(parsing: text.trimmingCharacters(in: .whitespacesAndNewlines))
        {
            return set.members.count
        }
        return ProcessInfo.processInfo.activeProcessorCount
    }

    /// `MemTotal` and `MemAvailable` from /proc/meminfo, in bytes.
    public var memory: (total: Int64, available: Int64) {
        guard let text = read("\(procRoot)/meminfo") else { return (Int64(ProcessInfo.processInfo.physicalMemory), 0) }
        var total: Int64 = 0
        var available: Int64 = 0
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, let kib = Int64(parts[1]) else { continue }
            if parts[0] == "MemTotal:" { total = kib * 1024 }
            if parts[0] == "MemAvailable:" { available = kib * 1024 }
        }
        return (total, available)
    }

    public var loadAverage1m: Double {
        guard let text = read("\(procRoot)/loadavg"), let first = text.split(separator: " ").first else { return 0 }
        return Double(first) ?? 0
    }

    /// Busy and total CPU time across all CPUs, in clock ticks, from the
    /// first line of /proc/stat.
    public var cpuTicks: (busy: UInt64, total: UInt64)? {
        guard let text = read("\(procRoot)/stat"), let line = text.split(separator: "\n").first, line.hasPrefix("cpu ") else {
            return nil
        }
        let values = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().compactMap { UInt64($0) }
        guard values.count >= 5 else { return nil }
        // user nice system idle iowait irq softirq steal (guest time is already in user)
        let total = values.prefix(8).reduce(0, +)
        let idle = values[3] + values[4]
        return (total - idle, total)
    }

    public var cgroupMode: CgroupMode {
        (try? CgroupModeDetector.detectHost()) ?? .v1
    }
}
