import BerthCgroups
import BerthLinux
public import BerthModel
import Foundation

/// Reads a container's figures from the kernel: its cgroup and its network
/// namespace (`/proc/PID/net/dev` shows the interfaces of PID's namespace).
public struct StatsReader: Sendable {
    let cgroups: any CgroupDriver
    var proc = "/proc"

    /// - Parameter hostCPU: also read the host's CPU time (for CPU %).
    public func sample(_ container: Container, hostCPU: Bool = true) -> ContainerSample {
        var sample = ContainerSample(
            container: container, time: Date(), cgroup: CgroupStats(), networks: [], processes: 0,
            hostCPUNanos: hostCPU ? hostCPUNanos() : 0, onlineCPUs: Self.onlineCPUs)
        guard container.status.state.isActive else { return sample }
        let name = container.id.rawValue
        // A container that exits while it is read reads as zero, not as an error.
        sample.cgroup = (try? cgroups.stats(name)) ?? CgroupStats()
        sample.processes = (try? cgroups.processes(name).count) ?? 0
        if let pid = container.status.pid { sample.networks = networks(pid: pid) }
        return sample
    }

    static let onlineCPUs = SystemInfo.onlineCPUs

    /// The PIDs in a container's cgroup (none once it has exited).
    public func processes(_ container: Container) -> Set<Int32> {
        guard container.status.state.isActive else { return [] }
        return Set((try? cgroups.processes(container.id.rawValue)) ?? [])
    }

    /// docker's `top`: the host's `ps` with `options` (`-ef` without),
    /// narrowed to the container's processes.
    ///
    /// - Throws: `BerthError.failedPrecondition` for a container that is not
    ///   running; `BerthError.invalidArgument` when ps refuses the options
    ///   or leaves out PID.
    public func top(_ container: Container, options: [String]) async throws -> ProcessTable {
        guard container.status.state.isActive else { throw BerthError(.failedPrecondition, "container \(container.name) is not running") }
        let pids = processes(container)
        let output = try await Processes.run("/bin/ps", options.isEmpty ? ["-ef"] : options, environment: ["PATH=/usr/bin:/bin", "LC_ALL=C"], timeout: .seconds(30))
        guard output.status == 0 else {
            throw BerthError.invalid("ps \(options.joined(separator: " ")): \(output.stderr.split(separator: "\n").first ?? "exited \(output.status)")")
        }
        return try ProcessTable(psOutput: output.stdout, pids: pids)
    }

    /// The host's total CPU time: the "cpu" line of /proc/stat, in USER_HZ
    /// (100 per second) ticks.
    func hostCPUNanos() -> UInt64 {
        guard let text = try? FileIO.read("\(proc)/stat", limit: 4096), let line = text.split(separator: "\n").first,
            line.hasPrefix("cpu ")
        else { return 0 }
        let ticks = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }.reduce(0, +)
        return ticks * 10_000_000
    }

    /// The interfaces of the process's network namespace, loopback left out.
    func networks(pid: Int32) -> [InterfaceCounters] {
        guard let text = KernelText("\(proc)/\(pid)/net/dev") else { return [] }
        return Self.parseNetDev(text)
    }

    /// `/proc/net/dev`: two header lines, then `name: rx_bytes rx_packets
    /// errs drop fifo frame compressed multicast tx_bytes tx_packets …`.
    static func parseNetDev(_ text: KernelText) -> [InterfaceCounters] {
        var result: [InterfaceCounters] = []
        var line = 0
        text.forEachLine { fields in
            line += 1
            guard line > 2, let first = fields.first, let colon = first.firstIndex(of: UInt8(ascii: ":")) else { return }
            let name = String(decoding: first[..<colon], as: UTF8.self)
            guard name != "lo" else { return }
            // "eth0:123" when the first counter is wide enough to touch the colon.
            let rest = first[(colon + 1)...]
            let numbers = ((rest.isEmpty ? [] : [rest]) + fields.dropFirst()).compactMap(KernelText.decimal)
            guard numbers.count >= 10 else { return }
            result.append(
                InterfaceCounters(name: name, rxBytes: numbers[0], rxPackets: numbers[1], txBytes: numbers[8], txPackets: numbers[9]))
        }
        return result
    }
}
