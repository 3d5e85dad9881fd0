import BerthAPI
import BerthLinux
import BerthModel
import BerthTesting
import Foundation
import GRPCCore
import SwiftProtobuf
import Synchronization
import Testing

/// `berth exec` and `Containers.Exec` on real containers.
@Suite("exec (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct ExecTests {
    /// A host with one running container, "box".
    static func host() async throws -> ContainerHost {
        let host = try await ContainerHost()
        let r = try await host.berth(["run", "-d", "--name", "box", "-h", "boxhost", "--cap-drop", "NET_RAW", "busybox", "sleep", "1000"])
        guard r.status == 0 else {
            host.cleanUp()
            throw HarnessError("run: \(r.stderr)")
        }
        return host
    }

    /// `berth` with stdin from a shell pipeline.
    static func piped(_ host: ContainerHost, _ input: String, _ arguments: [String]) async throws -> CommandResult {
        let berth = try BuildProducts.executable("berth").path
        let quoted = arguments.map { "'\($0)'" }.joined(separator: " ")
        return try await runCommand(URL(fileURLWithPath: "/bin/sh"), ["-c", "printf '\(input)' | \(berth) \(quoted)"], environment: host.agent.cliEnvironment())
    }

    @Test("exec runs in the container's namespaces and cgroup with its capabilities, seccomp filter and no_new_privs; -u, -w, -e; the exit code")
    func isolation() async throws {
        let host = try await Self.host()
        defer { host.cleanUp() }
        let script = """
            echo pid=$$; hostname; tr '\\0' ' ' < /proc/1/cmdline; echo
            for ns in ipc mnt net pid uts cgroup; do [ "$(readlink /proc/self/ns/$ns)" = "$(readlink /proc/1/ns/$ns)" ] && echo same-$ns; done
            [ "$(cat /proc/self/cgroup)" = "$(cat /proc/1/cgroup)" ] && echo same-cgroups
            for f in CapBnd CapEff CapPrm NoNewPrivs Seccomp; do
              [ "$(grep "^$f:" /proc/self/status)" = "$(grep "^$f:" /proc/1/status)" ] && echo same-$f
            done
            grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status
            unshare -U true 2>/dev/null && echo unshare-allowed
            exit 3
            """
        let r = try await host.berth(["exec", "box", "sh", "-c", script])
        #expect(r.status == 3, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(lines.first != "pid=1" && lines.first?.hasPrefix("pid=") == true)
        #expect(lines.contains("boxhost"))
        #expect(lines.contains("sleep 1000"), "PID 1 is the container's process")
        for ns in ["ipc", "mnt", "net", "pid", "uts", "cgroup"] { #expect(lines.contains("same-\(ns)"), "\(ns) namespace: \(r.stdout)") }
        #expect(lines.contains("same-cgroups"))
        for field in ["CapBnd", "CapEff", "CapPrm", "NoNewPrivs", "Seccomp"] { #expect(lines.contains("same-\(field)"), "\(field): \(r.stdout)") }
        #expect(lines.contains("Seccomp:\t2") || lines.contains("Seccomp: 2") || r.stdout.contains("Seccomp:\t2"))
        #expect(!lines.contains("unshare-allowed"), "the default seccomp profile blocks unshare")

        let who = try await host.berth(["exec", "-u", "nobody", "-w", "/tmp", "-e", "GREETING=hi", "box", "sh", "-c", "id -u; pwd; echo $GREETING; echo $PATH"])
        #expect(who.stdout == "65534\n/tmp\nhi\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n", "\(who.stdout)\(who.stderr)")
    }

    @Test("-i sends stdin and its end; a TTY has the requested size, follows resizes and is the container's /dev/pts")
    func streams() async throws {
        let host = try await Self.host()
        defer { host.cleanUp() }
        let cat = try await Self.piped(host, "one\\ntwo\\n", ["exec", "-i", "box", "sh", "-c", "cat; echo done >&2"])
        #expect(cat.status == 0 && cat.stdout == "one\ntwo\n" && cat.stderr == "done\n", "\(cat)")

        // A shell on a terminal: its size, then a resize, then its exit.
        let output = Mutex("")
        let (outgoing, send) = AsyncStream<Berth_Agent_V1_ExecRequest>.makeStream()
        let code = try await host.agent.withClient { client in
            try await Berth_Agent_V1_Containers.Client(wrapping: client).exec(requestProducer: { writer in
                try await writer.write(.with {
                    $0.start = .with {
                        $0.container = "box"
                        $0.command = ["sh"]
                        $0.tty = true
                        $0.attachStdin = true
                        $0.ttyRows = 30
                        $0.ttyColumns = 100
                    }
                })
                for await message in outgoing { try await writer.write(message) }
            }) { response in
                var code: Int32 = -1
                var sentResize = false
                send.yield(.with { $0.stdin = Data("stty size\n".utf8) })
                for try await message in response.messages {
                    switch message.response {
                    case .stdout(let bytes):
                        let text = output.withLock { $0 += String(decoding: bytes, as: UTF8.self); return $0 }
                        if text.contains("30 100") && !sentResize {
                            sentResize = true
                            send.yield(.with { $0.resize = .with { $0.rows = 50; $0.columns = 132 } })
                            send.yield(.with { $0.stdin = Data("stty size; tty; exit 4\n".utf8) })
                        }
                    case .exitCode(let exit): code = exit
                    default: break
                    }
                }
                send.finish()
                return code
            }
        }
        let text = output.withLock { $0 }
        #expect(code == 4, "\(text)")
        #expect(text.contains("30 100\r\n"), "a terminal writes CRLF: \(text)")
        #expect(text.contains("50 132"), "\(text)")
        #expect(text.contains("/dev/pts/"), "\(text)")
    }

    @Test("exec errors: a missing program (127), one that cannot run (126), a paused or stopped container, an unknown one; a client that leaves ends its process")
    func errors() async throws {
        let host = try await Self.host()
        defer { host.cleanUp() }
        let missing = try await host.berth(["exec", "box", "nosuch"])
        #expect(missing.status == 127 && missing.stderr.contains("exec: \"nosuch\": executable file not found in $PATH"), "\(missing.stderr)")
        let notRunnable = try await host.berth(["exec", "box", "/etc/passwd"])
        #expect(notRunnable.status == 126 && notRunnable.stderr.contains("permission denied"), "\(notRunnable.stderr)")
        #expect(try await host.berth(["exec", "box"]).status != 0)
        let unknown = try await host.berth(["exec", "nosuch", "true"])
        #expect(unknown.status == 1 && unknown.stderr.contains("nosuch"), "\(unknown.stderr)")

        // A client that goes away (killed): its process is killed.
        let env = host.agent.cliEnvironment()
        let client = ChildProcess(
            pid: try Processes.spawn(
                executable: try BuildProducts.executable("berth").path, arguments: ["exec", "box", "sleep", "300"],
                environment: env.map { "\($0)=\($1)" }))
        defer {
            if client.isRunning { kill(client.pid, SIGKILL) }
            client.waitUntilExit()
        }
        func sleepers() async throws -> Int {
            try await host.berth(["exec", "box", "ps", "-o", "args"]).stdout.split(separator: "\n").filter { $0.hasPrefix("sleep 300") }.count
        }
        var seen = 0
        for _ in 0..<100 where seen == 0 {
            seen = try await sleepers()
            if seen == 0 { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(seen == 1, "the exec'd sleep runs")
        kill(client.pid, SIGKILL)
        client.waitUntilExit()
        for _ in 0..<100 where seen > 0 {
            seen = try await sleepers()
            if seen > 0 { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(seen == 0, "the process ended with its client")
        let seenEvents = SeenEvents()
        try await host.agent.watchEvents(from: 0, into: seenEvents) { events in
            events.contains { $0.action == "exec_die" && $0.attributes["command"] == "sleep 300" }
        }
        #expect(seenEvents.all.last?.attributes["exitCode"] == "137", "killed: 128 + SIGKILL")

        #expect(try await host.berth(["pause", "box"]).status == 0)
        let paused = try await host.berth(["exec", "box", "true"])
        #expect(paused.status == 1 && paused.stderr.contains("is paused"), "\(paused.stderr)")
        #expect(try await host.berth(["unpause", "box"]).status == 0)
        #expect(try await host.berth(["stop", "-t", "1", "box"]).status == 0)
        let stopped = try await host.berth(["exec", "box", "true"])
        #expect(stopped.status == 1 && stopped.stderr.contains("is not running"), "\(stopped.stderr)")
    }

    @Test("a process exec'd into a container whose main process exits dies with it, is reported, and the container exits")
    func outlivedByExec() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let started = try await host.berth(["run", "-d", "--name", "ends", "busybox", "sh", "-c", "until [ -e /tmp/go ]; do sleep 0.05; done"])
        #expect(started.status == 0, "\(started.stderr)")
        let client = ChildProcess(
            pid: try Processes.spawn(
                executable: try BuildProducts.executable("berth").path, arguments: ["exec", "ends", "sleep", "300"],
                environment: host.agent.cliEnvironment().map { "\($0)=\($1)" }))
        defer {
            if client.isRunning { kill(client.pid, SIGKILL) }
            client.waitUntilExit()
        }
        var running = false
        for _ in 0..<100 where !running {
            running = try await host.berth(["exec", "ends", "ps", "-o", "args"]).stdout.contains("sleep 300")
            if !running { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(running, "the exec'd sleep runs")
        // PID 1 exits; the kernel kills the exec'd sleep, whose parent (the
        // shim) must reap it before PID 1 can be reaped.
        _ = try await host.berth(["exec", "ends", "touch", "/tmp/go"])
        let ended = try await host.waitFor("ends", timeout: .seconds(20)) { $0.status.state == .exited }
        #expect(ended.status.state == .exited && ended.status.exitCode == 0, "\(ended.status)")
        let deadline = ContinuousClock.now + .seconds(20)
        while client.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(client.terminationStatus == 137, "the exec's client ends with its process, killed")
    }

    @Test("exec_start and exec_die events, with the command and the exit code")
    func events() async throws {
        let host = try await Self.host()
        defer { host.cleanUp() }
        #expect(try await host.berth(["exec", "box", "sh", "-c", "exit 5"]).status == 5)
        let seen = SeenEvents()
        try await host.agent.watchEvents(from: 0, into: seen) { events in events.contains { $0.action == "exec_die" } }
        let exec = seen.all.filter { $0.action.hasPrefix("exec_") }
        #expect(exec.map(\.action) == ["exec_start", "exec_die"])
        #expect(exec.last?.attributes["exitCode"] == "5")
        #expect(exec.last?.attributes["command"] == "sh -c exit 5")
        #expect(exec.first?.attributes["execID"] == exec.last?.attributes["execID"])
    }
}
