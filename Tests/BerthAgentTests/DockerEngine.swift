import BerthLinux
import Foundation
import Glibc

/// Debian's docker engine (docker.io) as an outside judge: its own
/// containerd, data root, exec root, socket and cgroup parent, no bridge,
/// no iptables, no IP forwarding; the busybox test image imported. Removed
/// whole by `cleanUp`, whatever state it is in.
final class DockerEngine: @unchecked Sendable {
    static let dockerd = "/usr/sbin/dockerd"
    static let client = "/usr/bin/docker"
    static let containerdExecutable = "/usr/bin/containerd"

    let root: String
    let cgroupParent: String
    private var containerd: ChildProcess?
    private var daemon: ChildProcess?
    /// The shared run directories that did not exist before (docker and
    /// containerd make them whatever their roots are).
    private let madeRunDirectories: [String]

    var socket: String { "\(root)/docker.sock" }

    init() async throws {
        for tool in [Self.dockerd, Self.client, Self.containerdExecutable] where !FileManager.default.isExecutableFile(atPath: tool) {
            throw HarnessError("\(tool) is missing: scripts/install-deps installs docker.io, the engine these tests compare Berth with")
        }
        let tag = UUID().uuidString.prefix(6).lowercased()
        // Short: unix socket paths are limited to 108 bytes.
        root = "/tmp/bdj-\(tag)"
        cgroupParent = "/berth-test-docker-\(tag)"
        madeRunDirectories = ["/run/docker/plugins", "/run/docker", "/run/containerd/s", "/run/containerd"].filter { !FileManager.default.fileExists(atPath: $0) }
        do {
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try """
            version = 2
            root = "\(root)/containerd/root"
            state = "\(root)/containerd/state"
            disabled_plugins = ["io.containerd.grpc.v1.cri"]
            [grpc]
              address = "\(root)/containerd.sock"
            [plugins."io.containerd.internal.v1.opt"]
              path = "\(root)/containerd/opt"
            """.write(toFile: "\(root)/containerd.toml", atomically: true, encoding: .utf8)
            // Without it dockerd writes /etc/docker/key.json.
            try #"{"deprecated-key-path": "\#(root)/key.json"}"#.write(toFile: "\(root)/daemon.json", atomically: true, encoding: .utf8)
            containerd = try Self.start(Self.containerdExecutable, ["--config", "\(root)/containerd.toml", "--log-level", "warn"], log: "\(root)/containerd.log")
            try await Self.wait("containerd's socket") { FileManager.default.fileExists(atPath: "\(self.root)/containerd.sock") }
            daemon = try Self.start(
                Self.dockerd,
                [
                    "--config-file", "\(root)/daemon.json", "--containerd", "\(root)/containerd.sock", "--data-root", "\(root)/data", "--exec-root",
                    "\(root)/exec", "-H", "unix://\(socket)", "--pidfile", "\(root)/docker.pid", "--bridge", "none", "--iptables=false",
                    "--ip6tables=false", "--ip-forward=false", "--ip-masq=false", "--userland-proxy=false", "--cgroup-parent", cgroupParent,
                    "--shutdown-timeout", "1", "--log-level", "warn",
                ], log: "\(root)/dockerd.log")
            try await Self.wait("dockerd") { [self] in
                guard daemon?.isRunning == true else { throw HarnessError("dockerd exited: \(log)") }
                return (try? Processes.runBlocking(Self.client, ["-H", "unix://\(socket)", "version"], environment: []))?.status == 0
            }
            let imported = try await docker(["import", "--change", #"CMD ["sh"]"#, try TestImage.tar.get(), "busybox:latest"])
            guard imported.status == 0 else { throw HarnessError("docker import: \(imported.stderr)") }
        } catch {
            cleanUp()
            throw error
        }
    }

    var log: String { (try? String(contentsOfFile: "\(root)/dockerd.log", encoding: .utf8)) ?? "" }

    func docker(_ arguments: [String]) async throws -> CommandResult {
        try await runCommand(URL(fileURLWithPath: Self.client), ["-H", "unix://\(socket)"] + arguments, environment: ["PATH": "/usr/bin:/bin"])
    }

    private static func start(_ executable: String, _ arguments: [String], log: String) throws -> ChildProcess {
        let fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw HarnessError("cannot create \(log)") }
        defer { close(fd) }
        return ChildProcess(pid: try Processes.spawn(executable: executable, arguments: arguments, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], stdout: fd, stderr: fd))
    }

    private static func wait(_ what: String, _ ready: @escaping () throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while try !ready() {
            guard ContinuousClock.now < deadline else { throw HarnessError("\(what) did not become ready in 30 s") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Removes the containers (through dockerd while it runs, else by the
    /// PIDs containerd recorded), stops both daemons by PID, unmounts what
    /// they mounted under the root, removes their cgroups and run
    /// directories, and the root.
    func cleanUp() {
        let crashed = daemon?.isRunning != true
        if !crashed {
            let ids = (try? Processes.runBlocking(Self.client, ["-H", "unix://\(socket)", "ps", "-aq"], environment: []))?.stdout ?? ""
            let list = ids.split(separator: "\n").map(String.init)
            if !list.isEmpty { _ = try? Processes.runBlocking(Self.client, ["-H", "unix://\(socket)", "rm", "-f"] + list, environment: []) }
        }
        daemon?.terminate(grace: .seconds(10))
        // Containers left by a daemon that died: their init PIDs and their
        // shims (the inits' parents), each killed only once it is seen to
        // be this engine's (a recorded PID may since belong to anyone).
        let tasks = "\(root)/containerd/state/io.containerd.runtime.v2.task"
        for pidFile in crashed ? (FileManager.default.enumerator(atPath: tasks)?.allObjects as? [String] ?? []).filter({ $0.hasSuffix("/init.pid") }) : [] {
            guard let pid = Int32((try? String(contentsOfFile: "\(tasks)/\(pidFile)", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""),
                pid > 1, ((try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8)) ?? "").contains(cgroupParent + "/")
            else { continue }
            let parent = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)).flatMap { stat in
                stat.split(separator: ")").last?.split(separator: " ").dropFirst(1).first.flatMap { Int32($0) }
            }
            kill(pid, SIGKILL)
            if let parent, parent > 1,
                ((try? String(contentsOfFile: "/proc/\(parent)/cmdline", encoding: .utf8)) ?? "").contains("containerd-shim")
            {
                kill(parent, SIGKILL)
            }
        }
        containerd?.terminate(grace: .seconds(10))
        let mounts = ((try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? "").split(separator: "\n").compactMap { line in
            line.split(separator: " ").dropFirst(4).first.map(String.init)
        }.filter { $0 == root || $0.hasPrefix(root + "/") }
        for mount in mounts.sorted().reversed() { umount2(mount, Int32(MNT_DETACH)) }
        for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
            let parent = "/sys/fs/cgroup/\(hierarchy)\(cgroupParent)"
            for child in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where !child.contains(".") { rmdir("\(parent)/\(child)") }
            rmdir(parent)
        }
        try? FileManager.default.removeItem(atPath: root)
        for directory in madeRunDirectories { rmdir(directory) }
    }
}
