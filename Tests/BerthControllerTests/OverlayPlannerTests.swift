@testable import BerthController
import BerthModel
import Foundation
import Testing

/// The controller's overlay decisions, in memory: subnets and VNIs,
/// addresses and virtual IPs, and what each node is told.
@Suite("overlay planning (pure)")
struct OverlayPlannerTests {
    static let start = PlannerWorld.start

    static func network(_ name: String, existing: [OverlayNetwork] = [], subnet: String? = nil) throws -> OverlayNetwork {
        try OverlayPlanner.network(
            name: name, subnet: subnet, gateway: nil, internal: false, labels: [:], existing: existing, id: String(repeating: "a", count: 63) + "\(existing.count)",
            now: start)
    }

    /// Three nodes at 10.0.0.1x (their agents' addresses), `web` (vip) on
    /// the network with three replicas placed on nodes 1, 2 and 2, and the
    /// world planned and acted on until they run.
    static func world(mode: EndpointMode = .vip) throws -> (PlannerWorld, OverlayNetwork, [String: OverlayNetwork]) {
        let network = try network("app")
        let networks = [network.id: network]
        var nodes = (1...3).map { PlannerWorld.node($0) }
        for i in nodes.indices { nodes[i].address = "10.0.0.1\(i + 1):7440" }
        var service = PlannerWorld.service("web", replicas: 3)
        service.spec.networks = [network.id]
        service.spec.endpointMode = mode
        try OverlayPlanner.assignVirtualIPs(&service, networks: networks, services: [], replicas: [])
        var world = PlannerWorld(nodes: nodes, services: [service])
        var change = world.plan()
        OverlayPlanner.assignAddresses(
            &change, networks: networks, services: Dictionary(uniqueKeysWithValues: world.services.map { ($0.id, $0) }), replicas: [:])
        for replica in change.replicas { world.replicas[world.replicas.firstIndex { $0.id == replica.id }!] = replica }
        world.agentsAct()
        return (world, network, networks)
    }

    @Test("a network gets the first free /24 of 10.90.0.0/16 and the next VNI; a name in use, an overlapping subnet and a bad gateway are refused")
    func networks() throws {
        let first = try Self.network("app")
        #expect(first.subnet.description == "10.90.0.0/24" && first.gateway.description == "10.90.0.1" && first.vni == 4096)
        let second = try Self.network("db", existing: [first])
        #expect(second.subnet.description == "10.90.1.0/24" && second.vni == 4097)
        #expect(throws: BerthError.self) { try Self.network("app", existing: [first]) }
        let overlap = #expect(throws: BerthError.self) { try Self.network("x", existing: [first], subnet: "10.90.0.128/25") }
        #expect(overlap?.message.contains("overlaps network app") == true)
        #expect(throws: BerthError.self) {
            try OverlayPlanner.network(
                name: "y", subnet: "10.91.0.0/24", gateway: "10.92.0.1", internal: false, labels: [:], existing: [], id: String(repeating: "b", count: 64),
                now: Self.start)
        }
        #expect(throws: BerthError.self) { try Self.network("bridge") }
    }

    @Test("replicas get the lowest free addresses after the gateway and the VIP, never one another's; history frees its address; a full network keeps a replica off its node, saying why")
    func addresses() throws {
        let (world, network, networks) = try Self.world()
        let vip = try #require(world.services[0].virtualIPs[network.id])
        #expect(vip.description == "10.90.0.2")
        let addresses = world.replicas.compactMap { $0.addresses[network.id]?.description }.sorted()
        #expect(addresses == ["10.90.0.3", "10.90.0.4", "10.90.0.5"])

        // One replica becomes history: its address is the next one handed out.
        var replicas = Dictionary(uniqueKeysWithValues: world.replicas.map { ($0.id, $0) })
        var gone = world.replicas[0]
        gone.removed = true
        replicas[gone.id] = gone
        var fresh = Replica(
            id: "new", serviceID: world.services[0].id, serviceName: "web", slot: 4, version: 1, nodeID: world.nodes[0].id, createdAt: Self.start,
            updatedAt: Self.start)
        var change = StoreChange(replicas: [fresh])
        let services = Dictionary(uniqueKeysWithValues: world.services.map { ($0.id, $0) })
        OverlayPlanner.assignAddresses(&change, networks: networks, services: services, replicas: replicas)
        #expect(change.replicas[0].addresses[network.id] == gone.addresses[network.id])

        // A /30 has two host addresses: the gateway and the VIP take both.
        var tiny = network
        tiny.subnet = try IPv4Subnet(parsing: "10.90.9.0/30")
        tiny.gateway = tiny.subnet.firstHost
        var service = world.services[0]
        service.virtualIPs = [network.id: IPv4Address(tiny.subnet.firstHost.value + 1)]
        fresh.addresses = [:]
        change = StoreChange(replicas: [fresh])
        OverlayPlanner.assignAddresses(&change, networks: [network.id: tiny], services: [service.id: service], replicas: [:])
        #expect(change.replicas[0].nodeID.isEmpty && change.replicas[0].message.contains("no free address left"), "\(change.replicas[0].message)")
    }

    @Test("each node is told of its networks only: the other nodes' containers with their VTEPs, and each service's VIP with the replicas that run; dnsrr has no VIP")
    func states() throws {
        var (world, network, networks) = try Self.world()
        let services = Dictionary(uniqueKeysWithValues: world.services.map { ($0.id, $0) })
        let nodes = Dictionary(uniqueKeysWithValues: world.nodes.map { ($0.id, $0) })
        let byNode = Dictionary(grouping: world.replicas, by: \.nodeID)
        let busy = try #require(byNode.max { $0.value.count < $1.value.count })
        let node = try #require(nodes[busy.key])
        let state = try #require(OverlayPlanner.states(for: node, nodes: nodes, networks: networks, services: services, replicas: world.replicas)?.first)
        #expect(state.vtep == OverlayPlanner.vtep(of: node))
        let others = world.replicas.filter { $0.nodeID != node.id }
        #expect(state.peers.map(\.address) == others.compactMap { $0.addresses[network.id] }.sorted())
        #expect(state.peers.allSatisfy { $0.vtep != state.vtep && $0.name.hasPrefix("web.") })
        #expect(state.services.count == 1 && state.services[0].tasks.count == 3 && state.services[0].addresses == [world.services[0].virtualIPs[network.id]!])

        // A node without a replica on the network is told of none.
        if let idle = world.nodes.first(where: { byNode[$0.id] == nil }) {
            #expect(OverlayPlanner.states(for: idle, nodes: nodes, networks: networks, services: services, replicas: world.replicas)?.isEmpty == true)
        }
        // A replica that failed leaves the tasks (it stays a peer while its record lives).
        let failed = others[0].id
        world.replicas[world.replicas.firstIndex { $0.id == failed }!].state = .failed
        let after = try #require(OverlayPlanner.states(for: node, nodes: nodes, networks: networks, services: services, replicas: world.replicas)?.first)
        #expect(after.services[0].tasks.count == 2 && !after.services[0].tasks.contains(others[0].addresses[network.id]!))
        // A node whose agent has no IPv4 address cannot be told.
        var nameless = node
        nameless.address = "agent.example:7440"
        #expect(OverlayPlanner.states(for: nameless, nodes: nodes, networks: networks, services: services, replicas: world.replicas) == nil)

        let (dnsrr, _, _) = try Self.world(mode: .dnsrr)
        #expect(dnsrr.services[0].virtualIPs.isEmpty)
    }

    @Test("an ingress port: every node is on the network with an address of its own, told which replicas are its own and which are elsewhere; a port is published by one service only")
    func ingress() throws {
        var (world, network, networks) = try Self.world()
        world.services[0].spec.publish = [ServicePort(published: 8080, target: 80)]
        let services = Dictionary(uniqueKeysWithValues: world.services.map { ($0.id, $0) })
        let nodes = Dictionary(uniqueKeysWithValues: world.nodes.map { ($0.id, $0) })
        for node in world.nodes {
            for changed in OverlayPlanner.assignNodeAddresses(for: node, networks: networks, services: services, replicas: world.replicas) {
                networks[changed.id] = changed
            }
        }
        let given = networks[network.id]!.nodeAddresses
        #expect(given.count == 3 && Set(given.values).count == 3)
        #expect(Set(given.values).isDisjoint(with: world.replicas.compactMap { $0.addresses[network.id] }))
        let idle = world.nodes.first { node in !world.replicas.contains { $0.nodeID == node.id } }
        for node in world.nodes {
            let state = try #require(OverlayPlanner.states(for: node, nodes: nodes, networks: networks, services: services, replicas: world.replicas)?.first)
            let port = try #require(state.ingress.first)
            let mine = world.replicas.filter { $0.nodeID == node.id }.compactMap { $0.addresses[network.id] }.sorted()
            #expect(state.nodeAddress == given[node.id] && port.local == mine && port.local.count + port.remote.count == 3)
            #expect(state.peers.filter { $0.name.isEmpty }.map(\.address).sorted() == given.filter { $0.key != node.id }.values.sorted())
            if node.id == idle?.id { #expect(port.local.isEmpty, "a node without a replica sends to the others") }
        }
        var other = PlannerWorld.service("api")
        other.spec.networks = [network.id]
        other.spec.publish = [ServicePort(published: 8080, target: 81, mode: .host)]
        let clash = #expect(throws: BerthError.self) { try OverlayPlanner.checkPorts(other, among: world.services) }
        #expect(clash?.message.contains("published by service web") == true)
        other.spec.publish = [ServicePort(published: 8080, target: 81, transport: .udp)]
        try OverlayPlanner.checkPorts(other, among: world.services)
    }

    @Test("a spec names networks by name, ID or ID prefix; an unknown one is refused")
    func resolve() throws {
        let network = try Self.network("app")
        let networks = [network.id: network]
        #expect(try OverlayPlanner.resolve(["app", network.id, String(network.id.prefix(8))], in: networks) == [network.id, network.id, network.id])
        let missing = #expect(throws: BerthError.self) { try OverlayPlanner.resolve(["nowhere"], in: networks) }
        #expect(missing?.code == .notFound)
    }
}
