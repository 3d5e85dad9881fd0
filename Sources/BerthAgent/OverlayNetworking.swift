import BerthLinux
public import BerthModel
import BerthNetwork
import Foundation
import Logging
import Synchronization

/// Overlay networks on this node, as the controller describes them
/// (`SetOverlays`): each is a bridge network whose bridge also holds a
/// VXLAN device, with static entries for the containers on other nodes;
/// their names, the services' names and `tasks.SERVICE` resolve in the
/// embedded resolver; services' virtual IPs are DNAT rules in each local
/// container's namespace.
extension ContainerNetworking {
    /// The VXLAN device of an overlay network: `vx`, 4 hex digits of the
    /// node ID, the VNI in 6.
    func vxlanDevice(vni: Int) -> String { "vx" + vethPrefix.dropFirst() + String(format: "%06x", vni) }

    /// Brings the node's overlay networks to the controller's word: what
    /// is missing is made, peers and names that differ are changed, and a
    /// network no longer listed goes once no container is on it.
    ///
    /// - Parameter users: the containers on each network (by its ID).
    /// - Throws: `BerthError.unavailable` while another update is under
    ///   way; `internal` naming the networks that could not be brought
    ///   along (the others are).
    public func applyOverlays(_ wanted: [OverlayState], users: [String: [Container]]) async throws {
        guard beginOverlayUpdate() else {
            throw BerthError(.unavailable, "another update of the overlay networks is under way; try again")
        }
        defer { overlayBusy.withLock { $0 = false } }
        let before = overlays.withLock { $0 }
        var after: [String: OverlayState] = [:]
        var problems: [String] = []
        for state in wanted {
            let id = state.network.id
            do {
                try await bring(state, from: before[id], users: users[id] ?? [])
                after[id] = state
            } catch {
                problems.append("overlay network \(state.network.name): \(error)")
                if let old = before[id] { after[id] = old }
            }
        }
        overlaysWanted.withLock { $0 = Set(wanted.map(\.network.id)) }
        for (id, old) in before where after[id] == nil {
            if (users[id] ?? []).isEmpty {
                removeOverlay(old)
            } else {
                after[id] = old
            }
        }
        overlays.withLock { $0 = after }
        persistOverlays(after)
        do { try installIngress(after) } catch { problems.append("ingress ports: \(error)") }
        if !problems.isEmpty { throw BerthError(.internal, problems.joined(separator: "; ")) }
    }

    private func bring(_ state: OverlayState, from old: OverlayState?, users: [Container]) async throws {
        let (network, made) = try store.ensureOverlay(state.network)
        if made || !dns.isServing(networkID: network.id) { try await activate(network) }
        guard let vni = network.vni else { throw BerthError(.internal, "network \(network.name) is not an overlay network on this node") }
        let device = vxlanDevice(vni: vni)
        let fresh = try VXLAN.ensure(device: device, vni: vni, local: state.vtep, bridge: network.bridge, mtu: VXLAN.mtu(under: state.vtep))
        let had = fresh ? [] : Set(old?.peers ?? [])
        let now = Set(state.peers)
        try VXLAN.update(device: device, adding: Array(now.subtracting(had)), removing: Array(had.subtracting(now)))
        if let address = state.nodeAddress {
            try ensureNodePort(network, vni: vni, address: address)
        } else {
            try? HostNetwork.deleteLink(nodePort(vni: vni))
        }
        registerNames(state)
        if fresh || made || old?.services != state.services {
            for container in users where FileIO.exists(netnsPath(container.id)) {
                do { try VirtualIPTable.apply(state.services, netns: netnsPath(container.id)) } catch {
                    logger.warning("virtual IPs not updated", metadata: ["container.id": "\(container.id.short)", "error": "\(error)"])
                }
            }
        }
    }

    /// The names the controller's word makes resolvable on the network:
    /// other nodes' containers, services (their VIP, or their replicas for
    /// dnsrr) and `tasks.SERVICE`.
    private func registerNames(_ state: OverlayState) {
        let network = state.network
        var entries = state.peers.filter { !$0.name.isEmpty }.map {
            NameTable.Entry(networkID: network.id, networkName: network.name, address: $0.address, names: [$0.name])
        }
        for service in state.services {
            for address in service.addresses {
                entries.append(NameTable.Entry(networkID: network.id, networkName: network.name, address: address, names: [service.name]))
            }
            for task in service.tasks {
                entries.append(NameTable.Entry(networkID: network.id, networkName: network.name, address: task, names: ["tasks.\(service.name)"]))
            }
        }
        names.register(container: "overlay:\(network.id)", entries)
    }

    /// The network's VXLAN device, bridge, resolver, firewall entries, names and record.
    private func removeOverlay(_ state: OverlayState) {
        let id = state.network.id
        names.unregister(container: "overlay:\(id)")
        try? HostNetwork.deleteLink(vxlanDevice(vni: state.network.vni))
        try? HostNetwork.deleteLink(nodePort(vni: state.network.vni))
        guard let network = try? store.get(id) else { return }
        do {
            try store.remove(id, users: [])
            dns.stop(networkID: id)
            if Firewall.available { try? firewall.remove(Firewall.Bridge(network)) }
            logger.info("overlay network left", metadata: ["network": "\(network.name)"])
        } catch {
            logger.warning("overlay network not removed", metadata: ["network": "\(network.name)", "error": "\(error)"])
        }
    }

    /// Takes the overlays for one update, unless another has them.
    private func beginOverlayUpdate() -> Bool {
        overlayBusy.withLock { busy in
            if busy { return false }
            busy = true
            return true
        }
    }

    /// Whether the controller described the network as an overlay.
    public func isOverlay(_ networkID: String) -> Bool { overlays.withLock { $0[networkID] != nil } }

    /// After a container went: overlay networks the controller no longer
    /// wants here and that no container is on are removed.
    public func releaseOverlays(users: [String: [Container]]) {
        guard beginOverlayUpdate() else { return }
        defer { overlayBusy.withLock { $0 = false } }
        let wanted = overlaysWanted.withLock { $0 }
        let gone = overlays.withLock { all in
            let gone = all.values.filter { !wanted.contains($0.network.id) && (users[$0.network.id] ?? []).isEmpty }
            for state in gone { all[state.network.id] = nil }
            return gone
        }
        guard !gone.isEmpty else { return }
        for state in gone { removeOverlay(state) }
        let kept = overlays.withLock { $0 }
        persistOverlays(kept)
        try? installIngress(kept)
    }

    /// The node's own port on an overlay network (ingress traffic to other
    /// nodes' replicas leaves from its address): `ni…` on the host with the
    /// address (a /32, so the network's route stays the bridge's) and the
    /// MAC made from it, its peer `np…` in the bridge.
    func nodePort(vni: Int) -> String { "ni" + vethPrefix.dropFirst() + String(format: "%06x", vni) }

    private func ensureNodePort(_ network: Network, vni: Int, address: IPv4Address) throws {
        let host = nodePort(vni: vni)
        let peer = "np" + host.dropFirst(2)
        let mtu = VXLAN.linkMTU(network.bridge) ?? 1450
        if HostNetwork.linkExists(host), !((try? HostNetwork.run(["-4", "-o", "addr", "show", "dev", host])) ?? "").contains(" \(address)/32 ") {
            try HostNetwork.deleteLink(host)
        }
        guard !HostNetwork.linkExists(host) else { return }
        try HostNetwork.run(["link", "add", host, "type", "veth", "peer", "name", peer])
        do {
            try HostNetwork.run(["link", "set", peer, "master", network.bridge, "mtu", String(mtu), "up"])
            try HostNetwork.run(["link", "set", host, "address", address.macAddress, "mtu", String(mtu), "up"])
            try HostNetwork.run(["addr", "add", "\(address)/32", "dev", host])
            // Replies arrive here from addresses routed through the bridge: loose reverse-path filtering.
            try FileIO.write("2\n", to: "/proc/sys/net/ipv4/conf/\(host)/rp_filter")
            try VXLAN.pin(mac: address.macAddress, to: peer)
        } catch {
            try? HostNetwork.deleteLink(host)
            throw error
        }
    }

    /// Every overlay network's ingress ports, in the agent's table.
    private func installIngress(_ states: [String: OverlayState]) throws {
        guard Firewall.available else { return }
        var ports: [Firewall.IngressPort] = []
        for state in states.values.sorted(by: { $0.network.name < $1.network.name }) where !state.ingress.isEmpty {
            guard let network = try? store.get(state.network.id) else { continue }
            ports += state.ingress.map { Firewall.IngressPort(bridge: network.bridge, nodeAddress: state.nodeAddress, port: $0) }
        }
        // An agent without networks has no table, and so no ingress rules to clear.
        guard !ports.isEmpty || tableInstalled.withLock({ $0 }) else { return }
        try firewall.setIngress(ports)
    }

    /// A starting container's virtual IPs, for the overlays it is on.
    func installVirtualIPs(for container: Container, netns: String) throws {
        let services = overlays.withLock { all in container.endpoints.flatMap { all[$0.networkID]?.services ?? [] } }
        guard services.contains(where: { $0.mode == .vip && $0.virtualIP != nil }) else { return }
        try VirtualIPTable.apply(services, netns: netns)
    }

    private func persistOverlays(_ states: [String: OverlayState]) {
        do {
            let data = try BerthJSON.encoder(pretty: false).encode(states.values.sorted { $0.network.name < $1.network.name })
            try AtomicFile.write(Array(data), to: overlayFile, mode: 0o600, durable: false)
        } catch {
            logger.warning("the overlay networks' state was not saved", metadata: ["error": "\(error)"])
        }
    }

    /// At agent start: the controller's last word again (names, VXLAN
    /// devices and their entries), until it speaks again; VXLAN devices
    /// of networks this node no longer has are removed.
    func restoreOverlays(networks: [Network]) -> [String] {
        var problems: [String] = []
        var states: [OverlayState] = []
        if FileIO.exists(overlayFile) {
            do {
                states = try BerthJSON.decoder().decode([OverlayState].self, from: Data(try FileIO.read(overlayFile).utf8))
            } catch {
                problems.append("\(overlayFile) cannot be read (the controller sends it again): \(error)")
            }
        }
        let recorded = Dictionary(networks.compactMap { n in n.vni.map { ($0, n) } }, uniquingKeysWith: { a, _ in a })
        var kept: [String: OverlayState] = [:]
        for state in states {
            guard let network = recorded[state.network.vni], network.id == state.network.id else { continue }
            do {
                let device = vxlanDevice(vni: state.network.vni)
                try VXLAN.ensure(device: device, vni: state.network.vni, local: state.vtep, bridge: network.bridge, mtu: VXLAN.mtu(under: state.vtep))
                try VXLAN.update(device: device, adding: state.peers, removing: [])
                if let address = state.nodeAddress { try ensureNodePort(network, vni: state.network.vni, address: address) }
                registerNames(state)
                kept[state.network.id] = state
            } catch {
                problems.append("overlay network \(state.network.name): \(error)")
            }
        }
        overlays.withLock { $0 = kept }
        overlaysWanted.withLock { $0 = Set(kept.keys) }
        do { try installIngress(kept) } catch { problems.append("ingress ports: \(error)") }
        let devices = Set(recorded.keys.map { vxlanDevice(vni: $0) } + kept.values.filter { $0.nodeAddress != nil }.map { nodePort(vni: $0.network.vni) })
        for link in HostNetwork.links(prefix: "vx" + vethPrefix.dropFirst()) + HostNetwork.links(prefix: "ni" + vethPrefix.dropFirst())
        where !devices.contains(link) {
            do { try HostNetwork.deleteLink(link) } catch { problems.append("stale VXLAN device \(link): \(error)") }
        }
        return problems
    }
}
