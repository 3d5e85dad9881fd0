public import BerthModel
import BerthLinux
import Foundation

/// The host's side of overlay networks: a kernel VXLAN device in the
/// network's bridge, with a static forwarding entry (MAC → VTEP) and a
/// neighbour entry (address → MAC) for every container on other nodes.
/// The device learns nothing and floods nothing (`nolearning`, no
/// all-zero entry): it answers ARP for remote containers itself (`proxy`)
/// from the entries the controller's word put there, so that no multicast
/// and no broadcast crosses hosts.
public enum VXLAN {
    static let bridgeTool = SystemTool("bridge", missing: "iproute2's bridge command is not installed; overlay networks need it")
    /// The IANA port.
    public static let port = 4789

    /// The MTU of the interface that holds `address` less VXLAN's
    /// overhead (1450 on a 1500-byte network).
    public static func mtu(under address: IPv4Address) -> Int {
        var underlay = 1500
        if let text = try? HostNetwork.run(["-4", "-o", "addr", "show"]),
            let line = text.split(separator: "\n").first(where: { $0.contains(" inet \(address)/") })
        {
            let fields = line.split(separator: " ")
            if fields.count > 1, let value = linkMTU(String(fields[1]).split(separator: "@").first.map(String.init) ?? "") { underlay = value }
        }
        return underlay - OverlayNetwork.encapsulationOverhead
    }

    /// An interface's MTU, as `ip` reports it in this process's network
    /// namespace (sysfs may be another namespace's).
    public static func linkMTU(_ name: String) -> Int? {
        guard let text = try? HostNetwork.run(["-o", "link", "show", "dev", name]) else { return nil }
        let fields = text.split(separator: " ")
        guard let i = fields.firstIndex(of: "mtu"), i + 1 < fields.count else { return nil }
        return Int(fields[i + 1])
    }

    /// Makes the device (or makes it again when its VNI or local address
    /// differ), in `bridge`, up, at `mtu`; whether it was made now (it then
    /// has no entries).
    @discardableResult
    public static func ensure(device: String, vni: Int, local: IPv4Address, bridge: String, mtu: Int) throws -> Bool {
        var made = false
        if HostNetwork.linkExists(device) {
            let details = (try? HostNetwork.run(["-d", "-o", "link", "show", "dev", device])) ?? ""
            if !details.contains("vxlan id \(vni) local \(local) ") {
                try HostNetwork.run(["link", "delete", device])
            }
        }
        if !HostNetwork.linkExists(device) {
            try HostNetwork.run([
                "link", "add", device, "type", "vxlan", "id", String(vni), "local", local.description, "dstport", String(port), "nolearning", "proxy",
            ])
            made = true
        }
        try HostNetwork.run(["link", "set", "dev", device, "mtu", String(mtu), "master", bridge, "up"])
        return made
    }

    /// A static entry in a bridge: frames for `mac` go to `port`.
    public static func pin(mac: String, to port: String) throws {
        try bridgeTool.run(["fdb", "replace", mac, "dev", port, "master", "static"])
    }

    /// Adds and removes peers' entries, in one run of each tool.
    public static func update(device: String, adding: [OverlayState.Peer], removing: [OverlayState.Peer]) throws {
        guard !adding.isEmpty || !removing.isEmpty else { return }
        var fdb = ""
        var neighbours = ""
        for peer in removing {
            fdb += "fdb del \(peer.address.macAddress) dev \(device) dst \(peer.vtep) self\n"
            neighbours += "neigh del \(peer.address) dev \(device)\n"
        }
        for peer in adding {
            fdb += "fdb replace \(peer.address.macAddress) dev \(device) dst \(peer.vtep) self permanent\n"
            neighbours += "neigh replace \(peer.address) lladdr \(peer.address.macAddress) dev \(device) nud permanent\n"
        }
        // `-force` goes on past a line that fails (an entry already gone).
        try batch(bridgeTool, fdb)
        try batch(HostNetwork.ip, neighbours)
    }

    private static func batch(_ tool: SystemTool, _ script: String) throws {
        let file = NSTemporaryDirectory() + "berth-\(tool.name)-\(UUID().uuidString).batch"
        try FileIO.write(script, to: file, create: true)
        defer { try? FileIO.removeFile(file) }
        do {
            try tool.run(["-force", "-batch", file])
        } catch {
            // Deleting what is gone fails its line; additions are what matter.
            if script.contains("replace") { throw error }
        }
    }
}

/// The virtual IPs of services, in one container's network namespace: a
/// connection to a VIP is sent to one of the service's replicas, chosen
/// per connection, by DNAT in the client's own namespace, so that its
/// replies are translated back there and the replica sees the client's
/// own address (nothing is masqueraded). A VIP with no replica refuses at
/// once. Conntrack keeps an established connection on its replica, with
/// the kernel's timeouts (five days idle), until either end closes it.
public enum VirtualIPTable {
    static let nsenter = SystemTool("nsenter", missing: "util-linux's nsenter is not installed; service virtual IPs need it")
    /// nftables' table in each container's namespace.
    public static let table = "berth_vip"

    /// The table for `services`, replacing what was there, in one transaction.
    public static func script(_ services: [OverlayState.Service]) -> String {
        var s = "table ip \(table) {}\ndelete table ip \(table)\ntable ip \(table) {\n"
        s += "  chain nat { type nat hook output priority -100; policy accept;\n"
        for service in services where service.mode == .vip {
            guard let vip = service.virtualIP, !service.tasks.isEmpty else { continue }
            let map = service.tasks.enumerated().map { "\($0.offset) : \($0.element)" }.joined(separator: ", ")
            s += "    ip daddr \(vip) dnat to numgen random mod \(service.tasks.count) map { \(map) }\n"
        }
        s += "  }\n  chain refuse { type filter hook output priority 0; policy accept;\n"
        for service in services where service.mode == .vip && service.tasks.isEmpty {
            guard let vip = service.virtualIP else { continue }
            s += "    ip daddr \(vip) meta l4proto tcp reject with tcp reset\n"
            s += "    ip daddr \(vip) reject\n"
        }
        s += "  }\n}\n"
        return s
    }

    /// Installs the table in the namespace at `netns`.
    public static func apply(_ services: [OverlayState.Service], netns: String) throws {
        let file = NSTemporaryDirectory() + "berth-vip-\(UUID().uuidString).nft"
        try FileIO.write(script(services), to: file, create: true)
        defer { try? FileIO.removeFile(file) }
        guard let nft = Firewall.nft.path else { throw BerthError(.unavailable, Firewall.nft.missing) }
        try nsenter.run(["--net=\(netns)", nft, "-f", file])
    }
}
