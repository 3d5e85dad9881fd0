import BerthCgroups
import BerthModel
import Foundation
import Synchronization
import Testing

/// The v2 driver on a temporary tree laid out like the kernel's: the files
/// it writes are checked, and the files it reads carry the kernel's formats.
@Suite("cgroup v2 driver on a temporary tree")
final class CgroupV2DriverTests {
    let root: URL

    /// Each test has its own tree, removed with it.
    deinit { try? FileManager.default.removeItem(at: root) }

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("berth-cg2-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        try "cpuset cpu io memory hugetlb pids rdma misc\n".write(to: root.appendingPathComponent("cgroup.controllers"), atomically: true, encoding: .utf8)
        try "cpuset cpu io memory pids\n".write(to: root.appendingPathComponent("cgroup.subtree_control"), atomically: true, encoding: .utf8)
    }

    func file(_ path: String) throws -> String {
        try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)
    }

    func put(_ text: String, _ path: String) throws {
        try text.write(to: root.appendingPathComponent(path), atomically: true, encoding: .utf8)
    }

    @Test("limits land in the v2 files with the kernel's syntax")
    func limits() throws {
        let driver = try CgroupV2Driver(root: root.path, parent: "berth", testTree: true)
        #expect(try file("berth/cgroup.subtree_control") == "+cpuset +cpu +io +memory +pids")
        let resources = Resources(
            memory: .mebibytes(64), memorySwap: .mebibytes(96), cpus: try CPUQuantity(parsing: "0.5"), cpuShares: 512,
            cpusetCPUs: CPUSet([0]), cpusetMems: CPUSet([0]), pidsLimit: 20, ioWeight: 500)
        try driver.create("c1", resources: resources)
        #expect(try file("berth/c1/memory.max") == "67108864")
        #expect(try file("berth/c1/memory.swap.max") == "33554432")
        #expect(try file("berth/c1/cpu.max") == "50000 100000")
        #expect(try file("berth/c1/cpu.weight") == "20")
        #expect(try file("berth/c1/cpuset.cpus") == "0")
        #expect(try file("berth/c1/pids.max") == "20")
        #expect(try file("berth/c1/io.weight") == "default 4950")
        #expect(driver.placement("c1") == CgroupPlacement(cloneInto: root.path + "/berth/c1"))
        #expect(driver.oomCounterFile("c1") == root.path + "/berth/c1/memory.events")

        // Unlimited swap, no pids limit.
        try driver.update("c1", resources: Resources(memory: .mebibytes(32), memorySwap: ByteSize(bytes: -1), pidsLimit: 0))
        #expect(try file("berth/c1/memory.swap.max") == "max")
        #expect(try file("berth/c1/pids.max") == "max")
        try driver.remove("c1")
        #expect(!driver.exists("c1"))
    }

    @Test("cpu-shares and blkio-weight map onto v2's ranges at both ends")
    func weights() {
        #expect(CgroupV2DriverTestsAccess.weight(2) == 1)
        #expect(CgroupV2DriverTestsAccess.weight(262_144) == 10000)
        #expect(CgroupV2DriverTestsAccess.weight(1024) == 39)
    }

    @Test("stats are read from the kernel's formats")
    func stats() throws {
        let driver = try CgroupV2Driver(root: root.path, parent: "berth", testTree: true)
        try driver.create("c2", resources: Resources(memory: .mebibytes(64)))
        try put("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 40\nnr_throttled 12\nthrottled_usec 800000\n", "berth/c2/cpu.stat")
        try put("10485760\n", "berth/c2/memory.current")
        try put("anon 6291456\nfile 4194304\nkernel 8192\ninactive_file 3145728\nactive_file 1048576\n", "berth/c2/memory.stat")
        try put("67108864\n", "berth/c2/memory.max")
        try put("low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n", "berth/c2/memory.events")
        try put("4\n", "berth/c2/pids.current")
        try put("max\n", "berth/c2/pids.max")
        try put("8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:0 rbytes=100 wbytes=0 rios=1 wios=0\n", "berth/c2/io.stat")
        let s = try driver.stats("c2")
        #expect(s.cpuUsageNanos == 2_500_000_000)
        #expect(s.cpuThrottledPeriods == 12 && s.cpuPeriods == 40)
        #expect(s.cpuThrottledNanos == 800_000_000)
        #expect(s.memoryUsage == 10_485_760)
        #expect(s.memoryWorkingSet == 10_485_760 - 3_145_728)
        #expect(s.memoryRSS == 6_291_456 && s.memoryCache == 4_194_304)
        #expect(s.memoryLimit == 67_108_864)
        #expect(s.oomEvents == 2 && s.oomKills == 1)
        #expect(s.pidsCurrent == 4 && s.pidsLimit == 0)
        #expect(s.ioReadBytes == 4196 && s.ioWriteBytes == 8192)
        try driver.remove("c2")
    }

    @Test("pause waits until the kernel reports the cgroup frozen")
    func freeze() throws {
        let driver = try CgroupV2Driver(root: root.path, parent: "berth", testTree: true)
        try driver.create("c3", resources: Resources())
        try put("populated 1\nfrozen 1\n", "berth/c3/cgroup.events")
        try driver.freeze("c3")
        #expect(try file("berth/c3/cgroup.freeze") == "1")
        try driver.thaw("c3")
        #expect(try file("berth/c3/cgroup.freeze") == "0")
        try driver.remove("c3")
    }

    @Test("a root without the needed controllers is refused, and nothing is written to it")
    func missingControllers() throws {
        try put("cpuset io\n", "cgroup.subtree_control")
        #expect(throws: BerthError.self) { try CgroupV2Driver(root: root.path, parent: "berth", testTree: true) }
        #expect(try file("cgroup.subtree_control") == "cpuset io\n")
        #expect(!FileManager.default.fileExists(atPath: root.appendingPathComponent("berth").path))
    }

    @Test("a container's cgroup is held to Docker's device rules and its --device rules, before any limit or process")
    func devices() throws {
        let spy = SpyDeviceFilter()
        let driver = try CgroupV2Driver(root: root.path, parent: "berth", testTree: true, deviceFilter: spy)
        let extra = DeviceRule(.block, major: 8, minor: 16, access: .read)
        try driver.create("d1", resources: Resources(memory: .mebibytes(64)), devices: [extra])
        try driver.create("d2", resources: Resources())
        let applied = spy.applied.withLock { $0 }
        #expect(applied.count == 2)
        #expect(applied.first?.rules == DeviceRule.defaults + [extra])
        #expect(applied.first?.path == root.appendingPathComponent("berth/d1").path)
        #expect(applied.last?.rules == DeviceRule.defaults)
    }
}

enum CgroupV2DriverTestsAccess {
    static func weight(_ shares: Int) -> Int { 1 + ((shares - 2) * 9999) / 262_142 }
}
