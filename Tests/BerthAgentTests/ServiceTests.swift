import BerthModel
import Foundation
import Testing

/// A controller and three agents on this host (loopback ports, a zone label
/// each), with the test image in every agent.
final class ClusterHarness: @unchecked Sendable {
    let controller: ControllerProcess
    private(set) var agents: [AgentProcess] = []
    /// Agents replaced by a restart: their shims and cgroups are cleaned up too.
    private var retired: [AgentProcess] = []
    private var ports: [Int] = []
    let zones = ["a", "b", "c"]

    init(grace: Double = 2) async throws {
        controller = try await ControllerProcess(grace: grace)
        do {
            for zone in zones {
                let port = try MetricsTests.freePort()
                ports.append(port)
                agents.append(try await startAgent(zone: zone, port: port, directory: nil, cgroupParent: nil))
            }
            for agent in agents {
                let imported = try await berth(agent, ["image", "import", try TestImage.tar.get(), "busybox"])
                guard imported.status == 0 else { throw HarnessError("image import: \(imported.stderr)") }
            }
        } catch {
            cleanUp()
            throw error
        }
    }

    private func startAgent(zone: String, port: Int, directory: URL?, cgroupParent: String?) async throws -> AgentProcess {
        try await AgentProcess(
            extraArguments: ["--listen", "127.0.0.1:\(port)", "--controller", controller.address, "--label", "zone=\(zone)"], tcp: false,
            directory: directory, cgroupParent: cgroupParent)
    }

    /// kill -9 of agent `index`; its containers keep running.
    func killAgent(_ index: Int) {
        kill(agents[index].pid, SIGKILL)
        agents[index].process.waitUntilExit()
    }

    /// Starts agent `index` again on its directories (it re-adopts its containers).
    func restartAgent(_ index: Int) async throws {
        let old = agents[index]
        retired.append(old)
        agents[index] = try await startAgent(zone: zones[index], port: ports[index], directory: old.directory, cgroupParent: old.cgroupParent)
    }

    func berth(_ agent: AgentProcess, _ arguments: [String]) async throws -> CommandResult {
        var env = ProcessInfo.processInfo.environment
        env["BERTH_HOST"] = "unix://\(agent.socketPath)"
        return try await runCommand(try BuildProducts.executable("berth"), arguments, environment: env)
    }

    func cli(_ arguments: [String], timeout: Duration = .seconds(120)) async throws -> CommandResult {
        var env = ProcessInfo.processInfo.environment
        env["BERTH_CONTROLLER"] = controller.address
        return try await runCommand(try BuildProducts.executable("berth"), arguments, environment: env, timeout: timeout)
    }

    struct ReplicaRecord: Decodable {
        var id, service, name, nodeID, desiredState, state, message: String
        var slot: Int
        var version: Int
    }

    func replicas(_ service: String, all: Bool = false) async throws -> [ReplicaRecord] {
        let r = try await cli(["service", "ps", "--format", "json"] + (all ? ["-a"] : []) + [service])
        guard r.status == 0 else { throw HarnessError("service ps: \(r.stderr)") }
        return try JSONDecoder().decode([ReplicaRecord].self, from: Data(r.stdout.utf8))
    }

    /// The names of the running containers of `service` on each agent, by its node ID.
    func containers(_ service: String) async throws -> [String: [String]] {
        var result: [String: [String]] = [:]
        for agent in agents where agent.process.isRunning {
            let r = try await berth(agent, ["ps", "--format", "json", "--filter", "label=berth.service=\(service)"])
            guard r.status == 0 else { throw HarnessError("ps: \(r.stderr)") }
            let list = try BerthJSON.decoder().decode([Container].self, from: Data(r.stdout.utf8))
            result[try agent.nodeID] = list.map(\.name).sorted()
        }
        return result
    }

    /// Polls until `condition` holds, up to `timeout`; whether it did.
    func eventually(timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if (try? await condition()) == true { return true }
            try await Task.sleep(for: .milliseconds(200))
        }
        return try await condition()
    }

    func cleanUp() {
        for agent in agents + retired { agent.cleanUp() }
        controller.cleanUp()
    }
}

@Suite("services: placed across agents, kept at their count, healed (processes)", .serialized, .timeLimit(.minutes(6)))
struct ServiceTests {
    @Test("a service spreads over zones, scales, rolls over, survives a controller kill -9, moves off a lost and a drained node; bad input changes nothing")
    func services() async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness()
        defer { cluster.cleanUp() }
        let ids = try cluster.agents.map { try $0.nodeID }
        #expect(try await cluster.eventually {
            let r = try await cluster.cli(["node", "ls", "-q"])
            return r.stdout.split(separator: "\n").count == 3
        })

        // Refused, and nothing stored.
        let refusals: [([String], String)] = [
            (["--name", "big", "--replicas", "4", "-m", "20g"], "cannot place 1 of 4 replicas of big: insufficient memory on 3 of 3 nodes"),
            (["--name", "big", "--replicas", "4", "-m", "20g", "--dry-run"], "insufficient memory on 3 of 3 nodes"),
            (["--name", "bad", "--constraint", "node.labels.zone=a"], "constraint"),
            (["--name", "bad", "--placement-pref", "spread=zone"], "expected spread=node.labels.KEY"),
            (["--name", "bad", "--constraint", "node.labels.zone==nowhere"], "constraint node.labels.zone==nowhere is not met on 3 of 3 nodes"),
            (["--name", "bad", "-p", "80"], "give the host port"),
            (["--name", "bad.name"], "no dots"),
            (["--replicas", "2"], "a service needs --name"),
        ]
        for (flags, message) in refusals {
            let r = try await cluster.cli(["service", "create"] + flags + ["busybox", "sleep", "1000"])
            #expect(r.status != 0 && r.stderr.contains(message), "\(flags): \(r.stderr)")
        }
        #expect(try await cluster.cli(["service", "ls", "-q"]).stdout.isEmpty)

        // A dry run shows each node's verdict and where replicas would go.
        let dry = try await cluster.cli(["service", "create", "--dry-run", "--name", "web", "--replicas", "3", "--constraint", "node.labels.zone!=c", "busybox"])
        #expect(dry.status == 0 && dry.stdout.contains("constraint node.labels.zone!=c is not met") && dry.stdout.contains("3 replicas would be placed"), "\(dry.stdout) \(dry.stderr)")

        // Six replicas over three zones: two on each agent.
        let created = try await cluster.cli([
            "service", "create", "--name", "web", "--replicas", "6", "--placement-pref", "spread=node.labels.zone", "-m", "32m", "--cpus", "0.1",
            "-e", "V=1", "busybox", "sleep", "100000",
        ])
        #expect(created.status == 0, "\(created.stderr)")
        var placed = try await cluster.containers("web")
        #expect(placed.values.map(\.count).sorted() == [2, 2, 2], "\(placed)")
        var replicas = try await cluster.replicas("web")
        #expect(replicas.count == 6 && replicas.allSatisfy { $0.state == "running" } && Set(replicas.map(\.slot)) == Set(1...6), "\(replicas)")
        let duplicate = try await cluster.cli(["service", "create", "--name", "web", "busybox"])
        #expect(duplicate.status != 0 && duplicate.stderr.contains("already exists"))

        // Scale down and up.
        #expect(try await cluster.cli(["service", "scale", "web=3"]).status == 0)
        #expect(try await cluster.eventually { try await cluster.containers("web").values.map(\.count).reduce(0, +) == 3 })
        #expect(try await cluster.cli(["service", "scale", "web=6"]).status == 0)
        #expect(try await cluster.eventually { try await cluster.containers("web").values.map(\.count).reduce(0, +) == 6 })

        // A rolling update, two at a time: every replica ends on version 2 with the new variable.
        let update = try await cluster.cli(["service", "update", "--env-add", "V=2", "--update-parallelism", "2", "web"])
        #expect(update.status == 0, "\(update.stderr)")
        replicas = try await cluster.replicas("web")
        #expect(replicas.count == 6 && replicas.allSatisfy { $0.version == 2 && $0.state == "running" }, "\(replicas)")
        let one = try #require(replicas.first)
        let agentOfOne = try #require(cluster.agents.first { (try? $0.nodeID) == one.nodeID })
        let inspected = try await cluster.berth(agentOfOne, ["inspect", one.name])
        #expect(inspected.stdout.contains("V=2") && !inspected.stdout.contains("V=1"), "\(inspected.stdout.prefix(400))")
        #expect(try await cluster.eventually { try await cluster.containers("web").values.map(\.count).reduce(0, +) == 6 })

        // kill -9 of the controller: the same replicas, no second container for any.
        let before = Set(replicas.map(\.id))
        cluster.controller.kill9()
        try await cluster.controller.start()
        try await Task.sleep(for: .seconds(3))
        replicas = try await cluster.replicas("web")
        #expect(Set(replicas.map(\.id)) == before, "no replica lost or added")
        placed = try await cluster.containers("web")
        #expect(placed.values.map(\.count).reduce(0, +) == 6, "\(placed)")

        // A lost node: its replicas run elsewhere within the grace period (2 s) + 5 s.
        cluster.killAgent(0)
        let lost = ContinuousClock.now
        let moved = try await cluster.eventually(timeout: .seconds(7)) {
            let now = try await cluster.replicas("web")
            return now.count == 6 && now.allSatisfy { $0.nodeID != ids[0] && $0.state == "running" }
        }
        let afterLoss = try await cluster.replicas("web", all: true)
        #expect(moved, "replicas left node a within grace + 5 s: \(afterLoss)")
        let movedAfter = ContinuousClock.now - lost
        // It returns: its old containers go, and the count settles at six.
        try await cluster.restartAgent(0)
        let settled = try await cluster.eventually {
            let placed = try await cluster.containers("web")
            return placed[ids[0]]?.isEmpty == true && placed.values.map(\.count).reduce(0, +) == 6
        }
        placed = try await cluster.containers("web")
        #expect(settled, "\(placed)")
        #expect(try await cluster.eventually { try await cluster.replicas("web", all: true).count == 6 }, "the orphans are forgotten once gone")

        // A drained node empties.
        #expect(try await cluster.cli(["node", "drain", ids[1]]).status == 0)
        let drained = try await cluster.eventually {
            let placed = try await cluster.containers("web")
            return placed[ids[1]]?.isEmpty == true && placed.values.map(\.count).reduce(0, +) == 6
        }
        placed = try await cluster.containers("web")
        #expect(drained, "\(placed)")

        // A replica whose container ends for good (restart no) stays exited, not replaced.
        let once = try await cluster.cli(["service", "create", "--name", "once", "--restart", "no", "-d", "busybox", "true"])
        #expect(once.status == 0, "\(once.stderr)")
        #expect(try await cluster.eventually { try await cluster.replicas("once").first?.state == "exited" })
        try await Task.sleep(for: .seconds(2))
        #expect(try await cluster.replicas("once", all: true).count == 1)

        // Removal: every container goes.
        #expect(try await cluster.cli(["service", "rm", "web", "once"]).status == 0)
        #expect(try await cluster.eventually { try await cluster.containers("web").values.allSatisfy(\.isEmpty) })
        #expect(try await cluster.eventually { try await cluster.replicas("", all: true).isEmpty })
        print("services: replicas moved off a lost node \(movedAfter) after its kill")
    }
}
