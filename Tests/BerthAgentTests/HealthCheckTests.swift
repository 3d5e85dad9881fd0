import BerthAPI
import BerthLinux
import BerthModel
import BerthTesting
import GRPCCore
import SwiftProtobuf
import Foundation
import Testing

/// Health checks on real containers: probes as execs, their timeouts,
/// `--health-on-failure`, and probing across an agent's kill -9.
@Suite("health checks (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct HealthCheckTests {
    /// A host with the test image, and "checked": the same image with a
    /// HEALTHCHECK that prints and fails.
    static func host(_ extraArguments: [String] = []) async throws -> ContainerHost {
        let host = try await ContainerHost(extraArguments: extraArguments)
        let imported = try await host.berth([
            "image", "import", "--change", "HEALTHCHECK --interval=200ms --retries=2 CMD echo probing; exit 3", try TestImage.tar.get(), "checked",
        ])
        guard imported.status == 0 else {
            host.cleanUp()
            throw HarnessError("import: \(imported.stderr)")
        }
        return host
    }

    @Test("an image whose check fails is unhealthy after its retries, its probes in inspect; ps shows it and filters by it; --no-healthcheck disables it")
    func imageCheck() async throws {
        let host = try await Self.host()
        defer { host.cleanUp() }
        #expect(try await host.berth(["run", "-d", "--name", "bad", "checked", "sleep", "1000"]).status == 0)
        #expect(try await host.berth(["run", "-d", "--name", "off", "--no-healthcheck", "checked", "sleep", "1000"]).status == 0)
        #expect(try await host.berth(["run", "-d", "--name", "good", "--health-cmd", "test -d /proc/1", "--health-interval", "200ms", "busybox", "sleep", "1000"]).status == 0)

        let bad = try await host.waitFor("bad") { $0.status.health?.status == .unhealthy }
        let health = try #require(bad.status.health)
        #expect(health.failingStreak >= 2)
        #expect(health.log.count >= 2)
        for probe in health.log {
            #expect(probe.exitCode == 3)
            #expect(probe.output == "probing\n")
            #expect(probe.end >= probe.start)
        }
        #expect(bad.spec.healthcheck?.test == ["CMD-SHELL", "echo probing; exit 3"], "the image's check, kept with the container")
        let good = try await host.waitFor("good") { $0.status.health?.status == .healthy }
        #expect(good.status.health?.log.last?.exitCode == 0)

        let off = try await host.inspect("off")
        #expect(off.spec.healthcheck?.isDisabled == true)
        #expect(off.status.health == nil)

        let ps = try await host.berth(["ps"])
        let line = { (name: String) in ps.stdout.split(separator: "\n").first { $0.hasSuffix(name) }.map(String.init) ?? "" }
        #expect(line("bad").contains("(unhealthy)"), "\(ps.stdout)")
        #expect(line("good").contains("(healthy)"), "\(ps.stdout)")
        #expect(!line("off").contains("health"), "\(ps.stdout)")
        let unhealthy = try await host.berth(["ps", "-q", "--filter", "health=unhealthy"])
        #expect(unhealthy.stdout == String(bad.id.rawValue.prefix(12)) + "\n", "\(unhealthy)")
        let none = try await host.berth(["ps", "--format", "json", "--filter", "health=none"])
        #expect(none.stdout.contains("\"off\"") && !none.stdout.contains("\"bad\""))
        let wrong = try await host.berth(["ps", "--filter", "health=sick"])
        #expect(wrong.status != 0 && wrong.stderr.contains("expected starting, healthy, unhealthy or none"), "\(wrong.stderr)")

        // docker's event=health_status matches "health_status: unhealthy".
        let action = try await host.agent.withClient { client in
            try await Berth_Agent_V1_Events.Client(wrapping: client).watch(
                .with {
                    $0.fromRevision = 0
                    $0.filters = [.with { $0.key = "event"; $0.values = ["health_status"] }, .with { $0.key = "container"; $0.values = ["bad"] }]
                }
            ) { response in
                for try await message in response.messages { return message.event.action }
                return ""
            }
        }
        #expect(action == "health_status: unhealthy")
    }

    @Test("a probe that hangs is killed at its timeout, with what it started, and counts as a failure")
    func hangingProbe() async throws {
        let host = try await Self.host()
        defer { host.cleanUp() }
        #expect(
            try await host.berth([
                "run", "-d", "--name", "slow", "--health-cmd", "sleep 321; true", "--health-timeout", "300ms", "--health-interval", "200ms",
                "--health-retries", "1", "busybox", "sleep", "1000",
            ]).status == 0)
        let slow = try await host.waitFor("slow") { $0.status.health?.status == .unhealthy }
        let probe = try #require(slow.status.health?.log.first)
        #expect(probe.exitCode == -1)
        #expect(probe.output == "Health check exceeded timeout (300ms)")
        #expect(probe.end.timeIntervalSince(probe.start) < 2)
        // Probes go on; none of their `sleep 321` outlives its timeout for long.
        try await Task.sleep(for: .seconds(1))
        let left = try await host.berth(["exec", "slow", "sh", "-c", "ps -o args | grep -c '^sleep 321' || true"])
        #expect(Int(left.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 99 <= 1, "at most the probe under way: \(left.stdout)")
    }

    @Test("--health-on-failure restart restarts an unhealthy container after the restart backoff, with its restart count")
    func restartOnFailure() async throws {
        let host = try await Self.host()
        defer { host.cleanUp() }
        #expect(
            try await host.berth(["run", "-d", "--name", "flaky", "--health-on-failure", "restart", "--stop-timeout", "1", "checked", "sleep", "1000"])
                .status == 0)
        let first = try await host.inspect("flaky")
        let restarted = try await host.waitFor("flaky", timeout: .seconds(30)) { $0.status.restartCount >= 1 && $0.status.state == .running }
        #expect(restarted.status.pid != first.status.pid)
        #expect(restarted.status.health?.status != .unhealthy || restarted.status.health?.log.isEmpty == false)
        let bad = try await host.berth(["run", "-d", "--health-on-failure", "reboot", "busybox", "true"])
        #expect(bad.status != 0 && bad.stderr.contains("expected none, kill, restart or stop"), "\(bad.stderr)")
        let conflict = try await host.berth(["run", "-d", "--no-healthcheck", "--health-cmd", "true", "busybox", "true"])
        #expect(conflict.status != 0 && conflict.stderr.contains("--no-healthcheck conflicts with --health-* options"), "\(conflict.stderr)")
    }

    @Test("kill -9 of the agent: the restarted agent keeps probing re-adopted containers, and their health history")
    func probingSurvivesAgent() async throws {
        let first = try await Self.host()
        defer { first.cleanUp() }
        #expect(
            try await first.berth(["run", "-d", "--name", "watched", "--health-cmd", "date +%s%N", "--health-interval", "200ms", "busybox", "sleep", "1000"])
                .status == 0)
        let before = try await first.waitFor("watched") { ($0.status.health?.log.count ?? 0) >= 2 }
        kill(first.agent.pid, SIGKILL)
        first.agent.process.waitUntilExit()
        let second = try await AgentProcess(tcp: false, directory: first.agent.directory, cgroupParent: first.agent.cgroupParent)
        defer { second.cleanUp() }
        let lastBefore = try #require(before.status.health?.log.last)
        let deadline = ContinuousClock.now + .seconds(20)
        var after: Container?
        while ContinuousClock.now < deadline {
            let result = try await second.berth(["inspect", "--format", "record", "watched"])
            let record = try BerthJSON.decoder().decode([Container].self, from: Data(result.stdout.utf8)).first
            if let last = record?.status.health?.log.last, last.start > lastBefore.start.addingTimeInterval(0.5) {
                after = record
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let health = try #require(after?.status.health, "probes resumed after the restart")
        #expect(health.status == .healthy)
        #expect(health.log.contains(lastBefore), "the probes from before the restart are kept")
        #expect(try await second.berth(["rm", "-f", "watched"]).status == 0)
    }
}
