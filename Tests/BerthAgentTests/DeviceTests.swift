import BerthLinux
import BerthModel
import BerthTesting
import Foundation
import Testing

/// Device nodes in containers, on the real kernel (root): on cgroup v1 the
/// `devices` controller holds a container to its rules, on cgroup v2 a BPF
/// program; the same tests run on both (v2 in a VM, below).
@Suite("containers: devices (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct DeviceTests {
    /// A node of a character device number no driver has here (a major
    /// /proc/devices does not list): opening it says ENXIO where the rules
    /// let it through, EPERM where they do not, and touches no hardware
    /// either way.
    static func unassignedNode(in directory: URL) throws -> (path: String, major: UInt32) {
        let devices = try String(contentsOfFile: "/proc/devices", encoding: .utf8)
        let character = devices.components(separatedBy: "Block devices:").first ?? devices
        let taken = Set(character.split(separator: "\n").compactMap { UInt32($0.split(separator: " ").first ?? "") })
        guard let major = (200...254).reversed().map(UInt32.init).first(where: { !taken.contains($0) }) else {
            throw HarnessError("no free character major in 200…254 here")
        }
        let path = directory.appendingPathComponent("unassigned").path
        do {
            try RootedDirectory(path: directory.path).makeNode("unassigned", kind: .characterDevice, permissions: 0o644, major: major, minor: 0)
            try FileIO.setPermissions(path, 0o644)
        } catch {
            throw HarnessError("mknod \(path): \(error)")
        }
        return (path, major)
    }

    @Test("a node made for the host's disk cannot be read or written; the standard nodes and terminals work")
    func defaults() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        // The disk the host's root is on, by its numbers, and the first SCSI disk.
        let root = try FileIO.statusFollowingLinks("/")
        let disk = "\(root.device >> 8 & 0xFFF):\(root.device & 0xFF)"
        for numbers in ["8 0", disk.replacingOccurrences(of: ":", with: " ")] {
            let r = try await host.berth(["run", "--rm", "busybox", "sh", "-c", "mknod /dev/xvda b \(numbers) && head -c 1 /dev/xvda | wc -c; echo > /dev/xvda; echo rc=$?"])
            #expect(r.stderr.contains("Operation not permitted"), "b \(numbers): \(r.stdout) \(r.stderr)")
            #expect(r.stdout.hasPrefix("0\nrc=1"), "b \(numbers): \(r.stdout) \(r.stderr)")
        }
        let free = try Self.unassignedNode(in: host.agent.directory)
        let unassigned = try await host.berth(["run", "--rm", "busybox", "sh", "-c", "mknod /dev/u c \(free.major) 0 && cat /dev/u"])
        #expect(unassigned.stderr.contains("Operation not permitted"), "\(unassigned.stderr)")
        let standard = try await host.berth([
            "run", "--rm", "busybox", "sh", "-c",
            "head -c 3 /dev/zero | wc -c; head -c 5 /dev/urandom | wc -c; echo x > /dev/null && echo null-ok; echo x > /dev/full; echo full-rc=$?",
        ])
        #expect(standard.stdout == "3\n5\nnull-ok\nfull-rc=1\n", "\(standard.stdout) \(standard.stderr)")
        #expect(standard.stderr.contains("No space left on device"), "\(standard.stderr)")
        // /dev/tty and the pty through a terminal (exec -t).
        #expect(try await host.berth(["run", "-d", "--name", "box", "busybox", "sleep", "1000"]).status == 0)
        let tty = try await host.berth(["exec", "-t", "box", "sh", "-c", "echo via-tty > /dev/tty && tty"])
        #expect(tty.status == 0, "\(tty.stderr)")
        #expect(tty.stdout.contains("via-tty") && tty.stdout.contains("/dev/pts/"), "\(tty.stdout)")
    }

    @Test("--device HOST:CONTAINER:PERMISSIONS makes the node and lets exactly that access through")
    func addedDevice() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let (node, major) = try Self.unassignedNode(in: host.agent.directory)
        // Allowed: the driver answers (ENXIO: no such device), not the rules.
        let read = try await host.berth(["run", "--rm", "--device", "\(node):/dev/extra/u:r", "busybox", "sh", "-c", "ls -l /dev/extra/u; cat /dev/extra/u; echo > /dev/extra/u"])
        // The node as the host has it: type, numbers, mode.
        #expect(read.stdout.hasPrefix("crw-r--r--") && read.stdout.contains("\(major),   0"), "\(read.stdout)")
        #expect(read.stderr.contains("No such device or address"), "\(read.stderr)")
        #expect(read.stderr.contains("Operation not permitted"), "writes are not allowed: \(read.stderr)")
        let all = try await host.berth(["run", "--rm", "--device", node, "busybox", "sh", "-c", "echo > \(node)"])
        #expect(all.stderr.contains("No such device or address"), "\(all.stderr)")
        #expect(!all.stderr.contains("Operation not permitted"), "\(all.stderr)")
        let missing = try await host.berth(["run", "--rm", "--device", "/dev/berth-no-such-device", "busybox", "true"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("device /dev/berth-no-such-device: no such file or directory"), "\(missing.stderr)")
        let notDevice = try await host.berth(["run", "--rm", "--device", "/etc/hostname", "busybox", "true"])
        #expect(notDevice.stderr.contains("not a device node"), "\(notDevice.stderr)")
        let bad = try await host.berth(["run", "--rm", "--device", "\(node):/dev/u:rwx", "busybox", "true"])
        #expect(bad.stderr.contains("expected any of r, w and m"), "\(bad.stderr)")
    }
}

/// The device tests on a pure cgroup v2 kernel: the suite above, run in a
/// virtual machine (`run-in-cgroup2-vm`, from the build machine's tools,
/// found through BERTH_CGROUP2_VM or beside the checkout) by this test
/// binary itself.
@Suite(
    "containers: devices on cgroup v2, in a VM (root)", .ownThreads, .enabled(if: Privileges.root && CgroupV2VM.tool != nil && !CgroupV2VM.inside),
    .timeLimit(.minutes(12)))
struct CgroupV2DeviceTests {
    @Test("on cgroup v2, the device program holds containers to the same rules as v1")
    func devicesOnV2() async throws {
        let output = try await CgroupV2VM.runSuite("DeviceTests")
        #expect(output.status == 0, "\(output.stdout.suffix(4000))\n\(output.stderr.suffix(2000))")
        // The suite ran in the VM, on v2, and its tests passed there.
        #expect(output.stdout.contains("cgroup2 inside"), "\(output.stdout.suffix(2000))")
        // Swift Testing reports on stderr.
        let report = output.stdout + output.stderr
        for name in [
            "a node made for the host's disk cannot be read or written; the standard nodes and terminals work",
            "--device HOST:CONTAINER:PERMISSIONS makes the node and lets exactly that access through",
        ] {
            #expect(report.contains("Test \"\(name)\" passed"), "\(report.suffix(4000))")
        }
    }
}

/// Runs this test binary inside a VM with a pure cgroup v2 hierarchy.
enum CgroupV2VM {
    /// The VM runner, if this machine has it.
    static var tool: String? {
        let candidates = [ProcessInfo.processInfo.environment["BERTH_CGROUP2_VM"]].compactMap { $0 } + [
            BuildProducts.root.deletingLastPathComponent().appendingPathComponent("shared/tools/run-in-cgroup2-vm").path,
            "/work/shared/tools/run-in-cgroup2-vm",
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// True in the VM's run of the tests.
    static var inside: Bool { ProcessInfo.processInfo.environment["BERTH_IN_CGROUP2_VM"] == "1" }

    /// Runs `suite` of this binary in the VM; its output and status.
    static func runSuite(_ suite: String) async throws -> Processes.Output {
        guard let tool else { throw HarnessError("no cgroup v2 VM runner here") }
        guard let binary = ProcessInfo.processInfo.arguments.first else { throw HarnessError("no test binary path") }
        let script = """
            set -e
            test -f /sys/fs/cgroup/cgroup.controllers && ! test -d /sys/fs/cgroup/memory && echo "cgroup2 inside"
            # The VM's /tmp is an overlay, which cannot hold a container's
            # writable layer (an overlay's upper directory): a tmpfs can.
            mkdir -p /run/berth-vm-tmp && mount -t tmpfs -o size=1500m tmpfs /run/berth-vm-tmp
            export TMPDIR=/run/berth-vm-tmp BERTH_IN_CGROUP2_VM=1
            exec \(binary) --testing-library swift-testing --filter '\\.\(suite)/'
            """
        var environment = ProcessInfo.processInfo.environment
        environment["CGVM_TIMEOUT"] = "600"
        environment["CGVM_ENV"] = "BERTH_IN_CGROUP2_VM"
        return try await Processes.run(
            "/bin/bash", [tool, script], environment: environment.map { "\($0)=\($1)" }, timeout: .seconds(660))
    }
}
