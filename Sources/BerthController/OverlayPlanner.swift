public import BerthModel
public import Foundation

/// The controller's decisions about overlay networks, as pure functions of
/// its records (as `ServicePlanner`'s are): which subnet and VNI a new
/// network gets, which address a replica or a service's virtual IP gets,
/// and what each node's agent must know of each network it is on.
public enum OverlayPlanner {
    /// Checks and completes a new network: its name free, its subnet given
    /// (and not overlapping another's) or picked from the pool, the next
    /// free VNI.
    ///
    /// - Throws: `BerthError.invalidArgument` for a bad name, subnet or
    ///   gateway; `alreadyExists` for a name in use; `resourceExhausted`
    ///   when the pool has no free /24 left.
    public static func network(
        name: String, subnet requested: String?, gateway requestedGateway: String?, internal: Bool, labels: [String: String],
        existing: [OverlayNetwork], id: String, now: Date
    ) throws -> OverlayNetwork {
        try Network.validate(name: name)
        if existing.contains(where: { $0.name == name }) { throw BerthError(.alreadyExists, "network \(name) already exists") }
        let subnet: IPv4Subnet
        if let requested, !requested.isEmpty {
            subnet = try IPv4Subnet(parsing: requested)
            if let clash = existing.first(where: { $0.subnet.overlaps(subnet) }) {
                throw BerthError.invalid("subnet \(subnet) overlaps network \(clash.name) (\(clash.subnet))")
            }
        } else {
            guard requestedGateway?.isEmpty ?? true else { throw BerthError.invalid("--gateway needs --subnet") }
            let pool = OverlayNetwork.pool
            let candidates = (0..<256).lazy.map { IPv4Subnet(network: IPv4Address(pool.network.value | UInt32($0) << 8), prefix: 24) }
            guard let free = candidates.first(where: { c in !existing.contains { $0.subnet.overlaps(c) } }) else {
                throw BerthError(.resourceExhausted, "no free /24 left in \(pool); give the network a --subnet")
            }
            subnet = free
        }
        var gateway = subnet.firstHost
        if let requestedGateway, !requestedGateway.isEmpty {
            gateway = try IPv4Address(parsing: requestedGateway)
            guard subnet.contains(gateway), gateway != subnet.network, gateway != subnet.broadcast else {
                throw BerthError.invalid("gateway \(gateway) is not a host address of subnet \(subnet)")
            }
        }
        let vnis = Set(existing.map(\.vni))
        let vni = (OverlayNetwork.firstVNI...).first { !vnis.contains($0) }!
        return OverlayNetwork(id: id, name: name, subnet: subnet, gateway: gateway, vni: vni, internal: `internal`, labels: labels, createdAt: now)
    }

    /// The addresses on `network` that are in use: its gateway, services'
    /// virtual IPs, and every replica's that is not history yet (its
    /// container may still run).
    public static func taken(on network: OverlayNetwork, services: some Sequence<ClusterService>, replicas: some Sequence<Replica>) -> Set<IPv4Address> {
        var taken: Set<IPv4Address> = [network.gateway]
        taken.formUnion(network.nodeAddresses.values)
        for service in services { if let vip = service.virtualIPs[network.id] { taken.insert(vip) } }
        for replica in replicas where !replica.removed { if let address = replica.addresses[network.id] { taken.insert(address) } }
        return taken
    }

    /// The lowest free host address of the network, nil when none is left.
    public static func allocate(on network: OverlayNetwork, taken: Set<IPv4Address>) -> IPv4Address? {
        var value = network.subnet.firstHost.value
        while value <= network.subnet.lastHost.value {
            let address = IPv4Address(value)
            if !taken.contains(address) { return address }
            value += 1
        }
        return nil
    }

    /// Resolves a spec's networks (names or IDs) to IDs.
    ///
    /// - Throws: `BerthError.notFound` for a network the controller does not have.
    public static func resolve(_ references: [String], in networks: [String: OverlayNetwork]) throws -> [String] {
        try references.map { reference in
            if networks[reference] != nil { return reference }
            if let byName = networks.values.first(where: { $0.name == reference }) { return byName.id }
            let matches = reference.count < 4 ? [] : networks.values.filter { $0.id.hasPrefix(reference) }
            guard matches.count == 1 else {
                throw BerthError(.notFound, "network \(reference) not found (an overlay network is made with berth network create --driver overlay)")
            }
            return matches[0].id
        }
    }

    /// Gives the service a virtual IP on each of its networks (mode vip)
    /// and drops those of networks it left.
    ///
    /// - Throws: `BerthError.resourceExhausted` when a network is full.
    public static func assignVirtualIPs(
        _ service: inout ClusterService, networks: [String: OverlayNetwork], services: some Sequence<ClusterService>, replicas: some Sequence<Replica>
    ) throws {
        let wanted = service.spec.endpointMode == .vip ? Set(service.spec.networks) : []
        service.virtualIPs = service.virtualIPs.filter { wanted.contains($0.key) }
        for id in service.spec.networks where wanted.contains(id) && service.virtualIPs[id] == nil {
            guard let network = networks[id] else { continue }
            guard let vip = allocate(on: network, taken: taken(on: network, services: services, replicas: replicas)) else {
                throw BerthError(.resourceExhausted, "network \(network.name) (\(network.subnet)) has no free address left")
            }
            service.virtualIPs[id] = vip
        }
    }

    /// Gives each replica in `change` that is placed, meant to run and
    /// lacks one an address on each of its service's networks. A replica
    /// for which a network has none left is taken back off its node, with
    /// a message saying why.
    public static func assignAddresses(
        _ change: inout StoreChange, networks: [String: OverlayNetwork], services: [String: ClusterService], replicas: [String: Replica]
    ) {
        guard !networks.isEmpty else { return }
        var takenBy: [String: Set<IPv4Address>] = [:]
        for index in change.replicas.indices {
            var replica = change.replicas[index]
            guard replica.isAssigned, replica.desiredState == .running, !replica.removed,
                let service = services[replica.serviceID] ?? change.services.first(where: { $0.id == replica.serviceID })
            else { continue }
            let spec = service.version == replica.version ? service.spec : service.previous?.spec ?? service.spec
            for id in spec.networks where replica.addresses[id] == nil {
                guard let network = networks[id] else { continue }
                if takenBy[id] == nil {
                    let changed = Set(change.replicas.map(\.id))
                    let others = replicas.values.filter { !changed.contains($0.id) }
                    takenBy[id] = taken(on: network, services: Array(services.values) + change.services, replicas: others + change.replicas)
                }
                guard let address = allocate(on: network, taken: takenBy[id]!) else {
                    replica.nodeID = ""
                    replica.message = "no node fits: network \(network.name) (\(network.subnet)) has no free address left"
                    break
                }
                takenBy[id]!.insert(address)
                replica.addresses[id] = address
            }
            change.replicas[index] = replica
        }
    }

    /// The networks of services with an ingress port: every node is on them.
    public static func ingressNetworks(_ services: some Sequence<ClusterService>) -> Set<String> {
        Set(services.filter { $0.spec.publish.contains { $0.mode == .ingress } }.compactMap(\.spec.networks.first))
    }

    /// Gives `node` its own address on each network with ingress ports
    /// that lacks one; the networks changed.
    public static func assignNodeAddresses(
        for node: ClusterNode, networks: [String: OverlayNetwork], services: [String: ClusterService], replicas: some Sequence<Replica>
    ) -> [OverlayNetwork] {
        guard vtep(of: node) != nil else { return [] }
        var changed: [OverlayNetwork] = []
        for id in ingressNetworks(services.values).sorted() {
            guard var network = networks[id], network.nodeAddresses[node.id] == nil,
                let address = allocate(on: network, taken: taken(on: network, services: services.values, replicas: replicas))
            else { continue }
            network.nodeAddresses[node.id] = address
            changed.append(network)
        }
        return changed
    }

    /// Refuses a service whose ingress port another service publishes (an
    /// ingress port is taken on every node), or which publishes a port
    /// another's ingress takes.
    public static func checkPorts(_ service: ClusterService, among services: some Sequence<ClusterService>) throws {
        for other in services where other.id != service.id {
            for mine in service.spec.publish {
                if let clash = other.spec.publish.first(where: {
                    $0.published == mine.published && $0.transport == mine.transport && ($0.mode == .ingress || mine.mode == .ingress)
                }) {
                    throw BerthError(
                        .alreadyExists, "port \(mine.published)/\(mine.transport.rawValue) is published by service \(other.spec.name) (mode \(clash.mode.rawValue))")
                }
            }
        }
    }

    /// The address a node's VTEP has: the host of its agent's address.
    public static func vtep(of node: ClusterNode) -> IPv4Address? {
        var host = Substring(node.address)
        if let colon = host.lastIndex(of: ":") { host = host[..<colon] }
        return try? IPv4Address(parsing: String(host))
    }

    /// What `node`'s agent must know of each overlay network it has a
    /// replica on: the other nodes' containers on it, and its services
    /// with their virtual IPs and the replicas that serve (running, and
    /// healthy when they have a check). Nil without a VTEP address.
    public static func states(
        for node: ClusterNode, nodes: [String: ClusterNode], networks: [String: OverlayNetwork], services: [String: ClusterService],
        replicas: some Sequence<Replica>
    ) -> [OverlayState]? {
        guard !networks.isEmpty else { return [] }
        let live = replicas.filter { !$0.removed && $0.isAssigned }
        let ingress = ingressNetworks(services.values)
        let here = Set(live.filter { $0.nodeID == node.id && $0.desiredState == .running }.flatMap(\.addresses.keys)).union(ingress)
        guard !here.isEmpty else { return [] }
        guard let vtep = vtep(of: node) else { return nil }
        var vteps: [String: IPv4Address] = [:]
        for (id, other) in nodes { vteps[id] = Self.vtep(of: other) }
        return here.sorted().compactMap { id -> OverlayState? in
            guard let network = networks[id] else { return nil }
            var peers: [OverlayState.Peer] = []
            var tasks: [String: [(address: IPv4Address, here: Bool)]] = [:]
            for replica in live {
                guard let address = replica.addresses[id] else { continue }
                if replica.nodeID != node.id, let far = vteps[replica.nodeID] {
                    peers.append(OverlayState.Peer(address: address, vtep: far, name: replica.containerName))
                }
                if replica.desiredState == .running && replica.state == .running {
                    tasks[replica.serviceID, default: []].append((address, replica.nodeID == node.id))
                }
            }
            // Other nodes' own addresses (their ingress traffic comes from them): no name.
            for (other, address) in network.nodeAddresses where other != node.id {
                if let far = vteps[other] { peers.append(OverlayState.Peer(address: address, vtep: far, name: "")) }
            }
            let onNetwork = services.values.filter { $0.spec.networks.contains(id) }
            let entries = onNetwork.map { service in
                OverlayState.Service(
                    name: service.spec.name, mode: service.spec.endpointMode, virtualIP: service.virtualIPs[id],
                    tasks: (tasks[service.id] ?? []).map(\.address).sorted())
            }
            var ports: [OverlayState.Ingress] = []
            for service in onNetwork where service.spec.networks.first == id {
                let serving = tasks[service.id] ?? []
                for port in service.spec.publish where port.mode == .ingress {
                    ports.append(
                        OverlayState.Ingress(
                            published: port.published, target: port.target, transport: port.transport,
                            local: serving.filter(\.here).map(\.address).sorted(), remote: serving.filter { !$0.here }.map(\.address).sorted()))
                }
            }
            let nodeAddress = ingress.contains(id) ? network.nodeAddresses[node.id] : nil
            return OverlayState(network: network, vtep: vtep, peers: peers, services: entries, nodeAddress: nodeAddress, ingress: ports)
        }
    }
}
