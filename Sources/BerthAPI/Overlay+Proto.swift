public import BerthModel
import FoundationEssentials
import SwiftProtobuf

extension OverlayNetwork {
    /// As `network ls` and `inspect` show it (driver overlay, its VNI).
    public var proto: Berth_Agent_V1_Network {
        .with {
            $0.id = id
            $0.name = name
            $0.driver = "overlay"
            $0.subnet = subnet.description
            $0.gateway = gateway.description
            $0.internal = `internal`
            $0.labels = labels
            $0.createdAt = Google_Protobuf_Timestamp(date: createdAt)
            $0.vni = UInt32(clamping: vni)
        }
    }

    /// - Throws: `BerthError.invalidArgument` for a record that is not an overlay network's.
    public init(proto p: Berth_Agent_V1_Network) throws {
        guard p.driver == "overlay", p.vni > 0, p.id.count == 64, p.id.allSatisfy(\.isHexDigit) else {
            throw BerthError.invalid("overlay network \"\(p.name)\": not an overlay network's record (driver \(p.driver), VNI \(p.vni))")
        }
        try Network.validate(name: p.name)
        self.init(
            id: p.id, name: p.name, subnet: try IPv4Subnet(parsing: p.subnet), gateway: try IPv4Address(parsing: p.gateway), vni: Int(p.vni),
            internal: p.internal, labels: p.labels, createdAt: p.createdAt.date)
    }
}

extension OverlayState {
    public var proto: Berth_Agent_V1_OverlayState {
        .with {
            $0.network = network.proto
            $0.vtep = vtep.description
            $0.peers = peers.map { peer in
                .with {
                    $0.address = peer.address.description
                    $0.vtep = peer.vtep.description
                    $0.name = peer.name
                }
            }
            $0.services = services.map { service in
                .with {
                    $0.name = service.name
                    $0.endpointMode = service.mode.rawValue
                    $0.virtualIp = service.virtualIP?.description ?? ""
                    $0.tasks = service.tasks.map(\.description)
                }
            }
            $0.nodeAddress = nodeAddress?.description ?? ""
            $0.ingress = ingress.map { port in
                .with {
                    $0.published = UInt32(port.published)
                    $0.target = UInt32(port.target)
                    $0.protocol = port.transport.rawValue
                    $0.local = port.local.map(\.description)
                    $0.remote = port.remote.map(\.description)
                }
            }
        }
    }

    /// - Throws: `BerthError.invalidArgument` naming the field that does not parse.
    public init(proto p: Berth_Agent_V1_OverlayState) throws {
        let network = try OverlayNetwork(proto: p.network)
        let peers = try p.peers.map { peer in
            OverlayState.Peer(address: try IPv4Address(parsing: peer.address), vtep: try IPv4Address(parsing: peer.vtep), name: peer.name)
        }
        for peer in peers where !network.subnet.contains(peer.address) {
            throw BerthError.invalid("overlay network \(network.name): peer \(peer.address) is not in \(network.subnet)")
        }
        let services = try p.services.map { service in
            OverlayState.Service(
                name: service.name, mode: try EndpointMode(parsing: service.endpointMode.isEmpty ? "vip" : service.endpointMode),
                virtualIP: service.virtualIp.isEmpty ? nil : try IPv4Address(parsing: service.virtualIp),
                tasks: try service.tasks.map { try IPv4Address(parsing: $0) })
        }
        let ingress = try p.ingress.map { port in
            guard let published = UInt16(exactly: port.published), published > 0, let target = UInt16(exactly: port.target), target > 0,
                let transport = PortProtocol(rawValue: port.protocol)
            else {
                throw BerthError.invalid("overlay network \(network.name): ingress port \(port.published)/\(port.protocol) → \(port.target) is not a port")
            }
            return OverlayState.Ingress(
                published: published, target: target, transport: transport, local: try port.local.map { try IPv4Address(parsing: $0) },
                remote: try port.remote.map { try IPv4Address(parsing: $0) })
        }
        self.init(
            network: network, vtep: try IPv4Address(parsing: p.vtep), peers: peers, services: services,
            nodeAddress: p.nodeAddress.isEmpty ? nil : try IPv4Address(parsing: p.nodeAddress), ingress: ingress)
    }
}

extension ServicePort {
    public var proto: Berth_Controller_V1_ServicePort {
        .with {
            $0.published = UInt32(published)
            $0.target = UInt32(target)
            $0.protocol = transport.rawValue
            $0.mode = mode.rawValue
        }
    }

    /// - Throws: `BerthError.invalidArgument` for a port out of range or an unknown protocol or mode.
    public init(proto p: Berth_Controller_V1_ServicePort) throws {
        guard let published = UInt16(exactly: p.published), published > 0, let target = UInt16(exactly: p.target), target > 0 else {
            throw BerthError.invalid("--publish published=\(p.published),target=\(p.target): ports are 1-65535")
        }
        guard let transport = PortProtocol(rawValue: p.protocol.isEmpty ? "tcp" : p.protocol.lowercased()) else {
            throw BerthError.invalid("--publish protocol=\(p.protocol): tcp or udp")
        }
        guard let mode = Mode(rawValue: p.mode.isEmpty ? "ingress" : p.mode.lowercased()) else {
            throw BerthError.invalid("--publish mode=\(p.mode): host or ingress")
        }
        self.init(published: published, target: target, transport: transport, mode: mode)
    }
}

extension [String: IPv4Address] {
    /// By network ID, as the wire has them.
    var proto: [String: String] { mapValues(\.description) }

    init(proto: [String: String]) {
        self = proto.compactMapValues { try? IPv4Address(parsing: $0) }
    }
}
