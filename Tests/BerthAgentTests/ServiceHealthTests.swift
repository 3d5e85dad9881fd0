import BerthLinux
import BerthModel
import BerthTesting
import Foundation
import Testing

/// Rolling updates gated on health, with a controller and three agents.
@Suite("services: updates gated on health (processes)", .ownThreads, .serialized, .timeLimit(.minutes(6)))
struct ServiceHealthTests {
    struct Inspected: Decodable {
        struct Update: Decodable {
            var state: String
            var message: String
        }
        var version: Int
        var running: Int
        var message: String
        var updateStatus: Update?
        var env: [String]
    }

    static func inspect(_ cluster: ClusterHarness, _ name: String) async throws -> Inspected {
        let r = try await cluster.cli(["service", "inspect", name])
        guard r.status == 0 else { throw HarnessError("service inspect: \(r.stderr)") }
        guard let first = try JSONDecoder().decode([Inspected].self, from: Data(r.stdout.utf8)).first else { throw HarnessError("no service") }
        return first
    }

    /// Containers of `service` the agents report healthy, and their environments.
    static func healthy(_ cluster: ClusterHarness, _ service: String) async throws -> [Container] {
        var healthy: [Container] = []
        for agent in cluster.agents where agent.process.isRunning {
            let r = try await cluster.berth(agent, ["ps", "-q", "--no-trunc", "--filter", "label=berth.service=\(service)", "--filter", "health=healthy"])
            guard r.status == 0 else { throw HarnessError("ps: \(r.stderr)") }
            let ids = r.stdout.split(separator: "\n").map(String.init)
            guard !ids.isEmpty else { continue }
            let records = try await cluster.berth(agent, ["inspect", "--format", "record"] + ids)
            healthy += try BerthJSON.decoder().decode([Container].self, from: Data(records.stdout.utf8))
        }
        return healthy
    }

    /// Creates a 4-replica service whose check fails once MODE=bad, waits
    /// until all are healthy, updates it to MODE=bad, and watches until the
    /// update ends in `until`: the fewest healthy replicas seen meanwhile.
    static func badRelease(_ cluster: ClusterHarness, _ name: String, failureAction: String, until: String) async throws -> (Int, Inspected) {
        let created = try await cluster.cli([
            "service", "create", "--name", name, "--replicas", "4", "-m", "32m", "--health-cmd", #"test "$MODE" != bad"#, "--health-interval", "200ms",
            "--health-retries", "2", "--update-parallelism", "1", "--update-order", "start-first", "--update-monitor", "2s",
            "--update-failure-action", failureAction, "busybox", "sleep", "1000",
        ])
        #expect(created.status == 0, "\(created.stderr)")
        #expect(try await cluster.eventually(timeout: .seconds(60)) { try await healthy(cluster, name).count == 4 }, "4 healthy replicas")
        #expect(try await inspect(cluster, name).running == 4)
        let updated = try await cluster.cli(["service", "update", "-d", "--env-add", "MODE=bad", name])
        #expect(updated.status == 0, "\(updated.stderr)")
        var fewest = Int.max
        let deadline = ContinuousClock.now + .seconds(90)
        var last = try await inspect(cluster, name)
        while ContinuousClock.now < deadline {
            fewest = min(fewest, try await healthy(cluster, name).count)
            last = try await inspect(cluster, name)
            if last.updateStatus?.state == until { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        return (fewest, last)
    }

    @Test("a 4-replica update to a version whose check never passes: rollback ends on the old version with 4 healthy replicas, never fewer than 3; pause stops after the first failure and says why")
    func gatedUpdates() async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness()
        defer { cluster.cleanUp() }

        let (fewest, web) = try await Self.badRelease(cluster, "web", failureAction: "rollback", until: "rolled-back")
        #expect(web.updateStatus?.state == "rolled-back", "\(String(describing: web.updateStatus))")
        #expect(web.updateStatus?.message.contains("unhealthy") == true, "\(String(describing: web.updateStatus?.message))")
        #expect(!web.env.contains("MODE=bad"), "the old version's spec")
        #expect(fewest >= 3, "healthy replicas never fewer than 3: \(fewest)")
        #expect(try await cluster.eventually(timeout: .seconds(30)) {
            let healthy = try await Self.healthy(cluster, "web")
            return healthy.count == 4 && healthy.allSatisfy { !$0.spec.env.contains("MODE=bad") }
        }, "4 healthy replicas of the old version")
        let history = try await cluster.replicas("web", all: true)
        #expect(history.contains { $0.message.hasPrefix("unhealthy") }, "service ps -a shows the replica that failed its check")

        let (fewestPaused, api) = try await Self.badRelease(cluster, "api", failureAction: "pause", until: "paused")
        #expect(api.updateStatus?.state == "paused", "\(String(describing: api.updateStatus))")
        #expect(api.updateStatus?.message.hasPrefix("update paused: replica") == true && api.updateStatus?.message.contains("unhealthy") == true)
        #expect(api.message.contains("unhealthy"), "service inspect's message says why: \(api.message)")
        #expect(fewestPaused >= 3, "\(fewestPaused)")
        let tried = Set(try await cluster.replicas("api", all: true).filter { $0.version == 2 }.map(\.slot))
        #expect(tried.count == 1, "stopped after the first failure: \(tried)")
    }
}
