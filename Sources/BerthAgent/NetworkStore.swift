public import BerthModel
import BerthLinux
import Foundation
import Synchronization

/// The host's side of bridge networks: bridge devices made and removed with
/// iproute2, and the IPv4 routes the host already has.
enum HostNetwork {
    static let ip = ["/usr/sbin/ip", "/sbin/ip", "/bin/ip", "/usr/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Runs `ip` and returns what it printed.
    @discardableResult
    static func run(_ arguments: [String]) throws -> String {
        guard let ip else { throw BerthError(.unavailable, "iproute2's ip command is not installed; networks need it") }
        let result = try Processes.runBlocking(ip, arguments, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], timeout: .seconds(30))
        guard result.status == 0 else {
            throw BerthError(.internal, "ip \(arguments.joined(separator: " ")): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return result.stdout
    }

    static func linkExists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: "/sys/class/net/\(name)") }

    /// Makes (or completes) a bridge with the gateway address, up.
    static func ensureBridge(_ network: Network) throws {
        if !linkExists(network.bridge) {
            try run(["link", "add", "name", network.bridge, "type", "bridge"])
        }
        let address = "\(network.gateway)/\(network.subnet.prefix)"
        if try !run(["-4", "-o", "addr", "show", "dev", network.bridge]).contains(" \(address) ") {
            try run(["addr", "add", address, "dev", network.bridge])
        }
        try run(["link", "set", network.bridge, "up"])
    }

    static func removeBridge(_ name: String) throws {
        guard linkExists(name) else { return }
        try run(["link", "delete", name, "type", "bridge"])
    }

    /// The host's IPv4 routes (but the default route), from /proc/net/route.
    static func routes() -> [(device: String, subnet: IPv4Subnet)] {
        guard let text = try? String(contentsOfFile: "/proc/net/route", encoding: .utf8) else { return [] }
        var routes: [(String, IPv4Subnet)] = []
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 8, let destination = UInt32(fields[1], radix: 16), let mask = UInt32(fields[7], radix: 16), mask != 0 else { continue }
            let prefix = mask.nonzeroBitCount
            // The file holds them in the host's (little-endian) byte order.
            routes.append((String(fields[0]), IPv4Subnet(network: IPv4Address(destination.byteSwapped), prefix: prefix)))
        }
        return routes
    }
}

/// The agent's bridge networks, recorded in its database with a `create`
/// or `destroy` event each, their bridges made on the host.
public final class NetworkStore: Sendable {
    private let database: AgentDatabase
    private let lock = Mutex(())
    /// Where subnets are picked from when a network names none.
    static let pool = try! IPv4Subnet(parsing: "10.89.0.0/16")

    public init(database: AgentDatabase) {
        self.database = database
    }

    public func list() throws -> [Network] {
        try database.allNetworks().sorted { $0.name < $1.name }
    }

    /// By name, full ID or an unambiguous ID prefix.
    ///
    /// - Throws: `BerthError.notFound`.
    public func get(_ reference: String) throws -> Network {
        let all = try database.allNetworks()
        if let byName = all.first(where: { $0.name == reference }) { return byName }
        let matches = reference.count >= 4 ? all.filter { $0.id.hasPrefix(reference) } : []
        guard matches.count == 1 else { throw BerthError.notFound("network", reference) }
        return matches[0]
    }

    /// Creates a network and its bridge.
    ///
    /// - Throws: `BerthError.invalidArgument` for a bad name, subnet or
    ///   gateway, or a subnet that overlaps another network or a route of the
    ///   host; `alreadyExists` for a taken name. Nothing is changed then.
    public func create(
        name: String, subnet requested: String?, gateway requestedGateway: String?, internal: Bool, labels: [String: String]
    ) throws -> Network {
        try Network.validate(name: name)
        return try lock.withLock { _ in
            let existing = try database.allNetworks()
            if existing.contains(where: { $0.name == name }) {
                throw BerthError(.alreadyExists, "network \(name) already exists")
            }
            let routes = HostNetwork.routes()
            let subnet: IPv4Subnet
            if let requested, !requested.isEmpty {
                subnet = try IPv4Subnet(parsing: requested)
                if let clash = existing.first(where: { $0.subnet.overlaps(subnet) }) {
                    throw BerthError.invalid("subnet \(subnet) overlaps network \(clash.name) (\(clash.subnet))")
                }
                if let route = routes.first(where: { $0.subnet.overlaps(subnet) }) {
                    throw BerthError.invalid("subnet \(subnet) overlaps the host's route to \(route.subnet) on \(route.device)")
                }
            } else {
                guard requestedGateway == nil || requestedGateway!.isEmpty else {
                    throw BerthError.invalid("--gateway needs --subnet")
                }
                subnet = try Self.pick(avoiding: existing.map(\.subnet) + routes.map(\.subnet))
            }
            var gateway = subnet.firstHost
            if let requestedGateway, !requestedGateway.isEmpty {
                gateway = try IPv4Address(parsing: requestedGateway)
                guard subnet.contains(gateway), gateway != subnet.network, gateway != subnet.broadcast else {
                    throw BerthError.invalid("gateway \(gateway) is not a host address of subnet \(subnet)")
                }
            }
            let id = RandomHex.make()
            let network = Network(
                id: id, name: name, subnet: subnet, gateway: gateway, bridge: "berth" + id.prefix(10), internal: `internal`, labels: labels,
                createdAt: Date())
            do {
                try HostNetwork.ensureBridge(network)
                _ = try database.insert(
                    network, events: [.init(type: .network, action: .create, actorID: network.id, attributes: ["name": name, "type": "bridge"])])
            } catch {
                try? HostNetwork.removeBridge(network.bridge)
                throw error
            }
            return network
        }
    }

    /// A free /24 of the pool, chosen at random so that agents picking at
    /// the same moment rarely collide.
    static func pick(avoiding taken: [IPv4Subnet]) throws -> IPv4Subnet {
        let candidates = (0..<256).map { IPv4Subnet(network: IPv4Address(pool.network.value | UInt32($0) << 8), prefix: 24) }
        let free = candidates.filter { c in !taken.contains { $0.overlaps(c) } }
        guard let chosen = free.randomElement() else {
            throw BerthError(.resourceExhausted, "no free /24 left in \(pool); give the network a --subnet")
        }
        return chosen
    }

    /// Removes a network and its bridge.
    ///
    /// - Parameter users: names of containers attached; removal is refused while there are any.
    public func remove(_ reference: String, users: [String]) throws {
        try lock.withLock { _ in
            let network = try get(reference)
            guard users.isEmpty else {
                throw BerthError(.failedPrecondition, "network \(network.name) has containers attached: \(users.sorted().joined(separator: ", "))")
            }
            try HostNetwork.removeBridge(network.bridge)
            _ = try database.delete(network: network.id, events: [.init(type: .network, action: .destroy, actorID: network.id, attributes: ["name": network.name])])
        }
    }

    /// Makes every recorded network's bridge exist again (after a reboot,
    /// or a bridge someone deleted).
    public func restore() -> [String] {
        var problems: [String] = []
        for network in (try? database.allNetworks()) ?? [] {
            do {
                try HostNetwork.ensureBridge(network)
            } catch {
                problems.append("network \(network.name): \(error)")
            }
        }
        return problems
    }
}
