public import BerthModel
public import BerthTransport
import Foundation
public import Logging

/// The agents of the cluster: registered, kept ready by heartbeats, marked
/// down when heartbeats stop for longer than the grace period, drained and
/// labelled by operators. Every change is in the store before it is answered.
public actor NodeRegistry {
    private let writer: StoreWriter
    private let logger: Logger
    /// No heartbeat for this long: the node is down.
    public let grace: Duration
    /// What agents are asked to keep to.
    public let heartbeatInterval: Duration
    private var nodes: [String: ClusterNode] = [:]
    /// When each node's last heartbeat came, on `now`.
    private var lastSeen: [String: Duration] = [:]
    /// Monotonic time (a wall clock jump must not mark nodes down): how
    /// long since some fixed point. Tests give their own.
    private let now: @Sendable () -> Duration
    /// Nodes removed with `berth node rm`: their IDs may not come back.
    private var removed: Set<String>
    /// Told of every change that may move replicas (a node new, back, down, removed, relabelled).
    private let changed: @Sendable () -> Void

    /// This process's monotonic time: since the registry type was first used.
    public static let processTime: @Sendable () -> Duration = {
        let start = ContinuousClock.now
        return { ContinuousClock.now - start }
    }()

    /// - Parameters:
    ///   - contents: what the store held when this controller began to lead.
    ///   - writer: where every change goes.
    ///   - now: monotonic time the grace period is measured on.
    public init(
        contents: StoreContents, writer: StoreWriter, grace: Duration, heartbeatInterval: Duration, logger: Logger,
        changed: @escaping @Sendable () -> Void = {}, now: @escaping @Sendable () -> Duration = NodeRegistry.processTime
    ) {
        self.now = now
        self.writer = writer
        self.grace = grace
        self.heartbeatInterval = heartbeatInterval
        self.logger = logger
        self.changed = changed
        removed = contents.removedNodes
        let now = self.now()
        for node in contents.nodes {
            nodes[node.id] = node
            // A restarted controller gives every node a full grace period
            // (`renewAll` starts it again when the controller serves).
            lastSeen[node.id] = now
        }
    }

    /// A registry on what `store` holds, with a writer of its own.
    ///
    /// - Throws: what the store throws when its records cannot be read.
    public init(
        store: any ControllerStore, grace: Duration, heartbeatInterval: Duration, logger: Logger, changed: @escaping @Sendable () -> Void = {},
        now: @escaping @Sendable () -> Duration = NodeRegistry.processTime
    ) async throws {
        self.init(
            contents: try await store.load(), writer: StoreWriter(store: store), grace: grace, heartbeatInterval: heartbeatInterval, logger: logger,
            changed: changed, now: now)
    }

    /// Whether `peer` (the TLS certificate a call came with, nil without
    /// TLS) may speak for node `id`: a node's certificate names its node ID
    /// in its CN, as swarm's do, and speaks for that node alone; a removed
    /// node speaks no more.
    ///
    /// - Throws: `BerthError.permissionDenied` saying why not.
    func authorize(_ peer: PeerIdentity?, for id: String) throws {
        try Self.authorize(peer, for: id)
        if removed.contains(id) { throw Self.removedRefusal(id) }
    }

    /// Whether `peer` may speak for node `id` at all: a node's certificate
    /// speaks for the node its CN names.
    static func authorize(_ peer: PeerIdentity?, for id: String) throws {
        if let peer, peer.name != id {
            throw BerthError(
                .permissionDenied,
                "this certificate (CN \"\(peer.name)\") belongs to another node: it may register and heartbeat only as node \(peer.name), not \(id)")
        }
    }

    /// What a removed node is told.
    static func removedRefusal(_ id: String) -> BerthError {
        BerthError(
            .permissionDenied,
            "node \(id) was removed from the cluster (berth node rm); to join again the host needs a new identity: a certificate with a new node ID (berth-controller ca issue --role node) and an agent on a fresh --root")
    }

    /// Records an agent's registration: a new node, or one known before
    /// (its operator labels and availability are kept).
    ///
    /// - Parameter peer: the certificate the call came with (nil without TLS).
    /// - Throws: `BerthError.permissionDenied` for a certificate of another
    ///   node or a removed node, `invalidArgument` for a malformed ID or address.
    public func register(
        id: String, hostname: String, address: String, labels: [String: String], capacity: NodeCapacity, allocatable: NodeCapacity,
        agentVersion: String, peer: PeerIdentity? = nil
    ) async throws -> ClusterNode {
        guard id.count == 32, id.allSatisfy(\.isHexDigit) else { throw BerthError.invalid("node ID \"\(id)\": expected 32 hex digits") }
        guard !address.isEmpty else { throw BerthError.invalid("node \(id): the agent's address is empty") }
        try authorize(peer, for: id)
        if let other = nodes.values.first(where: { $0.address == address && $0.id != id && $0.state == .ready }) {
            throw BerthError(
                .alreadyExists,
                "address \(address) is node \(other.id.prefix(12))'s (\(other.hostname)), which is ready; two nodes cannot share one address")
        }
        let now = Date()
        var node = nodes[id] ?? ClusterNode(
            id: id, hostname: hostname, address: address, capacity: capacity, allocatable: allocatable, registeredAt: now, lastHeartbeat: now)
        let wasDown = nodes[id]?.state == .down
        let before = nodes[id]
        node.hostname = hostname
        node.address = address
        node.agentLabels = labels
        node.capacity = capacity
        node.allocatable = allocatable
        node.agentVersion = agentVersion
        node.state = .ready
        node.lastHeartbeat = now
        nodes[id] = node
        lastSeen[id] = self.now()
        let stored = writer.submit(StoreChange(nodes: [node]))
        logger.info(wasDown ? "node back" : "node registered", metadata: ["node.id": "\(id)", "address": "\(address)"])
        if before == nil || wasDown || before?.address != address || before?.agentLabels != labels || before?.allocatable != allocatable { changed() }
        try await stored.stored()
        return node
    }

    /// - Returns: false for a node the controller does not know.
    /// - Throws: `BerthError.permissionDenied` as `register` does.
    public func heartbeat(id: String, peer: PeerIdentity? = nil) async throws -> Bool {
        try authorize(peer, for: id)
        guard var node = nodes[id] else { return false }
        lastSeen[id] = self.now()
        if node.state == .down {
            node.state = .ready
            node.lastHeartbeat = Date()
            nodes[id] = node
            let stored = writer.submit(StoreChange(nodes: [node]))
            logger.info("node back", metadata: ["node.id": "\(id)"])
            changed()
            try await stored.stored()
        } else {
            // Kept in memory; persisted when something changes (a write per
            // heartbeat would cost the store more than all else).
            nodes[id]?.lastHeartbeat = Date()
        }
        return true
    }

    /// Starts every known node's grace period again, from now, and longer by
    /// the agents' retry interval: called when a (re)started controller
    /// begins to serve, so that its own start-up and an agent's wait before
    /// its next attempt do not count against the node.
    public func renewAll() {
        let now = self.now()
        for id in nodes.keys { lastSeen[id] = now + ClusterNode.retryInterval }
    }

    /// Marks down every ready node not heard from within the grace period.
    ///
    /// - Returns: the nodes that went down now.
    @discardableResult
    public func sweep() -> [ClusterNode] {
        let now = self.now()
        var down: [ClusterNode] = []
        for (id, node) in nodes where node.state == .ready {
            guard let seen = lastSeen[id], now - seen > grace else { continue }
            var changed = node
            changed.state = .down
            nodes[id] = changed
            down.append(changed)
            logger.warning("node down: no heartbeat within the grace period", metadata: ["node.id": "\(id)", "grace": "\(grace)"])
        }
        if !down.isEmpty {
            // A failed commit stops the writer and ends this controller's term; nothing to wait for here.
            writer.submit(StoreChange(nodes: down))
            self.changed()
        }
        return down
    }

    public func list() -> [ClusterNode] {
        nodes.values.sorted { ($0.hostname, $0.id) < ($1.hostname, $1.id) }
    }

    /// By ID, unique ID prefix, or hostname.
    ///
    /// - Throws: `BerthError.notFound`, or `invalidArgument` for an ambiguous reference.
    public func get(_ reference: String) throws -> ClusterNode {
        if let node = nodes[reference] { return node }
        let byName = nodes.values.filter { $0.hostname == reference }
        if byName.count == 1 { return byName[0] }
        let byPrefix = reference.isEmpty ? [] : nodes.values.filter { $0.id.hasPrefix(reference) }
        if byPrefix.count == 1 { return byPrefix[0] }
        if byName.count + byPrefix.count > 1 {
            throw BerthError.invalid("node \"\(reference)\" is ambiguous: \((byName + byPrefix).map(\.id).sorted().joined(separator: ", "))")
        }
        throw BerthError.notFound("node", reference)
    }

    /// Drains or activates a node; adds or removes operator labels.
    ///
    /// - Throws: `BerthError.invalidArgument` for a malformed label key, or
    ///   a key to remove that is not an operator's label (an agent's own
    ///   label comes from its flags); nothing changes then.
    public func update(
        _ reference: String, availability: ClusterNode.Availability?, addLabels: [String: String], removeLabels: [String]
    ) async throws -> ClusterNode {
        var node = try get(reference)
        for key in Array(addLabels.keys) + removeLabels where key.isEmpty || key.contains("=") || key.contains(where: \.isWhitespace) {
            throw BerthError.invalid("label key \"\(key)\": keys are non-empty, without '=' or spaces")
        }
        for key in removeLabels where node.operatorLabels[key] == nil {
            if let value = node.agentLabels[key] {
                throw BerthError.invalid(
                    "label \"\(key)\" of node \(node.hostname) is the agent's own (berth-agent --label \(key)=\(value)): it comes from the agent's flags and goes only there; constraints see it as engine.labels.\(key). berth node label sets operators' labels (node.labels.KEY)")
            }
            throw BerthError.invalid("node \(node.hostname) has no label \"\(key)\" set by an operator")
        }
        if let availability { node.availability = availability }
        node.operatorLabels.merge(addLabels) { _, new in new }
        for key in removeLabels { node.operatorLabels.removeValue(forKey: key) }
        nodes[node.id] = node
        let stored = writer.submit(StoreChange(nodes: [node]))
        changed()
        try await stored.stored()
        return node
    }

    /// Removes a node from the cluster; its ID may not register again, and
    /// its replicas are replaced elsewhere.
    ///
    /// - Parameter force: also a node that is ready (its agent is then refused from its next heartbeat).
    /// - Throws: `BerthError.failedPrecondition` for a ready node without `force`.
    /// - Returns: the removed node.
    public func remove(_ reference: String, force: Bool) async throws -> ClusterNode {
        let node = try get(reference)
        if node.state == .ready && !force {
            throw BerthError(
                .failedPrecondition,
                "node \(node.hostname) (\(node.id.prefix(12))) is ready: stop its agent first (it is then down after the grace period), or use --force to remove it while it runs")
        }
        nodes[node.id] = nil
        lastSeen[node.id] = nil
        removed.insert(node.id)
        let stored = writer.submit(StoreChange(removedNodes: [node.id]))
        logger.warning("node removed", metadata: ["node.id": "\(node.id)", "hostname": "\(node.hostname)", "forced": "\(force)"])
        changed()
        try await stored.stored()
        return node
    }
}
