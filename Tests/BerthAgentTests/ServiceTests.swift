import BerthController
import BerthLinux
import BerthModel
import BerthTesting
import BerthTransport
import Foundation
import Testing

/// Three network namespaces on a bridge the test makes, as three hosts: each
/// has its own address; the host side of the bridge is the controller's.
final class TestHosts: @unchecked Sendable {
    let tag = String(UUID().uuidString.prefix(5).lowercased())
    let prefix: String
    var bridge: String { "btb\(tag)" }
    var controllerAddress: String { "\(prefix).1" }
    func namespace(_ i: Int) -> String { "btn\(tag)\(i)" }
    func address(_ i: Int) -> String { "\(prefix).\(11 + i)" }

    init(count: Int) throws {
        prefix = String(try NetworkTests.freeSubnet().dropLast(".0/24".count))
        do {
            try NetworkTests.ip(["link", "add", bridge, "type", "bridge"], checked: true)
            try NetworkTests.ip(["addr", "add", "\(controllerAddress)/24", "dev", bridge], checked: true)
            try NetworkTests.ip(["link", "set", bridge, "up"], checked: true)
            for i in 0..<count {
                let ns = namespace(i)
                try NetworkTests.ip(["netns", "add", ns], checked: true)
                try NetworkTests.ip(["link", "add", "btv\(tag)\(i)", "type", "veth", "peer", "name", "eth0", "netns", ns], checked: true)
                try NetworkTests.ip(["link", "set", "btv\(tag)\(i)", "master", bridge, "up"], checked: true)
                try NetworkTests.ip(["-n", ns, "addr", "add", "\(address(i))/24", "dev", "eth0"], checked: true)
                try NetworkTests.ip(["-n", ns, "link", "set", "eth0", "up"], checked: true)
                try NetworkTests.ip(["-n", ns, "link", "set", "lo", "up"], checked: true)
            }
        } catch {
            cleanUp()
            throw error
        }
    }

    /// Starts a process in namespace `i` (nsenter execs it: the PID is the process's).
    func launcher(_ i: Int) -> [String] { ["/usr/bin/nsenter", "--net=/run/netns/\(namespace(i))"] }

    func cleanUp() {
        for i in 0..<3 { _ = try? NetworkTests.ip(["netns", "delete", namespace(i)]) }
        _ = try? NetworkTests.ip(["link", "delete", bridge])
    }
}

/// A controller (or several, on etcd) and three agents (a zone label
/// each), with the test image in every agent: on loopback ports, or
/// (`isolated`) each agent in its own network namespace with its own
/// address and every TCP peer on mutual TLS. On etcd, the members run on
/// loopback and the controllers elect a leader among themselves.
final class ClusterHarness: @unchecked Sendable {
    private(set) var controllers: [ControllerProcess] = []
    /// The first controller (the only one on SQLite).
    var controller: ControllerProcess { controllers[0] }
    /// Every controller's address, as agents and `berth` take them.
    var controllerList: String { controllers.map(\.address).joined(separator: ",") }
    let store: StoreKind
    let etcd: EtcdProcesses?
    private(set) var agents: [AgentProcess] = []
    /// Agents replaced by a restart: their shims and cgroups are cleaned up too.
    private var retired: [AgentProcess] = []
    private var ports: [Int] = []
    /// Each agent's TCP port.
    var agentPorts: [Int] { ports }
    let zones = ["a", "b", "c"]
    let hosts: TestHosts?
    /// The cluster CA and certificates (isolated clusters).
    let certificates: URL?
    var operatorCertificates: String? { certificates?.appendingPathComponent("operator").path }

    /// - Parameter leaderLease: seconds (etcd): short, so that failovers are quick to test.
    init(
        grace: Double = 2, isolated: Bool = false, store: StoreKind = .sqlite, controllers count: Int = 1, etcdMembers: Int = 1, leaderLease: Int = 2
    ) async throws {
        self.store = store
        etcd = store == .etcd ? try await EtcdProcesses(count: etcdMembers) : nil
        var storeArguments: [String] = []
        if let etcd { storeArguments = ["--store", etcd.storeURL, "--leader-lease", String(leaderLease)] }
        if isolated {
            let hosts: TestHosts
            do {
                hosts = try TestHosts(count: 3)
            } catch {
                etcd?.stop()
                throw error
            }
            let certificates = FileManager.default.temporaryDirectory.appendingPathComponent("berth-certs-\(hosts.tag)")
            do {
                let ca = certificates.appendingPathComponent("ca").path
                try ClusterCA.initialize(directory: ca)
                try ClusterCA.issue(
                    caDirectory: ca, name: "controller", role: .controller, ipAddresses: [hosts.controllerAddress],
                    outputDirectory: certificates.appendingPathComponent("controller").path)
                try ClusterCA.issue(
                    caDirectory: ca, name: "operator", role: .operator, outputDirectory: certificates.appendingPathComponent("operator").path)
                for i in 0..<3 {
                    try ClusterCA.issue(
                        caDirectory: ca, name: "node\(i)", role: .node, ipAddresses: [hosts.address(i)],
                        outputDirectory: certificates.appendingPathComponent("node\(i)").path)
                }
                for _ in 0..<count {
                    controllers.append(
                        try await ControllerProcess(
                            grace: grace, host: hosts.controllerAddress,
                            extraArguments: [
                                "--tls-dir", certificates.appendingPathComponent("controller").path, "--revoked",
                                ClusterCA.revocationFile(certificates.appendingPathComponent("ca").path),
                            ] + storeArguments))
                }
            } catch {
                for controller in controllers { controller.cleanUp() }
                hosts.cleanUp()
                try? FileManager.default.removeItem(at: certificates)
                etcd?.stop()
                throw error
            }
            self.hosts = hosts
            self.certificates = certificates
        } else {
            do {
                for _ in 0..<count { controllers.append(try await ControllerProcess(grace: grace, extraArguments: storeArguments)) }
            } catch {
                for controller in controllers { controller.cleanUp() }
                etcd?.stop()
                throw error
            }
            hosts = nil
            certificates = nil
        }
        do {
            for zone in zones {
                let port = try hosts == nil ? MetricsTests.freePort() : 7440
                ports.append(port)
                agents.append(try await startAgent(zone: zone, port: port, directory: nil, cgroupParent: nil))
            }
            for agent in agents {
                let imported = try await berth(agent, ["image", "import", try TestImage.tar.get(), "busybox"])
                guard imported.status == 0 else { throw HarnessError("image import: \(imported.stderr)") }
            }
            // The zones as operators' labels too (node.labels.zone), as an
            // operator sets them: an agent's own labels are engine.labels.
            guard try await eventually(timeout: .seconds(30), { try await self.cli(["node", "ls", "-q"]).stdout.split(separator: "\n").count == 3 }) else {
                throw HarnessError("the agents did not register: \(controller.log.suffix(2000))")
            }
            for (agent, zone) in zip(agents, zones) {
                let labelled = try await cli(["node", "label", "--add", "zone=\(zone)", try agent.nodeID])
                guard labelled.status == 0 else { throw HarnessError("node label: \(labelled.stderr)") }
            }
        } catch {
            cleanUp()
            throw error
        }
    }

    private func startAgent(zone: String, port: Int, directory: URL?, cgroupParent: String?) async throws -> AgentProcess {
        let index = zones.firstIndex(of: zone)!
        var arguments = ["--controller", controllerList, "--label", "zone=\(zone)"]
        if let hosts, let certificates {
            arguments += ["--listen", "\(hosts.address(index)):\(port)", "--tls-dir", certificates.appendingPathComponent("node\(index)").path]
        } else {
            arguments += ["--listen", "127.0.0.1:\(port)"]
        }
        return try await AgentProcess(
            extraArguments: arguments, tcp: false, directory: directory, cgroupParent: cgroupParent, launcher: hosts?.launcher(index) ?? [])
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

    /// `berth` aimed at the controller, with the operator's certificate when the cluster has TLS.
    func cli(_ arguments: [String], certificates: String?? = .none, timeout: Duration = .seconds(120)) async throws -> CommandResult {
        var env = ProcessInfo.processInfo.environment
        env["BERTH_CONTROLLER"] = controllerList
        env["BERTH_CERT_PATH"] = certificates ?? operatorCertificates
        return try await runCommand(try BuildProducts.executable("berth"), arguments, environment: env, timeout: timeout)
    }

    struct ReplicaRecord: Decodable {
        var id, service, name, node, nodeID, desiredState, state, message: String
        var slot: Int
        var version: Int
        var attempt: Int
        var restartCount: Int
        var removed: Bool
        var exitCode: Int?
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
            let r = try await berth(agent, ["ps", "--format", "{{.Names}}", "--filter", "label=berth.service=\(service)"])
            guard r.status == 0 else { throw HarnessError("ps: \(r.stderr)") }
            result[try agent.nodeID] = r.stdout.split(separator: "\n").map(String.init).sorted()
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

    /// Waits until every replica of `service` runs, `count` of them, none on
    /// node `node`; whether they did.
    func replicasRun(_ service: String, count: Int, noneOn node: String, timeout: Duration = .seconds(30)) async throws -> Bool {
        try await eventually(timeout: timeout) {
            let now = try await replicas(service)
            return now.count == count && now.allSatisfy { $0.nodeID != node && $0.state == "running" }
        }
    }

    /// Waits until the agents hold `count` containers of `service`, none on
    /// node `node`; whether they did, and the containers last seen.
    func containersSettle(_ service: String, count: Int, noneOn node: String) async throws -> (Bool, [String: [String]]) {
        let settled = try await eventually {
            let placed = try await containers(service)
            return placed[node]?.isEmpty == true && placed.values.map(\.count).reduce(0, +) == count
        }
        return (settled, try await containers(service))
    }

    func cleanUp() {
        // The controllers first, or they would start the replicas the agents' cleanup removes.
        for controller in controllers { controller.cleanUp() }
        for agent in agents + retired { agent.cleanUp() }
        etcd?.stop()
        hosts?.cleanUp()
        if let certificates { try? FileManager.default.removeItem(at: certificates) }
    }
}

@Suite("services: placed across agents, kept at their count, healed (processes)", .ownThreads, .serialized, .timeLimit(.minutes(6)))
struct ServiceTests {
    @Test("a service spreads over zones, scales, rolls over, survives a controller kill -9, moves off a lost and a drained node; bad input changes nothing", arguments: StoreKind.allCases)
    func services(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(store: store)
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
        let moved = try await cluster.replicasRun("web", count: 6, noneOn: ids[0], timeout: .seconds(7))
        let afterLoss = try await cluster.replicas("web", all: true)
        #expect(moved, "replicas left node a within grace + 5 s: \(afterLoss)")
        let movedAfter = ContinuousClock.now - lost
        // It returns: its old containers go, and the count settles at six.
        try await cluster.restartAgent(0)
        let settled: Bool
        (settled, placed) = try await cluster.containersSettle("web", count: 6, noneOn: ids[0])
        #expect(settled, "\(placed)")
        #expect(
            try await cluster.eventually { try await cluster.replicas("web", all: true).allSatisfy { $0.desiredState == "running" || $0.removed } },
            "the orphans' containers are gone; they remain as history")

        // A drained node empties.
        #expect(try await cluster.cli(["node", "drain", ids[1]]).status == 0)
        let drained: Bool
        (drained, placed) = try await cluster.containersSettle("web", count: 6, noneOn: ids[1])
        #expect(drained, "\(placed)")

        // A job's replica that completes is done, not replaced.
        let once = try await cluster.cli(["service", "create", "--name", "once", "--mode", "replicated-job", "-d", "busybox", "true"])
        #expect(once.status == 0, "\(once.stderr)")
        #expect(try await cluster.eventually { try await cluster.replicas("once").first?.state == "complete" })
        try await Task.sleep(for: .seconds(2))
        #expect(try await cluster.replicas("once", all: true).count == 1)

        // Removal: every container goes.
        #expect(try await cluster.cli(["service", "rm", "web", "once"]).status == 0)
        #expect(try await cluster.eventually { try await cluster.containers("web").values.allSatisfy(\.isEmpty) })
        #expect(try await cluster.eventually { try await cluster.replicas("", all: true).isEmpty })
        print("services: replicas moved off a lost node \(movedAfter) after its kill")
    }
}

@Suite("a cluster of three hosts in network namespaces, on mutual TLS (processes)", .ownThreads, .serialized, .timeLimit(.minutes(5)))
struct MultiHostTests {
    @Test("six replicas spread over three hosts; a host killed → its replicas run elsewhere within grace + 5 s; back → six; no certificate, a forged or an expired one → refused; a node's certificate controls nothing", arguments: StoreKind.allCases)
    func multiHost(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(isolated: true, store: store)
        defer { cluster.cleanUp() }
        let hosts = try #require(cluster.hosts)
        let ids = try cluster.agents.map { try $0.nodeID }
        #expect(try await cluster.eventually { try await cluster.cli(["node", "ls", "-q"]).stdout.split(separator: "\n").count == 3 })
        let nodes = try await cluster.cli(["node", "ls"]).stdout
        for i in 0..<3 { #expect(nodes.contains("\(hosts.address(i)):7440"), "each agent at its own address: \(nodes)") }

        let created = try await cluster.cli(["service", "create", "--name", "web", "--replicas", "6", "--placement-pref", "spread=node.labels.zone", "-m", "16m", "busybox", "sleep", "100000"])
        #expect(created.status == 0, "\(created.stderr)")
        var placed = try await cluster.containers("web")
        #expect(placed.values.map(\.count).sorted() == [2, 2, 2], "\(placed)")

        cluster.killAgent(1)
        let lost = ContinuousClock.now
        let moved = try await cluster.replicasRun("web", count: 6, noneOn: ids[1], timeout: .seconds(7))
        let movedAfter = ContinuousClock.now - lost
        #expect(moved, "within grace (2 s) + 5 s; took \(movedAfter)")
        try await cluster.restartAgent(1)
        let settled: Bool
        (settled, placed) = try await cluster.containersSettle("web", count: 6, noneOn: ids[1])
        #expect(settled, "\(placed)")

        // Refusals: the controller and an agent, without a certificate, with
        // one from another CA, and with an expired one from the cluster's CA.
        let scratch = try #require(cluster.certificates)
        try ClusterCA.initialize(directory: scratch.appendingPathComponent("other-ca").path)
        try ClusterCA.issue(
            caDirectory: scratch.appendingPathComponent("other-ca").path, name: "operator", role: .operator,
            outputDirectory: scratch.appendingPathComponent("forged").path)
        try ClusterCA.issue(
            caDirectory: scratch.appendingPathComponent("ca").path, name: "operator", role: .operator,
            outputDirectory: scratch.appendingPathComponent("expired").path, validFor: 1, notBefore: Date() - 3 * 86400)
        let agentHost = "tcp://\(hosts.address(0)):7440"
        for certificates in [nil, scratch.appendingPathComponent("forged").path, scratch.appendingPathComponent("expired").path] {
            let toController = try await cluster.cli(["node", "ls"], certificates: .some(certificates))
            #expect(toController.status != 0 && toController.stderr.contains("unavailable"), "\(certificates ?? "none"): \(toController.stderr)")
            let toAgent = try await cluster.cli(["-H", agentHost, "ps"], certificates: .some(certificates))
            #expect(toAgent.status != 0, "\(certificates ?? "none"): \(toAgent.stdout)")
        }
        // A node's own certificate (from the cluster's CA) controls no other
        // agent, and calls nothing on the controller but its registration.
        let nodeCertificate = scratch.appendingPathComponent("node1").path
        let nodeToAgent = try await cluster.cli(["-H", agentHost, "ps"], certificates: .some(nodeCertificate))
        #expect(nodeToAgent.status != 0 && nodeToAgent.stderr.contains("a node certificate may not call List"), "\(nodeToAgent.stderr)")
        let nodeToController = try await cluster.cli(["service", "ls"], certificates: .some(nodeCertificate))
        #expect(nodeToController.status != 0 && nodeToController.stderr.contains("a node certificate may not call List"), "\(nodeToController.stderr)")
        let allowed = try await cluster.cli(["-H", agentHost, "ps"])
        #expect(allowed.status == 0 && allowed.stdout.contains("web."), "an operator's certificate reaches the agent: \(allowed.stderr)")
        let offLoopback = try await runCommand(try BuildProducts.executable("berth-agent"), ["--listen", "\(hosts.controllerAddress):7441", "--root", "/nonexistent/r"])
        #expect(offLoopback.status != 0 && offLoopback.stderr.contains("or give --tls-dir"), "\(offLoopback.stderr)")

        #expect(try await cluster.cli(["service", "rm", "web"]).status == 0)
        #expect(try await cluster.eventually { try await cluster.containers("web").values.allSatisfy(\.isEmpty) })
        print("multi-host: replicas moved off a killed host \(movedAfter) after its kill")
    }
}
