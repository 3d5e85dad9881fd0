import BerthModel
import BerthTesting
import Foundation
import Testing

/// Containers' logs: rotation per agent and per container, `berth logs`
/// options, and output that keeps flowing while the agent is down.
@Suite("logs (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct LogsTests {
    static func logFiles(_ host: ContainerHost, _ c: Container) throws -> [String: Int] {
        let dir = "\(host.agent.root)/containers/\(c.id.rawValue)/logs"
        var sizes: [String: Int] = [:]
        // The logs themselves, not their indexes.
        for name in try FileManager.default.contentsOfDirectory(atPath: dir) where !name.hasSuffix(".idx") {
            sizes[name] = (try FileManager.default.attributesOfItem(atPath: "\(dir)/\(name)")[.size] as? Int) ?? -1
        }
        return sizes
    }

    /// "line-0" … "line-2999", one per line (28 KB), then the container exits.
    static let counting = ["sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done"]

    @Test("--log-opt rotates a container's log by size and keeps max-file files; logs --tail, -t and --since")
    func rotationAndOptions() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let r = try await host.berth(["run", "--name", "chatty", "--log-opt", "max-size=4k", "--log-opt", "max-file=2", "busybox"] + Self.counting)
        #expect(r.status == 0, "\(r.stderr)")
        let c = try await host.inspect("chatty")
        #expect(c.spec.log == LogConfig(maxSize: ByteSize(bytes: 4096), maxFiles: 2))
        let files = try Self.logFiles(host, c)
        #expect(Set(files.keys) == ["container.log", "container.log.1"], "\(files)")
        #expect(files.values.allSatisfy { $0 <= 4096 }, "\(files)")

        // What is left is the newest lines, in order and without a gap.
        let all = try await host.berth(["logs", "chatty"])
        let lines = all.stdout.split(separator: "\n").map(String.init)
        #expect(lines.last == "line-2999")
        #expect(!lines.contains("line-0"), "the oldest lines were rotated away")
        let first = Int(lines.first?.dropFirst(5) ?? "") ?? -1
        #expect(lines == (first..<3000).map { "line-\($0)" })

        #expect(try await host.berth(["logs", "--tail", "3", "chatty"]).stdout == "line-2997\nline-2998\nline-2999\n")
        let stamped = try await host.berth(["logs", "-t", "--tail", "1", "chatty"]).stdout
        let stamp = try #require(stamped.split(separator: " ").first.map(String.init))
        #expect(stamped.hasSuffix(" line-2999\n"), "\(stamped)")
        let time = try #require(RFC3339.parse(stamp), "\(stamp)")
        #expect(abs(time.timeIntervalSinceNow) < 60)
        #expect(try await host.berth(["logs", "--since", "10m", "--tail", "1", "chatty"]).stdout == "line-2999\n")
        #expect(try await host.berth(["logs", "--since", RFC3339.format(Date().addingTimeInterval(60)), "chatty"]).stdout == "")

        // Bad input changes nothing.
        for (options, message) in [
            (["--log-opt", "max-size=1k"], "must be at least 4 KiB"), (["--log-opt", "max-file=0"], "between 1 and 100"),
            (["--log-opt", "compress=true"], "unknown log option"), (["--log-opt", "max-size"], "expected KEY=VALUE"),
        ] {
            let bad = try await host.berth(["run", "--name", "bad"] + options + ["busybox", "true"])
            #expect(bad.status != 0 && bad.stderr.contains(message), "\(options): \(bad.stderr)")
        }
        #expect(try await host.berth(["ps", "-aq"]).stdout.split(separator: "\n").count == 1)
        let unknown = try await host.berth(["logs", "nosuch"])
        #expect(unknown.status == 1 && unknown.stderr.contains("nosuch"), "\(unknown.stderr)")
        let badTail = try await host.berth(["logs", "--tail", "x", "chatty"])
        #expect(badTail.status != 0 && badTail.stderr.contains("--tail"), "\(badTail.stderr)")
    }

    @Test("the agent's --log-max-size and --log-max-file apply to containers that set none")
    func agentDefaults() async throws {
        let host = try await ContainerHost(extraArguments: ["--log-max-size", "8k", "--log-max-file", "3"])
        defer { host.cleanUp() }
        let r = try await host.berth(["run", "--name", "counted", "busybox"] + Self.counting)
        #expect(r.status == 0)
        let files = try Self.logFiles(host, try await host.inspect("counted"))
        #expect(Set(files.keys) == ["container.log", "container.log.1", "container.log.2"], "\(files)")
        #expect(files.values.allSatisfy { $0 <= 8192 }, "\(files)")
    }

    @Test("output keeps flowing into the log while the agent is down; the next agent shows all of it")
    func flowsWhileAgentIsDown() async throws {
        let first = try await ContainerHost()
        defer { first.cleanUp() }
        #expect(try await first.berth(["run", "-d", "--name", "ticker", "busybox", "sh", "-c", "i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.05; done"]).status == 0)
        try await Task.sleep(for: .milliseconds(300))
        kill(first.agent.pid, SIGKILL)
        first.agent.process.waitUntilExit()
        try await Task.sleep(for: .seconds(1))
        let second = try await AgentProcess(tcp: false, directory: first.agent.directory, cgroupParent: first.agent.cgroupParent)
        defer { second.cleanUp() }
        let logs = try await second.berth(["logs", "ticker"])
        let ticks = logs.stdout.split(separator: "\n").compactMap { Int($0.dropFirst(5)) }
        #expect(ticks.count >= 15, "about 20 ticks a second for 1.3 s: \(ticks.count)")
        #expect(ticks == Array(0..<ticks.count), "every tick once, in order")
    }
}
