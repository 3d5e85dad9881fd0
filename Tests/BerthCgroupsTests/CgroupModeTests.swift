import BerthCgroups
import BerthModel
import Testing

@Suite("cgroup mode detection")
struct CgroupModeTests {
    static let v2 = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
    static let hybrid = """
        25 22 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
        26 25 0:24 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
        27 25 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
        28 25 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu

        """
    static let v1 = """
        25 22 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
        27 25 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
        28 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct

        """

    @Test("v1, v2 and hybrid are told apart")
    func modes() throws {
        #expect(try CgroupModeDetector.detect(mountInfo: Self.v2) == .v2)
        #expect(try CgroupModeDetector.detect(mountInfo: Self.hybrid) == .hybrid)
        #expect(try CgroupModeDetector.detect(mountInfo: Self.v1) == .v1)
        #expect(throws: BerthError.self) { try CgroupModeDetector.detect(mountInfo: "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n") }
    }
}
