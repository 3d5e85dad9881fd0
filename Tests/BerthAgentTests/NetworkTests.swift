import BerthLinux
import BerthModel
import BerthTesting
import Foundation
import Testing

/// Bridge networks on the host, and the network modes of containers.
@Suite("networks (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct NetworkTests {
    /// `ip` with `arguments`; its output. With `checked`, a non-zero exit throws with ip's message.
    @discardableResult
    static func ip(_ arguments: [String], checked: Bool = false) throws -> String {
        let r = try Processes.runBlocking("/usr/sbin/ip", arguments, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        if checked && r.status != 0 { throw HarnessError("ip \(arguments.joined(separator: " ")): \(r.stderr)") }
        return r.stdout
    }

    /// A /24 in 10.200-249.x.0 that no host route touches.
    static func freeSubnet() throws -> String {
        let routes = try ip(["-4", "-o", "route", "show"])
        while true {
            let candidate = "10.\(Int.random(in: 200...249)).\(Int.random(in: 0...255))"
            if !routes.contains(candidate + ".") { return candidate + ".0/24" }
        }
    }

    static func inspect(_ host: ContainerHost, _ name: String) async throws -> [String: Any] {
        let r = try await host.berth(["network", "inspect", name])
        let shown = try #require((try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]])?.first, "\(r.stdout) \(r.stderr)")
        return summary(shown)
    }

    /// The fields the tests read from docker's shape of a network.
    static func summary(_ shown: [String: Any]) -> [String: Any] {
        let ipam = ((shown["IPAM"] as? [String: Any])?["Config"] as? [[String: Any]])?.first
        return [
            "bridge": (shown["Options"] as? [String: String])?["com.docker.network.bridge.name"] as Any, "gateway": ipam?["Gateway"] as Any,
            "subnet": ipam?["Subnet"] as Any, "labels": shown["Labels"] as Any,
        ]
    }

    @Test("create, ls, inspect, rm: the bridge is made with the gateway address and goes with the network; bad input is refused and changes nothing")
    func lifecycle() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let subnet = try Self.freeSubnet()
        let created = try await host.berth(["network", "create", "--subnet", subnet, "--label", "team=core", "front"])
        #expect(created.status == 0, "\(created.stderr)")
        let front = try await Self.inspect(host, "front")
        let bridge = try #require(front["bridge"] as? String)
        let gateway = try #require(front["gateway"] as? String)
        #expect(front["subnet"] as? String == subnet && gateway == subnet.replacingOccurrences(of: ".0/24", with: ".1"))
        #expect((front["labels"] as? [String: String]) == ["team": "core"])
        #expect(try Self.ip(["-4", "-o", "addr", "show", "dev", bridge]).contains("\(gateway)/24"), "the bridge has the gateway address")
        #expect(try Self.ip(["-o", "link", "show", "dev", bridge]).contains(",UP"), "and is up")

        let auto = try await host.berth(["network", "create", "back"])
        #expect(auto.status == 0, "\(auto.stderr)")
        let back = try await Self.inspect(host, "back")
        let picked = try IPv4Subnet(parsing: try #require(back["subnet"] as? String))
        #expect(try IPv4Subnet(parsing: "10.89.0.0/16").overlaps(picked) && picked.prefix == 24)
        #expect(!picked.overlaps(try IPv4Subnet(parsing: subnet)))

        let before = try await host.berth(["network", "ls", "--format", "json"]).stdout
        let refusals: [([String], String)] = [
            (["network", "create", "front"], "already exists"),
            (["network", "create", "--subnet", subnet, "other"], "overlaps network front"),
            (["network", "create", "--subnet", try Self.freeSubnet(), "--gateway", "192.0.2.1", "other"], "is not a host address"),
            (["network", "create", "--subnet", "10.250.1.7/24", "other"], "host bits are set; the subnet is 10.250.1.0/24"),
            (["network", "create", "--subnet", "10.250.1.0/31", "other"], "between 8 and 30"),
            (["network", "create", "host"], "is reserved"),
            (["network", "create", "bad name"], "only [a-zA-Z0-9]"),
        ]
        for (arguments, message) in refusals {
            let r = try await host.berth(arguments)
            #expect(r.status != 0 && r.stderr.contains(message), "\(arguments): \(r.stderr)")
        }
        #expect(try await host.berth(["network", "ls", "--format", "json"]).stdout == before, "nothing changed")
        let listed = try await host.berth(["network", "ls"])
        #expect(listed.stdout.contains("front") && listed.stdout.contains("back") && listed.stdout.hasPrefix("NETWORK ID"), "\(listed.stdout)")

        let unknown = try await host.berth(["create", "--network", "nosuch", "busybox"])
        #expect(unknown.status != 0 && unknown.stderr.contains("no such network: nosuch"), "\(unknown.stderr)")

        #expect(try await host.berth(["network", "rm", "front", "back"]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: "/sys/class/net/\(bridge)"), "the bridge went with the network")
        let gone = try await host.berth(["network", "inspect", "front"])
        #expect(gone.status != 0 && gone.stderr.contains("no such network: front"), "\(gone.stderr)")
    }

    @Test("a bridge deleted behind the agent's back is made again when the agent starts")
    func restore() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-agent-test-\(UUID().uuidString.prefix(8))")
        let first = try await AgentProcess(tcp: false, directory: directory)
        let env = ["BERTH_HOST": "unix://\(first.socketPath)"]
        let berth = try BuildProducts.executable("berth")
        #expect(try await runCommand(berth, ["network", "create", "--subnet", try Self.freeSubnet(), "kept"], environment: env).status == 0)
        let bridge = try #require(
            (try JSONSerialization.jsonObject(with: Data(try await runCommand(berth, ["network", "inspect", "kept"], environment: env).stdout.utf8)) as? [[String: Any]])?
                .first.map(Self.summary)?["bridge"] as? String)
        first.stop()
        _ = try Self.ip(["link", "delete", bridge])
        let second = try await AgentProcess(tcp: false, directory: directory, cgroupParent: first.cgroupParent)
        defer { second.cleanUp() }
        #expect(FileManager.default.fileExists(atPath: "/sys/class/net/\(bridge)"))
        #expect(try await runCommand(berth, ["network", "rm", "kept"], environment: env).status == 0)
        #expect(!FileManager.default.fileExists(atPath: "/sys/class/net/\(bridge)"))
    }

    @Test("--network given twice: one interface on each user network; none, host or the default network cannot be added to another")
    func twoNetworks() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let (first, second) = (try Self.freeSubnet(), try Self.freeSubnet())
        #expect(try await host.berth(["network", "create", "--subnet", first, "one"]).status == 0)
        #expect(try await host.berth(["network", "create", "--subnet", second, "two"]).status == 0)
        let both = try await host.berth(["run", "--rm", "--network", "one", "--network", "two", "busybox", "ip", "-4", "-o", "addr"])
        #expect(both.status == 0, "\(both.stderr)")
        let lines = both.stdout.split(separator: "\n")
        #expect(lines.contains { $0.contains("eth0") && $0.contains("inet \(first.dropLast("0/24".count))") }, "\(both.stdout)")
        #expect(lines.contains { $0.contains("eth1") && $0.contains("inet \(second.dropLast("0/24".count))") }, "\(both.stdout)")
        for first in ["none", "host"] {
            let refused = try await host.berth(["run", "--rm", "--network", first, "--network", "two", "busybox", "true"])
            #expect(refused.status != 0 && refused.stderr.contains("can be on no other network"), "\(first): \(refused.stderr)")
        }
        let bridge = try await host.berth(["run", "--rm", "--network", "one", "--network", "bridge", "busybox", "true"])
        #expect(bridge.status != 0 && bridge.stderr.contains("only user-defined networks"), "\(bridge.stderr)")
        #expect(try await host.berth(["network", "rm", "one", "two"]).status == 0)
    }

    @Test("--network none has only loopback, and it is up; --network host shares the host's interfaces")
    func modes() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let none = try await host.berth(["run", "--rm", "--network", "none", "busybox", "sh", "-c", "ls /sys/class/net; ip -o link show lo"])
        #expect(none.status == 0, "\(none.stderr)")
        #expect(none.stdout.hasPrefix("lo\n") && none.stdout.contains("<LOOPBACK,UP"), "\(none.stdout)")
        let ping = try await host.berth(["run", "--rm", "busybox", "ping", "-c", "1", "-W", "2", "127.0.0.1"])
        #expect(ping.status == 0, "loopback works in the default mode too: \(ping.stdout) \(ping.stderr)")
        // Other tests add and remove interfaces meanwhile: the host's own
        // uplink (its default route's) and loopback must be there.
        let uplink = try Self.ip(["-4", "-o", "route", "show", "default"]).split(separator: " ").drop { $0 != "dev" }.dropFirst().first.map(String.init)
        let shared = try await host.berth(["run", "--rm", "--network", "host", "busybox", "ls", "/sys/class/net"])
        let seen = Set(shared.stdout.split(separator: "\n").map(String.init))
        let device = try #require(uplink)
        #expect(seen.contains("lo") && seen.contains(device), "\(shared.stdout)")
    }
}
