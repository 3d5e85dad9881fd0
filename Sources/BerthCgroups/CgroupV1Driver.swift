public import BerthModel
import BerthLinux

/// Cgroup v1: one hierarchy per controller (`memory`, `cpu`, `cpuacct`,
/// `cpuset`, `pids`, `freezer`, `blkio`, `devices`), each holding
/// `<parent>/<name>`. Used on v1 and hybrid hosts.
public struct CgroupV1Driver: CgroupDriver {
    public let mode: CgroupMode
    public let root: String
    public let parent: String
    /// Controllers whose hierarchy is mounted under the root.
    public let controllers: [String]
    private let testTree: Bool
    private let spare = MadeAhead<String>(open: true)

    static let known = ["memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "blkio", "devices"]
    /// Without `devices` a container could open any device node it makes
    /// (CAP_MKNOD is in Docker's default set): the host's disks among them.
    static let required = ["memory", "cpu", "cpuacct", "pids", "freezer", "devices"]

    /// - Parameters:
    ///   - root: where the hierarchies are mounted (`/sys/fs/cgroup`).
    ///   - parent: Berth's subtree in each hierarchy.
    ///   - testTree: the root is a plain directory standing in for cgroupfs:
    ///     interface files are created as they are written.
    /// - Throws: `BerthError.unavailable` when a required controller is not mounted.
    public init(root: String, parent: String, mode: CgroupMode = .v1, testTree: Bool = false) throws {
        self.root = root
        self.parent = parent
        self.mode = mode
        self.testTree = testTree
        self.controllers = Self.known.filter { FileIO.isDirectory("\(root)/\($0)") }
        let missing = Self.required.filter { !controllers.contains($0) }
        guard missing.isEmpty else {
            throw BerthError(.unavailable, "cgroup v1 controllers not mounted under \(root): \(missing.joined(separator: ", "))")
        }
        for controller in controllers {
            do {
                try FileIO.makeDirectory("\(root)/\(controller)/\(parent)")
            } catch {
                throw BerthError(.unavailable, "cannot create Berth's cgroup in the \(controller) hierarchy", underlying: error)
            }
        }
        if controllers.contains("cpuset") {
            // A new cpuset is empty; Berth's own subtree inherits the root's sets.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let mine = "\(root)/cpuset/\(parent)/\(file)"
                if ((try? FileIO.read(mine)) ?? "").trimmingWhitespace().isEmpty {
                    let inherited = ((try? FileIO.read("\(root)/cpuset/\(file)")) ?? "").trimmingWhitespace()
                    try? FileIO.write(inherited, to: mine, create: testTree)
                }
            }
        }
    }

    func path(_ controller: String, _ name: String) -> String { "\(root)/\(controller)/\(parent)/\(name)" }

    private func write(_ value: String, _ controller: String, _ name: String, _ file: String) throws {
        do {
            try FileIO.write(value, to: "\(path(controller, name))/\(file)", create: testTree)
        } catch let error as SystemError {
            throw BerthError(.internal, "cgroup \(controller)/\(parent)/\(name): \(file) refused \"\(value)\" (\(error.errnoName))")
        }
    }

    /// Why the kernel refused a lower memory limit, when it is that the
    /// container uses more than it (and the kernel could not reclaim it).
    private func usageAbove(_ memory: ByteSize, swap: Int64?, _ name: String) -> BerthError? {
        let usage = read("memory", name, "memory.usage_in_bytes").flatMap { Int64($0.trimmingWhitespace()) } ?? 0
        let total = read("memory", name, "memory.memsw.usage_in_bytes").flatMap { Int64($0.trimmingWhitespace()) } ?? 0
        if usage > memory.bytes {
            return BerthError(
                .failedPrecondition,
                "memory limit \(memory): the container uses \(ByteSize(bytes: usage).humanReadable) now, more than the new limit, and the kernel could not reclaim enough; free memory in the container or choose a higher limit (nothing was changed)")
        }
        if let swap, swap >= 0, total > swap {
            return BerthError(
                .failedPrecondition,
                "memory-swap \(ByteSize(bytes: swap).humanReadable): the container uses \(ByteSize(bytes: total).humanReadable) of memory and swap now, more than the new limit; free memory in the container or choose a higher limit (nothing was changed)")
        }
        return nil
    }

    private func read(_ controller: String, _ name: String, _ file: String) -> String? {
        try? FileIO.read("\(path(controller, name))/\(file)")
    }

    public func exists(_ name: String) -> Bool {
        FileIO.isDirectory(path("memory", name))
    }

    public func create(_ name: String, resources: Resources, devices: [DeviceRule]) throws {
        do {
            if !adoptSpare(as: name) { try make(name) }
            // The spare, and `make`, have the defaults; --device adds to them.
            for rule in devices { try write(rule.description, "devices", name, "devices.allow") }
            if controllers.contains("cpuset") {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let inherited = ((try? FileIO.read("\(root)/cpuset/\(parent)/\(file)")) ?? "").trimmingWhitespace()
                    try write(inherited, "cpuset", name, file)
                }
            }
            try update(name, resources: resources)
        } catch {
            try? remove(name)
            throw error
        }
    }

    /// The cgroup in every hierarchy, with what every container's has
    /// whatever its limits: Docker's device rules.
    private func make(_ name: String) throws {
        for controller in controllers { try FileIO.makeDirectory(path(controller, name)) }
        try restrictDevices(name)
    }

    // MARK: The spare

    // The spare: a cgroup made ahead of need (`make`): a create renames it
    // to the container's name in each hierarchy instead of making it and
    // writing its 13 device rules, half a millisecond of a container's
    // start. v1 cgroups can be renamed within their parent; v2's cannot, and
    // its driver keeps none.

    static let sparePrefix = ".spare-"

    public func prepareSpare() {
        spare.prepare(
            make: { [self] in
                let name = Self.sparePrefix + String(UInt64.random(in: 1...UInt64.max), radix: 16)
                do {
                    try make(name)
                    return name
                } catch {
                    try? remove(name)
                    return nil
                }
            },
            discard: { [self] in try? remove($0) })
    }

    /// Renames the spare, if there is one, to `name` in every hierarchy.
    /// Whatever goes wrong, the spare is gone and false says to make the
    /// cgroup afresh.
    private func adoptSpare(as name: String) -> Bool {
        guard let ready = spare.take() else { return false }
        var moved: [String] = []
        for controller in controllers {
            do {
                try FileIO.rename(path(controller, ready), to: path(controller, name))
                moved.append(controller)
            } catch {
                for back in moved { try? FileIO.rename(path(back, name), to: path(back, ready)) }
                try? remove(ready)
                return false
            }
        }
        return true
    }

    public func removeSpares(closing: Bool) {
        // The ready one is among the leftovers removed below.
        _ = closing ? spare.close() : spare.take()
        let leftovers = Set(controllers.flatMap { controller in
            ((try? FileIO.list("\(root)/\(controller)/\(parent)")) ?? []).filter { $0.hasPrefix(Self.sparePrefix) }
        })
        for name in leftovers { try? remove(name) }
    }

    /// Docker's default device rules (`DeviceRule.defaults`): nothing but
    /// the standard nodes and terminals may be read or written; any may be
    /// created (mknod), none used unless listed.
    private func restrictDevices(_ name: String) throws {
        try write("a", "devices", name, "devices.deny")
        for rule in DeviceRule.defaults { try write(rule.description, "devices", name, "devices.allow") }
    }

    public func update(_ name: String, resources r: Resources) throws {
        if let memory = r.memory {
            let swap: Int64
            if let memorySwap = r.memorySwap { swap = memorySwap.bytes } else { swap = memory.bytes * 2 }
            let hasMemsw = testTree || read("memory", name, "memory.memsw.limit_in_bytes") != nil
            if hasMemsw {
                let before = (read("memory", name, "memory.limit_in_bytes"), read("memory", name, "memory.memsw.limit_in_bytes"))
                // The kernel keeps limit <= memsw: order the two writes so that holds at every step.
                do {
                    try write(String(memory.bytes), "memory", name, "memory.limit_in_bytes")
                    try write(String(swap), "memory", name, "memory.memsw.limit_in_bytes")
                } catch {
                    do {
                        try write(String(swap), "memory", name, "memory.memsw.limit_in_bytes")
                        try write(String(memory.bytes), "memory", name, "memory.limit_in_bytes")
                    } catch {
                        // Refused: the limits stay as they were (memsw first when it grows back).
                        if let limit = before.0, let memsw = before.1 {
                            try? write(memsw.trimmingWhitespace(), "memory", name, "memory.memsw.limit_in_bytes")
                            try? write(limit.trimmingWhitespace(), "memory", name, "memory.limit_in_bytes")
                        }
                        throw usageAbove(memory, swap: swap, name) ?? error
                    }
                }
            } else {
                if let memorySwap = r.memorySwap, memorySwap.bytes != -1, memorySwap != memory {
                    throw BerthError.invalid("memory-swap \(memorySwap): this host has no swap accounting (memory.memsw.* is missing)")
                }
                do {
                    try write(String(memory.bytes), "memory", name, "memory.limit_in_bytes")
                } catch {
                    throw usageAbove(memory, swap: nil, name) ?? error
                }
            }
        } else if let swap = r.memorySwap, swap.bytes == -1, read("memory", name, "memory.memsw.limit_in_bytes") != nil {
            try write("-1", "memory", name, "memory.memsw.limit_in_bytes")
        }
        if let cpus = r.cpus {
            try write("100000", "cpu", name, "cpu.cfs_period_us")
            try write(String(cpus.quotaMicroseconds(period: 100_000)), "cpu", name, "cpu.cfs_quota_us")
        }
        if let shares = r.cpuShares { try write(String(shares), "cpu", name, "cpu.shares") }
        if r.cpusetCPUs != nil || r.cpusetMems != nil {
            guard controllers.contains("cpuset") else {
                throw BerthError.invalid("cpuset: the cpuset controller is not mounted on this host")
            }
            if let set = r.cpusetCPUs { try write(set.description, "cpuset", name, "cpuset.cpus") }
            if let set = r.cpusetMems { try write(set.description, "cpuset", name, "cpuset.mems") }
        }
        if let pids = r.pidsLimit {
            try write(pids > 0 ? String(pids) : "max", "pids", name, "pids.max")
        }
        if let weight = r.ioWeight {
            guard controllers.contains("blkio") else {
                throw BerthError.invalid("blkio-weight: the blkio controller is not mounted on this host")
            }
            if testTree || read("blkio", name, "blkio.weight") != nil {
                try write(String(weight), "blkio", name, "blkio.weight")
            } else if read("blkio", name, "blkio.bfq.weight") != nil {
                try write(String(weight), "blkio", name, "blkio.bfq.weight")
            } else {
                throw BerthError.invalid(
                    "blkio-weight \(weight): this host's I/O scheduler offers no weights (no blkio.weight or blkio.bfq.weight)")
            }
        }
    }

    public var containerMounts: [CgroupMount] {
        [CgroupMount(fstype: "tmpfs", target: "/sys/fs/cgroup", data: "mode=755", readOnly: false)]
            + controllers.map { CgroupMount(fstype: "cgroup", target: "/sys/fs/cgroup/\($0)", data: $0, readOnly: true) }
    }

    public func placement(_ name: String) -> CgroupPlacement {
        CgroupPlacement(selfJoinTasks: controllers.map { "\(path($0, name))/tasks" })
    }

    public func oomCounterFile(_ name: String) -> String { "\(path("memory", name))/memory.oom_control" }

    public func freeze(_ name: String) throws {
        try write("FROZEN", "freezer", name, "freezer.state")
        for attempt in 0..<500 {
            if try isFrozen(name) { return }
            Pause.milliseconds(min(10, 1 + attempt))
            if attempt % 50 == 49 { try write("FROZEN", "freezer", name, "freezer.state") }
        }
        throw BerthError(.internal, "cgroup \(parent)/\(name) did not freeze within 5 s")
    }

    public func thaw(_ name: String) throws {
        try write("THAWED", "freezer", name, "freezer.state")
    }

    public func isFrozen(_ name: String) throws -> Bool {
        (read("freezer", name, "freezer.state") ?? "").trimmingWhitespace() == "FROZEN"
    }

    public func processes(_ name: String) throws -> [Int32] {
        var pids: [Int32] = []
        text("pids", name, "cgroup.procs")?.forEachLine { fields in
            if let first = fields.first, let pid = KernelText.decimal(first) { pids.append(Int32(truncatingIfNeeded: pid)) }
        }
        return pids
    }

    private func text(_ controller: String, _ name: String, _ file: String) -> KernelText? {
        KernelText("\(path(controller, name))/\(file)")
    }

    public func stats(_ name: String) throws -> CgroupStats {
        guard exists(name) else { throw BerthError.notFound("cgroup", "\(parent)/\(name)") }
        var s = CgroupStats()
        s.cpuUsageNanos = text("cpuacct", name, "cpuacct.usage")?.number ?? 0
        let ticks = text("cpuacct", name, "cpuacct.stat")
        // cpuacct.stat counts USER_HZ (100 per second on Linux) ticks.
        s.cpuUserNanos = (ticks?.value("user") ?? 0) * 10_000_000
        s.cpuSystemNanos = (ticks?.value("system") ?? 0) * 10_000_000
        let cpu = text("cpu", name, "cpu.stat")
        s.cpuPeriods = cpu?.value("nr_periods") ?? 0
        s.cpuThrottledPeriods = cpu?.value("nr_throttled") ?? 0
        s.cpuThrottledNanos = cpu?.value("throttled_time") ?? 0
        s.memoryUsage = text("memory", name, "memory.usage_in_bytes")?.number ?? 0
        let memory = text("memory", name, "memory.stat")
        let inactiveFile = memory?.value("total_inactive_file") ?? memory?.value("inactive_file") ?? 0
        s.memoryWorkingSet = s.memoryUsage > inactiveFile ? s.memoryUsage - inactiveFile : 0
        s.memoryRSS = memory?.value("total_rss") ?? memory?.value("rss") ?? 0
        s.memoryCache = memory?.value("total_cache") ?? memory?.value("cache") ?? 0
        let limit = text("memory", name, "memory.limit_in_bytes")?.number ?? 0
        // The kernel reports "no limit" as a page-rounded LONG_MAX.
        s.memoryLimit = limit >= 0x7FFF_FFFF_FFFF_0000 ? 0 : limit
        if let memsw = text("memory", name, "memory.memsw.usage_in_bytes")?.number {
            s.memorySwap = memsw > s.memoryUsage ? memsw - s.memoryUsage : 0
        }
        s.oomKills = text("memory", name, "memory.oom_control")?.value("oom_kill") ?? 0
        s.oomEvents = s.oomKills
        s.pidsCurrent = text("pids", name, "pids.current")?.number ?? 0
        s.pidsLimit = text("pids", name, "pids.max")?.number ?? 0
        text("blkio", name, "blkio.throttle.io_service_bytes_recursive")?.forEachLine { f in
            guard f.count == 3, let v = KernelText.decimal(f[2]) else { return }
            if KernelText.equals(f[1], "Read") { s.ioReadBytes += v }
            if KernelText.equals(f[1], "Write") { s.ioWriteBytes += v }
        }
        return s
    }

    public func remove(_ name: String) throws {
        for controller in controllers {
            let dir = path(controller, name)
            var delay = 1
            while true {
                do {
                    try FileIO.removeDirectory(dir)
                    break
                } catch let error as SystemError where error.code == .noEntry {
                    break  // not made in this hierarchy, or removed already
                } catch let error as SystemError where error.code == .busy {
                    if delay > 512 {
                        throw BerthError(.failedPrecondition, "cgroup \(controller)/\(parent)/\(name) still has processes; cannot remove it")
                    }
                    Pause.milliseconds(delay)
                    delay *= 2
                } catch {
                    if testTree {
                        // Plain directories hold the stand-in interface files.
                        for file in (try? FileIO.list(dir)) ?? [] { try? FileIO.removeFile("\(dir)/\(file)") }
                        try FileIO.removeDirectory(dir)
                        break
                    }
                    throw BerthError(.internal, "cannot remove cgroup \(controller)/\(parent)/\(name)", underlying: error)
                }
            }
        }
    }
}
