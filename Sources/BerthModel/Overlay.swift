import FoundationEssentials

/// A network that spans the cluster's nodes (`network create --driver
/// overlay` on the controller): one layer-2 segment carried between hosts
/// in VXLAN (its `vni`), with addresses the controller hands out, so that
/// no two containers on it share one wherever they run.
public struct OverlayNetwork: Codable, Sendable, Hashable, Identifiable {
    /// 64 hex digits.
    public var id: String
    public var name: String
    public var subnet: IPv4Subnet
    /// Every node's bridge for the network has this address: a container's
    /// way out (and its resolver) is always on its own host.
    public var gateway: IPv4Address
    /// The VXLAN network identifier, 4096 and up.
    public var vni: Int
    /// No route out of the network.
    public var `internal`: Bool
    public var labels: [String: String]
    public var createdAt: Date
    /// Each node's own address on the network, by node ID, given while
    /// the network has a service with an ingress port: what a node's
    /// ingress traffic to a replica on another node leaves from.
    public var nodeAddresses: [String: IPv4Address]

    public init(
        id: String, name: String, subnet: IPv4Subnet, gateway: IPv4Address, vni: Int, internal: Bool, labels: [String: String] = [:],
        createdAt: Date, nodeAddresses: [String: IPv4Address] = [:]
    ) {
        self.nodeAddresses = nodeAddresses
        self.id = id
        self.name = name
        self.subnet = subnet
        self.gateway = gateway
        self.vni = vni
        self.internal = `internal`
        self.labels = labels
        self.createdAt = createdAt
    }

    /// Where overlay subnets are picked from when none is given (apart
    /// from the agents' 10.89.0.0/16, so the two never meet).
    public static let pool = IPv4Subnet(network: IPv4Address(0x0a00_0000 | 0x5a << 16), prefix: 16)
    /// The first VNI handed out.
    public static let firstVNI = 4096
    /// Bytes VXLAN adds to each frame (outer IPv4, UDP, VXLAN and Ethernet headers).
    public static let encapsulationOverhead = 50

    private enum CodingKeys: String, CodingKey { case id, name, subnet, gateway, vni, `internal`, labels, createdAt, nodeAddresses }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            id: try c.decode(String.self, forKey: .id), name: try c.decode(String.self, forKey: .name), subnet: try c.decode(IPv4Subnet.self, forKey: .subnet),
            gateway: try c.decode(IPv4Address.self, forKey: .gateway), vni: try c.decode(Int.self, forKey: .vni),
            internal: try c.decode(Bool.self, forKey: .internal), labels: try c.decodeIfPresent([String: String].self, forKey: .labels) ?? [:],
            createdAt: try c.decode(Date.self, forKey: .createdAt),
            nodeAddresses: try c.decodeIfPresent([String: IPv4Address].self, forKey: .nodeAddresses) ?? [:])
    }

    /// The same network as one node's bridge network.
    public var local: Network {
        var network = Network(
            id: id, name: name, subnet: subnet, gateway: gateway, bridge: "", internal: `internal`, labels: labels, createdAt: createdAt)
        network.driver = "overlay"
        network.vni = vni
        return network
    }
}

/// How clients reach a service on an overlay (`--endpoint-mode`).
public enum EndpointMode: String, Codable, Sendable, Hashable, CaseIterable {
    /// The service's name resolves to one virtual IP, balanced per
    /// connection over its replicas on the client's own host.
    case vip
    /// The service's name resolves to its replicas' addresses.
    case dnsrr

    /// - Throws: `BerthError.invalidArgument` naming the values.
    public init(parsing text: String) throws {
        guard let mode = EndpointMode(rawValue: text.lowercased()) else {
            throw BerthError.invalid("--endpoint-mode \(text): expected vip or dnsrr")
        }
        self = mode
    }
}

/// What one node's agent must know of one overlay network: the network,
/// where every other container on it lives, and the services on it.
/// The controller sends each node the whole of it; the agent changes what
/// differs from what it had.
public struct OverlayState: Codable, Sendable, Hashable {
    /// A container on the network on another node: its address (its MAC
    /// follows from it, `IPv4Address.macAddress`) and that node's VTEP.
    public struct Peer: Codable, Sendable, Hashable, Comparable {
        public var address: IPv4Address
        public var vtep: IPv4Address
        /// Its container's name, which resolves to it.
        public var name: String

        public init(address: IPv4Address, vtep: IPv4Address, name: String) {
            self.address = address
            self.vtep = vtep
            self.name = name
        }

        public static func < (a: Peer, b: Peer) -> Bool { a.address < b.address }
    }

    /// A service with replicas on the network.
    public struct Service: Codable, Sendable, Hashable, Comparable {
        public var name: String
        public var mode: EndpointMode
        /// Its virtual IP (mode vip).
        public var virtualIP: IPv4Address?
        /// The addresses of its replicas that are running (and healthy,
        /// when they have a check), in order.
        public var tasks: [IPv4Address]

        public init(name: String, mode: EndpointMode, virtualIP: IPv4Address?, tasks: [IPv4Address]) {
            self.name = name
            self.mode = mode
            self.virtualIP = virtualIP
            self.tasks = tasks
        }

        public static func < (a: Service, b: Service) -> Bool { a.name < b.name }

        /// What `name` resolves to: the virtual IP, or the tasks' addresses.
        public var addresses: [IPv4Address] {
            if mode == .vip, let virtualIP { return [virtualIP] }
            return tasks
        }
    }

    /// A port every node publishes for a service (mode ingress): to a
    /// replica on the node itself when it has any (the client's address
    /// kept), else to one on another node, leaving from the node's own
    /// address on the network (the client's address is then lost).
    public struct Ingress: Codable, Sendable, Hashable, Comparable {
        public var published: UInt16
        public var target: UInt16
        public var transport: PortProtocol
        /// The serving replicas on this node, and on the others.
        public var local: [IPv4Address]
        public var remote: [IPv4Address]

        public init(published: UInt16, target: UInt16, transport: PortProtocol, local: [IPv4Address], remote: [IPv4Address]) {
            self.published = published
            self.target = target
            self.transport = transport
            self.local = local
            self.remote = remote
        }

        public static func < (a: Ingress, b: Ingress) -> Bool { (a.published, a.transport.rawValue) < (b.published, b.transport.rawValue) }
    }

    public var network: OverlayNetwork
    /// This node's VTEP: the address the others send its traffic to.
    public var vtep: IPv4Address
    /// Sorted by address.
    public var peers: [Peer]
    /// Sorted by name.
    public var services: [Service]
    /// This node's own address on the network (while it has ingress ports).
    public var nodeAddress: IPv4Address?
    /// Sorted by port.
    public var ingress: [Ingress]

    public init(
        network: OverlayNetwork, vtep: IPv4Address, peers: [Peer], services: [Service], nodeAddress: IPv4Address? = nil, ingress: [Ingress] = []
    ) {
        self.network = network
        self.vtep = vtep
        self.peers = peers.sorted()
        self.services = services.sorted()
        self.nodeAddress = nodeAddress
        self.ingress = ingress.sorted()
    }
}

/// `--publish published=8080,target=80[,protocol=tcp][,mode=host]`, or
/// docker's short `8080:80[/udp]`, for a service. The long form's mode
/// is ingress unless given, as docker's; the short form is a port of
/// the replica's own node (mode host).
public struct ServicePort: Codable, Sendable, Hashable {
    public enum Mode: String, Codable, Sendable, Hashable {
        /// Published on each node that runs a replica, to that replica.
        case host
        /// Published on every node, to any replica (the routing mesh).
        case ingress
    }

    public var published: UInt16
    public var target: UInt16
    public var transport: PortProtocol
    public var mode: Mode

    public init(published: UInt16, target: UInt16, transport: PortProtocol = .tcp, mode: Mode = .ingress) {
        self.published = published
        self.target = target
        self.transport = transport
        self.mode = mode
    }

    /// - Throws: `BerthError.invalidArgument` naming what is wrong.
    public init(parsing text: String) throws {
        guard text.contains("=") else {
            let mapping = try PortMapping(parsing: text)
            guard mapping.hostIP == nil, mapping.hostPort != 0 else {
                throw BerthError.invalid("--publish \(text): expected PUBLISHED:TARGET[/PROTOCOL] or published=…,target=…")
            }
            self.init(published: mapping.hostPort, target: mapping.containerPort, transport: mapping.transport, mode: .host)
            return
        }
        var fields: [String: String] = [:]
        for part in text.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2, ["published", "target", "protocol", "mode"].contains(pair[0]) else {
                throw BerthError.invalid("--publish \(text): \"\(part)\" is not published=, target=, protocol= or mode=")
            }
            fields[pair[0]] = pair[1]
        }
        guard let target = fields["target"].flatMap(UInt16.init), target > 0 else {
            throw BerthError.invalid("--publish \(text): target=PORT (1-65535) is required")
        }
        guard let published = fields["published"].flatMap(UInt16.init), published > 0 else {
            throw BerthError.invalid("--publish \(text): published=PORT (1-65535) is required")
        }
        let transport = try fields["protocol"].map { value -> PortProtocol in
            guard let t = PortProtocol(rawValue: value.lowercased()) else { throw BerthError.invalid("--publish \(text): protocol is tcp or udp") }
            return t
        }
        let mode = try fields["mode"].map { value -> Mode in
            guard let m = Mode(rawValue: value.lowercased()) else { throw BerthError.invalid("--publish \(text): mode is host or ingress") }
            return m
        }
        self.init(published: published, target: target, transport: transport ?? .tcp, mode: mode ?? .ingress)
    }

    public var description: String {
        "published=\(published),target=\(target),protocol=\(transport.rawValue),mode=\(mode.rawValue)"
    }
}
