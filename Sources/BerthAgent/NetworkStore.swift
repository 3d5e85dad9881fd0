public import BerthModel
import BerthLinux
import BerthNetwork
import Foundation
import Synchronization

/// The agent's bridge networks, recorded in its database with a `create`
/// or `destroy` event each, their bridges made on the host.
public final class NetworkStore: Sendable {
    private let database: AgentDatabase
    private let lock = Mutex(())
    /// Where subnets are picked from when a network names none.
    static let pool = try! IPv4Subnet(parsing: "10.89.0.0/16")
    /// The start of this agent's bridge names (`br` and 4 hex digits of
    /// the node ID), so that agents sharing a host tell theirs apart.
    public let bridgePrefix: String

    public init(database: AgentDatabase, nodeID: String) {
        self.database = database
        self.bridgePrefix = "br" + nodeID.prefix(4)
    }

    /// The name of the default network (`--network bridge`).
    public static let defaultName = "bridge"

    /// The default network, made when missing (at agent start).
    ///
    /// - Parameter subnet: its subnet when it is made; nil picks a free one.
    public func ensureDefault(subnet: String?) throws -> Network {
        if let existing = try database.allNetworks().first(where: { $0.name == Self.defaultName }) { return existing }
        return try create(name: Self.defaultName, subnet: subnet, gateway: nil, internal: false, labels: [:], reservedName: true)
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
        name: String, subnet requested: String?, gateway requestedGateway: String?, internal: Bool, labels: [String: String],
        reservedName: Bool = false
    ) throws -> Network {
        if !reservedName { try Network.validate(name: name) }
        // Agents on one host choose among the same subnets: one at a time.
        return try lock.withLock { _ in try HostLock.withLock(path: "/run/lock/berth-networks.lock") {
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
                id: id, name: name, subnet: subnet, gateway: gateway, bridge: bridgePrefix + id.prefix(8), internal: `internal`, labels: labels,
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
        } }
    }

    /// The node's record of an overlay network the controller made, made
    /// now (with its bridge) when missing; whether it was made.
    ///
    /// - Throws: `BerthError.alreadyExists` when a local network has its
    ///   name; `invalidArgument` when its subnet overlaps a local network or
    ///   a route of the host. Nothing is changed then.
    public func ensureOverlay(_ overlay: OverlayNetwork) throws -> (Network, made: Bool) {
        try lock.withLock { _ in try HostLock.withLock(path: "/run/lock/berth-networks.lock") {
            let existing = try database.allNetworks()
            if let recorded = existing.first(where: { $0.id == overlay.id }) {
                try HostNetwork.ensureBridge(recorded)
                return (recorded, false)
            }
            if existing.contains(where: { $0.name == overlay.name }) {
                throw BerthError(.alreadyExists, "overlay network \(overlay.name): this node has a network of that name")
            }
            if let clash = existing.first(where: { $0.subnet.overlaps(overlay.subnet) }) {
                throw BerthError.invalid("overlay network \(overlay.name): subnet \(overlay.subnet) overlaps this node's network \(clash.name) (\(clash.subnet))")
            }
            if let route = HostNetwork.routes().first(where: { $0.subnet.overlaps(overlay.subnet) }) {
                throw BerthError.invalid("overlay network \(overlay.name): subnet \(overlay.subnet) overlaps this node's route to \(route.subnet) on \(route.device)")
            }
            var network = overlay.local
            network.bridge = bridgePrefix + overlay.id.prefix(8)
            do {
                try HostNetwork.ensureBridge(network)
                _ = try database.insert(
                    network, events: [.init(type: .network, action: .create, actorID: network.id, attributes: ["name": network.name, "type": "overlay"])])
            } catch {
                try? HostNetwork.removeBridge(network.bridge)
                throw error
            }
            return (network, true)
        } }
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
