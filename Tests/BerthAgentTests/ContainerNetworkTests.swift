import BerthAgent
import BerthLinux
import BerthModel
import BerthTesting
import Foundation
import Glibc
import Testing

/// Containers on bridge networks: names, published ports, outbound
/// traffic, and what is left on the host afterwards (nothing). Traffic goes
/// only to loopback and to the namespaces these tests make.
@Suite("container networks (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct ContainerNetworkTests {
    /// A static UDP echo server, mounted into containers.
    static let udpEcho: Result<String, HarnessError> = {
        let out = TestImage.directory.appendingPathComponent("udp-echo").path
        let source = BuildProducts.root.appendingPathComponent("Tests/Fixtures/udp-echo.c").path
        guard let result = try? Processes.runBlocking("/usr/bin/cc", ["-static", "-O2", "-o", out, source], environment: ["PATH=/usr/bin:/bin"]),
            result.status == 0
        else { return .failure(HarnessError("cannot build the UDP echo server (is libc6-dev installed?)")) }
        return .success(out)
    }()

    /// GET from the host, with the test image's static busybox (its wget
    /// crashes with -T: `timeout` bounds it instead), retried for up to 10 s
    /// until the body is `expected` (a server may still be starting).
    static func fetch(_ url: String, expecting expected: String) async throws -> String {
        let busybox = try TestImage.rootfs() + "/bin/busybox"
        return try await retrying(until: expected) {
            try await runCommand(URL(fileURLWithPath: busybox), ["timeout", "5", busybox, "wget", "-q", "-O", "-", url], environment: [:]).stdout
        }
    }

    /// GET from inside a new container on `network`, retried like `fetch`.
    static func fetch(_ host: ContainerHost, _ url: String, network: String?, expecting expected: String) async throws -> String {
        let on = network.map { ["--network", $0] } ?? []
        return try await retrying(until: expected) {
            try await host.berth(["run", "--rm"] + on + ["busybox", "timeout", "5", "wget", "-q", "-O", "-", url]).stdout
        }
    }

    /// Runs `attempt` until it returns `expected` or 30 s pass (each
    /// attempt may be a container's whole run, slow while every other suite
    /// loads the machine); what it returned last.
    static func retrying(until expected: String, _ attempt: () async throws -> String) async throws -> String {
        var body = ""
        let deadline = ContinuousClock.now + .seconds(30)
        repeat {
            body = try await attempt()
            if body == expected { break }
            try await Task.sleep(for: .milliseconds(100))
        } while ContinuousClock.now < deadline
        return body
    }

    /// Sends a datagram to 127.0.0.1:port and returns the answer, nil after 5 s.
    static func udpRoundTrip(port: UInt16, _ text: String) -> String? {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let sent = withUnsafePointer(to: &address) { a in
            a.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, text, text.utf8.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard sent > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? String(decoding: buffer[..<n], as: UTF8.self) : nil
    }

    /// A port nothing on the host uses now.
    static func freePort() throws -> UInt16 { UInt16(try MetricsTests.freePort()) }

    /// The agent's nftables table, as nft lists it.
    static func table(_ agent: AgentProcess) throws -> String {
        let id = try agent.nodeID.prefix(8)
        return try Processes.runBlocking("/usr/sbin/nft", ["list", "table", "ip", "berth_\(id)"], environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]).stdout
    }

    /// The elements of the agent's port-forward maps, as nft lists them.
    static func forwards(_ agent: AgentProcess) throws -> String {
        let id = try agent.nodeID.prefix(8)
        return try ["publish_any", "publish_addr"].map { map in
            let text = try Processes.runBlocking("/usr/sbin/nft", ["list", "map", "ip", "berth_\(id)", map], environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]).stdout
            return text.split(separator: "\n").filter { $0.contains(" : ") && !$0.contains("type ") }.joined(separator: "\n")
        }.joined()
    }

    /// The host's interfaces of this agent's containers. The kernel removes
    /// those of ended namespaces in the background: with `settled`, up to
    /// 10 s are given for the count to come down to `expected`.
    static func veths(_ agent: AgentProcess, settled expected: Int? = nil) async throws -> [String] {
        let id = try agent.nodeID.prefix(4)
        return try await settled(until: { links in expected.map { links.count <= $0 } ?? true }) {
            try FileManager.default.contentsOfDirectory(atPath: "/sys/class/net").filter { $0.hasPrefix("v\(id)") }.sorted()
        }
    }

    /// What `read` gives once `done` holds of it, or after 10 s, read every 50 ms.
    static func settled<T>(until done: (T) -> Bool, _ read: () throws -> T) async throws -> T {
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            let value = try read()
            if done(value) || ContinuousClock.now > deadline { return value }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    @Test("two containers on a user network reach each other by name and alias; one started later resolves at once, a removed one no longer does; other names go to the upstream resolver; connect and disconnect act at once")
    func names() async throws {
        let stubDir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-dns-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: stubDir, withIntermediateDirectories: true)
        let stub = try await PythonFixture(script: "dns-stub.py", arguments: [], directory: stubDir, what: "the DNS stub")
        defer { stub.stop() }
        let host = try await ContainerHost(extraArguments: ["--dns", "127.0.0.1:\(stub.port)"])
        defer { host.cleanUp() }
        let subnet = try NetworkTests.freeSubnet()
        #expect(try await host.berth(["network", "create", "--subnet", subnet, "front"]).status == 0)
        let web = try await host.berth([
            "run", "-d", "--name", "web", "--network", "front", "--network-alias", "www", "busybox", "sh", "-c",
            "echo hello-from-web > /tmp/index.html; exec httpd -f -p 80 -h /tmp",
        ])
        #expect(web.status == 0, "\(web.stderr)")
        let record = try await host.inspect("web")
        let prefix = String(subnet.dropLast("0/24".count))
        #expect(record.endpoints.map(\.address.description) == [prefix + "2"], "the first free address: \(record.endpoints)")
        for name in ["web", "www", "web.front"] {
            #expect(try await Self.fetch(host, "http://\(name)/", network: "front", expecting: "hello-from-web\n") == "hello-from-web\n", "\(name)")
        }
        // A container started later is known at once; a removed one is not.
        #expect(try await host.berth(["run", "-d", "--name", "late", "--network", "front", "busybox", "sleep", "300"]).status == 0)
        let late = try await host.berth(["exec", "web", "nslookup", "late"])
        #expect(late.status == 0 && late.stdout.contains(prefix + "3"), "\(late.stdout) \(late.stderr)")
        #expect(try await host.berth(["rm", "-f", "late"]).status == 0)
        let gone = try await host.berth(["exec", "web", "nslookup", "late"])
        #expect(gone.status != 0 || !gone.stdout.contains(prefix + "3"), "\(gone.stdout)")
        // Names that are no container's go to the upstream resolver.
        let outside = try await host.berth(["exec", "web", "nslookup", "example.test"])
        #expect(outside.stdout.contains("192.0.2.10"), "\(outside.stdout) \(outside.stderr)")
        #expect(stub.requests.contains("example.test"))
        #expect(!stub.requests.contains("web"), "containers' names are answered by the agent")

        // Another network: isolated from the first, until connected.
        let other = try NetworkTests.freeSubnet()
        #expect(try await host.berth(["network", "create", "--subnet", other, "back"]).status == 0)
        #expect(try await host.berth(["run", "-d", "--name", "db", "--network", "back", "busybox", "sleep", "300"]).status == 0)
        let db = try await host.inspect("db").endpoints[0].address
        let isolated = try await host.berth(["exec", "web", "ping", "-c", "1", "-W", "1", db.description])
        #expect(isolated.status != 0, "networks are isolated: \(isolated.stdout)")
        #expect(try await host.berth(["network", "connect", "--alias", "store", "back", "web"]).status == 0)
        let eth1 = try await host.berth(["exec", "web", "ip", "-o", "-4", "addr", "show", "eth1"])
        #expect(eth1.stdout.contains(String(other.dropLast("0/24".count)) + "3/24"), "\(eth1.stdout) \(eth1.stderr)")
        let byName = try await host.berth(["exec", "db", "timeout", "5", "wget", "-q", "-O", "-", "http://store/"])
        #expect(byName.stdout == "hello-from-web\n", "\(byName.stdout) \(byName.stderr)")
        let refused = try await host.berth(["network", "rm", "back"])
        #expect(refused.status != 0 && refused.stderr.contains("has containers attached: db, web"), "\(refused.stderr)")
        #expect(try await host.berth(["network", "disconnect", "back", "web"]).status == 0)
        let links = try await host.berth(["exec", "web", "ls", "/sys/class/net"])
        #expect(links.stdout == "eth0\nlo\n", "\(links.stdout)")

        // Bad requests change nothing.
        let before = try await host.berth(["network", "inspect", "front"]).stdout
        let refusals: [([String], String)] = [
            (["run", "--network", "front", "--ip", prefix + "2", "busybox", "true"], "already in use on network front"),
            (["run", "--network", "front", "--ip", "192.0.2.7", "busybox", "true"], "is not a host address of network front"),
            (["run", "--network", "front", "--ip", prefix + "1", "busybox", "true"], "network front's gateway"),
            (["run", "--network", "none", "-p", "8080:80", "busybox", "true"], "published ports need a bridge network"),
            (["run", "--network", "none", "--network-alias", "x", "busybox", "true"], "--network-alias needs a user-defined network"),
            (["network", "connect", "front", "web"], "already on network front"),
            (["network", "disconnect", "back", "web"], "is not on network back"),
            (["network", "rm", "front"], "has containers attached: web"),
            (["create", "--network", "nosuch", "busybox"], "no such network: nosuch"),
        ]
        for (arguments, message) in refusals {
            let r = try await host.berth(arguments)
            #expect(r.status != 0 && r.stderr.contains(message), "\(arguments): \(r.stderr)")
        }
        #expect(try await host.berth(["network", "inspect", "front"]).stdout == before)
        #expect(try await host.berth(["rm", "-f", "web", "db"]).status == 0)
        #expect(try await Self.veths(host.agent, settled: 0).isEmpty, "no veth is left")
        #expect(try await host.berth(["network", "rm", "front", "back"]).status == 0)
        try? FileManager.default.removeItem(at: stubDir)
    }

    @Test("published ports: TCP on a chosen and on a free port from 127.0.0.1 and the gateway, UDP, berth port; a port in use is a clear error that leaves nothing behind")
    func publishedPorts() async throws {
        let subnet = try NetworkTests.freeSubnet()
        let host = try await ContainerHost(extraArguments: ["--bridge-subnet", subnet])
        defer { host.cleanUp() }
        let echo = try Self.udpEcho.get()
        let fixed = try Self.freePort()
        let web = try await host.berth([
            "run", "-d", "--name", "web", "-p", "\(fixed):80", "-p", "127.0.0.1::80", "-p", "127.0.0.1::9000/udp",
            "-v", "\(echo):/udp-echo:ro", "busybox", "sh", "-c",
            "echo published > /tmp/index.html; /udp-echo 9000 & exec httpd -f -p 80 -h /tmp",
        ])
        #expect(web.status == 0, "\(web.stderr)")
        let record = try await host.inspect("web")
        #expect(record.endpoints.first?.networkName == "bridge", "the default network")
        let ports = record.publishedPorts
        #expect(ports.count == 3, "\(ports)")
        let free = try #require(ports.first { $0.hostIP != nil && $0.transport == .tcp }).hostPort
        let udp = try #require(ports.first { $0.transport == .udp }).hostPort
        #expect(free != 0 && udp != 0 && free != fixed)
        let gateway = String(subnet.dropLast("0/24".count)) + "1"
        for url in ["http://127.0.0.1:\(fixed)/", "http://\(gateway):\(fixed)/", "http://127.0.0.1:\(free)/"] {
            #expect(try await Self.fetch(url, expecting: "published\n") == "published\n", "\(url)")
        }
        var answer: String?
        for _ in 0..<20 where answer == nil {
            answer = Self.udpRoundTrip(port: udp, "ping")
        }
        #expect(answer == "echo:ping")
        let listed = try await host.berth(["port", "web"])
        #expect(
            Set(listed.stdout.split(separator: "\n").map(String.init))
                == ["80/tcp -> 0.0.0.0:\(fixed)", "80/tcp -> 127.0.0.1:\(free)", "9000/udp -> 127.0.0.1:\(udp)"], "\(listed.stdout)")
        #expect(try await host.berth(["port", "web", "9000/udp"]).stdout == "127.0.0.1:\(udp)\n")
        #expect(try await host.berth(["ps"]).stdout.contains("0.0.0.0:\(fixed)->80/tcp"))

        // A host port that is taken: a clear error, no rule, no interface left.
        let table = try Self.table(host.agent)
        let veths = try await Self.veths(host.agent)
        let taken = try await host.berth(["run", "-d", "--name", "second", "-p", "\(fixed):80", "busybox", "httpd", "-f"])
        #expect(taken.status != 0 && taken.stderr.contains("0.0.0.0:\(fixed)/tcp: the port is already in use"), "\(taken.stderr)")
        #expect(try Self.table(host.agent) == table)
        #expect(try await Self.veths(host.agent, settled: veths.count) == veths)
        #expect(try await host.inspect("second").status.state == .created)

        // Stopped: the ports are free and forward nowhere.
        #expect(try await host.berth(["stop", "-t", "1", "web"]).status == 0)
        #expect(try await host.inspect("web").publishedPorts.isEmpty)
        let afterStop = try Self.table(host.agent)
        #expect(!afterStop.contains(". \(fixed) :"), "\(afterStop)")
        #expect(try await Self.veths(host.agent, settled: 0).isEmpty)
        // The port is the next container's now.
        #expect(try await host.berth(["start", "second"]).status == 0)
        #expect(try await host.berth(["rm", "-f", "web", "second"]).status == 0)
        #expect(try await Self.veths(host.agent, settled: 0).isEmpty)
        #expect(try Self.forwards(host.agent).isEmpty, "no forward is left")
        let removal = try await host.berth(["network", "rm", "bridge"])
        #expect(removal.status != 0 && removal.stderr.contains("bridge is the default network"), "\(removal.stderr)")
    }

    @Test("outbound: a container reaches the host, and through masquerade a host beyond it (a namespace of the test's)")
    func outbound() async throws {
        let subnet = try NetworkTests.freeSubnet()
        let host = try await ContainerHost(extraArguments: ["--bridge-subnet", subnet])
        defer { host.cleanUp() }
        // "Beyond": a namespace with a veth to the host, its own subnet,
        // serving HTTP that answers with the client's address.
        let outside = try NetworkTests.freeSubnet()
        let prefix = String(outside.dropLast("0/24".count))
        let tag = String(UUID().uuidString.prefix(6)).lowercased()
        let netns = "berth-test-\(tag)"
        let ip = { (args: [String]) throws -> CommandResult in
            let r = try Processes.runBlocking("/usr/sbin/ip", args, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
            return CommandResult(status: r.status, stdout: r.stdout, stderr: r.stderr)
        }
        defer {
            _ = try? ip(["link", "delete", "vt\(tag)"])
            _ = try? ip(["netns", "delete", netns])
        }
        for args in [
            ["netns", "add", netns], ["link", "add", "vt\(tag)", "type", "veth", "peer", "name", "eth0", "netns", netns],
            ["addr", "add", prefix + "1/24", "dev", "vt\(tag)"], ["link", "set", "vt\(tag)", "up"],
            ["-n", netns, "addr", "add", prefix + "2/24", "dev", "eth0"], ["-n", netns, "link", "set", "eth0", "up"],
            ["-n", netns, "link", "set", "lo", "up"],
        ] {
            let r = try ip(args)
            try #require(r.status == 0, "ip \(args): \(r.stderr)")
        }
        let busybox = try TestImage.rootfs() + "/bin/busybox"
        let www = TestImage.directory.appendingPathComponent("www-\(tag)")
        try FileManager.default.createDirectory(at: www, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: www) }
        try "beyond\n".write(to: www.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
        let server = ChildProcess(
            pid: try Processes.spawn(
                executable: "/usr/sbin/ip", arguments: ["netns", "exec", netns, busybox, "httpd", "-f", "-p", "80", "-h", www.path],
                environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], stdout: 2, stderr: 2))
        defer {
            kill(server.pid, SIGKILL)
            server.waitUntilExit()
        }
        let gateway = String(subnet.dropLast("0/24".count)) + "1"
        let toHost = try await host.berth(["run", "--rm", "busybox", "ping", "-c", "1", "-W", "2", gateway])
        #expect(toHost.status == 0, "the host: \(toHost.stdout) \(toHost.stderr)")
        let beyond = try await Self.fetch(host, "http://\(prefix)2/", network: nil, expecting: "beyond\n")
        // The far side has no route to the container's subnet: only an
        // answer to the host's address (masquerade) can come back.
        #expect(!(try ip(["-n", netns, "-4", "route", "show"])).stdout.contains(String(subnet.dropLast("0/24".count))))
        #expect(beyond == "beyond\n", "beyond the host")
        // An internal network has no way out, but its containers reach each other.
        #expect(try await host.berth(["network", "create", "--internal", "--subnet", try NetworkTests.freeSubnet(), "sealed"]).status == 0)
        #expect(try await host.berth(["run", "-d", "--name", "peer", "--network", "sealed", "busybox", "sleep", "300"]).status == 0)
        let sealed = try await host.berth(["run", "--rm", "--network", "sealed", "busybox", "timeout", "3", "wget", "-q", "-O", "-", "http://\(prefix)2/"])
        #expect(sealed.status != 0 && sealed.stdout.isEmpty, "\(sealed.stdout)")
        let route = try await host.berth(["run", "--rm", "--network", "sealed", "busybox", "ip", "route"])
        #expect(!route.stdout.contains("default"), "no default route: \(route.stdout)")
        let peer = try await host.berth(["run", "--rm", "--network", "sealed", "busybox", "ping", "-c", "1", "-W", "2", "peer"])
        #expect(peer.status == 0, "\(peer.stdout) \(peer.stderr)")
        #expect(try await host.berth(["rm", "-f", "peer"]).status == 0)
    }

    /// The agent's standby namespace files, once there are `expected` (up to 10 s).
    static func standby(_ agent: AgentProcess, count expected: Int) async throws -> [String] {
        try await settled(until: { $0.count == expected }) {
            (try? FileManager.default.contentsOfDirectory(atPath: "\(agent.state)/netns.standby")) ?? []
        }
    }

    /// Whether the interface exists, waiting up to 10 s for it to be `present`
    /// (the kernel removes a dead namespace's interfaces in the background).
    static func link(_ name: String, settles present: Bool) async throws -> Bool {
        try await settled(until: { $0 == present }) { FileManager.default.fileExists(atPath: "/sys/class/net/\(name)") }
    }

    @Test("the next container's namespace is made ahead: one on the default network takes it over with its own address, MAC, route and host interface, and another is made; an agent killed with -9 leaves it to the next, which removes it; a stopped agent leaves none")
    func standbyNamespace() async throws {
        let subnet = try NetworkTests.freeSubnet()
        // At debug level the agent says when one is ready to be taken (its
        // file and veth appear a moment before).
        let arguments = ["--bridge-subnet", subnet, "--log-level", "debug"]
        let first = try await ContainerHost(extraArguments: arguments)
        defer { first.cleanUp() }
        let id = try first.agent.nodeID.prefix(4)
        let ready = try await Self.standby(first.agent, count: 1)
        try #require(ready.count == 1, "one namespace is made ahead: \(ready)")
        #expect(try await Self.link("s\(id)\(ready[0])", settles: true), "its veth waits in the bridge")
        #expect(try await Self.settled(until: { $0 }) {
            first.agent.log.split(separator: "\n").contains { $0.contains("network namespace made ahead") && $0.contains(ready[0]) }
        }, "the agent has it ready")

        #expect(try await first.berth(["run", "-d", "--name", "one", "busybox", "sleep", "300"]).status == 0)
        let one = try await first.inspect("one")
        let endpoint = try #require(one.endpoints.first)
        // The kernel reports the link's operational state from a work queue
        // of its own, a moment after the link is up (longer on a loaded machine).
        let look = ["exec", "one", "sh", "-c", "cat /sys/class/net/eth0/address /sys/class/net/eth0/operstate; ip -4 -o addr show eth0; ip route"]
        var seen = try await first.berth(look)
        for _ in 0..<100 where !seen.stdout.contains("\nup\n") {
            try await Task.sleep(for: .milliseconds(50))
            seen = try await first.berth(look)
        }
        #expect(seen.stdout.contains(endpoint.address.macAddress + "\nup\n"), "\(seen.stdout)")
        #expect(seen.stdout.contains("inet \(endpoint.address)/\(endpoint.subnet.prefix)"), "\(seen.stdout)")
        #expect(seen.stdout.contains("default via \(endpoint.gateway) dev eth0"), "\(seen.stdout)")
        #expect(try await first.berth(["exec", "one", "ping", "-c", "1", "-W", "5", endpoint.gateway.description]).status == 0)
        let hostEnd = "v\(id)\(one.id.rawValue.prefix(6))\(endpoint.networkID.prefix(4))"
        #expect(try await Self.link(hostEnd, settles: true), "the host end has the container's name")
        #expect(try String(contentsOfFile: "/sys/class/net/\(hostEnd)/operstate", encoding: .utf8) == "up\n")
        #expect(!(try await Self.link("s\(id)\(ready[0])", settles: false)), "the standby's name is gone with it")
        let next = try await Self.standby(first.agent, count: 1)
        #expect(next.count == 1 && next != ready, "another is made: \(next)")

        // Killed: the next agent removes what the first had made ahead.
        kill(first.agent.pid, SIGKILL)
        first.agent.process.waitUntilExit()
        let second = try await AgentProcess(extraArguments: arguments, tcp: false, directory: first.agent.directory, cgroupParent: first.agent.cgroupParent)
        defer { second.cleanUp() }
        #expect(!(try await Self.link("s\(id)\(next[0])", settles: false)), "the killed agent's standby veth is gone")
        let again = try await Self.standby(second, count: 1)
        #expect(again.count == 1 && again != next, "\(again)")
        #expect(try await Self.veths(second) == [hostEnd], "the running container keeps its interface")

        // Stopped: nothing made ahead stays.
        #expect(try await first.berth(["rm", "-f", "one"]).status == 0)
        #expect(second.stop() == 0)
        #expect(try await Self.standby(second, count: 0).isEmpty)
        #expect(!(try await Self.link("s\(id)\(again[0])", settles: false)))
    }

    @Test("an agent killed with -9: a container that died meanwhile leaves no rule, veth or namespace; stale ones are removed; a running one keeps its address, name and port")
    func crashReconcile() async throws {
        let subnet = try NetworkTests.freeSubnet()
        let arguments = ["--bridge-subnet", subnet]
        let first = try await ContainerHost(extraArguments: arguments)
        defer { first.cleanUp() }
        let keptPort = try Self.freePort()
        let lostPort = try Self.freePort()
        #expect(try await first.berth(["run", "-d", "--name", "kept", "-p", "127.0.0.1:\(keptPort):80", "busybox", "sh", "-c",
                                        "echo kept > /tmp/index.html; exec httpd -f -p 80 -h /tmp"]).status == 0)
        #expect(try await first.berth(["run", "-d", "--name", "lost", "-p", "127.0.0.1:\(lostPort):80", "busybox", "httpd", "-f", "-p", "80"]).status == 0)
        let kept = try await first.inspect("kept")
        let lost = try await first.inspect("lost")
        let lostPID = try #require(lost.status.pid)
        kill(first.agent.pid, SIGKILL)
        first.agent.process.waitUntilExit()
        // While the agent is away: the container's process dies, and
        // someone leaves a veth with the agent's prefix and a forward.
        kill(lostPID, SIGKILL)
        let id = try first.agent.nodeID
        let stale = "v\(id.prefix(4))stale0"
        let env = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
        _ = try Processes.runBlocking("/usr/sbin/ip", ["link", "add", stale, "type", "veth", "peer", "name", "p\(id.prefix(4))stale0"], environment: env)
        _ = try Processes.runBlocking(
            "/usr/sbin/nft", ["add", "element", "ip", "berth_\(id.prefix(8))", "publish_any", "{ tcp . 1 : 10.0.0.1 . 1 }"], environment: env)
        try await Task.sleep(for: .milliseconds(500))

        let second = try await AgentProcess(extraArguments: arguments, tcp: false, directory: first.agent.directory, cgroupParent: first.agent.cgroupParent)
        defer { second.cleanUp() }
        func berth(_ args: [String]) async throws -> CommandResult { try await second.berth(args) }
        let records = try BerthJSON.decoder().decode([Container].self, from: Data(try await berth(["inspect", "--format", "record", "kept", "lost"]).stdout.utf8))
        #expect(records[0].status.state == .running && records[0].endpoints == kept.endpoints)
        #expect(records[1].status.state == .exited && records[1].publishedPorts.isEmpty)
        let table = try Self.table(second)
        #expect(table.contains(". \(keptPort) :") && !table.contains(". \(lostPort) :") && !table.contains("10.0.0.1"), "\(table)")
        #expect(try await Self.veths(second, settled: 1) == ["v\(id.prefix(4))\(kept.id.rawValue.prefix(6))\(kept.endpoints[0].networkID.prefix(4))"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(second.state)/netns") == [kept.id.rawValue])
        #expect(try await Self.fetch("http://127.0.0.1:\(keptPort)/", expecting: "kept\n") == "kept\n")
        let resolved = try await berth(["run", "--rm", "busybox", "nslookup", "kept"])
        #expect(resolved.stdout.contains(kept.endpoints[0].address.description), "\(resolved.stdout)")
        // The next container does not get an address already given.
        #expect(try await berth(["create", "--name", "next", "busybox", "true"]).status == 0)
        let next = try BerthJSON.decoder().decode([Container].self, from: Data(try await berth(["inspect", "--format", "record", "next"]).stdout.utf8))
        #expect(!([kept, lost].flatMap(\.endpoints).map(\.address)).contains(next[0].endpoints[0].address))
        #expect(try await berth(["rm", "-f", "kept", "lost", "next"]).status == 0)
        #expect(try await Self.veths(second, settled: 0).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(second.state)/netns").isEmpty)
    }
}

@Suite("published ports requested", .ownThreads, .ownThreads)
struct RequestedPortsTests {
    @Test("-P adds the image's exposed ports on free host ports, after -p's; IPv6 host addresses and ports without a network are refused")
    func requested() throws {
        var spec = ContainerSpec(image: "x", ports: [PortMapping(hostPort: 8080, containerPort: 80)], publishAll: true)
        let ports = try ContainerNetworking.requestedPorts(spec, exposed: ["80/tcp", "53/udp", "9000"], onNetwork: true)
        #expect(ports == [
            PortMapping(hostPort: 8080, containerPort: 80), PortMapping(hostPort: 0, containerPort: 53, transport: .udp),
            PortMapping(hostPort: 0, containerPort: 9000),
        ])
        #expect(try ContainerNetworking.requestedPorts(ContainerSpec(image: "x"), exposed: ["80/tcp"], onNetwork: false).isEmpty)
        #expect(throws: BerthError.self) { try ContainerNetworking.requestedPorts(spec, exposed: [], onNetwork: false) }
        spec.ports = [try PortMapping(parsing: "[::1]:8080:80")]
        #expect(throws: BerthError.self) { try ContainerNetworking.requestedPorts(spec, exposed: [], onNetwork: true) }
    }
}
