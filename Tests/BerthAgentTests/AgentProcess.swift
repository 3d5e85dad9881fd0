import BerthLinux
import BerthTransport
import Foundation
import GRPCCore
import Logging
import Testing

/// Where `swift build` put the package's executables.
enum BuildProducts {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func executable(_ name: String) throws -> URL {
        var candidates: [URL] = []
        if let first = ProcessInfo.processInfo.arguments.first {
            var dir = URL(fileURLWithPath: first).deletingLastPathComponent()
            // Inside an .xctest bundle on some layouts.
            for _ in 0..<4 {
                candidates.append(dir.appendingPathComponent(name))
                dir = dir.deletingLastPathComponent()
            }
        }
        candidates.append(root.appendingPathComponent(".build/debug/\(name)"))
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
            throw HarnessError("\(name) is not built; run `swift build` first (looked in \(candidates.map(\.path)))")
        }
        return found
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A real `berth-agent` process on temporary directories, a unix socket and
/// a loopback TCP port, stopped by PID (SIGTERM, then SIGKILL) when done.
final class AgentProcess: @unchecked Sendable {
    let directory: URL
    let socketPath: String
    let root: String
    let state: String
    private(set) var tcpPort: Int?
    let process: ChildProcess
    let logURL: URL
    /// This agent's own subtree in each cgroup hierarchy, removed at cleanup.
    let cgroupParent: String

    /// Starts the agent and waits until it answers on its socket.
    /// - Parameter launcher: a command the agent is started through, such as
    ///   `nsenter --net=…` (it must exec the agent, so the PID stays the agent's).
    /// - Parameter executable: another berth-agent than the build's (its
    ///   berth-shim and berth-init beside it).
    init(
        extraArguments: [String] = [], tcp: Bool = true, directory: URL? = nil, cgroupParent: String? = nil, launcher: [String] = [],
        executable: String? = nil
    ) async throws {
        let dir = directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("berth-agent-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        self.directory = dir
        self.socketPath = dir.appendingPathComponent("agent.sock").path
        self.root = dir.appendingPathComponent("root").path
        self.state = dir.appendingPathComponent("state").path
        self.logURL = dir.appendingPathComponent("agent-\(UUID().uuidString.prefix(4)).log")
        self.cgroupParent = cgroupParent ?? "berth-test-\(UUID().uuidString.prefix(8).lowercased())"
        let logFD = open(logURL.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard logFD >= 0 else { throw HarnessError("cannot create \(logURL.path)") }
        defer { close(logFD) }
        var arguments = ["--socket", socketPath, "--root", root, "--state", state, "--cgroup-parent", self.cgroupParent]
        if tcp { arguments += ["--listen", "127.0.0.1:0"] }
        // Tests that want the default network ask for it (with a subnet);
        // names the resolver does not know go nowhere but loopback.
        if !extraArguments.contains(where: { $0.hasPrefix("--bridge") }) { arguments += ["--bridge", "none"] }
        if !extraArguments.contains("--dns") { arguments += ["--dns", "127.0.0.1:9"] }
        let agent = try executable ?? BuildProducts.executable("berth-agent").path
        process = ChildProcess(
            pid: try Processes.spawn(
                executable: launcher.first ?? agent, arguments: launcher.dropFirst() + (launcher.isEmpty ? [] : [agent]) + arguments + extraArguments,
                environment: ProcessInfo.processInfo.environment.map { "\($0)=\($1)" }, stdout: logFD, stderr: logFD))
        try await waitUntilReady(tcp: tcp)
    }

    var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }
    var pid: Int32 { process.pid }

    private func waitUntilReady(tcp: Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if !process.isRunning {
                throw HarnessError("berth-agent exited with \(process.terminationStatus):\n\(log)")
            }
            let text = log
            let unixReady = text.contains("address=unix://\(socketPath)")
            if tcp, let range = text.range(of: "address=tcp://127.0.0.1:") {
                let digits = text[range.upperBound...].prefix { $0.isNumber }
                tcpPort = Int(digits)
            }
            if unixReady && (!tcp || tcpPort != nil) { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        stop()
        throw HarnessError("berth-agent did not start listening within 60 s:\n\(log)")
    }

    /// Sends SIGTERM and waits; SIGKILL after `grace`. Returns the exit status.
    @discardableResult
    func stop(grace: Duration = .seconds(10)) -> Int32 {
        process.terminate(grace: grace)
        return process.terminationStatus
    }

    /// Removes every container (killing shims by their PID if the agent is
    /// gone), stops the agent, removes its cgroup subtree and its directory.
    /// The environment of a command line aimed at this agent: this
    /// process's, with `extra`, and `BERTH_HOST` naming the agent's socket.
    func cliEnvironment(_ extra: [String: String] = [:]) -> [String: String] {
        var env = ProcessInfo.processInfo.environment.merging(extra) { $1 }
        env["BERTH_HOST"] = "unix://\(socketPath)"
        return env
    }

    /// Runs `berth` (or `executable`, another build of it) against this agent.
    func berth(
        _ arguments: [String], environment: [String: String] = [:], executable: URL? = nil, timeout: Duration = .seconds(120)
    ) async throws -> CommandResult {
        try await runCommand(try executable ?? BuildProducts.executable("berth"), arguments, environment: cliEnvironment(environment), timeout: timeout)
    }

    func cleanUp() {
        if process.isRunning, let berth = try? BuildProducts.executable("berth").path {
            let host = ["BERTH_HOST=unix://\(socketPath)", "PATH=/usr/bin:/bin"]
            if let ids = try? Processes.runBlocking(berth, ["ps", "-aq", "--no-trunc"], environment: host, timeout: .seconds(30)) {
                let list = ids.stdout.split(separator: "\n").map(String.init)
                if !list.isEmpty { _ = try? Processes.runBlocking(berth, ["rm", "-f"] + list, environment: host, timeout: .seconds(60)) }
            }
            // Networks have bridges on the host: they go with the agent's records.
            if let ids = try? Processes.runBlocking(berth, ["network", "ls", "-q", "--no-trunc"], environment: host, timeout: .seconds(30)) {
                let list = ids.stdout.split(separator: "\n").map(String.init)
                if !list.isEmpty { _ = try? Processes.runBlocking(berth, ["network", "rm"] + list, environment: host, timeout: .seconds(60)) }
            }
        }
        stop()
        AgentProcess.killShims(under: state)
        AgentProcess.removeCgroups(parent: cgroupParent)
        removeNetworking()
        // Connections the agent let go before their first request are rare
        // and always worth seeing beside a failure.
        for line in log.split(separator: "\n")
        where line.contains("connection closed before its first request") || line.contains("closing the connection:") {
            FileHandle.standardError.write(Data("\(directory.lastPathComponent): \(line)\n".utf8))
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// The agent's node ID, from its root directory.
    var nodeID: String {
        get throws { try String(contentsOfFile: "\(root)/node-id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    /// Removes what the agent made on the host for networks and left there
    /// (the default network's bridge, containers' veths, its nftables
    /// table, namespace files): by the names its node ID gives them.
    func removeNetworking() { Self.removeNetworking(root: root, state: state) }

    /// The same for an agent with these directories, running or not.
    static func removeNetworking(root: String, state: String) {
        guard let text = try? String(contentsOfFile: "\(root)/node-id", encoding: .utf8) else { return }
        let id = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard id.count >= 8 else { return }
        let env = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
        for link in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/net")) ?? []
        where link.hasPrefix("v" + id.prefix(4)) || link.hasPrefix("s" + id.prefix(4)) || link.hasPrefix("br" + id.prefix(4)) {
            _ = try? Processes.runBlocking("/usr/sbin/ip", ["link", "delete", link], environment: env)
        }
        if let tables = try? Processes.runBlocking("/usr/sbin/nft", ["list", "tables"], environment: env), tables.stdout.contains("berth_\(id.prefix(8))") {
            _ = try? Processes.runBlocking("/usr/sbin/nft", ["delete", "table", "ip", "berth_\(id.prefix(8))"], environment: env)
        }
        for dir in ["\(state)/netns", "\(state)/netns.standby"] {
            for file in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
                umount2("\(dir)/\(file)", Int32(MNT_DETACH))
                unlink("\(dir)/\(file)")
            }
        }
    }

    /// Kills, by PID, any shim whose bundle lives under `state`, and its container.
    static func killShims(under state: String) {
        for pid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let n = Int32(pid), let cmd = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8) else { continue }
            if cmd.contains("berth-shim") && cmd.contains(state) { kill(n, SIGKILL) }
        }
    }

    /// Removes a test's cgroup subtree in every hierarchy (children first),
    /// killing by PID the processes still in it (a container whose shim was
    /// killed lives on).
    static func removeCgroups(parent: String) {
        let roots = ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []).map { "/sys/fs/cgroup/\($0)" }
        for root in roots + ["/sys/fs/cgroup"] {
            let dir = "\(root)/\(parent)"
            guard FileManager.default.fileExists(atPath: dir) else { continue }
            for child in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: "\(dir)/\(child)", isDirectory: &isDir), isDir.boolValue {
                    for file in ["cgroup.procs", "tasks"] {
                        let pids = (try? String(contentsOfFile: "\(dir)/\(child)/\(file)", encoding: .utf8)) ?? ""
                        for pid in pids.split(separator: "\n").compactMap({ Int32($0) }) where pid > 1 { kill(pid, SIGKILL) }
                    }
                    for _ in 0..<50 where rmdir("\(dir)/\(child)") != 0 { usleep(20_000) }
                }
            }
            for _ in 0..<250 where rmdir(dir) != 0 && errno != ENOENT { usleep(20_000) }
        }
    }

    /// Resident memory in bytes, from /proc.
    var residentBytes: Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kib = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } ?? 0
            return kib * 1024
        }
        return 0
    }

    /// Runs `body` with a gRPC client on the unix socket or on TCP.
    func withClient<R: Sendable>(tcp: Bool = false, _ body: @Sendable (GRPCClient<NGHTTP2ClientTransport>) async throws -> R) async throws -> R {
        let address: TransportAddress = tcp ? .tcp(host: "127.0.0.1", port: tcpPort ?? 0) : .unix(path: socketPath)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return try await withGRPCClient(transport: NGHTTP2ClientTransport(config: .init(address: address), logger: logger)) {
            try await body($0)
        }
    }
}

/// Runs a command and collects its output.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a command to completion without holding a Swift concurrency thread.
func runCommand(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil, timeout: Duration = .seconds(120)) async throws -> CommandResult {
    let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0)=\($1)" }
    let output = try await Processes.run(executable.path, arguments, environment: env, timeout: timeout)
    return CommandResult(status: output.status, stdout: output.stdout, stderr: output.stderr)
}

/// A child process, known by its PID, reaped once.
final class ChildProcess: @unchecked Sendable {
    let pid: Int32
    private var status: Int32?
    private let lock = NSLock()

    init(pid: Int32) { self.pid = pid }

    var isRunning: Bool {
        lock.lock()
        defer { lock.unlock() }
        if status != nil { return false }
        var raw: Int32 = 0
        if waitpid(pid, &raw, WNOHANG) == pid {
            status = Processes.exitCode(waitStatus: raw)
            return false
        }
        return true
    }

    var terminationStatus: Int32 {
        _ = isRunning
        return lock.withLock { status ?? -1 }
    }

    func waitUntilExit() {
        while isRunning { usleep(5_000) }
    }

    /// Sends SIGTERM and waits; SIGKILL after `grace`. Whether it ended
    /// within the grace period (or had ended already).
    @discardableResult
    func terminate(grace: Duration) -> Bool {
        guard isRunning else { return true }
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + grace
        while isRunning && ContinuousClock.now < deadline { usleep(10_000) }
        guard isRunning else { return true }
        kill(pid, SIGKILL)
        waitUntilExit()
        return false
    }
}
