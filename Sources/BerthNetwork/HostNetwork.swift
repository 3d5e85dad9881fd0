public import BerthModel
import BerthLinux
import Foundation

/// The host's side of bridge networks, through iproute2: bridges, the host
/// ends of containers' veth pairs, and the routes the host already has.
public enum HostNetwork {
    static let ip = SystemTool("ip", missing: "iproute2's ip command is not installed; networks need it")

    /// Runs `ip` and returns what it printed.
    @discardableResult
    public static func run(_ arguments: [String]) throws -> String { try ip.run(arguments) }

    /// Whether the interface exists in this process's network namespace
    /// (asked of the kernel: /sys/class/net may show another namespace's,
    /// for an agent started in a namespace of its own).
    public static func linkExists(_ name: String) -> Bool { if_nametoindex(name) != 0 }

    /// The interfaces of this process's network namespace whose names start with `prefix`.
    public static func links(prefix: String) -> [String] {
        guard let list = if_nameindex() else { return [] }
        defer { if_freenameindex(list) }
        var names: [String] = []
        var entry = list
        while entry.pointee.if_index != 0, let name = entry.pointee.if_name {
            let text = String(cString: name)
            if text.hasPrefix(prefix) { names.append(text) }
            entry += 1
        }
        return names
    }

    /// Makes (or completes) a bridge with the gateway address, up. Packets
    /// from 127.0.0.1 may leave through it (`route_localnet`): published
    /// ports are reached from the host's loopback that way.
    public static func ensureBridge(_ network: Network) throws {
        // A bridge takes the lowest MAC of its ports unless given one: each
        // container joining or leaving could change the gateway's MAC under
        // the other containers' ARP caches, and cut them off for a while.
        let mac = network.gateway.macAddress
        if !linkExists(network.bridge) {
            try run(["link", "add", "name", network.bridge, "address", mac, "type", "bridge"])
        } else if (try? FileIO.read("/sys/class/net/\(network.bridge)/address"))?.hasPrefix(mac) != true {
            try run(["link", "set", network.bridge, "address", mac])
        }
        let address = "\(network.gateway)/\(network.subnet.prefix)"
        if try !run(["-4", "-o", "addr", "show", "dev", network.bridge]).contains(" \(address) ") {
            try run(["addr", "add", address, "dev", network.bridge])
        }
        try run(["link", "set", network.bridge, "up"])
        try FileIO.write("1\n", to: "/proc/sys/net/ipv4/conf/\(network.bridge)/route_localnet")
    }

    public static func removeBridge(_ name: String) throws {
        guard linkExists(name) else { return }
        try run(["link", "delete", name, "type", "bridge"])
    }

    /// A veth pair: `host` on the host, in `bridge`, and up unless `up` is
    /// false; its peer moved into the namespace at `netns` as `peer`, with
    /// `mac` (down, until the namespace is configured).
    public static func addVeth(host: String, bridge: String, peer: String, mac: [UInt8], netns: String, up: Bool = true, mtu: Int = 0) throws {
        do { try Links.createVeth(host: host, bridge: bridge, peer: peer, mac: mac, netns: netns, up: up, mtu: mtu) } catch {
            throw BerthError(.internal, "cannot make the veth pair \(host) (in \(bridge)) and \(peer): \(error)")
        }
    }

    /// Renames an interface that is down, and sets it up.
    public static func renameUp(_ name: String, to newName: String) throws {
        do { try Links.renameUp(name, to: newName) } catch {
            throw BerthError(.internal, "cannot rename \(name) to \(newName): \(error)")
        }
    }

    /// Deletes an interface (a veth's peer goes with it); one already gone is no error.
    public static func deleteLink(_ name: String) throws {
        guard linkExists(name) else { return }
        do {
            try run(["link", "delete", name])
        } catch where !linkExists(name) {
            // Gone meanwhile (its namespace ended).
        }
    }

    /// The host's IPv4 routes (but the default route), from /proc/net/route.
    public static func routes() -> [(device: String, subnet: IPv4Subnet)] {
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

    /// The host's own IPv4 addresses.
    public static func localAddresses() -> Set<IPv4Address> {
        var addresses: Set<IPv4Address> = [IPv4Address(0x7f00_0001)]
        guard let text = try? run(["-4", "-o", "addr", "show"]) else { return addresses }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if let i = fields.firstIndex(of: "inet"), i + 1 < fields.count,
                let address = try? IPv4Address(parsing: String(fields[i + 1].split(separator: "/")[0]))
            {
                addresses.insert(address)
            }
        }
        return addresses
    }

    /// Turns on IPv4 forwarding, which containers need to reach beyond the
    /// host (as docker does).
    public static func enableForwarding() throws {
        let path = "/proc/sys/net/ipv4/ip_forward"
        if (try? FileIO.read(path))?.hasPrefix("1") != true { try FileIO.write("1\n", to: path) }
    }
}
