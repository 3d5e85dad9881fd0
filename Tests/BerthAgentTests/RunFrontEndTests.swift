import BerthLinux
import BerthModel
import BerthTesting
import Foundation
import Glibc
import Testing

/// `berth` runs a foreground `run` on a local agent itself (C, one Run call)
/// and hands everything else to berth-cli. A copy of `berth` alone in a
/// directory cannot hand over: what it does, it did itself, and what it
/// hands over fails with "cannot run berth-cli".
@Suite("berth: the foreground run's front end (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct RunFrontEndTests {
    /// `berth` copied into a directory of its own, without berth-cli.
    final class Alone {
        let directory: URL
        var executable: URL { directory.appendingPathComponent("berth") }

        init() throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-alone-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try ExecutableCopy.make(try BuildProducts.executable("berth"), executable)
        }

        deinit { try? FileManager.default.removeItem(at: directory) }

        func run(_ host: ContainerHost, _ arguments: [String]) async throws -> CommandResult {
            try await host.berth(arguments, executable: executable, timeout: .seconds(60))
        }
    }

    /// The full command line itself.
    static func full(_ host: ContainerHost, _ arguments: [String]) async throws -> CommandResult {
        try await host.berth(arguments, executable: try BuildProducts.executable("berth-cli"), timeout: .seconds(60))
    }

    @Test("every option it takes makes the container berth-cli makes from the same arguments")
    func sameContainer() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let alone = try Alone()
        let cases: [[String]] = [
            ["busybox", "true"],
            [
                "-e", "A=1", "-e", "HOME", "-e", "BERTH_TEST_UNSET_VARIABLE", "--env", "B=x=y", "-w", "/tmp", "-u", "1000:1000", "-h", "box",
                "-l", "a=b", "-l", "flag", "--label=c=", "--read-only", "--init", "--restart", "on-failure", "--cap-drop", "NET_RAW",
                "--cap-add", "SYS_TIME", "busybox", "sh", "-c", "exit 0",
            ],
            [
                "-m", "64m", "--cpus", "0.5", "--pids-limit", "64", "-c", "512", "--network", "none", "--entrypoint", "/bin/sh",
                "busybox", "-c", "true",
            ],
            ["--memory=1G", "--cpus=1.25", "--pids-limit=100", "--cpu-shares=2", "--workdir=/work", "--user=nobody", "--restart=always", "busybox", "true"],
            [
                "--memory", "16777216", "--network", "frontnet", "--network-alias", "one", "--network-alias", "two", "--hostname", "h",
                "busybox", "echo", "-n", "--rm",
            ],
        ]
        #expect(try await host.berth(["network", "create", "frontnet"]).status == 0)
        for (index, arguments) in cases.enumerated() {
            let fast = try await alone.run(host, ["run", "--name", "fast\(index)"] + arguments)
            #expect(fast.status == 0, "\(arguments): \(fast)")
            let full = try await Self.full(host, ["run", "--name", "full\(index)"] + arguments)
            #expect(full.status == 0, "\(arguments): \(full)")
            #expect(fast.stdout == full.stdout)
            var made = try await host.inspect("fast\(index)").spec
            let expected = try await host.inspect("full\(index)").spec
            made.name = expected.name
            #expect(made == expected, "\(arguments)")
        }
    }

    @Test("what it does not take, or what the agent refuses, goes to berth-cli, and it makes nothing itself")
    func handsOver() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let alone = try Alone()
        #expect(try await host.berth(["create", "--name", "taken", "busybox", "true"]).status == 0)
        let cases: [[String]] = [
            ["ps"],
            ["run", "--help"],
            ["run", "-d", "busybox", "true"],
            ["run", "-it", "busybox", "sh"],
            ["run", "-m", "64x", "busybox", "true"],
            ["run", "-m", "0", "busybox", "true"],
            ["run", "--cpus", ".5", "busybox", "true"],
            ["run", "--pull", "never", "busybox", "true"],
            ["run", "--name", "a", "--name", "b", "busybox", "true"],
            ["run", "--restart", "on-failure:3", "busybox", "true"],
            ["run", "-eA=1", "busybox", "true"],
            ["run", "-H", "tcp://127.0.0.1:1", "busybox", "true"],
            ["run"],
            // Refused by the agent: nothing was made.
            ["run", "nosuchimage", "true"],
            ["run", "--name", "taken", "busybox", "true"],
            ["run", "--cap-add", "NOT_A_CAPABILITY", "busybox", "true"],
        ]
        for arguments in cases {
            let r = try await alone.run(host, arguments)
            #expect(r.status == 1 && r.stderr.contains("cannot run berth-cli"), "\(arguments): \(r)")
        }
        #expect(try await host.berth(["ps", "-aq"]).stdout.split(separator: "\n").count == 1, "only the container made first")
        // With berth-cli beside it, the same arguments get berth-cli's answers.
        let bad = try await host.berth(["run", "-m", "64x", "busybox", "true"])
        #expect(bad.status == 125 && bad.stderr.contains("memory limit \"64x\""), "\(bad)")
        let detached = try await host.berth(["run", "-d", "busybox", "true"])
        #expect(detached.status == 0 && detached.stdout.count == 65, "an ID: \(detached)")
        let taken = try await host.berth(["run", "--name", "taken", "busybox", "true"])
        #expect(taken.status != 0 && taken.stderr.contains("taken"), "\(taken)\nthe agent's log ends:\n\(host.agent.log.suffix(3000))")
    }

    @Test("output on its streams, the exit code, a failed start's code and message, nothing left behind")
    func outcome() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let alone = try Alone()
        let r = try await alone.run(host, ["run", "--rm", "busybox", "sh", "-c", "for i in 1 2 3; do echo out $i; done; echo err >&2; exit 3"])
        #expect(r.status == 3 && r.stdout == "out 1\nout 2\nout 3\n" && r.stderr == "err\n", "\(r)")
        let big = try await alone.run(host, ["run", "--rm", "busybox", "sh", "-c", "seq 1 50000"])
        #expect(big.status == 0 && big.stdout == (1...50_000).map { "\($0)\n" }.joined(), "all of a large output, in order")
        let missing = try await alone.run(host, ["run", "--rm", "busybox", "nosuchcommand"])
        #expect(missing.status == 127 && missing.stderr.contains("executable file not found"), "\(missing)")
        let denied = try await alone.run(host, ["run", "--rm", "busybox", "/etc/passwd"])
        #expect(denied.status == 126, "\(denied)")
        #expect(try await host.berth(["ps", "-aq"]).stdout.isEmpty, "every --rm container removed")
    }

    @Test("Ctrl-C and SIGTERM go to the running container, whose exit code it exits with")
    func forwardsSignals() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let alone = try Alone()
        let environment = host.agent.cliEnvironment()
        for (signal, code) in [(SIGINT, 42), (SIGTERM, 43)] {
            let name = "signalled\(code)"
            let cli = ChildProcess(
                pid: try Processes.spawn(
                    executable: alone.executable.path,
                    arguments: ["run", "--rm", "--name", name, "busybox", "sh", "-c", "trap 'exit 42' INT; trap 'exit 43' TERM; echo ready; while :; do sleep 0.05; done"],
                    environment: environment.map { "\($0.key)=\($0.value)" }, stdout: 2, stderr: 2))
            defer { cli.terminate(grace: .seconds(5)) }
            _ = try await host.waitFor(name) { $0.status.state == .running }
            // The trap is set once the shell has printed.
            var logged = ""
            for _ in 0..<100 where !logged.contains("ready") {
                logged = try await host.berth(["logs", name]).stdout
                try await Task.sleep(for: .milliseconds(20))
            }
            kill(cli.pid, signal)
            for _ in 0..<500 where cli.isRunning { try await Task.sleep(for: .milliseconds(20)) }
            #expect(!cli.isRunning && cli.terminationStatus == Int32(code), "exit \(cli.terminationStatus)")
        }
        #expect(try await host.berth(["ps", "-aq"]).stdout.isEmpty)
    }
}
