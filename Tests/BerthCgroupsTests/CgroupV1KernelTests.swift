import BerthCgroups
import BerthLinux
import BerthModel
import Foundation
import Testing

/// The v1 driver against this machine's real kernel (root only). Each test
/// works under its own parent cgroup and removes it, even when it fails.
@Suite("cgroup v1 driver on the real kernel (root)", .enabled(if: KernelCgroups.v1Available))
struct CgroupV1KernelTests {
    let parent = "berth-test-\(UUID().uuidString.prefix(8))"

    func withDriver(_ body: (CgroupV1Driver) throws -> Void) throws {
        let driver = try CgroupV1Driver(root: "/sys/fs/cgroup", parent: parent, mode: .hybrid)
        defer {
            driver.removeSpares(closing: true)
            for controller in driver.controllers {
                let dir = "/sys/fs/cgroup/\(controller)/\(parent)"
                for child in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where !child.contains(".") && child != "tasks" && child != "notify_on_release" && child != "release_agent" {
                    rmdir("\(dir)/\(child)")
                }
                rmdir(dir)
            }
        }
        try body(driver)
    }

    func read(_ path: String) throws -> String {
        try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("limits are applied to the kernel's files and read back")
    func limits() throws {
        try withDriver { driver in
            let resources = Resources(
                memory: .mebibytes(64), cpus: try CPUQuantity(parsing: "0.5"), cpuShares: 512, cpusetCPUs: CPUSet([0]),
                pidsLimit: 20)
            try driver.create("c1", resources: resources)
            let base = "/sys/fs/cgroup"
            #expect(try read("\(base)/memory/\(parent)/c1/memory.limit_in_bytes") == "67108864")
            #expect(try read("\(base)/memory/\(parent)/c1/memory.memsw.limit_in_bytes") == "134217728")
            #expect(try read("\(base)/cpu/\(parent)/c1/cpu.cfs_quota_us") == "50000")
            #expect(try read("\(base)/cpu/\(parent)/c1/cpu.shares") == "512")
            #expect(try read("\(base)/cpuset/\(parent)/c1/cpuset.cpus") == "0")
            #expect(try read("\(base)/pids/\(parent)/c1/pids.max") == "20")
            #expect(try read("\(base)/devices/\(parent)/c1/devices.list").contains("c 1:3 rwm"))
            // Lowering memory below the current swap limit and raising it above both work.
            try driver.update("c1", resources: Resources(memory: .mebibytes(256), memorySwap: .mebibytes(512)))
            #expect(try read("\(base)/memory/\(parent)/c1/memory.limit_in_bytes") == "268435456")
            try driver.update("c1", resources: Resources(memory: .mebibytes(16), memorySwap: .mebibytes(16)))
            #expect(try read("\(base)/memory/\(parent)/c1/memory.memsw.limit_in_bytes") == "16777216")
            try driver.remove("c1")
            #expect(!driver.exists("c1"))
        }
    }

    @Test("a spare cgroup made ahead, with Docker's device rules, becomes the next container's; spares an agent left are removed")
    func spare() throws {
        try withDriver { driver in
            let base = "/sys/fs/cgroup"
            func spares(_ controller: String) -> [String] {
                ((try? FileManager.default.contentsOfDirectory(atPath: "\(base)/\(controller)/\(parent)")) ?? []).filter { $0.hasPrefix(".spare-") }
            }
            driver.prepareSpare()
            for _ in 0..<500 where !driver.controllers.allSatisfy({ spares($0).count == 1 }) { usleep(10_000) }
            let made = spares("devices")
            try #require(made.count == 1 && driver.controllers.allSatisfy { spares($0) == made }, "one spare in every hierarchy")
            #expect(try read("\(base)/devices/\(parent)/\(made[0])/devices.list").contains("c 1:3 rwm"))

            try driver.create("c4", resources: Resources(memory: .mebibytes(32)))
            #expect(driver.controllers.allSatisfy { spares($0).isEmpty }, "the spare was taken")
            #expect(try read("\(base)/memory/\(parent)/c4/memory.limit_in_bytes") == "33554432")
            #expect(try read("\(base)/devices/\(parent)/c4/devices.list").contains("c 1:3 rwm"))
            #expect(!(try read("\(base)/devices/\(parent)/c4/devices.list")).contains("a *:* rwm"))

            // Left by an agent killed while it made one: in some hierarchies only.
            for controller in ["memory", "pids"] { mkdir("\(base)/\(controller)/\(parent)/.spare-left", 0o755) }
            driver.removeSpares(closing: true)
            #expect(driver.controllers.allSatisfy { spares($0).isEmpty })
            driver.prepareSpare()
            usleep(200_000)
            #expect(driver.controllers.allSatisfy { spares($0).isEmpty }, "no spare once closed")
            try driver.remove("c4")
            #expect(!driver.exists("c4"))
        }
    }

    @Test("an impossible limit is refused by name and nothing is left behind")
    func refused() throws {
        try withDriver { driver in
            #expect(throws: BerthError.self) {
                try driver.create("c2", resources: Resources(cpusetCPUs: CPUSet([63])))
            }
            #expect(!driver.exists("c2"))
            #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cpuset/\(parent)/c2"))
        }
    }

    @Test("a process joins, is frozen and thawed, shows in stats, and the cgroup is removed after it exits")
    func processLifecycle() throws {
        try withDriver { driver in
            try driver.create("c3", resources: Resources(memory: .mebibytes(32), pidsLimit: 5))
            let sleeper = try Processes.spawn(executable: "/bin/sleep", arguments: ["30"], environment: [])
            var reaped = false
            defer {
                if !reaped {
                    kill(sleeper, SIGKILL)
                    var status: Int32 = 0
                    waitpid(sleeper, &status, 0)
                }
            }
            for file in driver.placement("c3").selfJoinTasks {
                #expect(file.hasSuffix("/c3/tasks"))
                try String(sleeper).write(toFile: file, atomically: false, encoding: .utf8)
            }
            #expect(try driver.processes("c3") == [sleeper])
            try driver.freeze("c3")
            #expect(try driver.isFrozen("c3"))
            try driver.thaw("c3")
            #expect(try !driver.isFrozen("c3"))
            let stats = try driver.stats("c3")
            #expect(stats.pidsCurrent == 1)
            #expect(stats.pidsLimit == 5)
            #expect(stats.memoryLimit == 32 << 20)
            kill(sleeper, SIGKILL)
            var status: Int32 = 0
            waitpid(sleeper, &status, 0)
            reaped = true
            try driver.remove("c3")
            #expect(!driver.exists("c3"))
        }
    }
}

enum KernelCgroups {
    static var v1Available: Bool {
        getuid() == 0 && FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    }
}
