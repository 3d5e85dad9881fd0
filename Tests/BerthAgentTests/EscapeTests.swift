import BerthLinux
import BerthModel
import BerthTesting
import Foundation
import Testing

/// Every class of container escape that runc and crun have had, tried
/// against real containers on the real kernel (root). docs/security.md
/// lists them with the test that covers each.
@Suite("container escapes (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(10)))
struct EscapeTests {
    /// Strings that would show a host path of Berth's inside a container.
    static let hostMarkers = [BuildProducts.root.path, "/.build/", "berth-shim --"]

    // MARK: CVE-2019-5736: the runtime's own binary

    @Test("a command of /proc/self/exe runs no Berth binary: not as the container's command, with --init, or by exec")
    func procSelfExe() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        for extra in [[], ["--init"]] {
            let r = try await host.berth(["run", "--rm"] + extra + ["busybox", "/proc/self/exe", "--version"])
            #expect(r.status == 127, "\(extra): \(r.status) \(r.stdout) \(r.stderr)")
            #expect(r.stderr.contains("exec: \"/proc/self/exe\": no such file or directory"), "\(r.stderr)")
            #expect(!r.stderr.contains("usage") && !r.stdout.contains("usage"), "a Berth binary ran: \(r.stdout) \(r.stderr)")
        }
        #expect(try await host.berth(["run", "-d", "--name", "target", "--init", "busybox", "sleep", "1000"]).status == 0)
        let own = try await host.berth(["exec", "target", "/proc/self/exe", "--version"])
        #expect(own.status == 127, "\(own.status) \(own.stdout) \(own.stderr)")
        #expect(own.stderr.contains("exec: \"/proc/self/exe\": no such file or directory"), "\(own.stderr)")
        // PID 1, the init, cannot even be opened by the exec'd process.
        let pid1 = try await host.berth(["exec", "target", "/proc/1/exe", "--version"])
        #expect(pid1.status == 126, "\(pid1.status) \(pid1.stdout) \(pid1.stderr)")
        #expect(pid1.stderr.contains("exec: \"/proc/1/exe\": permission denied"), "\(pid1.stderr)")
        // From inside: PID 1 (the init) cannot be opened, so not executed.
        let inside = try await host.berth(["exec", "target", "sh", "-c", "/proc/1/exe -- echo ran; echo rc=$?"])
        #expect(!inside.stdout.contains("ran"), "\(inside.stdout)")
        #expect(inside.stderr.contains("Permission denied"), "\(inside.stderr)")
    }

    @Test("--init: PID 1 is berth-init from a sealed copy; no host path shows, and it reaps and forwards as before")
    func initIsNoHostFile() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let r = try await host.berth(["run", "--rm", "--init", "busybox", "sh", "-c", "ps -o pid,args; cat /proc/1/cmdline | tr '\\0' ' '; echo; grep -E '^(Name|NSpid)' /proc/1/status"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("    1 berth-init -- sh -c"), "\(r.stdout)")
        #expect(r.stdout.contains("Name:\tberth-init"), "\(r.stdout)")
        for marker in Self.hostMarkers { #expect(!r.stdout.contains(marker), "\(marker) in \(r.stdout)") }
        // With CAP_SYS_PTRACE the init's image can be opened: a sealed
        // copy in memory, which no write reaches.
        let traced = try await host.berth(["run", "--rm", "--init", "--cap-add", "SYS_PTRACE", "busybox", "sh", "-c", "readlink /proc/1/exe; echo x >> /proc/1/exe; echo rc=$?"])
        #expect(traced.stdout.contains("/memfd:berth-init (deleted)"), "\(traced.stdout)")
        #expect(traced.stdout.contains("rc=1"), "\(traced.stdout) \(traced.stderr)")
        // A signal reaches the process through the init; its exit is the container's.
        #expect(try await host.berth(["run", "-d", "--name", "reaped", "--init", "busybox", "sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done"]).status == 0)
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await host.berth(["stop", "reaped"]).status == 0)
        #expect(try await host.inspect("reaped").status.exitCode == 7)
        let missing = try await host.berth(["run", "--rm", "--init", "busybox", "nosuch"])
        #expect(missing.status == 127)
        #expect(missing.stderr.contains("executable file not found in $PATH"), "\(missing.stderr)")
    }

    /// Copies of berth-agent, berth-shim and berth-init in a scratch
    /// directory, and the identities of every host copy of them.
    struct ScratchBinaries {
        let directory: URL
        let identities: [String]

        init() throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-scratch-bin-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            var identities: [String] = []
            for name in ["berth-agent", "berth-shim", "berth-init"] {
                let built = try BuildProducts.executable(name)
                let copy = directory.appendingPathComponent(name)
                try ExecutableCopy.make(built, copy)
                for file in [built.path, copy.path] {
                    let status = try FileIO.statusFollowingLinks(file)
                    identities.append("\(status.device):\(status.inode)")
                }
            }
            self.identities = identities
        }

        var agent: String { directory.appendingPathComponent("berth-agent").path }
        func remove() { try? FileManager.default.removeItem(at: directory) }
    }

    @Test("a process racing to open /proc/PID/exe of every process exec'd into its container never reaches a host file", arguments: [false, true])
    func exeRace(ptrace: Bool) async throws {
        let binaries = try ScratchBinaries()
        defer { binaries.remove() }
        let host = try await ContainerHost(agentExecutable: binaries.agent)
        defer { host.cleanUp() }
        let racer = try TestImage.racer.get()
        let started = try await host.berth(
            ["run", "-d", "--name", "racer", "-v", "\(racer):/racer:ro"] + (ptrace ? ["--cap-add", "SYS_PTRACE"] : [])
                + ["busybox", "/racer", "300"] + binaries.identities)
        #expect(started.status == 0, "\(started.stderr)")
        // Processes enter its namespaces, one clone of the shim after
        // another, from four callers at once; then the racer stops.
        let execs = try await withThrowingTaskGroup(of: Int.self) { group in
            for caller in 0..<4 {
                group.addTask {
                    var count = 0
                    for _ in 0..<6 {
                        let r = try await host.berth(caller % 2 == 0 ? ["exec", "racer", "true"] : ["exec", "-w", "/tmp", "racer", "sh", "-c", "true"])
                        if r.status == 0 { count += 1 }
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(execs == 24, "\(execs) of 24 execs")
        let stop = try await host.berth(["exec", "racer", "touch", "/tmp/exe-racer-stop"])
        #expect(stop.status == 0, "\(stop.stderr)")
        let ended = try await host.waitFor("racer", timeout: .seconds(30)) { $0.status.state == .exited }
        #expect(ended.status.exitCode == 0)
        let log = try await host.berth(["logs", "racer"]).stdout
        let summary = try #require(log.split(separator: "\n").last { $0.hasPrefix("summary") }, "\(log)")
        #expect(summary.contains("forbidden=0"), "\(log)")
        #expect(summary.contains("written=0"), "\(log)")
        // What it could open is the container's own, or a sealed copy.
        for line in log.split(separator: "\n") where line.hasPrefix("opened") {
            let target = line.split(separator: " ")[1]
            #expect(target.hasPrefix("/memfd:berth-") || !target.contains("berth"), "\(line)")
            for marker in Self.hostMarkers { #expect(!line.contains(marker), "\(line)") }
        }
    }

    // MARK: CVE-2024-21626: descriptors and the working directory

    @Test("no descriptor of the runtime is open in a container's process, and -w /proc/self/fd/N never lands outside its root")
    func leakedDescriptors() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let listing = "for f in /proc/self/fd/*; do echo \"$f $(readlink $f)\"; done"
        let run = try await host.berth(["run", "--rm", "busybox", "sh", "-c", listing])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(try #require(Self.descriptors(run.stdout)).subtracting(["0", "1", "2"]).count <= 1, "\(run.stdout)")  // the glob's own
        #expect(try await host.berth(["run", "-d", "--name", "box", "busybox", "sleep", "1000"]).status == 0)
        let exec = try await host.berth(["exec", "box", "sh", "-c", listing])
        #expect(try #require(Self.descriptors(exec.stdout)).subtracting(["0", "1", "2"]).count <= 1, "\(exec.stdout)")
        for n in 3...64 {
            let r = try await host.berth(["run", "--rm", "-w", "/proc/self/fd/\(n)", "busybox", "sh", "-c", "pwd; ls /"])
            #expect(r.status != 0 || !r.stdout.contains("(unreachable)") && r.stdout.contains("bin\n"), "fd \(n): \(r.stdout)")
            #expect(!r.stdout.contains("cgroup.procs") && !r.stdout.contains("agent.db"), "fd \(n): \(r.stdout)")
            let e = try await host.berth(["exec", "-w", "/proc/self/fd/\(n)", "box", "sh", "-c", "pwd; ls /"])
            #expect(e.status != 0 || !e.stdout.contains("(unreachable)") && e.stdout.contains("bin\n"), "exec fd \(n): \(e.stdout)")
            #expect(!e.stdout.contains("cgroup.procs") && !e.stdout.contains("agent.db"), "exec fd \(n): \(e.stdout)")
        }
    }

    static func descriptors(_ listing: String) -> Set<String>? {
        let numbers = listing.split(separator: "\n").compactMap { $0.split(separator: " ").first?.split(separator: "/").last.map(String.init) }
        return numbers.isEmpty ? nil : Set(numbers)
    }

    // MARK: CVE-2025-31133, -52565, -52881: masked paths, /dev/null, /dev/console, ptmx

    @Test("paths the container swapped for symlinks or other nodes (/dev/null, /dev/ptmx) are never followed by a later exec")
    func swappedDeviceNodes() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["run", "-d", "--name", "box", "busybox", "sleep", "1000"]).status == 0)
        // /dev/null as a link to a descriptor the runtime might hold, to a
        // masked file, to the sysrq trigger.
        for target in ["/proc/self/fd/3", "/proc/timer_list", "/proc/sysrq-trigger", "/proc/1/root/etc/passwd"] {
            #expect(try await host.berth(["exec", "box", "sh", "-c", "rm -f /dev/null && ln -s \(target) /dev/null"]).status == 0)
            // The exec's stdin is the host's null device, not what the link leads to.
            let r = try await host.berth(["exec", "box", "sh", "-c", "readlink /proc/self/fd/0; stat -L -c %t:%T /proc/self/fd/0"])
            #expect(r.status == 0, "\(target): \(r.stderr)")
            #expect(r.stdout == "/dev/null\n1:3\n", "\(target): \(r.stdout)")
        }
        // A terminal is only ever the container's own ptmx.
        for target in ["/proc/sysrq-trigger", "/dev/null", "/proc/self/fd/1"] {
            #expect(try await host.berth(["exec", "-i", "box", "sh", "-c", "rm -f /dev/ptmx && ln -s \(target) /dev/ptmx"]).status == 0)
            let tty = try await host.berth(["exec", "-t", "box", "true"])
            #expect(tty.status != 0, "\(target): \(tty.stdout)")
            #expect(tty.stderr.contains("/dev/pts"), "\(target): \(tty.stderr)")
        }
        // A block device the container made, behind /dev/ptmx, is never opened.
        #expect(try await host.berth(["exec", "-i", "box", "sh", "-c", "rm -f /dev/ptmx && mknod /dev/ptmx b 8 0"]).status == 0)
        #expect(try await host.berth(["exec", "-t", "box", "true"]).status != 0)
        // Masked and read-only paths stay so whatever the container does.
        let writes = try await host.berth(["exec", "-i", "box", "sh", "-c", "echo h > /proc/sysrq-trigger; echo rc=$?; echo 1 > /proc/sys/kernel/sysrq; echo rc=$?; wc -c < /proc/timer_list"])
        #expect(writes.stdout.contains("rc=1\nrc=1\n0"), "\(writes.stdout) \(writes.stderr)")
    }

    @Test("an image whose /proc, /dev and /sys are symlinks out of its root gets its mounts inside its root, masked and read-only")
    func symlinkedMountPoints() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let rootfs = host.agent.directory.appendingPathComponent("hostile-rootfs")
        try FileManager.default.copyItem(atPath: try TestImage.rootfs(), toPath: rootfs.path)
        for name in ["proc", "dev", "sys"] {
            try? FileManager.default.removeItem(at: rootfs.appendingPathComponent(name))
            try FileManager.default.createDirectory(at: rootfs.appendingPathComponent("h" + name), withIntermediateDirectories: true)
        }
        // Absolute, climbing and plain ways out: followed on the host they
        // would reach the host's /sys and beyond; inside the root they end
        // at the image's own directories.
        try FileManager.default.createSymbolicLink(atPath: rootfs.appendingPathComponent("proc").path, withDestinationPath: "/../../../../../../hproc")
        try FileManager.default.createSymbolicLink(atPath: rootfs.appendingPathComponent("dev").path, withDestinationPath: "../../../../hdev")
        try FileManager.default.createSymbolicLink(atPath: rootfs.appendingPathComponent("sys").path, withDestinationPath: "/../hsys")
        #expect(try await host.berth(["image", "import", rootfs.path, "hostile"]).status == 0)
        let marker = "berth-host-marker-\(UUID().uuidString.prefix(8))"
        let markerPath = "/tmp/\(marker)"
        try "host".write(toFile: markerPath, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: markerPath) }
        let r = try await host.berth([
            "run", "--rm", "hostile", "sh", "-c",
            "wc -c < /proc/timer_list; echo h > /proc/sysrq-trigger; echo rc=$?; echo 1 > /proc/sys/vm/drop_caches; echo rc=$?; cat /tmp/\(marker); ls /proc/1/root/tmp; ls -d /hproc/1 /hdev/null /hsys/kernel",
        ])
        #expect(r.stdout.hasPrefix("0\nrc=1\nrc=1\n"), "\(r.status) \(r.stdout) \(r.stderr)")
        // The mounts are where the links lead inside the root.
        #expect(r.stdout.contains("/hdev/null\n/hproc/1\n/hsys/kernel"), "\(r.stdout)")
        #expect(!r.stdout.contains(marker), "\(r.stdout)")
        #expect((try? String(contentsOfFile: markerPath, encoding: .utf8)) == "host")
    }

    // MARK: CVE-2021-30465: mount targets swapped while another container starts

    @Test("a volume mount target swapped for a symlink by a container sharing the volume never mounts outside the new container's root")
    func swappedMountTarget() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let marker = "berth-host-marker-\(UUID().uuidString.prefix(8))"
        let markerPath = "/tmp/\(marker)"
        try "host".write(toFile: markerPath, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: markerPath) }
        // The swapper turns /data/sub into a link out and back, as fast as it can.
        #expect(try await host.berth([
            "run", "-d", "--name", "swapper", "-v", "shared:/data", "busybox", "sh", "-c",
            "while :; do rm -rf /data/sub; mkdir /data/sub; rm -rf /data/sub; ln -s /../../../../../../../../tmp /data/sub; rm -f /data/sub; ln -s ../../../../../../../tmp /data/sub; done",
        ]).status == 0)
        for round in 0..<25 {
            let r = try await host.berth(["run", "--rm", "-v", "shared:/data", "-v", "inner:/data/sub", "busybox", "sh", "-c", "cat /tmp/\(marker) 2>/dev/null; ls /data/sub /tmp 2>/dev/null"])
            #expect(!r.stdout.contains("host") && !r.stdout.contains(marker), "round \(round): \(r.stdout)")
        }
        _ = try await host.berth(["rm", "-f", "swapper"])
        // Nothing of the volumes was mounted on the host, and the host's file is intact.
        let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        #expect(!mounts.contains("\(host.agent.root)/volumes"), "\(mounts)")
        #expect((try? String(contentsOfFile: markerPath, encoding: .utf8)) == "host")
    }

    // MARK: The shim is out of sight

    @Test("the shim is not in the container's PID namespace: no /proc entry leads to its exe, root or cwd")
    func shimOutOfSight() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["run", "-d", "--name", "box", "--cap-add", "SYS_PTRACE", "busybox", "sleep", "1000"]).status == 0)
        let r = try await host.berth([
            "exec", "box", "sh", "-c",
            "for p in /proc/[0-9]*; do echo \"$p exe=$(readlink $p/exe) root=$(readlink $p/root) cwd=$(readlink $p/cwd) cmd=$(tr '\\0' ' ' < $p/cmdline)\"; done",
        ])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count >= 2, "\(r.stdout)")
        for line in lines {
            #expect(!line.contains("berth-shim") && !line.contains("memfd"), "\(line)")
            #expect(line.contains(" root=/ "), "\(line)")
            for marker in Self.hostMarkers { #expect(!line.contains(marker), "\(line)") }
        }
        // The shim itself runs from its sealed copy.
        let shims = try host.shims()
        #expect(!shims.isEmpty)
        for shim in shims { #expect(try FileIO.readLink("/proc/\(shim)/exe") == "/memfd:berth-shim (deleted)") }
    }
}
