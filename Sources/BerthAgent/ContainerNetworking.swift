import BerthLinux
public import BerthModel
import BerthNetwork
import BerthRuntime
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// How the agent's default network (`--network bridge`) is set up.
public enum DefaultBridge: Sendable, Hashable {
    /// No default network: such containers get a namespace with loopback only.
    case none
    /// Made at start when missing, on this subnet (nil: a free /24 of the pool).
    case subnet(String?)
}

/// Containers on bridge networks: their namespaces, veth pairs, addresses,
/// published ports, and their names in the embedded resolver.
///
/// A container on a network gets a namespace file before its process
/// starts; its interfaces are configured there, and the process joins it.
/// Everything made for a run is undone when the run ends (`detach`), and
/// at agent start whatever no record explains is removed (`reconcile`).
public final class ContainerNetworking: Sendable {
    public let store: NetworkStore
    let firewall: Firewall
    let names = NameTable()
    let dns: DNSServer
    /// `<state>/netns`: one namespace file per running container.
    let netnsDir: String
    /// `<state>/netns.standby`: the namespace made ahead of need.
    let standbyDir: String
    /// The start of this agent's veth names (`v` and 4 hex digits of the node ID).
    let vethPrefix: String
    let defaultBridge: DefaultBridge
    private let reservations = Mutex<[ContainerID: [PortReservation]]>([:])
    private let standby = MadeAhead<StandbyNamespace>(open: false)
    /// Whether the agent's nftables table exists (made with the first network).
    let tableInstalled = Mutex(false)
    let logger: Logger
    /// The overlay networks as the controller last described them, by network ID.
    let overlays = Mutex<[String: OverlayState]>([:])
    /// Those the controller still wants on this node (the others stay
    /// only until their last container goes).
    let overlaysWanted = Mutex<Set<String>>([])
    /// `<state>/overlays.json`: the controller's last word, for the next agent.
    let overlayFile: String
    /// Whether an update of the overlays is under way (one at a time).
    let overlayBusy = Mutex(false)

    /// - Parameter dnsServers: where names that are not containers' are
    ///   asked; nil: the host's resolvers (its /etc/resolv.conf, re-read).
    init(
        database: AgentDatabase, nodeID: String, stateDir: String, defaultBridge: DefaultBridge, dnsServers: [SocketAddress]?,
        logger: Logger
    ) throws {
        store = NetworkStore(database: database, nodeID: nodeID)
        firewall = Firewall(table: "berth_" + nodeID.prefix(8))
        netnsDir = "\(stateDir)/netns"
        standbyDir = "\(stateDir)/netns.standby"
        overlayFile = "\(stateDir)/overlays.json"
        vethPrefix = "v" + nodeID.prefix(4)
        self.defaultBridge = defaultBridge
        self.logger = logger
        try Directories.create(netnsDir, mode: 0o700)
        try Directories.create(standbyDir, mode: 0o700)
        dns = DNSServer(table: names, group: MultiThreadedEventLoopGroup.singleton, logger: logger) {
            dnsServers ?? DNSServer.resolvers(inResolvConf: (try? FileIO.read("/etc/resolv.conf")) ?? "")
        }
    }

    // MARK: Networks

    /// Creates a network with its bridge, its firewall entries and its resolver.
    public func create(name: String, subnet: String?, gateway: String?, internal: Bool, labels: [String: String]) async throws -> Network {
        let network = try store.create(name: name, subnet: subnet, gateway: gateway, internal: `internal`, labels: labels)
        do {
            try await activate(network)
        } catch {
            try? store.remove(network.id, users: [])
            throw error
        }
        return network
    }

    /// Removes a network no container is attached to (the store refuses
    /// one in use), then its resolver and firewall entries.
    public func remove(_ reference: String, users: [String]) throws {
        let network = try store.get(reference)
        if network.name == NetworkStore.defaultName {
            throw BerthError(.failedPrecondition, "bridge is the default network; it cannot be removed (start the agent with --bridge none to go without)")
        }
        if network.vni != nil {
            throw BerthError(.failedPrecondition, "\(network.name) is an overlay network: the controller removes it (berth network rm with BERTH_CONTROLLER set)")
        }
        try store.remove(network.id, users: users)
        dns.stop(networkID: network.id)
        if Firewall.available { try? firewall.remove(Firewall.Bridge(network)) }
    }

    /// The bridge's firewall entries and resolver.
    func activate(_ network: Network) async throws {
        if Firewall.available {
            if tableInstalled.withLock({ $0 }) {
                try firewall.add(Firewall.Bridge(network))
            } else {
                try firewall.install(bridges: [Firewall.Bridge(network)], forwards: [])
                tableInstalled.withLock { $0 = true }
            }
            if !network.internal { try HostNetwork.enableForwarding() }
        }
        await serveNames(network)
    }

    /// The network's resolver; without it (its address's port 53 taken by
    /// another server) containers there use the host's resolvers, and the
    /// agent says so.
    private func serveNames(_ network: Network) async {
        do {
            try await dns.serve(networkID: network.id, address: network.gateway)
        } catch {
            logger.error(
                "containers' names will not resolve on this network: its resolver cannot listen",
                metadata: ["network": "\(network.name)", "address": "\(network.gateway):53", "error": "\(error)"])
        }
    }

    // MARK: Agent start

    /// Brings the host in line with the records: the default network made,
    /// every network's bridge, firewall entries and resolver in place, the
    /// running containers' names and ports held again, and veths, namespace
    /// files and firewall entries that no running container explains removed.
    ///
    /// - Returns: problems, one line each (the agent runs on).
    public func reconcile(containers: [Container]) async -> [String] {
        var problems: [String] = []
        if case .subnet(let subnet) = defaultBridge {
            do { _ = try store.ensureDefault(subnet: subnet) } catch { problems.append("the default network: \(error)") }
        }
        problems += store.restore()
        let networks = (try? store.list()) ?? []
        let running = containers.filter { $0.status.state.isActive && !$0.endpoints.isEmpty }
        if Firewall.available {
            do {
                // Without networks the agent keeps no table (one left behind goes).
                if networks.isEmpty {
                    try firewall.uninstall()
                } else {
                    try firewall.install(bridges: networks.map(Firewall.Bridge.init), forwards: running.flatMap(\.publishedPorts))
                    tableInstalled.withLock { $0 = true }
                }
                if networks.contains(where: { !$0.internal }) { try HostNetwork.enableForwarding() }
            } catch {
                problems.append("firewall: \(error)")
            }
        }
        for network in networks { await serveNames(network) }
        problems += restoreOverlays(networks: networks)
        var expectedLinks: Set<String> = []
        var expectedNamespaces: Set<String> = []
        for container in running {
            expectedNamespaces.insert(container.id.rawValue)
            for endpoint in container.endpoints { expectedLinks.insert(hostLink(container.id, endpoint)) }
            register(container)
            var held: [PortReservation] = []
            for port in container.publishedPorts {
                do { held.append(try PortReservation(hostIP: port.hostIP, port: port.hostPort, transport: port.transport)) } catch {
                    problems.append("container \(container.name): \(port) is no longer held: \(error)")
                }
            }
            reservations.withLock { $0[container.id] = held }
        }
        for link in HostNetwork.links(prefix: vethPrefix) where !expectedLinks.contains(link) {
            do { try HostNetwork.deleteLink(link) } catch { problems.append("stale interface \(link): \(error)") }
        }
        let bridges = Set(networks.map(\.bridge))
        for link in HostNetwork.links(prefix: store.bridgePrefix) where !bridges.contains(link) {
            do { try HostNetwork.removeBridge(link) } catch { problems.append("stale bridge \(link): \(error)") }
        }
        for file in (try? FileIO.list(netnsDir)) ?? [] where !expectedNamespaces.contains(file) {
            do { try NetworkNamespace.remove(at: "\(netnsDir)/\(file)") } catch { problems.append("stale namespace \(file): \(error)") }
        }
        _ = standby.close()
        removeStandby()
        for link in HostNetwork.links(prefix: standbyPrefix) { try? HostNetwork.deleteLink(link) }
        standby.open()
        prepareStandby()
        return problems
    }

    /// Stops answering names; what is on the host for containers stays for
    /// the next agent. The standby namespace goes.
    public func shutdown() {
        dns.stopAll()
        _ = standby.close()
        removeStandby()
    }

    // MARK: Standby namespace

    /// A namespace made ahead of need for the next container on the default
    /// network, as the shim launcher keeps a shim: loopback up, and a veth
    /// pair in the bridge (both ends down, the host end under a temporary
    /// name). Making them costs about 2 ms (a namespace, two interfaces
    /// registered); taking them over, a bind mount, a rename and the
    /// address: a start no longer waits for the rest. Made only between the
    /// reconciliation of the agent's networks and its shutdown.
    private struct StandbyNamespace {
        var path: String
        var hostLink: String
        var networkID: String
    }

    /// Host ends of standby veths: `s` and 4 hex digits of the node ID.
    var standbyPrefix: String { "s" + vethPrefix.dropFirst() }

    /// Makes the next standby namespace, in the background, unless there is
    /// one or no default network. A failure is not an error: the next
    /// container's namespace is made as it starts.
    func prepareStandby() {
        guard case .subnet = defaultBridge else { return }
        standby.prepare(
            make: { [self] in
                do {
                    return try makeStandby()
                } catch {
                    logger.debug("no standby network namespace", metadata: ["error": "\(error)"])
                    return nil
                }
            },
            discard: { try? NetworkNamespace.remove(at: $0.path) },
            ready: { [logger] in logger.debug("network namespace made ahead", metadata: ["netns": "\($0.path)", "interface": "\($0.hostLink)"]) })
    }

    private func makeStandby() throws -> StandbyNamespace? {
        guard let network = try? store.get(NetworkStore.defaultName) else { return nil }
        let suffix = (0..<5).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        let ready = StandbyNamespace(path: "\(standbyDir)/\(suffix)", hostLink: standbyPrefix + suffix, networkID: network.id)
        try NetworkNamespace.create(at: ready.path)
        do {
            // A locally administered address until the container's is given.
            let mac: [UInt8] = [0x02, 0x42, 0xff] + (0..<3).map { _ in UInt8.random(in: 0...255) }
            try HostNetwork.addVeth(host: ready.hostLink, bridge: network.bridge, peer: "eth0", mac: mac, netns: ready.path, up: false)
        } catch {
            try? NetworkNamespace.remove(at: ready.path)
            throw error
        }
        return ready
    }

    /// The standby namespace, if it was made for `endpoint`'s network.
    private func takeStandby(for endpoint: ContainerEndpoint) -> StandbyNamespace? {
        standby.take { $0.networkID == endpoint.networkID && endpoint.interface == "eth0" }
    }

    /// Removes the standby namespace, and any an agent killed before left
    /// (a veth pair ends with its namespace): every file in the directory.
    private func removeStandby() {
        for file in (try? FileIO.list(standbyDir)) ?? [] { try? NetworkNamespace.remove(at: "\(standbyDir)/\(file)") }
    }

    // MARK: Containers

    /// The network a container's `--network` names, nil for none and host
    /// (and for bridge when the agent has no default network).
    ///
    /// - Throws: `BerthError.notFound` for an unknown network.
    public func network(for spec: ContainerSpec) throws -> Network? {
        switch spec.network {
        case "none", "host": return nil
        case "bridge", "default", "":
            guard case .subnet = defaultBridge else { return nil }
            return try? store.get(NetworkStore.defaultName)
        case let name:
            guard let network = try? store.get(name) else { throw BerthError.notFound("network", name) }
            return network
        }
    }

    /// A network a container may be on besides its first: a user-defined
    /// (or overlay) network.
    ///
    /// - Throws: `BerthError.invalidArgument` for none, host or the
    ///   default network; `notFound` for an unknown one.
    public func userNetwork(_ reference: String) throws -> Network {
        guard !Network.reservedNames.contains(reference) else {
            throw BerthError.invalid("--network \(reference): only user-defined networks can be added to another")
        }
        guard let network = try? store.get(reference) else { throw BerthError.notFound("network", reference) }
        return network
    }

    /// A new endpoint for a container on `network`: the next interface name
    /// and the lowest free address (or `requested`).
    public func endpoint(
        on network: Network, aliases: [String], requested: IPv4Address?, existing: [ContainerEndpoint], others: [Container]
    ) throws -> ContainerEndpoint {
        if existing.contains(where: { $0.networkID == network.id }) {
            throw BerthError(.alreadyExists, "the container is already on network \(network.name)")
        }
        if !aliases.isEmpty && network.name == NetworkStore.defaultName {
            throw BerthError.invalid("network-scoped aliases are only supported on user-defined networks")
        }
        let taken = Set(others.flatMap(\.endpoints).filter { $0.networkID == network.id }.map(\.address))
        let address = try AddressAllocator.allocate(on: network, taken: taken, requested: requested)
        let used = Set(existing.map(\.interface))
        let interface = (0...).lazy.map { "eth\($0)" }.first { !used.contains($0) }!
        return ContainerEndpoint(
            networkID: network.id, networkName: network.name, interface: interface, address: address, subnet: network.subnet,
            gateway: network.gateway, aliases: aliases)
    }

    /// The ports `-p` and `-P` ask for, checked: IPv4 host addresses only,
    /// and only for containers on a bridge network.
    public static func requestedPorts(_ spec: ContainerSpec, exposed: [String], onNetwork: Bool) throws -> [PortMapping] {
        var ports = spec.ports
        if spec.publishAll {
            for entry in exposed {
                let parts = entry.split(separator: "/")
                guard let port = parts.first.flatMap({ UInt16($0) }), port > 0 else { continue }
                let transport = parts.count > 1 ? PortProtocol(rawValue: String(parts[1]).lowercased()) ?? .tcp : .tcp
                if !ports.contains(where: { $0.containerPort == port && $0.transport == transport }) {
                    ports.append(PortMapping(hostPort: 0, containerPort: port, transport: transport))
                }
            }
        }
        guard !ports.isEmpty else { return [] }
        guard onNetwork else {
            throw BerthError.invalid(
                "published ports need a bridge network; --network \(spec.network) has none (with --network host, the container's ports are the host's)")
        }
        for port in ports { _ = try hostAddress(port) }
        return ports
    }

    /// The host address a port is published on; nil for every address.
    ///
    /// - Throws: `BerthError.invalidArgument` for an IPv6 address.
    static func hostAddress(_ port: PortMapping) throws -> IPv4Address? {
        guard let ip = port.hostIP, ip != "0.0.0.0" else { return nil }
        guard let address = try? IPv4Address(parsing: ip) else {
            throw BerthError.invalid("published port \(port): only IPv4 host addresses are supported")
        }
        return address
    }

    /// What a run of the container on its networks needs.
    public struct Attachment: Sendable {
        /// The namespace file the process joins.
        public var netnsPath: String
        public var publishedPorts: [PublishedPort]
        /// The container's /etc/resolv.conf: the embedded resolver.
        public var resolvConf: String
        /// The address its hostname has in /etc/hosts.
        public var address: IPv4Address
    }

    /// Makes the container's namespace and interfaces, publishes its ports
    /// and makes its names resolvable. Nil for a container on no network.
    ///
    /// - Throws: `BerthError` naming what failed (a host port in use, an
    ///   interface that could not be made); nothing is left behind then.
    public func attach(_ container: Container, ports: [PortMapping]) throws -> Attachment? {
        guard let primary = container.endpoints.first else { return nil }
        let path = netnsPath(container.id)
        do {
            if FileIO.exists(path) { try NetworkNamespace.remove(at: path) }
            var adopted = false
            if let standby = takeStandby(for: primary) {
                defer { prepareStandby() }
                do {
                    try adopt(standby, container.id, primary, netns: path)
                    adopted = true
                } catch {
                    // Made as without one.
                    logger.debug("standby network namespace not used", metadata: ["container.id": "\(container.id.short)", "error": "\(error)"])
                    try? NetworkNamespace.remove(at: path)
                }
            }
            if !adopted { try NetworkNamespace.create(at: path) }
            for (index, endpoint) in container.endpoints.enumerated() where index > 0 || !adopted {
                try plug(container.id, endpoint, netns: path, defaultRoute: index == 0)
            }
            var held: [PortReservation] = []
            for port in ports {
                held.append(try PortReservation(hostIP: try Self.hostAddress(port), port: port.hostPort, transport: port.transport))
            }
            reservations.withLock { $0[container.id] = held }
            let published = zip(ports, held).map { port, reservation in
                PublishedPort(
                    hostIP: reservation.hostIP, hostPort: reservation.port, containerPort: port.containerPort, transport: port.transport,
                    containerIP: primary.address)
            }
            try firewall.add(published)
            var running = container
            running.publishedPorts = published
            register(running)
            try installVirtualIPs(for: container, netns: path)
            let host = (try? FileIO.read("/etc/resolv.conf")) ?? ""
            let resolver = dns.isServing(networkID: primary.networkID) ? primary.gateway.description : nil
            return Attachment(
                netnsPath: path, publishedPorts: published, resolvConf: RuntimePlanner.resolvConf(host: host, nameserver: resolver),
                address: primary.address)
        } catch {
            var undone = container
            detach(&undone)
            throw error
        }
    }

    /// Undoes `attach` (and a half-done one), and clears the container's
    /// published ports; safe to call more than once.
    ///
    /// Once the container's processes are gone, unbinding its namespace
    /// ends it, and the kernel takes its interfaces (the veths' host ends
    /// too) down in the background: deleting a veth waits for RCU grace
    /// periods, 10–40 ms here, which a stop or removal need not wait for.
    ///
    /// - Parameter processesGone: false when processes may still hold the
    ///   namespace (a shim lost): the host ends are then deleted at once.
    public func detach(_ container: inout Container, processesGone: Bool = true) {
        names.unregister(container: container.id.rawValue)
        do { try firewall.remove(container.publishedPorts) } catch {
            logger.warning("port forwards not removed", metadata: ["container.id": "\(container.id.short)", "error": "\(error)"])
        }
        container.publishedPorts = []
        _ = reservations.withLock { $0.removeValue(forKey: container.id) }
        if !processesGone {
            for endpoint in container.endpoints { try? HostNetwork.deleteLink(hostLink(container.id, endpoint)) }
        }
        do { try NetworkNamespace.remove(at: netnsPath(container.id)) } catch {
            logger.warning("network namespace not removed", metadata: ["container.id": "\(container.id.short)", "error": "\(error)"])
        }
    }

    /// Plugs one more network into a running container.
    public func connect(_ container: Container, _ endpoint: ContainerEndpoint) throws {
        try plug(container.id, endpoint, netns: netnsPath(container.id), defaultRoute: false)
        var updated = container
        updated.endpoints.append(endpoint)
        register(updated)
    }

    /// Unplugs one network from a running container.
    public func disconnect(_ container: Container, _ endpoint: ContainerEndpoint) throws {
        try HostNetwork.deleteLink(hostLink(container.id, endpoint))
        var updated = container
        updated.endpoints.removeAll { $0.networkID == endpoint.networkID }
        register(updated)
    }

    private func plug(_ id: ContainerID, _ endpoint: ContainerEndpoint, netns: String, defaultRoute: Bool) throws {
        let network = try network(of: endpoint)
        let link = hostLink(id, endpoint)
        // A previous run's, if the kernel has not ended its namespace yet.
        try? HostNetwork.deleteLink(link)
        // On an overlay, the bridge's MTU (its VXLAN device's) is the container's.
        let mtu = network.vni == nil ? 0 : VXLAN.linkMTU(network.bridge) ?? 0
        try HostNetwork.addVeth(host: link, bridge: network.bridge, peer: endpoint.interface, mac: endpoint.address.macBytes, netns: netns, mtu: mtu)
        try NetworkNamespace.configure(
            at: netns, interface: endpoint.interface, address: endpoint.address, prefix: endpoint.subnet.prefix,
            gateway: defaultRoute && !network.internal ? endpoint.gateway : nil)
    }

    /// Takes over the standby namespace for a container's first endpoint:
    /// the namespace bound at `netns`, the host end renamed as `plug` names
    /// it and up, the peer given the endpoint's address (and the MAC made
    /// from it). On failure the standby namespace is gone too (and `netns`
    /// may be left for the caller to remove).
    private func adopt(_ ready: StandbyNamespace, _ id: ContainerID, _ endpoint: ContainerEndpoint, netns: String) throws {
        do {
            let network = try network(of: endpoint)
            // Its bridge may have been made again since (by a restarted agent, after it was deleted).
            let master = try? FileManager.default.destinationOfSymbolicLink(atPath: "/sys/class/net/\(ready.hostLink)/master")
            guard master?.hasSuffix("/" + network.bridge) == true else {
                throw BerthError(.internal, "the standby veth \(ready.hostLink) is not in bridge \(network.bridge)")
            }
            let link = hostLink(id, endpoint)
            try? HostNetwork.deleteLink(link)
            try NetworkNamespace.move(from: ready.path, to: netns)
            try HostNetwork.renameUp(ready.hostLink, to: link)
            try NetworkNamespace.configure(
                at: netns, interface: endpoint.interface, mac: endpoint.address.macBytes, address: endpoint.address,
                prefix: endpoint.subnet.prefix, gateway: network.internal ? nil : endpoint.gateway)
        } catch {
            try? NetworkNamespace.remove(at: ready.path)
            throw error
        }
    }

    private func network(of endpoint: ContainerEndpoint) throws -> Network {
        guard let network = try? store.get(endpoint.networkID) else {
            throw BerthError.notFound("network", endpoint.networkName)
        }
        return network
    }

    private func register(_ container: Container) {
        names.register(
            container: container.id.rawValue,
            container.endpoints.map { endpoint in
                var names = [container.name, container.id.short]
                if let hostname = container.spec.hostname { names.append(hostname) }
                return NameTable.Entry(
                    networkID: endpoint.networkID, networkName: endpoint.networkName, address: endpoint.address, names: names + endpoint.aliases)
            })
    }

    func netnsPath(_ id: ContainerID) -> String { "\(netnsDir)/\(id.rawValue)" }

    /// The host end of a container's veth on one network: 15 characters,
    /// the kernel's limit.
    func hostLink(_ id: ContainerID, _ endpoint: ContainerEndpoint) -> String {
        vethPrefix + id.rawValue.prefix(6) + endpoint.networkID.prefix(4)
    }
}
