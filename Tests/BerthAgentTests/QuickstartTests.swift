import BerthLinux
import BerthModel
import BerthTesting
import Foundation
import Testing

/// `scripts/quickstart` in a real terminal (tmux): its Ctrl-C does what it
/// promises.
@Suite("quickstart in a terminal (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct QuickstartTests {
    /// A tmux server of this test's own, on its own socket.
    struct Terminal {
        let socket: String

        @discardableResult
        func tmux(_ arguments: [String]) throws -> CommandResult {
            let r = try Processes.runBlocking("/usr/bin/tmux", ["-S", socket] + arguments, environment: ["PATH=/usr/bin:/bin"])
            return CommandResult(status: r.status, stdout: r.stdout, stderr: r.stderr)
        }

        /// What the pane shows, its scrollback included.
        var screen: String { (try? tmux(["capture-pane", "-p", "-J", "-t", "demo", "-S", "-500"]).stdout) ?? "" }

        /// Waits until the pane shows `text`; whether it did within `timeout`.
        func waitFor(_ text: String, timeout: Duration) async throws -> Bool {
            let deadline = ContinuousClock.now + timeout
            while !screen.contains(text) {
                if ContinuousClock.now > deadline { return false }
                try await Task.sleep(for: .milliseconds(200))
            }
            return true
        }

        /// Stops the server, by its PID.
        func stop() {
            if let pid = try? tmux(["display-message", "-p", "#{pid}"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines), let n = Int32(pid) {
                kill(n, SIGTERM)
            }
        }
    }

    @Test("Ctrl-C in the quickstart's terminal removes the demo container, then stops the agent: no container process, cgroup, namespace or agent is left")
    func ctrlC() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/tmux"), "tmux is not installed (scripts/install-deps installs it)")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-qs-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let parent = "berth-qs-\(UUID().uuidString.prefix(8).lowercased())"
        let (root, state, socket) = ("\(dir)/root", "\(dir)/state", "\(dir)/agent.sock")
        let terminal = Terminal(socket: "\(dir)/tmux.sock")
        defer {
            terminal.stop()
            AgentProcess.killShims(under: state)
            AgentProcess.removeCgroups(parent: parent)
            AgentProcess.removeNetworking(root: root, state: state)
            try? FileManager.default.removeItem(atPath: dir)
        }
        let bin = try BuildProducts.executable("berth").deletingLastPathComponent().path
        let agentArguments = [
            "--socket", socket, "--root", root, "--state", state, "--cgroup-parent", parent, "--bridge-subnet", try NetworkTests.freeSubnet(),
            "--dns", "127.0.0.1:9",
        ]
        let environment = [
            "PATH=\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")", "BERTH_HOST=unix://\(socket)", "BERTH_QUICKSTART_BIN=\(bin)",
            "BERTH_QUICKSTART_AGENT_ARGS='\(agentArguments.joined(separator: " "))'",
        ]
        let script = BuildProducts.root.appendingPathComponent("scripts/quickstart").path
        let command = "env \(environment.joined(separator: " ")) \(script); echo quickstart-exited-$?; sleep 600"
        try terminal.tmux(["new-session", "-d", "-s", "demo", "-x", "200", "-y", "50", "/bin/bash", "-c", command])

        let ready = try await terminal.waitFor("Press Ctrl-C to remove the container and stop the agent.", timeout: .seconds(180))
        try #require(ready, "the quickstart did not get going:\n\(terminal.screen)")
        let shown = terminal.screen
        let agentPID = try #require(
            shown.range(of: "on berth-agent (pid ").flatMap { Int32(shown[$0.upperBound...].prefix { $0.isNumber }) }, "\(shown)")
        let inspected = try await runCommand(
            try BuildProducts.executable("berth"), ["inspect", "--format", "record", "demo"], environment: ["BERTH_HOST": "unix://\(socket)", "PATH": "/usr/bin:/bin"])
        let demo = try #require(try BerthJSON.decoder().decode([Container].self, from: Data(inspected.stdout.utf8)).first, "\(inspected.stderr)")
        let containerPID = try #require(demo.status.pid)
        #expect(Processes.isRunning(containerPID) && Processes.isRunning(agentPID))
        let cgroups = ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []).map { "/sys/fs/cgroup/\($0)/\(parent)" }
            .filter { FileManager.default.fileExists(atPath: $0) }
        #expect(cgroups.contains { FileManager.default.fileExists(atPath: "\($0)/\(demo.id.rawValue)") }, "the demo has its cgroup")
        #expect(FileManager.default.fileExists(atPath: "\(state)/netns/\(demo.id.rawValue)"), "the demo has its network namespace")

        try terminal.tmux(["send-keys", "-t", "demo", "C-c"])
        let exited = try await terminal.waitFor("quickstart-exited-", timeout: .seconds(60))
        try #require(exited, "the quickstart did not end after Ctrl-C:\n\(terminal.screen)")
        let screen = terminal.screen
        #expect(screen.contains("quickstart-exited-130"), "\(screen.suffix(1500))")

        #expect(!Processes.isRunning(agentPID), "the agent still runs")
        #expect(!Processes.isRunning(containerPID), "the demo container's process still runs")
        let shims = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { pid in
            guard Int32(pid) != nil, let cmd = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8) else { return false }
            return cmd.contains("berth-shim") && cmd.contains(state)
        }
        #expect(shims.isEmpty, "shims left: \(shims)")
        for dir in cgroups {
            let children = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { child in
                var isDirectory: ObjCBool = false
                return FileManager.default.fileExists(atPath: "\(dir)/\(child)", isDirectory: &isDirectory) && isDirectory.boolValue
            }
            #expect(children.isEmpty, "cgroups left under \(dir): \(children)")
        }
        for namespaces in ["\(state)/netns", "\(state)/netns.standby"] {
            let left = (try? FileManager.default.contentsOfDirectory(atPath: namespaces)) ?? []
            #expect(left.isEmpty, "network namespaces left in \(namespaces): \(left)")
        }
        let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        #expect(!mounts.contains(state), "mounts left under \(state)")
    }
}
