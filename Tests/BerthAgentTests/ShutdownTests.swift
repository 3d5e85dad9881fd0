import BerthLinux
import BerthTesting
import Foundation
import Testing

/// SIGTERM stops the agent while clients follow its streams: past a short
/// grace the open calls end with UNAVAILABLE, the agent exits, and the
/// clients say the agent went away.
@Suite("agent shutdown with streams open (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct ShutdownTests {
    /// A kind of call that stays open: what starts it, and what it prints
    /// once it is under way.
    enum Follower: String, CaseIterable, CustomTestStringConvertible, Sendable {
        case events, logsFollow, statsStream, attachedRun, attachedRunFrontEnd, exec

        var testDescription: String {
            switch self {
            case .events: "berth events"
            case .logsFollow: "berth logs -f"
            case .statsStream: "berth stats (a stream)"
            case .attachedRun: "berth-cli run (attached)"
            case .attachedRunFrontEnd: "berth run (attached, the C front end)"
            case .exec: "berth exec"
            }
        }

        /// The executable, its arguments, and a word its output shows once it follows.
        var command: (executable: String, arguments: [String], ready: String) {
            switch self {
            case .events: ("berth", ["events", "--since", "0"], "container start")
            case .logsFollow: ("berth", ["logs", "-f", "ticker"], "tick")
            case .statsStream: ("berth", ["stats", "ticker"], "ticker")
            case .attachedRun: ("berth-cli", ["run", "--rm", "busybox", "sh", "-c", "echo ready; sleep 300"], "ready")
            case .attachedRunFrontEnd: ("berth", ["run", "--rm", "busybox", "sh", "-c", "echo ready; sleep 300"], "ready")
            case .exec: ("berth", ["exec", "ticker", "sh", "-c", "echo ready; sleep 300"], "ready")
            }
        }
    }

    /// A client started against `host`'s agent, its output in files.
    final class Client: Sendable {
        let process: ChildProcess
        let stdout: URL
        let stderr: URL

        init(_ host: ContainerHost, _ executable: String, _ arguments: [String]) throws {
            let name = UUID().uuidString.prefix(8)
            stdout = host.agent.directory.appendingPathComponent("client-\(name).out")
            stderr = host.agent.directory.appendingPathComponent("client-\(name).err")
            let out = open(stdout.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            let err = open(stderr.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            defer {
                close(out)
                close(err)
            }
            let environment = host.agent.cliEnvironment().map { "\($0.key)=\($0.value)" }
            process = ChildProcess(
                pid: try Processes.spawn(
                    executable: try BuildProducts.executable(executable).path, arguments: arguments, environment: environment, stdout: out, stderr: err))
        }

        var output: String { (try? String(contentsOf: stdout, encoding: .utf8)) ?? "" }
        var errors: String { (try? String(contentsOf: stderr, encoding: .utf8)) ?? "" }

        func stop() {
            kill(process.pid, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// How long after `start` the process exited, watched from a thread of
    /// its own (the tests' shared threads may be busy with other tests'
    /// blocking work); nil while it still runs after `timeout`.
    static func exitTime(of process: ChildProcess, since start: ContinuousClock.Instant, timeout: Duration) async -> Duration? {
        await withCheckedContinuation { continuation in
            Thread {
                while process.isRunning {
                    if ContinuousClock.now - start > timeout {
                        continuation.resume(returning: nil)
                        return
                    }
                    usleep(5_000)
                }
                continuation.resume(returning: ContinuousClock.now - start)
            }.start()
        }
    }

    /// Waits until `condition` holds, up to `timeout`; whether it did.
    static func eventually(_ timeout: Duration, _ condition: () -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            if ContinuousClock.now > deadline { return false }
            try await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    @Test("SIGTERM with a stream open: the agent exits after its short grace, the client says it went away", arguments: Follower.allCases)
    func sigterm(_ follower: Follower) async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let ticker = try await host.berth(["run", "-d", "--name", "ticker", "busybox", "sh", "-c", "while :; do echo tick; sleep 0.2; done"])
        try #require(ticker.status == 0, "\(ticker.stderr)")

        let (executable, arguments, ready) = follower.command
        let client = try Client(host, executable, arguments)
        defer { client.stop() }
        let following = try await Self.eventually(.seconds(60)) { client.output.contains(ready) }
        try #require(following, "the client did not start following: \(client.output)\(client.errors)")

        let signalled = ContinuousClock.now
        kill(host.agent.pid, SIGTERM)
        let took = await Self.exitTime(of: host.agent.process, since: signalled, timeout: .seconds(30))
        #expect(took != nil, "the agent still runs 30 s after SIGTERM:\n\(host.agent.log.suffix(2000))")
        // The grace (2 s), then the calls' ends and the agent's own.
        #expect(took.map { $0 < .seconds(8) } ?? false, "the agent took \(took.map { "\($0)" } ?? "too long") to exit:\n\(host.agent.log.suffix(3000))")
        #expect(host.agent.process.terminationStatus == 0, "\(host.agent.log.suffix(2000))")
        #expect(host.agent.log.contains("agent stopped"))

        let ended = await Self.exitTime(of: client.process, since: signalled, timeout: .seconds(30))
        #expect(ended != nil, "the client still runs after the agent exited")
        // An attached run ends as docker's run does when Berth, not the container, failed.
        let expected: Int32 = follower == .attachedRun || follower == .attachedRunFrontEnd ? 125 : 1
        #expect(client.process.terminationStatus == expected, "\(client.errors)")
        let socket = "unix://\(host.agent.socketPath)"
        #expect(client.errors.contains("berth: the Berth agent at \(socket) went away (it is shutting down)"), "\(client.errors)")
    }

    @Test("kill -9 of the agent under a follower: the client says the agent went away")
    func killed() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let client = try Client(host, "berth", ["events", "--since", "0"])
        defer { client.stop() }
        let following = try await Self.eventually(.seconds(60)) { client.output.contains("image import") }
        try #require(following, "the client did not start following: \(client.output)\(client.errors)")
        kill(host.agent.pid, SIGKILL)
        let ended = try await Self.eventually(.seconds(10)) { !client.process.isRunning }
        #expect(ended, "the client still runs after the agent died")
        #expect(client.process.terminationStatus == 1)
        let socket = "unix://\(host.agent.socketPath)"
        #expect(client.errors.contains("berth: the Berth agent at \(socket) went away (the connection closed during the call)"), "\(client.errors)")
    }
}
