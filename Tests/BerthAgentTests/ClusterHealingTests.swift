import BerthAPI
import BerthController
import BerthLinux
import BerthModel
import BerthTesting
import BerthTransport
import Foundation
import GRPCCore
import Logging
import SwiftProtobuf
import Testing

/// A TCP listener on loopback that never answers: connections complete in
/// the kernel's backlog and then wait forever (a registry that hangs).
final class SilentListener: @unchecked Sendable {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && listen(fd, 64) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else {
            close(fd)
            throw HarnessError("cannot listen on loopback")
        }
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    private var closed = false

    /// Closes the listener: the connections waiting in its backlog are reset.
    func stop() {
        guard !closed else { return }
        closed = true
        close(fd)
    }

    deinit { stop() }
}

extension ClusterHarness {
    /// `service inspect` of one service, decoded.
    struct ServiceRecord: Decodable {
        var id, name, mode, progress, progressMessage, message: String
        var version, revision: Int
        var replicas, desired, running, updated, pending, completed: Int
        var updateStatus: UpdateStatus?
        var spec: ServiceSpec
    }

    func inspect(_ service: String) async throws -> ServiceRecord {
        let r = try await cli(["service", "inspect", service])
        guard r.status == 0 else { throw HarnessError("service inspect: \(r.stderr)") }
        guard let first = try BerthJSON.decoder().decode([ServiceRecord].self, from: Data(r.stdout.utf8)).first else { throw HarnessError("no service") }
        return first
    }

    /// `node ls --format json`, decoded.
    func nodes() async throws -> [ControllerNodeTests.NodeRecord] {
        let r = try await cli(["node", "ls", "--format", "json"])
        guard r.status == 0 else { throw HarnessError("node ls: \(r.stderr)") }
        return try JSONDecoder().decode([ControllerNodeTests.NodeRecord].self, from: Data(r.stdout.utf8))
    }

    /// The agent whose node ID is `id`.
    func agent(_ id: String) throws -> AgentProcess {
        guard let agent = agents.first(where: { (try? $0.nodeID) == id }) else { throw HarnessError("no agent is node \(id)") }
        return agent
    }
}

/// Each numbered item of the controller's healing and updating, with the
/// real controller and agents (the cluster suites run last, on their own).
extension ServiceTests {
    @Test("2: a second controller on the same data directory says which process holds it and exits; the first goes on", arguments: StoreKind.allCases)
    func dataDirectoryLock(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(store: store)
        defer { cluster.cleanUp() }
        #expect(try await cluster.cli(["service", "create", "--name", "web", "--replicas", "3", "busybox", "sleep", "100000"]).status == 0)
        let second = try await runCommand(
            try BuildProducts.executable("berth-controller"),
            ["--listen", "127.0.0.1:\(try MetricsTests.freePort())", "--data", cluster.controller.directory.appendingPathComponent("data").path,
             "--node-grace", "2"], timeout: .seconds(30))
        #expect(second.status != 0 && second.stderr.contains("is in use by berth-controller pid \(cluster.controller.process.pid)"), "\(second.stderr)")
        try await Task.sleep(for: .seconds(3))
        let nodes = try await cluster.nodes()
        #expect(nodes.count == 3 && nodes.allSatisfy { $0.state == "ready" }, "\(nodes)")
        let replicas = try await cluster.replicas("web")
        #expect(replicas.count == 3 && replicas.allSatisfy { $0.state == "running" }, "nothing was undone: \(replicas)")
    }

    @Test("3: a node lost while another service's image pull hangs: its replicas run elsewhere within grace + 1 s; a new service is placed at once", arguments: StoreKind.allCases)
    func failoverWhilePullHangs(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let registry = try SilentListener()
        let cluster = try await ClusterHarness(store: store)
        defer { cluster.cleanUp() }
        defer { registry.stop() }
        let ids = try cluster.agents.map { try $0.nodeID }
        #expect(try await cluster.cli(["service", "create", "--name", "web", "--replicas", "6", "busybox", "sleep", "100000"]).status == 0)
        let hang = try await cluster.cli(["service", "create", "-d", "--name", "hang", "--replicas", "3", "127.0.0.1:\(registry.port)/never:1", "sleep", "1"])
        #expect(hang.status == 0, "\(hang.stderr)")
        try await Task.sleep(for: .seconds(2))
        // Placed and started while the pulls hang on every node.
        let quickStart = ContinuousClock.now
        let quick = try await cluster.cli(["service", "create", "-d", "--name", "quick", "--replicas", "3", "busybox", "sleep", "100000"])
        #expect(quick.status == 0, "\(quick.stderr)")
        let quickRuns = try await cluster.eventually(timeout: .seconds(10)) {
            let now = try await cluster.replicas("quick")
            return now.count == 3 && now.allSatisfy { $0.state == "running" }
        }
        let quickTook = ContinuousClock.now - quickStart
        #expect(quickRuns && quickTook < .seconds(3), "a new service's replicas ran \(quickTook) after its create")
        print("failover: a new service's replicas ran \(quickTook) after its create, with pulls hanging")
        #expect(try await cluster.replicas("hang").allSatisfy { $0.state == "pending" }, "the pulls still hang")

        cluster.killAgent(1)
        let lost = ContinuousClock.now
        let moved = try await cluster.replicasRun("web", count: 6, noneOn: ids[1], timeout: .seconds(10))
        let movedAfter = ContinuousClock.now - lost
        #expect(moved && movedAfter <= .seconds(3), "within grace (2 s) + 1 s: \(movedAfter)")
        print("failover: replicas ran elsewhere \(movedAfter) after a node's kill, with pulls hanging")
        #expect(try await cluster.cli(["service", "rm", "web", "hang", "quick"]).status == 0)
    }

    @Test("4: replicas that end are replaced: a stopped one, an exhausted on-failure:2, a crash loop under always (elsewhere), with a backoff per slot and history in ps -a", arguments: StoreKind.allCases)
    func exitedReplicasReplaced(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(store: store)
        defer { cluster.cleanUp() }
        // A stopped replica is replaced in its slot.
        #expect(try await cluster.cli(["service", "create", "--name", "web", "--replicas", "3", "--restart", "no", "busybox", "sleep", "100000"]).status == 0)
        let before = try await cluster.replicas("web")
        let victim = try #require(before.first)
        #expect(try await cluster.berth(try cluster.agent(victim.nodeID), ["stop", "-t", "1", victim.name]).status == 0)
        #expect(try await cluster.eventually(timeout: .seconds(20)) {
            let now = try await cluster.replicas("web")
            return now.count == 3 && now.allSatisfy { $0.state == "running" } && !now.contains { $0.id == victim.id }
        }, "the stopped replica was replaced")
        let history = try await cluster.replicas("web", all: true).filter { $0.slot == victim.slot }
        #expect(history.contains { $0.id == victim.id && $0.desiredState == "shutdown" && $0.message.contains("stopped on its node") }, "\(history)")

        // on-failure:2: two local restarts, then the controller's replacement, backing off.
        #expect(try await cluster.cli(["service", "create", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "sleep 0.3; exit 3"]).status == 0)
        #expect(try await cluster.eventually(timeout: .seconds(40)) {
            try await cluster.replicas("flaky", all: true).contains { $0.desiredState == "shutdown" && $0.exitCode == 3 && $0.restartCount >= 2 }
        }, "replaced after its policy gave up")
        #expect(try await cluster.eventually(timeout: .seconds(40)) { try await cluster.replicas("flaky", all: true).map(\.attempt).max() ?? 0 >= 2 })
        let ps = try await cluster.cli(["service", "ps", "-a", "flaky"])
        #expect(ps.stdout.contains("\\_ flaky.1") && ps.stdout.contains("exited (3)"), "history in ps -a:\n\(ps.stdout)")
        let plain = try await cluster.cli(["service", "ps", "flaky"])
        #expect(plain.stdout.split(separator: "\n").count == 2, "without -a, the slot's current replica only:\n\(plain.stdout)")

        // A crash loop under always: failed after three restarts in a row, replaced on another node.
        #expect(try await cluster.cli(["service", "create", "-d", "--name", "crash", "busybox", "sh", "-c", "sleep 0.2; exit 1"]).status == 0)
        #expect(try await cluster.eventually(timeout: .seconds(60)) {
            Set(try await cluster.replicas("crash", all: true).map(\.nodeID).filter { !$0.isEmpty }).count >= 2
        }, "moved to another node")
        let crashed = try await cluster.replicas("crash", all: true)
        #expect(crashed.contains { $0.message.contains("restarted 3 times in a row") }, "\(crashed.map(\.message))")
        #expect(crashed.count <= 6, "the slot keeps its last five tries and the current one: \(crashed.count)")
        let service = try await cluster.inspect("crash")
        #expect(service.progress == "stalled" && service.progressMessage.contains("keeps failing"), "\(service.progress): \(service.progressMessage)")
        #expect(try await cluster.cli(["service", "rm", "web", "flaky", "crash"]).status == 0)
    }

    @Test("5: replicas that fit no node are pending in ps, with the scheduler's reason, and placed once a node fits", arguments: StoreKind.allCases)
    func pendingReplicas(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(store: store)
        defer { cluster.cleanUp() }
        let ids = try cluster.agents.map { try $0.nodeID }
        #expect(try await cluster.cli(["service", "create", "--name", "pci", "--replicas", "2", "--constraint", "node.labels.zone==a", "busybox", "sleep", "100000"]).status == 0)
        #expect(try await cluster.cli(["node", "drain", ids[0]]).status == 0)
        #expect(try await cluster.eventually {
            let now = try await cluster.replicas("pci")
            return now.count == 2 && now.allSatisfy { $0.state == "pending" && $0.node.isEmpty }
        })
        let replicas = try await cluster.replicas("pci")
        #expect(replicas.allSatisfy { $0.message == "no node fits: constraint node.labels.zone==a is not met on 2 of 3 nodes; node is draining on 1 of 3 nodes" }, "\(replicas.map(\.message))")
        let ps = try await cluster.cli(["service", "ps", "pci"])
        #expect(ps.stdout.contains("Pending") && ps.stdout.contains("no node fits"), "\(ps.stdout)")
        let ls = try await cluster.cli(["service", "ls"])
        #expect(ls.stdout.contains("0/2 (2 pending)"), "\(ls.stdout)")
        #expect(try await cluster.cli(["node", "activate", ids[0]]).status == 0)
        #expect(try await cluster.eventually { try await cluster.replicas("pci").allSatisfy { $0.state == "running" && $0.nodeID == ids[0] } })
    }

    @Test("6: after a node's labels change, replicas whose constraints it no longer meets move to a node that meets them", arguments: StoreKind.allCases)
    func constraintsReenforced(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(store: store)
        defer { cluster.cleanUp() }
        let ids = try cluster.agents.map { try $0.nodeID }
        for id in ids.prefix(2) { #expect(try await cluster.cli(["node", "label", "--add", "tier=web", id]).status == 0) }
        #expect(try await cluster.cli(["service", "create", "--name", "web", "--replicas", "4", "--constraint", "node.labels.tier==web", "busybox", "sleep", "100000"]).status == 0)
        #expect(Set(try await cluster.replicas("web").map(\.nodeID)) == Set(ids.prefix(2)))
        #expect(try await cluster.cli(["node", "label", "--rm", "tier", ids[0]]).status == 0)
        let (settled, placed) = try await cluster.containersSettle("web", count: 4, noneOn: ids[0])
        #expect(settled, "\(placed)")
        #expect(try await cluster.replicas("web").allSatisfy { $0.nodeID == ids[1] && $0.state == "running" })
        let moved = try await cluster.replicas("web", all: true).filter { $0.nodeID == ids[0] }
        #expect(!moved.isEmpty && moved.allSatisfy { $0.message.contains("no longer meets constraint node.labels.tier==web") }, "\(moved.map(\.message))")
    }

    @Test("7: replicas spread over nodes by default; --replicas-max-per-node, --mode global, replicated-job and global-job", arguments: StoreKind.allCases)
    func placementModes(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(store: store)
        defer { cluster.cleanUp() }
        #expect(try await cluster.cli(["service", "create", "--name", "spread", "--replicas", "6", "busybox", "sleep", "100000"]).status == 0)
        #expect(try await cluster.containers("spread").values.map(\.count).sorted() == [2, 2, 2], "six replicas without resources, two per node")

        let capped = try await cluster.cli(["service", "create", "--name", "capped", "--replicas", "4", "--replicas-max-per-node", "1", "busybox", "sleep", "100000"])
        #expect(capped.status != 0 && capped.stderr.contains("--replicas-max-per-node"), "four do not fit three nodes at one each: \(capped.stderr)")
        #expect(try await cluster.cli(["service", "create", "--name", "capped", "--replicas", "3", "--replicas-max-per-node", "1", "busybox", "sleep", "100000"]).status == 0)
        #expect(try await cluster.containers("capped").values.map(\.count).sorted() == [1, 1, 1])

        #expect(try await cluster.cli(["service", "create", "--name", "everywhere", "--mode", "global", "--constraint", "node.labels.zone!=c", "busybox", "sleep", "100000"]).status == 0)
        #expect(try await cluster.containers("everywhere").values.map(\.count).sorted() == [0, 1, 1])
        #expect(try await cluster.inspect("everywhere").desired == 2)

        let job = try await cluster.cli(["service", "create", "--name", "batch", "--mode", "replicated-job", "--replicas", "4", "--max-concurrent", "2", "busybox", "sh", "-c", "sleep 1"])
        #expect(job.status == 0, "\(job.stderr)")
        let batch = try await cluster.inspect("batch")
        #expect(batch.completed == 4 && batch.progress == "converged", "\(batch)")
        try await Task.sleep(for: .seconds(3))
        let done = try await cluster.replicas("batch", all: true)
        #expect(done.count == 4 && done.allSatisfy { $0.state == "complete" }, "completed replicas are not restarted: \(done.map(\.state))")
        #expect(try await cluster.cli(["service", "ls"]).stdout.contains("4/4 completed"))

        #expect(try await cluster.cli(["service", "create", "--name", "once", "--mode", "global-job", "busybox", "true"]).status == 0)
        let once = try await cluster.replicas("once", all: true)
        #expect(once.count == 3 && once.allSatisfy { $0.state == "complete" } && Set(once.map(\.nodeID)).count == 3, "\(once)")
    }

    @Test("8: a paused update places nothing on the new version; the monitor catches replicas that exit at once; rollback, automatic and asked for", arguments: StoreKind.allCases)
    func updates(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(store: store)
        defer { cluster.cleanUp() }
        let ids = try cluster.agents.map { try $0.nodeID }
        #expect(try await cluster.cli(["service", "create", "--name", "web", "--replicas", "6", "busybox", "sleep", "100000"]).status == 0)
        // New replicas that exit at once: the first batch of two fails the monitor, the update pauses.
        let started = ContinuousClock.now
        let bad = try await cluster.cli(["service", "update", "--args", "sh -c 'sleep 1; exit 1'", "--update-parallelism", "2", "--update-monitor", "3s", "web"])
        #expect(bad.status != 0 && bad.stderr.contains("update paused"), "\(bad.stderr)")
        #expect(ContinuousClock.now - started < .seconds(60), "the command stops once the update paused")
        var web = try await cluster.inspect("web")
        #expect(web.updateStatus?.state == .paused && web.version == 2)
        try await Task.sleep(for: .seconds(4))
        var all = try await cluster.replicas("web", all: true)
        #expect(Set(all.filter { $0.version == 2 }.map(\.slot)).count == 2, "only the first batch's slots were tried: \(all.filter { $0.version == 2 })")
        #expect(try await cluster.eventually { try await cluster.replicas("web").count { $0.state == "running" && $0.version == 1 } == 6 }, "every slot serves the old version")
        let ls = try await cluster.cli(["service", "ls"])
        #expect(ls.stdout.contains("6/6") && ls.stdout.contains("paused"), "\(ls.stdout)")
        // A node lost while paused: its replicas come back on the old version.
        cluster.killAgent(2)
        #expect(try await cluster.replicasRun("web", count: 6, noneOn: ids[2], timeout: .seconds(15)))
        all = try await cluster.replicas("web", all: true)
        #expect(all.filter { $0.desiredState == "running" }.allSatisfy { $0.version == 1 }, "nothing new on version 2: \(all)")
        try await cluster.restartAgent(2)
        // Back to what ran before the paused update.
        let undo = try await cluster.cli(["service", "rollback", "web"])
        #expect(undo.status == 0, "\(undo.stderr)")
        web = try await cluster.inspect("web")
        #expect(web.version == 1 && web.updateStatus?.state == .rolledBack && web.spec.container.command == ["sleep", "100000"])

        // An update that fails with --update-failure-action rollback comes back on its own.
        let rolled = try await cluster.cli([
            "service", "update", "--force", "--args", "sh -c 'exit 2'", "--update-failure-action", "rollback", "--update-monitor", "2s", "web",
        ])
        #expect(rolled.status != 0 && rolled.stderr.contains("rolled back"), "\(rolled.stderr)")
        web = try await cluster.inspect("web")
        #expect(web.updateStatus?.state == .rolledBack && web.spec.container.command == ["sleep", "100000"], "\(web)")
        #expect(try await cluster.eventually(timeout: .seconds(60)) {
            let now = try await cluster.replicas("web")
            return now.count == 6 && now.allSatisfy { $0.state == "running" && $0.version == web.version }
        })

        // A good update, start-first, then a rollback asked for.
        let good = try await cluster.cli(["service", "update", "--env-add", "V=3", "--update-order", "start-first", "--update-parallelism", "3", "--update-monitor", "1s", "web"])
        #expect(good.status == 0, "\(good.stderr)")
        web = try await cluster.inspect("web")
        #expect(web.updateStatus?.state == .completed && web.spec.container.env.contains("V=3"))
        let back = try await cluster.cli(["service", "rollback", "web"])
        #expect(back.status == 0, "\(back.stderr)")
        web = try await cluster.inspect("web")
        #expect(web.updateStatus?.state == .rolledBack && !web.spec.container.env.contains("V=3"))
        #expect(try await cluster.cli(["service", "rollback", "web"]).status == 0, "a second rollback returns to what the first undid")
        #expect(try await cluster.inspect("web").spec.container.env.contains("V=3"))
    }

    @Test("9: service update changes everything create sets; --args is split as a shell splits it", arguments: StoreKind.allCases)
    func updateEverything(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(store: store)
        defer { cluster.cleanUp() }
        let created = try await cluster.cli(["service", "create", "--name", "web", "--replicas", "0", "-p", "8081:80", "-e", "A=1", "--label", "x=1", "busybox", "sleep", "100000"])
        #expect(created.status == 0, "\(created.stderr)")
        let update = try await cluster.cli([
            "service", "update", "-d", "--args", "sh -c 'sleep 2; exit 1'", "--publish-rm", "80", "--publish-add", "9090:90/udp", "--mount-add",
            "type=tmpfs,target=/cache", "--volume-add", "data:/data", "--restart", "on-failure:3", "--user", "1000:1000", "--workdir", "/tmp",
            "--hostname", "svc", "--network", "none", "--label-add", "y=2", "--label-rm", "x", "--env-add", "B=2", "--env-rm", "A",
            "--constraint-add", "node.labels.zone!=nowhere", "--placement-pref-add", "spread=node.labels.zone", "--stop-signal", "SIGINT",
            "--stop-timeout", "3", "--read-only", "--init", "--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN", "--ulimit-add", "nofile=512:1024",
            "--log-opt", "max-size=1m", "-m", "48m", "--cpus", "0.2", "--pids-limit", "50", "--entrypoint", "/bin/sh -x", "--image", "busybox",
            "--replicas", "2", "--replicas-max-per-node", "1", "--update-parallelism", "2", "--update-delay", "1s", "--update-monitor", "2s",
            "--update-order", "start-first", "--update-failure-action", "continue", "--update-max-failure-ratio", "0.5",
            "--stop-after-disconnect", "30s", "web",
        ])
        #expect(update.status == 0, "\(update.stderr)")
        let spec = try await cluster.inspect("web").spec
        let c = spec.container
        #expect(c.command == ["sh", "-c", "sleep 2; exit 1"], "\(c.command)")
        #expect(c.entrypoint == ["/bin/sh", "-x"])
        #expect(c.ports.map(\.description) == ["9090:90/udp"], "\(c.ports)")
        #expect(Set(c.mounts.map(\.target)) == ["/cache", "/data"])
        #expect(c.restartPolicy == .onFailure(maxRetries: 3) && c.user == "1000:1000" && c.workingDir == "/tmp" && c.hostname == "svc" && c.network == "none")
        #expect(c.labels == ["y": "2"] && c.env == ["B=2"])
        #expect(c.stopSignal == .interrupt && c.stopTimeout == 3 && c.readOnlyRootfs && c.initProcess)
        #expect(c.capAdd == ["NET_ADMIN"] && c.capDrop == ["CHOWN"] && c.ulimits.map(\.description) == ["nofile=512:1024"])
        #expect(c.log?.maxSize?.bytes == 1 << 20 && c.resources.memory?.bytes == 48 << 20 && c.resources.pidsLimit == 50)
        #expect(c.resources.cpus?.nanoCPUs == 200_000_000)
        #expect(spec.constraints == ["node.labels.zone!=nowhere"] && spec.placementPreferences == ["spread=node.labels.zone"])
        #expect(spec.replicas == 2 && spec.maxReplicasPerNode == 1 && spec.stopAfterDisconnect == 30)
        #expect(spec.update == UpdatePolicy(parallelism: 2, delay: 1, monitor: 2, order: .startFirst, failureAction: .continue, maxFailureRatio: 0.5))
        // Bad input changes nothing.
        for (flags, message) in [
            (["--args", "sh -c 'unterminated"], "a single quote is not closed"), (["--update-order", "sideways"], "expected stop-first or start-first"),
            (["--update-delay", "5x"], "expected a duration"), (["--publish-add", "80"], "give the host port"),
            (["--update-max-failure-ratio", "2"], "from 0 to 1"),
        ] {
            let r = try await cluster.cli(["service", "update", "-d"] + flags + ["web"])
            #expect(r.status != 0 && r.stderr.contains(message), "\(flags): \(r.stderr)")
        }
        #expect(try await cluster.inspect("web").spec == spec)
    }

    @Test("10: the CLI stops waiting once every replica failed with a clear reason, and says it; -d does not wait", arguments: StoreKind.allCases)
    func convergenceStops(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(store: store)
        defer { cluster.cleanUp() }
        let started = ContinuousClock.now
        let bad = try await cluster.cli(["service", "create", "--name", "bad", "--replicas", "2", "127.0.0.1:1/nosuch:1"])
        let took = ContinuousClock.now - started
        #expect(bad.status != 0 && bad.stderr.contains("did not converge") && bad.stderr.contains("127.0.0.1:1"), "\(bad.stderr)")
        #expect(took < .seconds(30), "it stopped once the outcome was known: \(took)")
        let missing = try await cluster.cli(["service", "create", "--name", "nocommand", "busybox", "/no/such/program"])
        #expect(missing.status != 0 && missing.stderr.contains("did not converge"), "\(missing.stderr)")
        let detachedStart = ContinuousClock.now
        let detached = try await cluster.cli(["service", "create", "-d", "--name", "later", "--replicas", "3", "busybox", "sleep", "100000"])
        #expect(detached.status == 0 && ContinuousClock.now - detachedStart < .seconds(3) && detached.stderr.isEmpty, "\(detached.stderr)")
    }

    @Test("11: service logs merges the replicas' output through the controller, each line with its replica; one replica alone; --tail; -f follows", arguments: StoreKind.allCases)
    func serviceLogs(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(store: store)
        defer { cluster.cleanUp() }
        #expect(try await cluster.cli(["service", "create", "--name", "talk", "--replicas", "3", "busybox", "sh", "-c", "echo one $HOSTNAME; echo two $HOSTNAME; sleep 100000"]).status == 0)
        let replicas = try await cluster.replicas("talk")
        var logs = try await cluster.cli(["service", "logs", "talk"])
        #expect(logs.status == 0, "\(logs.stderr)")
        for replica in replicas {
            #expect(logs.stdout.contains("\(replica.name)@\(replica.node) | one"), "\(replica.name)@\(replica.node): \(logs.stdout)")
        }
        #expect(logs.stdout.split(separator: "\n").count == 6)
        logs = try await cluster.cli(["service", "logs", "--tail", "1", "talk"])
        #expect(logs.stdout.split(separator: "\n").count == 3 && !logs.stdout.contains("| one"), "\(logs.stdout)")
        let one = try #require(replicas.first)
        logs = try await cluster.cli(["service", "logs", one.name])
        #expect(logs.stdout.split(separator: "\n").count == 2 && logs.stdout.allSatisfy { _ in true } && logs.stdout.contains(one.name), "\(logs.stdout)")
        logs = try await cluster.cli(["service", "logs", "-f", "talk"], timeout: .seconds(3))
        #expect(logs.stdout.split(separator: "\n").count == 6, "followed until stopped: \(logs.stdout)")
        let missing = try await cluster.cli(["service", "logs", "nosuch"])
        #expect(missing.status != 0 && missing.stderr.contains("no such service or replica: nosuch"), "\(missing.stderr)")
    }

    @Test("12: the controller's /metrics passes promtool; the Grafana dashboard names only series the agent and the controller export", arguments: StoreKind.allCases)
    func metrics(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(store: store)
        defer { cluster.cleanUp() }
        #expect(
            try await cluster.cli([
                "service", "create", "--name", "web", "--replicas", "3", "-m", "16m", "--health-cmd", "true", "--health-interval", "300ms", "busybox",
                "sleep", "100000",
            ]).status == 0)
        // An agent lost: the controller's calls to it fail until it is down.
        cluster.killAgent(2)
        var text = ""
        var status = 0
        #expect(try await cluster.eventually(timeout: .seconds(10)) {
            (status, text) = try await RawHTTP2Client.get(port: cluster.controller.port, path: "/metrics")
            return text.contains("berth_controller_agent_call_errors_total{")
        })
        #expect(status == 200)
        let file = cluster.controller.directory.appendingPathComponent("metrics.txt")
        try text.write(to: file, atomically: true, encoding: .utf8)
        let promtool = try await runCommand(URL(fileURLWithPath: "/bin/sh"), ["-c", "promtool check metrics < \(file.path)"])
        #expect(promtool.status == 0, "promtool: \(promtool.stdout)\(promtool.stderr)")
        #expect(MetricsTests.value(text, "berth_controller_nodes", ["state": "ready"]) == 3)
        #expect(MetricsTests.value(text, "berth_controller_replicas", ["state": "running"]) == 3)
        #expect(MetricsTests.value(text, "berth_controller_agent_call_errors_total", ["call": "list", "error": "unreachable"]) ?? 0 > 0)
        #expect(MetricsTests.value(text, "berth_controller_services", ["mode": "replicated"]) == 1)
        #expect((MetricsTests.value(text, "berth_controller_placements_total") ?? 0) >= 3)
        #expect(MetricsTests.value(text, "berth_controller_leader") == 1)
        #expect((MetricsTests.value(text, "berth_controller_agent_call_duration_seconds_count", ["call": "list"]) ?? 0) > 0)
        #expect((MetricsTests.value(text, "berth_controller_reconcile_duration_seconds_count") ?? 0) > 0)

        // The series both daemons export, from real scrapes.
        var exported = Set<String>()
        let agentPort = try #require(cluster.agentPorts.first)
        let (_, agentText) = try await RawHTTP2Client.get(port: agentPort, path: "/metrics")
        #expect((MetricsTests.value(agentText, "berth_health_probes_total", ["result": "success"]) ?? 0) > 0, "probes counted")
        #expect(agentText.contains("berth_container_health_status{") && agentText.contains(#"status="healthy"} 1"#), "health by container")
        for line in (text + agentText).split(separator: "\n") where line.hasPrefix("# TYPE ") {
            let parts = line.split(separator: " ")
            guard parts.count >= 4 else { continue }
            let name = String(parts[2])
            exported.insert(name)
            if parts[3] == "histogram" { for suffix in ["_bucket", "_sum", "_count"] { exported.insert(name + suffix) } }
        }
        let dashboard = BuildProducts.root.appendingPathComponent("deploy/grafana/berth.json")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: dashboard))
        let expressions = Self.expressions(in: json)
        #expect(expressions.count >= 10, "the dashboard has its panels: \(expressions.count)")
        for expression in expressions {
            let names = Self.seriesNames(expression)
            #expect(!names.isEmpty, "\(expression) names a series")
            for name in names { #expect(exported.contains(name), "\(name) (in \(expression)) is exported by neither daemon") }
        }
    }

    /// Every `expr` in a Grafana dashboard.
    static func expressions(in json: Any) -> [String] {
        if let object = json as? [String: Any] {
            var found: [String] = []
            for (key, value) in object {
                if key == "expr", let text = value as? String { found.append(text) } else { found += expressions(in: value) }
            }
            return found
        }
        if let array = json as? [Any] { return array.flatMap { expressions(in: $0) } }
        return []
    }

    /// The series a PromQL expression reads: its identifiers that are not
    /// functions, keywords, or label names inside braces or by/without lists.
    static func seriesNames(_ expression: String) -> Set<String> {
        let keywords: Set<String> = [
            "sum", "rate", "irate", "increase", "histogram_quantile", "by", "without", "avg", "max", "min", "count", "topk", "bottomk", "on",
            "ignoring", "group_left", "group_right", "and", "or", "unless", "le", "clamp_min", "clamp_max", "abs", "time", "vector", "scalar",
            "delta", "deriv", "avg_over_time", "max_over_time", "min_over_time", "offset", "bool", "label_replace", "sort", "sort_desc",
        ]
        var names: Set<String> = []
        var text = expression
        // Label matchers and grouping lists name labels, not series.
        while let open = text.firstIndex(of: "{"), let close = text[open...].firstIndex(of: "}") { text.removeSubrange(open...close) }
        for keyword in ["by", "without", "on", "ignoring"] {
            while let range = text.range(of: "\(keyword) ("), let close = text[range.upperBound...].firstIndex(of: ")") {
                text.removeSubrange(range.lowerBound...close)
            }
        }
        // Durations in brackets.
        while let open = text.firstIndex(of: "["), let close = text[open...].firstIndex(of: "]") { text.removeSubrange(open...close) }
        var word = ""
        for c in text + " " {
            if c.isLetter || c.isNumber || c == "_" || c == ":" {
                word.append(c)
            } else {
                if let first = word.first, first.isLetter || first == "_", !keywords.contains(word) { names.insert(word) }
                word = ""
            }
        }
        return names
    }

    @Test("13: node label --rm of an agent's label says where it comes from; inspect shows both kinds apart; node.id takes the short ID; ps and dry runs show node IDs", arguments: StoreKind.allCases)
    func nodeLabelsAndIDs(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(store: store)
        defer { cluster.cleanUp() }
        let id = try cluster.agents[0].nodeID
        #expect(try await cluster.cli(["node", "label", "--add", "tier=web", id]).status == 0)
        // The harness's agents run with --label zone=… and the operator set zone too; an agent-only label:
        let agentOnly = try await cluster.cli(["node", "label", "--rm", "tier", "--rm", "zone", id])
        #expect(agentOnly.status == 0, "both are the operator's: \(agentOnly.stderr)")
        let refused = try await cluster.cli(["node", "label", "--rm", "zone", id])
        #expect(refused.status != 0 && refused.stderr.contains("is the agent's own (berth-agent --label zone=a)") && refused.stderr.contains("engine.labels.zone"), "\(refused.stderr)")
        let inspect = try await cluster.cli(["node", "inspect", id])
        let node = try #require(try JSONDecoder().decode([ControllerNodeTests.NodeRecord].self, from: Data(inspect.stdout.utf8)).first)
        #expect(node.labels.isEmpty && node.agentLabels == ["zone": "a"], "\(node)")
        // Constraints on the agent's own label, and on the short ID.
        let short = String(id.prefix(12))
        let dry = try await cluster.cli(["service", "create", "--dry-run", "--name", "pin", "--replicas", "2", "--constraint", "node.id==\(short)", "busybox"])
        #expect(dry.status == 0 && dry.stdout.contains("2 replicas would be placed: \(node.hostname) (\(short)) ×2"), "\(dry.stdout)\(dry.stderr)")
        let other = String(try cluster.agents[1].nodeID.prefix(12))
        #expect(dry.stdout.contains("NODE ID") && dry.stdout.contains(other), "\(dry.stdout)")
        #expect(try await cluster.cli(["service", "create", "--name", "pin", "--replicas", "2", "--constraint", "node.id==\(short)", "busybox", "sleep", "100000"]).status == 0)
        #expect(try await cluster.cli(["service", "create", "--name", "engine", "--constraint", "engine.labels.zone==b", "busybox", "sleep", "100000"]).status == 0)
        #expect(try await cluster.replicas("pin").allSatisfy { $0.nodeID == id })
        #expect(try await cluster.replicas("engine").allSatisfy { $0.nodeID == (try? cluster.agents[1].nodeID) })
        let ps = try await cluster.cli(["service", "ps", "pin"])
        #expect(ps.stdout.contains("NODE ID") && ps.stdout.contains(short) && ps.stdout.contains(node.hostname), "\(ps.stdout)")
    }
}

extension MultiHostTests {
    @Test("1: a node's certificate speaks for its node only; node rm [--force]; a revoked certificate is refused at the handshake and on every call; ca rotate keeps a node in", arguments: StoreKind.allCases)
    func identities(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(isolated: true, store: store)
        defer { cluster.cleanUp() }
        let hosts = try #require(cluster.hosts)
        let certificates = try #require(cluster.certificates)
        let ca = certificates.appendingPathComponent("ca").path
        let ids = try cluster.agents.map { try $0.nodeID }
        #expect(try await cluster.cli(["service", "create", "--name", "web", "--replicas", "6", "busybox", "sleep", "100000"]).status == 0)

        // node0's certificate, in a plain gRPC client: no other node's ID, no invented node.
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let node0 = try MutualTLS(directory: certificates.appendingPathComponent("node0").path)
        #expect(node0.identity.name == ids[0], "the certificate names the node's ID")
        let address = try TransportAddress(parsing: cluster.controller.address)
        func asNode0<R: Sendable>(_ body: @Sendable (Berth_Controller_V1_Nodes.Client<NGHTTP2ClientTransport>) async throws -> R) async throws -> R {
            try await withGRPCClient(transport: NGHTTP2ClientTransport(config: node0.clientConfig(address), logger: logger)) {
                try await body(Berth_Controller_V1_Nodes.Client(wrapping: $0))
            }
        }
        for (id, address) in [(String(repeating: "f", count: 32), "\(hosts.address(0)):7441"), (ids[1], "\(hosts.address(0)):7440")] {
            do {
                _ = try await asNode0 {
                    try await $0.register(.with {
                        $0.id = id
                        $0.hostname = "fake"
                        $0.address = address
                        $0.labels = ["zone": "pci"]
                        $0.capacity = .with { $0.milliCpu = 64000; $0.memoryBytes = 1 << 40 }
                        $0.allocatable = $0.capacity
                    })
                }
                Issue.record("node0's certificate registered node \(id)")
            } catch let error as RPCError {
                #expect(error.code == .permissionDenied && error.message.contains("belongs to another node"), "\(error)")
            }
        }
        do {
            _ = try await asNode0 { try await $0.heartbeat(.with { $0.id = ids[1] }) }
            Issue.record("node0's certificate sent node1's heartbeat")
        } catch let error as RPCError {
            #expect(error.code == .permissionDenied)
        }
        do {
            _ = try await asNode0 { try await $0.update(.with { $0.node = ids[0]; $0.addLabels = ["zone": "pci"] }) }
            Issue.record("a node's certificate set labels")
        } catch let error as RPCError {
            #expect(error.code == .permissionDenied)
        }
        var nodes = try await cluster.nodes()
        #expect(nodes.count == 3 && !nodes.contains { $0.hostname == "fake" } && nodes.allSatisfy { $0.address.hasSuffix(":7440") && $0.state == "ready" })

        // node rm: a ready node only with --force; then its replicas move and its agent is refused.
        let refused = try await cluster.cli(["node", "rm", ids[2]])
        #expect(refused.status != 0 && refused.stderr.contains("is ready"), "\(refused.stderr)")
        #expect(try await cluster.cli(["node", "rm", "--force", ids[2]]).status == 0)
        let (settled, placed) = try await cluster.containersSettle("web", count: 6, noneOn: ids[2])
        #expect(settled, "\(placed)")
        try await Task.sleep(for: .seconds(3))
        nodes = try await cluster.nodes()
        #expect(nodes.count == 2 && !nodes.contains { $0.id == ids[2] }, "a removed node does not come back: \(nodes)")
        #expect(cluster.agents[2].log.contains("the controller refuses this node"), "\(cluster.agents[2].log.suffix(1500))")

        // A revoked certificate: refused at once; the others go on.
        let second = certificates.appendingPathComponent("operator2").path
        try ClusterCA.issue(caDirectory: ca, name: "operator2", role: .operator, outputDirectory: second)
        #expect(try await cluster.cli(["node", "ls"], certificates: .some(second)).status == 0)
        #expect(try await cluster.cli(["-H", "tcp://\(hosts.address(0)):7440", "ps"], certificates: .some(second)).status == 0)
        // On etcd the revocation goes to the store, where the controllers follow it; on SQLite, to the file.
        let storeArguments = cluster.etcd.map { ["--store", $0.storeURL] } ?? []
        let revoked = try await runCommand(try BuildProducts.executable("berth-controller"), ["ca", "revoke", "--ca-dir", ca] + storeArguments + [second])
        #expect(revoked.status == 0, "\(revoked.stderr)")
        #expect(try await cluster.eventually(timeout: .seconds(5)) {
            try await cluster.cli(["node", "ls"], certificates: .some(second)).status != 0
        }, "a revoked certificate is refused")
        #expect(try await cluster.cli(["node", "ls"]).status == 0, "the operator's own still works")
        // The controller hands the revoked serials to the agents with their heartbeats.
        let agentHost = "tcp://\(hosts.address(0)):7440"
        #expect(try await cluster.eventually(timeout: .seconds(5)) {
            try await cluster.cli(["-H", agentHost, "ps"], certificates: .some(second)).status != 0
        }, "an agent refuses the revoked certificate too")
        #expect(try await cluster.cli(["-H", agentHost, "ps"]).status == 0)

        // ca rotate: node0's certificate renewed while it runs; the old one is refused, node0 stays ready.
        let old = certificates.appendingPathComponent("node0-old")
        try FileManager.default.copyItem(at: certificates.appendingPathComponent("node0"), to: old)
        let rotated = try await runCommand(try BuildProducts.executable("berth-controller"), ["ca", "rotate", "--ca-dir", ca] + storeArguments + [certificates.appendingPathComponent("node0").path])
        #expect(rotated.status == 0, "\(rotated.stderr)")
        #expect(try MutualTLS(directory: certificates.appendingPathComponent("node0").path).identity.name == ids[0], "the same node ID")
        try await Task.sleep(for: .seconds(4))
        nodes = try await cluster.nodes()
        #expect(nodes.first { $0.id == ids[0] }?.state == "ready", "node0 went on with its new certificate: \(nodes)")
        if store == .etcd {
            #expect(!FileManager.default.fileExists(atPath: ClusterCA.revocationFile(ca)), "revoked in etcd, not in the file")
        }
        let stale = try MutualTLS(directory: old.path)
        do {
            _ = try await withGRPCClient(transport: NGHTTP2ClientTransport(config: stale.clientConfig(address), logger: logger)) {
                try await Berth_Controller_V1_Nodes.Client(wrapping: $0).heartbeat(.with { $0.id = ids[0] })
            }
            Issue.record("the replaced certificate still speaks for node0")
        } catch let error as RPCError {
            #expect([.unavailable, .unauthenticated].contains(error.code), "\(error)")
        }
    }

    @Test("14: cut off from the controller, an agent stops replicas with --stop-after-disconnect itself; others run on, and the controller's replacements too", arguments: StoreKind.allCases)
    func stopAfterDisconnect(_ store: StoreKind) async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(isolated: true, store: store)
        defer { cluster.cleanUp() }
        let hosts = try #require(cluster.hosts)
        let ids = try cluster.agents.map { try $0.nodeID }
        #expect(try await cluster.cli(["service", "create", "--name", "careful", "--replicas", "3", "--stop-after-disconnect", "3s", "busybox", "sleep", "100000"]).status == 0)
        #expect(try await cluster.cli(["service", "create", "--name", "plain", "--replicas", "3", "busybox", "sleep", "100000"]).status == 0)
        // Node 1's link to the bridge goes down: a partition.
        try NetworkTests.ip(["link", "set", "btv\(hosts.tag)1", "down"], checked: true)
        defer { _ = try? NetworkTests.ip(["link", "set", "btv\(hosts.tag)1", "up"]) }
        let agent = cluster.agents[1]
        #expect(try await cluster.eventually(timeout: .seconds(20)) {
            try await cluster.containers("careful")[ids[1]]?.isEmpty == true
        }, "the agent stopped its careful replica itself")
        #expect(try await cluster.containers("plain")[ids[1]]?.count == 1, "a replica without the setting runs on")
        #expect(agent.log.contains("stopping it"))
        #expect(try await cluster.replicasRun("careful", count: 3, noneOn: ids[1], timeout: .seconds(20)))
        #expect(try await cluster.replicasRun("plain", count: 3, noneOn: ids[1], timeout: .seconds(20)), "the controller replaced both")
        // Back: the orphans go.
        try NetworkTests.ip(["link", "set", "btv\(hosts.tag)1", "up"], checked: true)
        let (settled, placed) = try await cluster.containersSettle("plain", count: 3, noneOn: ids[1])
        #expect(settled, "\(placed)")
    }
}
