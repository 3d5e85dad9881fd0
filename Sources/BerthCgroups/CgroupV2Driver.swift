public import BerthModel
import BerthLinux

/// Cgroup v2: one unified hierarchy; the container's cgroup is
/// `<root>/<parent>/<name>`, with the controllers enabled in `<parent>`.
public struct CgroupV2Driver: CgroupDriver {
    public var mode: CgroupMode { .v2 }
    public let root: String
    public let parent: String
    private let testTree: Bool
    private let deviceFilter: (any DeviceFilter)?

    static let wanted = ["cpuset", "cpu", "io", "memory", "pids"]

    /// - Parameters:
    ///   - deviceFilter: how containers' cgroups are held to their device
    ///     rules; nil takes the kernel's BPF programs, except on a test tree
    ///   (a plain directory), where none can be attached.
    /// - Throws: `BerthError.unavailable` when the root does not offer the
    ///   controllers Berth needs (Berth does not write to cgroups it did not create).
    public init(root: String, parent: String, testTree: Bool = false, deviceFilter: (any DeviceFilter)? = nil) throws {
        self.root = root
        self.parent = parent
        self.testTree = testTree
        self.deviceFilter = deviceFilter ?? (testTree ? nil : KernelDeviceFilter())
        let available = ((try? FileIO.read("\(root)/cgroup.subtree_control")) ?? "").split(whereSeparator: \.isWhitespace).map(String.init)
        let missing = ["cpu", "memory", "pids"].filter { !available.contains($0) }
        guard missing.isEmpty else {
            throw BerthError(
                .unavailable,
                "cgroup v2 controllers \(missing.joined(separator: ", ")) are not enabled in \(root)/cgroup.subtree_control; enable them (systemd does by default)"
            )
        }
        do {
            try FileIO.makeDirectory("\(root)/\(parent)")
            let enable = Self.wanted.filter { available.contains($0) }.map { "+\($0)" }.joined(separator: " ")
            try FileIO.write(enable, to: "\(root)/\(parent)/cgroup.subtree_control", create: testTree)
        } catch {
            throw BerthError(.unavailable, "cannot prepare Berth's cgroup \(root)/\(parent)", underlying: error)
        }
    }

    func path(_ name: String) -> String { "\(root)/\(parent)/\(name)" }

    private func write(_ value: String, _ name: String, _ file: String) throws {
        do {
            try FileIO.write(value, to: "\(path(name))/\(file)", create: testTree)
        } catch let error as SystemError {
            throw BerthError(.internal, "cgroup \(parent)/\(name): \(file) refused \"\(value)\" (\(error.errnoName))")
        }
    }

    private func read(_ name: String, _ file: String) -> String? {
        try? FileIO.read("\(path(name))/\(file)")
    }

    public func exists(_ name: String) -> Bool { FileIO.isDirectory(path(name)) }

    public func create(_ name: String, resources: Resources, devices: [DeviceRule]) throws {
        do {
            try FileIO.makeDirectory(path(name))
            // Before any process is in it: a container's first process is
            // cloned into the cgroup with its device program in place.
            try deviceFilter?.apply(DeviceRule.defaults + devices, toCgroup: path(name))
            try update(name, resources: resources)
        } catch {
            try? remove(name)
            throw error
        }
    }

    /// docker's cpu-shares (2…262144) on cgroup v2's cpu.weight (1…10000).
    static func weight(shares: Int) -> Int { 1 + ((shares - 2) * 9999) / 262_142 }

    /// blkio-weight (10…1000) on io.weight (1…10000).
    static func ioWeight(blkio: Int) -> Int { 1 + ((blkio - 10) * 9999) / 990 }

    public func update(_ name: String, resources r: Resources) throws {
        if let memory = r.memory {
            try write(String(memory.bytes), name, "memory.max")
            let swap: String
            if let memorySwap = r.memorySwap {
                swap = memorySwap.bytes == -1 ? "max" : String(memorySwap.bytes - memory.bytes)
            } else {
                swap = String(memory.bytes)  // docker: swap as large as memory
            }
            if testTree || read(name, "memory.swap.max") != nil {
                try write(swap, name, "memory.swap.max")
            }
        }
        if let cpus = r.cpus {
            try write("\(cpus.quotaMicroseconds(period: 100_000)) 100000", name, "cpu.max")
        }
        if let shares = r.cpuShares { try write(String(Self.weight(shares: shares)), name, "cpu.weight") }
        if let set = r.cpusetCPUs { try write(set.description, name, "cpuset.cpus") }
        if let set = r.cpusetMems { try write(set.description, name, "cpuset.mems") }
        if let pids = r.pidsLimit { try write(pids > 0 ? String(pids) : "max", name, "pids.max") }
        if let weight = r.ioWeight {
            guard testTree || read(name, "io.weight") != nil else {
                throw BerthError.invalid("blkio-weight \(weight): this host offers no io.weight (the io controller or its weight is missing)")
            }
            try write("default \(Self.ioWeight(blkio: weight))", name, "io.weight")
        }
    }

    public func placement(_ name: String) -> CgroupPlacement { CgroupPlacement(cloneInto: path(name)) }

    public var containerMounts: [CgroupMount] {
        [CgroupMount(fstype: "cgroup2", target: "/sys/fs/cgroup", data: "", readOnly: true)]
    }

    public func oomCounterFile(_ name: String) -> String { "\(path(name))/memory.events" }

    public func freeze(_ name: String) throws {
        try write("1", name, "cgroup.freeze")
        for attempt in 0..<500 {
            if try isFrozen(name) { return }
            Pause.milliseconds(min(10, 1 + attempt))
        }
        throw BerthError(.internal, "cgroup \(parent)/\(name) did not freeze within 5 s")
    }

    public func thaw(_ name: String) throws { try write("0", name, "cgroup.freeze") }

    public func isFrozen(_ name: String) throws -> Bool {
        text(name, "cgroup.events")?.value("frozen") == 1
    }

    /// Kills every process of the cgroup at once (cgroup.kill).
    public func kill(_ name: String) throws { try write("1", name, "cgroup.kill") }

    public func processes(_ name: String) throws -> [Int32] {
        var pids: [Int32] = []
        text(name, "cgroup.procs")?.forEachLine { fields in
            if let first = fields.first, let pid = KernelText.decimal(first) { pids.append(Int32(truncatingIfNeeded: pid)) }
        }
        return pids
    }

    private func text(_ name: String, _ file: String) -> KernelText? {
        KernelText("\(path(name))/\(file)")
    }

    public func stats(_ name: String) throws -> CgroupStats {
        guard exists(name) else { throw BerthError.notFound("cgroup", "\(parent)/\(name)") }
        var s = CgroupStats()
        let cpu = text(name, "cpu.stat")
        s.cpuUsageNanos = (cpu?.value("usage_usec") ?? 0) * 1000
        s.cpuUserNanos = (cpu?.value("user_usec") ?? 0) * 1000
        s.cpuSystemNanos = (cpu?.value("system_usec") ?? 0) * 1000
        s.cpuPeriods = cpu?.value("nr_periods") ?? 0
        s.cpuThrottledPeriods = cpu?.value("nr_throttled") ?? 0
        s.cpuThrottledNanos = (cpu?.value("throttled_usec") ?? 0) * 1000
        s.memoryUsage = text(name, "memory.current")?.number ?? 0
        let memory = text(name, "memory.stat")
        let inactiveFile = memory?.value("inactive_file") ?? 0
        s.memoryWorkingSet = s.memoryUsage > inactiveFile ? s.memoryUsage - inactiveFile : 0
        s.memoryRSS = memory?.value("anon") ?? 0
        s.memoryCache = memory?.value("file") ?? 0
        s.memoryLimit = text(name, "memory.max")?.number ?? 0
        s.memorySwap = text(name, "memory.swap.current")?.number ?? 0
        let events = text(name, "memory.events")
        s.oomEvents = events?.value("oom") ?? 0
        s.oomKills = events?.value("oom_kill") ?? 0
        s.pidsCurrent = text(name, "pids.current")?.number ?? 0
        s.pidsLimit = text(name, "pids.max")?.number ?? 0
        text(name, "io.stat")?.forEachLine { fields in
            for field in fields.dropFirst() {
                guard let eq = field.firstIndex(of: 61), let v = KernelText.decimal(field[(eq + 1)...]) else { continue }
                if KernelText.equals(field[..<eq], "rbytes") { s.ioReadBytes += v }
                if KernelText.equals(field[..<eq], "wbytes") { s.ioWriteBytes += v }
            }
        }
        return s
    }

    public func remove(_ name: String) throws {
        let dir = path(name)
        var delay = 1
        while true {
            do {
                try FileIO.removeDirectory(dir)
                return
            } catch let error as SystemError where error.code == .busy {
                if delay > 512 {
                    throw BerthError(.failedPrecondition, "cgroup \(parent)/\(name) still has processes; cannot remove it")
                }
                Pause.milliseconds(delay)
                delay *= 2
            } catch {
                if testTree {
                    for file in (try? FileIO.list(dir)) ?? [] { try? FileIO.removeFile("\(dir)/\(file)") }
                    try FileIO.removeDirectory(dir)
                    return
                }
                throw BerthError(.internal, "cannot remove cgroup \(parent)/\(name)", underlying: error)
            }
        }
    }
}
