public import BerthModel
import BerthLinux
import Foundation

extension PublishedPort {
    /// Its element in the map it belongs to.
    var element: String {
        let key = "\(transport.rawValue) . \(hostPort)"
        return "\(hostIP.map { "\($0) . " } ?? "")\(key) : \(containerIP) . \(containerPort)"
    }

    /// Forwards for every local address, or for one.
    var map: String { hostIP == nil ? "publish_any" : "publish_addr" }
}

/// The agent's nftables table: published ports (DNAT from the host's own
/// addresses, loopback included), masquerade for traffic leaving through
/// the host, and isolation between networks and of internal networks.
///
/// Everything that changes lives in sets and maps, so that a container or a
/// network comes and goes by adding or deleting elements, and a restart
/// rebuilds the table from the agent's records in one transaction.
public struct Firewall: Sendable {
    /// nftables' table name, one per agent.
    public let table: String

    static let nft = SystemTool("nft", missing: "nftables' nft command is not installed; published ports and outbound traffic need it")

    public init(table: String) {
        self.table = table
    }

    public static var available: Bool { nft.path != nil }

    /// A bridge network as the firewall sees it.
    public struct Bridge: Sendable, Hashable {
        public var device: String
        public var subnet: IPv4Subnet
        public var `internal`: Bool

        public init(_ network: Network) {
            device = network.bridge
            subnet = network.subnet
            self.internal = network.internal
        }
    }

    /// Replaces the table with one holding exactly `bridges` and `forwards`,
    /// in one transaction: what was stale is gone, nothing is half-applied.
    public func install(bridges: [Bridge], forwards: [PublishedPort]) throws {
        var script = "table ip \(table) {}\ndelete table ip \(table)\n"
        script += """
            table ip \(table) {
              map publish_any { type inet_proto . inet_service : ipv4_addr . inet_service; }
              map publish_addr { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
              set bridges { type ifname; }
              set internal { type ifname; }
              set same_bridge { type ifname . ifname; }
              set outbound { type ipv4_addr; flags interval; }
              chain publish {
                dnat ip to ip daddr . meta l4proto . th dport map @publish_addr
                dnat ip to meta l4proto . th dport map @publish_any
              }
              chain ingress {
              }
              chain ingress_snat {
              }
              chain prerouting {
                type nat hook prerouting priority dstnat; policy accept;
                fib daddr type local jump publish
                fib daddr type local jump ingress
              }
              chain output {
                type nat hook output priority -100; policy accept;
                fib daddr type local jump publish
                fib daddr type local jump ingress
              }
              chain postrouting {
                type nat hook postrouting priority srcnat; policy accept;
                jump ingress_snat
                ip saddr 127.0.0.0/8 oifname @bridges masquerade
                ip saddr @outbound oifname != @bridges masquerade
              }
              chain forward {
                type filter hook forward priority filter; policy accept;
                iifname . oifname @same_bridge accept
                iifname @internal drop
                oifname @internal drop
                iifname @bridges oifname @bridges drop
              }
            }

            """
        script += bridges.map(elements(adding:)).joined()
        script += elements(adding: forwards)
        try apply(script)
    }

    /// An overlay network's ingress port on this node.
    public struct IngressPort: Sendable, Hashable {
        /// The network's bridge.
        public var bridge: String
        /// The node's own address on the network (what traffic to another
        /// node's replica leaves from); nil sends to local replicas only.
        public var nodeAddress: IPv4Address?
        public var port: OverlayState.Ingress

        public init(bridge: String, nodeAddress: IPv4Address?, port: OverlayState.Ingress) {
            self.bridge = bridge
            self.nodeAddress = nodeAddress
            self.port = port
        }
    }

    /// The conntrack mark of ingress connections sent to another node's replica.
    static let ingressMark = "0x62657274"

    /// Replaces the ingress rules, in one transaction: each port sent to
    /// one of the node's own replicas (chosen per connection; the client's
    /// address kept), or when it has none, to one on another node, with its
    /// source rewritten to the node's own address on the network so that
    /// the replies come back through this node.
    public func setIngress(_ ports: [IngressPort]) throws {
        var script = "flush chain ip \(table) ingress\nflush chain ip \(table) ingress_snat\n"
        var snat: Set<String> = []
        for entry in ports {
            let port = entry.port
            let remote = port.local.isEmpty
            let tasks = remote ? port.remote : port.local
            guard !tasks.isEmpty, !remote || entry.nodeAddress != nil else { continue }
            let map = tasks.enumerated().map { "\($0.offset) : \($0.element)" }.joined(separator: ", ")
            let mark = remote ? "ct mark set \(Self.ingressMark) " : ""
            script += "add rule ip \(table) ingress meta l4proto \(port.transport.rawValue) th dport \(port.published) "
                + "\(mark)dnat ip to numgen random mod \(tasks.count) map { \(map) } : \(port.target)\n"
            if remote, let address = entry.nodeAddress {
                snat.insert("add rule ip \(table) ingress_snat ct mark \(Self.ingressMark) oifname \"\(entry.bridge)\" snat ip to \(address)\n")
            }
        }
        script += snat.sorted().joined()
        try apply(script)
    }

    /// Removes the table.
    public func uninstall() throws {
        try apply("table ip \(table) {}\ndelete table ip \(table)\n")
    }

    public func add(_ bridge: Bridge) throws { try apply(elements(adding: bridge)) }

    public func remove(_ bridge: Bridge) throws { try apply(elements(adding: bridge).replacingOccurrences(of: "add element", with: "delete element")) }

    public func add(_ forwards: [PublishedPort]) throws {
        guard !forwards.isEmpty else { return }
        try apply(elements(adding: forwards))
    }

    /// Deletes forwards; ones already gone are no error.
    public func remove(_ forwards: [PublishedPort]) throws {
        guard !forwards.isEmpty else { return }
        // Deleting an absent element fails the whole transaction: each is
        // added first (a no-op when present), then deleted.
        try apply(elements(adding: forwards) + elements(adding: forwards).replacingOccurrences(of: "add element", with: "delete element"))
    }

    private func elements(adding bridge: Bridge) -> String {
        var s = "add element ip \(table) bridges { \"\(bridge.device)\" }\n"
        s += "add element ip \(table) same_bridge { \"\(bridge.device)\" . \"\(bridge.device)\" }\n"
        s += bridge.internal
            ? "add element ip \(table) internal { \"\(bridge.device)\" }\n"
            : "add element ip \(table) outbound { \(bridge.subnet) }\n"
        return s
    }

    private func elements(adding forwards: [PublishedPort]) -> String {
        forwards.map { "add element ip \(table) \($0.map) { \($0.element) }\n" }.joined()
    }

    private func apply(_ script: String) throws {
        let file = NSTemporaryDirectory() + "berth-nft-\(UUID().uuidString).nft"
        try FileIO.write(script, to: file, create: true)
        defer { try? FileIO.removeFile(file) }
        try Self.nft.run(["-f", file])
    }
}
