import BerthAPI
import BerthLinux
import BerthModel
import BerthTesting
import Foundation
import GRPCCore
import SwiftProtobuf
import Testing

/// Container lifecycle on the real kernel (root): stop, pause, restart
/// policies, removal, live restore, bad input.
@Suite("containers: lifecycle (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct ContainerLifecycleTests {
    @Test("files written in the container vanish at rm; the image is untouched")
    func writableLayer() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["run", "--name", "writer", "busybox", "sh", "-c", "echo data > /written.txt; rm /etc/group"]).status == 0)
        let c = try await host.inspect("writer")
        let upper = "\(host.agent.root)/containers/\(c.id.rawValue)/upper"
        #expect(FileManager.default.fileExists(atPath: "\(upper)/written.txt"))
        #expect(try await host.berth(["rm", "writer"]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: upper))
        // rm moves the directory aside at once; its files are deleted in the
        // background, at the lowest priority (slow while every other suite
        // loads the machine).
        var trashed = ["?"]
        for _ in 0..<600 {
            trashed = try FileManager.default.contentsOfDirectory(atPath: "\(host.agent.root)/trash")
            if trashed.isEmpty { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(trashed.isEmpty, "the removed container's files were deleted")
        let fresh = try await host.berth(["run", "--rm", "busybox", "sh", "-c", "ls /written.txt; cat /etc/group | head -1"])
        #expect(fresh.stderr.contains("No such file"))
        #expect(fresh.stdout == "root:x:0:\n")
    }

    @Test("run --rm attached: output in order, the exit code, nothing left; a CLI killed while attached leaves the container running, removed once it exits")
    func runRemove() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let r = try await host.berth(["run", "--rm", "busybox", "sh", "-c", "for i in 1 2 3; do echo out $i; done; echo err >&2; exit 3"])
        #expect(r.status == 3 && r.stdout == "out 1\nout 2\nout 3\n" && r.stderr == "err\n", "\(r)")
        #expect(try await host.berth(["ps", "-aq"]).stdout.isEmpty, "removed once its output was read")

        let cli = ChildProcess(
            pid: try Processes.spawn(
                executable: try BuildProducts.executable("berth").path, arguments: ["run", "--rm", "--name", "orphan", "busybox", "sleep", "300"],
                environment: host.agent.cliEnvironment().map { "\($0.key)=\($0.value)" }, stdout: 2, stderr: 2))
        defer {
            kill(cli.pid, SIGKILL)
            cli.waitUntilExit()
        }
        _ = try await host.waitFor("orphan") { $0.status.state == .running }
        kill(cli.pid, SIGKILL)
        cli.waitUntilExit()
        let orphan = try await host.waitFor("orphan") { $0.spec.autoRemove }
        #expect(orphan.status.state == .running, "the caller's end does not stop it")
        #expect(try await host.berth(["kill", "orphan"]).status == 0)
        var left = "?"
        for _ in 0..<100 {
            left = try await host.berth(["ps", "-aq"]).stdout
            if left.isEmpty { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(left.isEmpty, "removed when it exited")
    }

    @Test("work made ahead waits at the lowest priority (the standby shim at nice 19, idle for the disk); a container runs at the usual ones")
    func standbyPriority() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        /// A process's nice value, from /proc.
        func nice(_ pid: Int32) -> String? {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return nil }
            return stat.split(separator: ")").last?.split(separator: " ").dropFirst(16).first.map(String.init)
        }
        for _ in 0..<2 {
            let r = try await host.berth(["run", "-d", "busybox", "sleep", "300"])
            #expect(r.status == 0, "\(r.stderr)")
            let pid = try #require(try await host.inspect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)).status.pid)
            #expect(nice(pid) == "0", "the container's nice value")
            let io = try await runCommand(URL(fileURLWithPath: "/usr/bin/ionice"), ["-p", "\(pid)"])
            #expect(io.stdout == "none: prio 0\n", "the container's I/O priority: \(io.stdout)")
        }
        // The standby made after a start is made by the agent's background
        // work (the shims of the running containers were standbys too).
        let standby = try #require(try await host.waitingStandbyShims().first, "a standby shim waits")
        #expect(nice(standby) == "19", "the standby shim's nice value")
        let io = try await runCommand(URL(fileURLWithPath: "/usr/bin/ionice"), ["-p", "\(standby)"])
        #expect(io.stdout == "idle\n", "the standby shim's I/O priority: \(io.stdout)")
    }

    @Test("a standby shim killed before it is used: the next container starts anyway and the agent lives on")
    func standbyShimGone() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["run", "--rm", "busybox", "true"]).status == 0)
        var killed = 0
        for pid in try await host.waitingStandbyShims() where kill(pid, SIGKILL) == 0 { killed += 1 }
        #expect(killed == 1, "one standby shim was waiting")
        try await Task.sleep(for: .milliseconds(100))
        let r = try await host.berth(["run", "--rm", "busybox", "echo", "still here"])
        #expect(r.status == 0 && r.stdout == "still here\n", "\(r.stderr)")
        #expect(kill(host.agent.pid, 0) == 0, "the agent is alive")
    }

    @Test("stop sends SIGTERM, which a trap in the container sees")
    func stop() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["run", "-d", "--name", "polite", "busybox", "sh", "-c", "trap 'echo got TERM; exit 3' TERM; while :; do sleep 0.1; done"]).status == 0)
        _ = try await host.waitFor("polite") { $0.status.state == .running }
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await host.berth(["stop", "polite"]).status == 0)
        let polite = try await host.inspect("polite")
        #expect(polite.status.exitCode == 3)
        #expect(polite.status.stoppedByUser)
        #expect(try await host.berth(["logs", "polite"]).stdout.contains("got TERM"))

        // The grace period and the SIGKILL after it: SupervisorTests.stopEscalates.
    }

    @Test("--init reaps and forwards: the process is PID 2 and a stop ends it with SIGTERM's code")
    func initProcess() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let r = try await host.berth(["run", "--rm", "--init", "busybox", "sh", "-c", "echo $$; (sleep 0.1 &) ; sleep 0.3; ps -o stat,comm | grep -c Z || true"])
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.first == "2")
        #expect(lines.last == "0", "no zombies left: \(r.stdout)")
        #expect(try await host.berth(["run", "-d", "--init", "--name", "inited", "busybox", "sleep", "300"]).status == 0)
        _ = try await host.waitFor("inited") { $0.status.state == .running }
        #expect(try await host.berth(["stop", "-t", "5", "inited"]).status == 0)
        #expect(try await host.inspect("inited").status.exitCode == 143)
    }

    @Test("pause freezes every process; unpause thaws them")
    func pause() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["run", "-d", "--name", "busy", "busybox", "sh", "-c", "while :; do :; done"]).status == 0)
        let c = try await host.waitFor("busy") { $0.status.state == .running }
        func usage() throws -> Double { try host.cpuSeconds(c) }
        #expect(try await host.berth(["pause", "busy"]).status == 0)
        #expect(try await host.inspect("busy").status.state == .paused)
        #expect(try host.isFrozen(c))
        let frozen = try usage()
        try await Task.sleep(for: .milliseconds(500))
        #expect(try usage() == frozen, "no CPU time while frozen")
        // Illegal: pausing twice, unpausing a running container.
        let again = try await host.berth(["pause", "busy"])
        #expect(again.status == 1 && again.stderr.contains("only a running container can be paused"))
        #expect(try await host.berth(["unpause", "busy"]).status == 0)
        try await Task.sleep(for: .milliseconds(300))
        #expect(try usage() > frozen)
        let illegal = try await host.berth(["unpause", "busy"])
        #expect(illegal.status == 1)
        #expect(illegal.stderr.contains("is not paused"))
        #expect(try await host.berth(["rm", "-f", "busy"]).status == 0)
    }

    /// The policy's decisions (counts, backoff, a stop during the delay or
    /// during a restart's launch) are SupervisorTests', on a fake runtime
    /// and a manual clock; this is the real restart through a shim.
    @Test("restart policy on-failure:1: a real process that fails is started again once, then the container stays exited")
    func restartPolicy() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["run", "-d", "--name", "flaky", "--restart", "on-failure:1", "busybox", "sh", "-c", "echo ran; exit 1"]).status == 0)
        let c = try await host.waitFor("flaky", timeout: .seconds(30)) { $0.status.restartCount == 1 && $0.status.state == .exited }
        #expect(c.status.exitCode == 1)
        #expect(try await host.berth(["logs", "flaky"]).stdout == "ran\nran\n", "two runs, one log")
    }

    @Test("live limit changes with update reach the cgroup")
    func update() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["run", "-d", "--name", "u", "-m", "64m", "busybox", "sleep", "300"]).status == 0)
        let c = try await host.waitFor("u") { $0.status.state == .running }
        #expect(try await host.berth(["update", "-m", "128m", "--memory-swap", "256m", "--pids-limit", "50", "u"]).status == 0)
        #expect(try host.memoryLimit(c) == "134217728")
        #expect(try String(contentsOfFile: host.cgroupFile(c, "pids", "pids.max"), encoding: .utf8) == "50\n")
        #expect(try await host.inspect("u").spec.resources.memory == .mebibytes(128))
        let bad = try await host.berth(["update", "-m", "1k", "u"])
        #expect(bad.status == 1 && bad.stderr.contains("minimum memory limit"))
        #expect(try await host.inspect("u").spec.resources.memory == .mebibytes(128))

        // Below what the container uses now (40 MB in its tmpfs, no swap to
        // move it to): refused in words that say so, and nothing changes.
        // (cgroup v1's refusal: v2's kernel takes the limit and OOM-kills.)
        guard !ContainerHost.unifiedHierarchy else { return }
        #expect(
            try await host.berth([
                "run", "-d", "--name", "full", "-m", "64m", "--memory-swap", "64m", "busybox", "sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 && sleep 300",
            ]).status == 0)
        let full = try await host.waitFor("full") { $0.status.state == .running }
        try await Task.sleep(for: .milliseconds(500))
        let below = try await host.berth(["update", "-m", "20m", "--memory-swap", "20m", "full"])
        #expect(below.status == 1 && below.stderr.contains("more than the new limit") && below.stderr.contains("nothing was changed"), "\(below)")
        #expect(try host.memoryLimit(full) == String(64 << 20))
        #expect(try await host.inspect("full").spec.resources.memory == .mebibytes(64))
        #expect(try await host.inspect("full").status.state == .running)
    }

    @Test("bad input gets a clear error and leaves nothing behind")
    func badInput() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let cases: [([String], String)] = [
            (["run", "--pull", "never", "nosuchimage"], "no such image: nosuchimage"),
            (["run", "-m", "64x", "busybox", "true"], "memory limit \"64x\": expected a size like 64m or 1g"),
            (["run", "--cpus", "64", "busybox", "true"], "cpus 64: the host has only"),
            (["run", "--restart", "sometimes", "busybox", "true"], "restart policy \"sometimes\""),
            (["run", "-v", "/no/such/dir:/x", "busybox", "true"], "bind source path does not exist: /no/such/dir"),
        ]
        for (args, message) in cases {
            let r = try await host.berth(args)
            #expect(r.status == 125, "run's own failures exit 125, as docker's: \(args)")
            #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
        let missing = try await host.berth(["run", "--name", "nocmd", "busybox", "foo"])
        #expect(missing.status == 127)
        #expect(missing.stderr.contains("exec: \"foo\": executable file not found in $PATH"))
        #expect(try await host.inspect("nocmd").status.reason == .startFailed)
        #expect(try await host.berth(["run", "-d", "--name", "dup", "busybox", "sleep", "300"]).status == 0)
        let duplicate = try await host.berth(["run", "--name", "dup", "busybox", "true"])
        #expect(duplicate.status == 125 && duplicate.stderr.contains("container name \"dup\" is already in use"))
        let running = try await host.berth(["rm", "dup"])
        #expect(running.status == 1 && running.stderr.contains("stop it first or use --force"))
        #expect(try await host.berth(["rm", "-f", "dup", "nocmd"]).status == 0)
        // Nothing left: no containers, no cgroups, no bundles.
        #expect(try await host.berth(["ps", "-aq"]).stdout.isEmpty)
        let cgroups = (try? FileManager.default.contentsOfDirectory(atPath: host.cgroupParentDir("memory"))) ?? []
        #expect(!cgroups.contains { $0.count == 64 }, "no container cgroup remains: \(cgroups)")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: "\(host.agent.state)/containers")) ?? []).isEmpty)
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: "\(host.agent.root)/containers")) ?? []).isEmpty)
    }

    @Test("live restore: kill -9 of the agent leaves containers running; the new agent re-adopts them and records exits it missed")
    func liveRestore() async throws {
        let first = try await ContainerHost()
        defer { first.cleanUp() }
        #expect(try await first.berth(["run", "-d", "--name", "long", "busybox", "sleep", "300"]).status == 0)
        #expect(try await first.berth(["run", "-d", "--name", "short", "busybox", "sh", "-c", "sleep 2; exit 4"]).status == 0)
        let long = try await first.waitFor("long") { $0.status.state == .running }
        let pid = try #require(long.status.pid)
        kill(first.agent.pid, SIGKILL)
        first.agent.process.waitUntilExit()
        // The container lives on without the agent.
        #expect(kill(pid, 0) == 0)
        try await Task.sleep(for: .seconds(3))
        let second = try await AgentProcess(tcp: false, directory: first.agent.directory, cgroupParent: first.agent.cgroupParent)
        defer { second.cleanUp() }
        let ps = try await second.berth(["inspect", "--format", "record", "long", "short"])
        let records = try BerthJSON.decoder().decode([Container].self, from: Data(ps.stdout.utf8))
        #expect(records[0].status.state == .running && records[0].status.pid == pid)
        #expect(records[1].status.state == .exited && records[1].status.exitCode == 4)
        // The re-adopted container is fully controllable.
        #expect(try await second.berth(["stop", "-t", "1", "long"]).status == 0)
        #expect(kill(pid, 0) != 0)
        #expect(try await second.berth(["rm", "long", "short"]).status == 0)
    }

    @Test("stop -t 0 of a --rm container succeeds every time, also when the container is removed before stop answers")
    func stopAutoRemoved() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        // Stops in parallel batches: the removal at the exit and the stop's
        // answer race, more so while the agent is busy.
        var failures: [String] = []
        for batch in 0..<6 {
            let names = (0..<12).map { "rm\(batch)-\($0)" }
            for name in names {
                let run = try await host.berth(["run", "-d", "--rm", "--name", name, "busybox", "sleep", "300"])
                try #require(run.status == 0, "\(run.stderr)")
            }
            let results = try await withThrowingTaskGroup(of: (String, CommandResult).self) { group in
                for name in names { group.addTask { (name, try await host.berth(["stop", "-t", "0", name])) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            for (name, stop) in results where stop.status != 0 || stop.stdout != "\(name)\n" {
                failures.append("\(name): status \(stop.status), \(stop.stdout)\(stop.stderr)")
            }
        }
        #expect(failures.isEmpty, "\(failures.count) of 72 stops failed: \(failures.prefix(5))")
        var left = "?"
        for _ in 0..<200 {
            left = try await host.berth(["ps", "-aq"]).stdout
            if left.isEmpty { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(left.isEmpty, "every stopped --rm container is removed")
    }

    @Test("stop and kill of a paused container thaw it to deliver the signal, whatever the signal, as docker does; stop does not wait its whole timeout")
    func signalPaused() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        // SIGQUIT: nginx's stop signal, one a frozen process took only at SIGKILL.
        let script = "trap 'echo got QUIT; exit 3' QUIT; trap 'echo got USR1' USR1; echo up; while :; do sleep 0.1; done"
        #expect(try await host.berth(["run", "-d", "--name", "frozen", "--stop-signal", "SIGQUIT", "busybox", "sh", "-c", script]).status == 0)
        _ = try await host.waitFor("frozen") { $0.status.state == .running }
        for _ in 0..<100 where !(try await host.berth(["logs", "frozen"]).stdout.contains("up")) { try await Task.sleep(for: .milliseconds(50)) }

        #expect(try await host.berth(["pause", "frozen"]).status == 0)
        #expect(try await host.berth(["kill", "-s", "USR1", "frozen"]).status == 0)
        let woken = try await host.waitFor("frozen") { $0.status.state == .running }
        #expect(woken.status.state == .running, "a signal unpauses it: \(woken.status)")
        for _ in 0..<100 where !(try await host.berth(["logs", "frozen"]).stdout.contains("got USR1")) { try await Task.sleep(for: .milliseconds(50)) }
        #expect(try await host.berth(["logs", "frozen"]).stdout.contains("got USR1"))

        #expect(try await host.berth(["pause", "frozen"]).status == 0)
        let start = ContinuousClock.now
        let stop = try await host.berth(["stop", "-t", "30", "frozen"])
        let took = ContinuousClock.now - start
        #expect(stop.status == 0, "\(stop.stderr)")
        #expect(took < .seconds(10), "stop took \(took): it waited for the timeout")
        let stopped = try await host.inspect("frozen")
        #expect(stopped.status.state == .exited && stopped.status.exitCode == 3, "the trap ran: \(stopped.status)")
        #expect(try await host.berth(["logs", "frozen"]).stdout.contains("got QUIT"))
    }

    @Test("--rm with a restart policy other than no is refused in docker's words, by berth, berth-cli and the agent; --rm keeps it from being updated in")
    func removeWithRestart() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let message = "conflicting options: cannot specify both --restart and --rm"
        for policy in ["always", "unless-stopped", "on-failure", "on-failure:3"] {
            for arguments in [["run", "--rm", "--restart", policy], ["run", "-d", "--rm", "--restart", policy], ["create", "--rm", "--restart", policy]] {
                let r = try await host.berth(arguments + ["busybox", "true"])
                #expect(r.status == (arguments[0] == "run" ? 125 : 1) && r.stderr.contains(message), "\(arguments): \(r.stdout)\(r.stderr)")
            }
        }
        #expect(try await host.berth(["run", "--rm", "--restart", "no", "busybox", "true"]).status == 0)
        // The agent itself, for a client that does not check: a Run call and a create.
        let spec = Berth_Agent_V1_ContainerSpec.with {
            $0.image = "busybox"
            $0.command = ["true"]
            $0.restartPolicy = "always"
        }
        let refusals = try await host.agent.withClient { client in
            let containers = Berth_Agent_V1_Containers.Client(wrapping: client)
            var messages: [String] = []
            do {
                try await containers.run(.with { $0.spec = spec; $0.remove = true }) { response in
                    for try await _ in response.messages {}
                }
            } catch let error as RPCError {
                messages.append(error.message)
            }
            do {
                _ = try await containers.create(.with { $0.spec = spec; $0.spec.autoRemove = true })
            } catch let error as RPCError {
                messages.append(error.message)
            }
            return messages
        }
        #expect(refusals.count == 2 && refusals.allSatisfy { $0.contains(message) }, "\(refusals)")
        #expect(try await host.berth(["ps", "-aq"]).stdout.isEmpty, "nothing was made")

        #expect(try await host.berth(["run", "-d", "--rm", "--name", "once", "busybox", "sleep", "300"]).status == 0)
        let update = try await host.berth(["update", "--restart", "always", "once"])
        #expect(update.status == 1 && update.stderr.contains("restart policy cannot be updated because AutoRemove is enabled"), "\(update.stderr)")
        #expect(try await host.inspect("once").spec.restartPolicy == .no)
    }
}
