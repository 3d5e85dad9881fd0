import BerthLinux
import BerthModel
import Foundation
import Testing

/// Overlay networks on three hosts (network namespaces on a bridge the
/// test makes, each with its own agent): VXLAN between them, the
/// controller's addresses, service names, virtual IPs that keep the
/// client's address, a host lost, isolation, published ports, cleanup.
@Suite("overlay networks across hosts (processes)", .serialized, .timeLimit(.minutes(8)))
struct OverlayNetworkTests {
    /// A command in a running container of `service` on `agent`.
    static func exec(_ cluster: ClusterHarness, _ agent: AgentProcess, _ service: String, _ command: [String]) async throws -> CommandResult {
        let listed = try await cluster.berth(agent, ["ps", "-q", "--filter", "label=berth.service=\(service)"])
        let id = try #require(listed.stdout.split(separator: "\n").first.map(String.init), "a container of \(service): \(listed.stderr)")
        return try await cluster.berth(agent, ["exec", id, "sh", "-c", command.joined(separator: " ")])
    }

    /// The addresses in busybox nslookup's answer (the server's own first line left out).
    static func addresses(_ output: String) -> Set<String> {
        var found: Set<String> = []
        var answers = false
        for line in output.split(separator: "\n") {
            if line.hasPrefix("Name:") { answers = true }
            if answers, line.hasPrefix("Address"), let last = line.split(separator: " ").last {
                found.insert(String(last))
            }
        }
        return found
    }

    /// Links and nftables tables left in a host's namespace.
    static func leftovers(_ hosts: TestHosts, _ i: Int) throws -> String {
        let links = try NetworkTests.ip(["-n", hosts.namespace(i), "-d", "-o", "link", "show"])
        return links.split(separator: "\n").filter { $0.contains(": vx") || $0.contains(": ni") || $0.contains("type vxlan") }.joined(separator: "\n")
    }

    @Test("a service on an overlay is reached by name and virtual IP from another host, each replica sees the client's own address; tasks.web lists the replicas; dnsrr; overlays are apart; mode=host and ingress ports; a host lost leaves no failed request after its grace, and back it converges; an agent restarted serves on; nothing is left")
    func overlay() async throws {
        guard Privileges.root else { return }
        let cluster = try await ClusterHarness(grace: 2, isolated: true)
        defer { cluster.cleanUp() }
        let hosts = try #require(cluster.hosts)

        // Networks on the controller; an agent makes none itself.
        let app = try await cluster.cli(["network", "create", "--driver", "overlay", "app"])
        #expect(app.status == 0, "\(app.stderr)")
        #expect(try await cluster.cli(["network", "create", "--driver", "overlay", "--subnet", "10.91.7.0/24", "other"]).status == 0)
        let again = try await cluster.cli(["network", "create", "--driver", "overlay", "app"])
        #expect(again.status != 0 && again.stderr.contains("already exists"), "\(again.stderr)")
        let clash = try await cluster.cli(["network", "create", "--driver", "overlay", "--subnet", "10.91.7.128/25", "clash"])
        #expect(clash.status != 0 && clash.stderr.contains("overlaps network other"), "\(clash.stderr)")
        let listed = try await cluster.cli(["network", "ls"]).stdout
        #expect(listed.contains("app") && listed.contains("other") && listed.contains("overlay"), "\(listed)")
        let unknown = try await cluster.cli(["service", "create", "--name", "lost", "--network", "nowhere", "busybox", "sleep", "1"])
        #expect(unknown.status != 0 && unknown.stderr.contains("network nowhere not found"), "\(unknown.stderr)")

        // web: three replicas on hosts 0 and 1, serving their hostname and
        // logging who asked; the client on host 2, which runs none.
        let web = try await cluster.cli([
            "service", "create", "--name", "web", "--replicas", "3", "--network", "app", "--constraint", "node.labels.zone!=c",
            "busybox", "sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -vv -p 80 -h /www",
        ])
        #expect(web.status == 0, "\(web.stderr)")
        let client = try await cluster.cli(["service", "create", "--name", "client", "--network", "app", "--constraint", "node.labels.zone==c", "busybox", "sleep", "100000"])
        #expect(client.status == 0, "\(client.stderr)")
        #expect(try await cluster.eventually { try await cluster.replicas("web").filter { $0.state == "running" }.count == 3 })
        let replicas = try await cluster.replicas("web")
        #expect(!replicas.contains { $0.nodeID == (try? cluster.agents[2].nodeID) }, "none on the client's host")

        // Names: tasks.web has the three replicas; web is one virtual IP.
        var tasks: Set<String> = []
        _ = try await cluster.eventually {
            tasks = Self.addresses(try await Self.exec(cluster, cluster.agents[2], "client", ["nslookup", "tasks.web"]).stdout)
            return tasks.count == 3
        }
        #expect(tasks.count == 3, "tasks.web: \(tasks)")
        let vip = Self.addresses(try await Self.exec(cluster, cluster.agents[2], "client", ["nslookup", "web"]).stdout)
        #expect(vip.count == 1 && vip.isDisjoint(with: tasks), "web is one address of its own: \(vip)")

        // 60 connections to the VIP reach every replica.
        let loop = ["for i in $(seq 60); do timeout 3 wget -q -O - http://web/ || echo FAILED; done"]
        let answers = try await Self.exec(cluster, cluster.agents[2], "client", loop).stdout.split(separator: "\n").map(String.init)
        #expect(answers.count == 60 && !answers.contains("FAILED"), "\(answers)")
        #expect(Set(answers).count == 3, "every replica answered: \(Set(answers))")
        // Each replica saw the client's own address (nothing masqueraded).
        let clientAddress = try #require(
            try await Self.exec(cluster, cluster.agents[2], "client", ["ip -4 -o addr show eth0"]).stdout.split(separator: " ").first { $0.contains("/") }?
                .split(separator: "/").first.map(String.init))
        let logged = try await cluster.cli(["service", "logs", "web"])
        let logs = logged.stdout + logged.stderr
        // busybox httpd listens on IPv6 too: [::ffff:ADDRESS]:PORT.
        let seen = Set(logs.split(separator: "\n").filter { $0.contains(":\(clientAddress)]:") }.compactMap { $0.split(separator: " ").first.map(String.init) })
        #expect(seen.count == 3, "each replica logged \(clientAddress): \(logs.suffix(2000))")

        // The overlay's addresses are the controller's: a container of the agent's own cannot join it.
        let standalone = try await cluster.berth(cluster.agents[2], ["run", "--rm", "--network", "app", "busybox", "true"])
        #expect(standalone.status != 0 && standalone.stderr.contains("only a service's replicas join it"), "\(standalone.stderr)")

        // dnsrr: the name is the replicas' addresses, and there is no VIP.
        #expect(try await cluster.cli([
            "service", "create", "--name", "rr", "--replicas", "2", "--endpoint-mode", "dnsrr", "--network", "app", "--constraint", "node.labels.zone!=c",
            "busybox", "sleep", "100000",
        ]).status == 0)
        var rr: Set<String> = []
        _ = try await cluster.eventually {
            rr = Self.addresses(try await Self.exec(cluster, cluster.agents[2], "client", ["nslookup", "rr"]).stdout)
            return rr.count == 2
        }
        let rrTasks = Self.addresses(try await Self.exec(cluster, cluster.agents[2], "client", ["nslookup", "tasks.rr"]).stdout)
        #expect(rr.count == 2 && rr == rrTasks, "rr: \(rr), tasks.rr: \(rrTasks)")
        #expect(try await cluster.cli(["service", "rm", "rr"]).status == 0)

        // Two overlays do not meet: from `other`, a replica's address is unreachable.
        #expect(try await cluster.cli(["service", "create", "--name", "stranger", "--network", "other", "--constraint", "node.labels.zone==c", "busybox", "sleep", "100000"]).status == 0)
        #expect(try await cluster.eventually { try await cluster.replicas("stranger").first?.state == "running" })
        let target = try #require(tasks.first)
        let across = try await Self.exec(cluster, cluster.agents[2], "stranger", ["timeout 3 wget -q -O - http://\(target)/ || echo UNREACHABLE"])
        #expect(across.stdout.contains("UNREACHABLE"), "\(across.stdout)")
        let named = try await Self.exec(cluster, cluster.agents[2], "stranger", ["nslookup web || echo UNKNOWN"])
        #expect(named.stdout.contains("UNKNOWN") || Self.addresses(named.stdout).isEmpty, "\(named.stdout)")

        // A replica on both overlays reaches both.
        #expect(try await cluster.cli([
            "service", "create", "--name", "both", "--network", "app", "--network", "other", "--constraint", "node.labels.zone==c", "busybox", "sleep", "100000",
        ]).status == 0)
        #expect(try await cluster.eventually { try await cluster.replicas("both").first?.state == "running" })
        var both = CommandResult(status: 0, stdout: "", stderr: "")
        _ = try await cluster.eventually(timeout: .seconds(10)) {
            both = try await Self.exec(cluster, cluster.agents[2], "both", ["ip -4 -o addr; nslookup tasks.web | grep -q 10.90.0 && echo WEB; nslookup tasks.stranger | grep -q 10.91.7 && echo STRANGER"])
            return both.stdout.contains("WEB") && both.stdout.contains("STRANGER")
        }
        #expect(both.stdout.contains("inet 10.90.0.") && both.stdout.contains("inet 10.91.7.") && both.stdout.contains("WEB") && both.stdout.contains("STRANGER"), "\(both.stdout)")
        // Taken off one: its replacement is on the other only.
        let off = try await cluster.cli(["service", "update", "--network-rm", "other", "both"])
        #expect(off.status == 0, "\(off.stderr)")
        let one = try await cluster.eventually {
            let addresses = try await Self.exec(cluster, cluster.agents[2], "both", ["ip -4 -o addr"]).stdout
            return addresses.contains("inet 10.90.0.") && !addresses.contains("inet 10.91.7.")
        }
        #expect(one, "the replica is on app only")
        #expect(try await cluster.cli(["service", "rm", "both"]).status == 0)

        // A mode=host port answers on the host of its replica, not elsewhere.
        #expect(try await cluster.cli([
            "service", "create", "--name", "pub", "--network", "app", "--constraint", "node.labels.zone==a", "--publish", "published=18080,target=80,mode=host",
            "busybox", "sh", "-c", "mkdir -p /www && echo pub > /www/index.html && exec httpd -f -p 80 -h /www",
        ]).status == 0)
        #expect(try await cluster.eventually { try await cluster.replicas("pub").first?.state == "running" })
        #expect(try await ContainerNetworkTests.fetch("http://\(hosts.address(0)):18080/", expecting: "pub\n") == "pub\n")
        let busybox = try TestImage.rootfs() + "/bin/busybox"
        let elsewhere = try await runCommand(URL(fileURLWithPath: busybox), ["timeout", "3", busybox, "wget", "-q", "-O", "-", "http://\(hosts.address(1)):18080/"], environment: [:])
        #expect(elsewhere.stdout.isEmpty, "\(elsewhere.stdout)")
        // An ingress port answers on every host: from the host with the
        // replica, to it with the client's address kept; from another, to
        // it from that host's own address on the network.
        #expect(try await cluster.cli([
            "service", "create", "--name", "ing", "--network", "app", "--constraint", "node.labels.zone==a", "--publish", "published=18090,target=80",
            "busybox", "sh", "-c", "mkdir -p /www && echo ing > /www/index.html && exec httpd -f -vv -p 80 -h /www",
        ]).status == 0)
        #expect(try await cluster.eventually { try await cluster.replicas("ing").first?.state == "running" })
        for i in [0, 2] {
            #expect(try await ContainerNetworkTests.fetch("http://\(hosts.address(i)):18090/", expecting: "ing\n") == "ing\n", "through host \(i)")
        }
        let ingLogs = try await cluster.cli(["service", "logs", "ing"])
        let ingLog = ingLogs.stdout + ingLogs.stderr
        #expect(ingLog.contains(":\(hosts.controllerAddress)]:"), "the replica's own host kept the client's address: \(ingLog.suffix(1500))")
        #expect(ingLog.contains(":10.90."), "another host's traffic came from its address on the network: \(ingLog.suffix(1500))")
        let taken = try await cluster.cli(["service", "create", "--name", "ing2", "--network", "app", "--publish", "published=18090,target=80,mode=host", "busybox", "sleep", "1"])
        #expect(taken.status != 0 && taken.stderr.contains("is published by service ing"), "\(taken.stderr)")

        let busy = try await cluster.cli(["network", "rm", "app"])
        #expect(busy.status != 0 && busy.stderr.contains("in use by services"), "\(busy.stderr)")

        // Host 1 lost (its agent killed, its link cut): after the grace
        // period its replicas leave tasks.web and no request fails.
        let lostNode = try cluster.agents[1].nodeID
        var lostAddresses: Set<String> = []
        for id in try await cluster.berth(cluster.agents[1], ["ps", "-q", "--filter", "label=berth.service=web"]).stdout.split(separator: "\n") {
            let inspected = try await cluster.berth(cluster.agents[1], ["inspect", "--format", "record", String(id)])
            let container = try #require(try BerthJSON.decoder().decode([Container].self, from: Data(inspected.stdout.utf8)).first)
            lostAddresses.formUnion(container.endpoints.map(\.address.description))
        }
        try #require(!lostAddresses.isEmpty && lostAddresses.isSubset(of: tasks), "host 1 runs a replica of web: \(lostAddresses)")
        cluster.killAgent(1)
        _ = try NetworkTests.ip(["link", "set", "btv\(hosts.tag)1", "down"], checked: true)
        #expect(try await cluster.eventually(timeout: .seconds(20)) { try await cluster.replicas("web").allSatisfy { $0.nodeID != lostNode } })
        try await Task.sleep(for: .seconds(2))
        let after = try await Self.exec(cluster, cluster.agents[2], "client", loop).stdout.split(separator: "\n").map(String.init)
        #expect(after.count == 60 && !after.contains("FAILED"), "no request fails: \(after.filter { $0 == "FAILED" }.count) of \(after.count)")
        let remaining = Self.addresses(try await Self.exec(cluster, cluster.agents[2], "client", ["nslookup", "tasks.web"]).stdout)
        #expect(remaining.count >= 2 && remaining.isDisjoint(with: lostAddresses), "tasks.web: \(remaining), lost: \(lostAddresses)")

        // The client's agent killed with -9: the next one keeps the
        // controller's last word (names, virtual IPs) and serves on.
        cluster.killAgent(2)
        try await cluster.restartAgent(2)
        let restarted = try await Self.exec(cluster, cluster.agents[2], "client", ["for i in $(seq 10); do timeout 3 wget -q -O - http://web/ || echo FAILED; done"])
        #expect(restarted.stdout.split(separator: "\n").count == 10 && !restarted.stdout.contains("FAILED"), "\(restarted.stdout)")
        // Host 1 back: it converges with the controller's view: its old
        // replicas go, and it serves the ingress port again (every node is
        // on a network with one).
        _ = try NetworkTests.ip(["link", "set", "btv\(hosts.tag)1", "up"], checked: true)
        try await cluster.restartAgent(1)
        let converged = try await cluster.eventually(timeout: .seconds(30)) {
            try await cluster.berth(cluster.agents[1], ["ps", "-aq", "--filter", "label=berth.service=web"]).stdout.isEmpty
        }
        #expect(converged, "host 1 keeps no replica of web")
        #expect(try await ContainerNetworkTests.fetch("http://\(hosts.address(1)):18090/", expecting: "ing\n") == "ing\n", "through host 1, back")

        // Everything removed: the network refused no more, nothing left on a host.
        for service in ["web", "client", "stranger", "pub", "ing"] { #expect(try await cluster.cli(["service", "rm", service]).status == 0) }
        #expect(try await cluster.eventually(timeout: .seconds(30)) { try await cluster.cli(["network", "rm", "app", "other"]).status == 0 })
        for i in 0..<3 {
            let clean = try await cluster.eventually {
                let listed = try await cluster.berth(cluster.agents[i], ["network", "ls"]).stdout
                return try Self.leftovers(hosts, i).isEmpty && !listed.contains("overlay")
            }
            let networks = try await cluster.berth(cluster.agents[i], ["network", "ls"]).stdout
            #expect(clean, "host \(i): \((try? Self.leftovers(hosts, i)) ?? "") \(networks)")
        }
    }
}
