public import BerthEtcd
import BerthModel
import Foundation

/// The controller's records in etcd, under a prefix (`/berth/` by default):
///
///     PREFIX cluster-id             the cluster's ID
///     PREFIX nodes/ID               a node (JSON, as in SQLite)
///     PREFIX removed-nodes/ID       when a removed node was removed
///     PREFIX services/ID            a service
///     PREFIX replicas/ID            a replica
///     PREFIX networks/ID            an overlay network
///     PREFIX heartbeats/ID          a node's last heartbeat (`EtcdHeartbeats`)
///
/// Every write is a transaction whose condition is the writer's fence (its
/// election key still has the create revision it won with), so that a
/// controller that lost its leadership, however late it learns it, writes
/// nothing. A change larger than etcd allows in one transaction (128
/// operations, 1.5 MiB) is written in several, each fenced: services and
/// nodes first, then replicas, then removals, so that a change cut short
/// leaves records the next leader's planner completes (a service with too
/// few replicas gets them), never replicas of a service that is not stored.
public struct EtcdControllerStore: ControllerStore {
    public let client: EtcdClient
    public let prefix: String
    /// The condition every write carries; nil writes unconditionally (tests, tools).
    public let fence: EtcdCondition?

    /// Records read per range call: well under the 4 MiB a response may have.
    static let page = 2_000

    public init(client: EtcdClient, prefix: String = "/berth/", fence: EtcdCondition?) {
        self.client = client
        self.prefix = prefix
        self.fence = fence
    }

    enum Kind: String, CaseIterable {
        case nodes
        case removedNodes = "removed-nodes"
        case services
        case replicas
        case networks
    }

    func key(_ kind: Kind, _ id: String) -> String { "\(prefix)\(kind.rawValue)/\(id)" }

    var clusterIDKey: String { "\(prefix)cluster-id" }

    private var refused: BerthError {
        BerthError(.failedPrecondition, "this controller no longer leads the cluster (another controller was elected); the change was not stored")
    }

    public func load() async throws -> StoreContents {
        try await load(serializable: false)
    }

    /// Everything the store holds, as of one moment.
    ///
    /// - Parameter serializable: read from the member asked, without a
    ///   quorum: what it held last, possibly stale (for reads while the
    ///   store has no quorum; a leader never begins from these).
    public func load(serializable: Bool) async throws -> StoreContents {
        let clusterID = try await self.clusterID(serializable: serializable)
        // Every page is read at the revision of the first, so that the whole is one moment's.
        var revision: Int64 = 0
        func all(_ kind: Kind) async throws -> [EtcdKeyValue] {
            let start = "\(prefix)\(kind.rawValue)/"
            let end = EtcdClient.prefixEnd(start)
            var from = start
            var values: [EtcdKeyValue] = []
            while true {
                let page = try await client.range(from: from, end: end, limit: Self.page, revision: revision, serializable: serializable)
                if revision == 0 { revision = page.revision }
                values += page.values
                guard page.more, let last = page.values.last else { return values }
                from = last.key + "\u{0}"
            }
        }
        let decoder = BerthJSON.decoder()
        func decode<T: Decodable>(_ type: T.Type, _ values: [EtcdKeyValue]) throws -> [T] {
            try values.map { value in
                do {
                    return try decoder.decode(T.self, from: Data(value.value))
                } catch {
                    throw BerthError(.internal, "the store's record \(value.key) cannot be read", underlying: error)
                }
            }
        }
        let nodes = try decode(ClusterNode.self, try await all(.nodes))
        let removed = try await all(.removedNodes).map { String($0.key.dropFirst("\(prefix)\(Kind.removedNodes.rawValue)/".count)) }
        let services = try decode(ClusterService.self, try await all(.services))
        let replicas = try decode(Replica.self, try await all(.replicas))
        let networks = try decode(OverlayNetwork.self, try await all(.networks))
        return StoreContents(
            clusterID: clusterID, nodes: nodes, removedNodes: Set(removed), services: services, replicas: replicas, networks: networks,
            revision: revision)
    }

    /// The cluster's ID; the first leader makes it (a serializable read
    /// makes nothing: it finds one or throws `unavailable`).
    private func clusterID(serializable: Bool) async throws -> String {
        if let existing = try await client.range(clusterIDKey, serializable: serializable).values.first {
            return String(decoding: existing.value, as: UTF8.self)
        }
        if serializable { throw BerthError(.unavailable, "the store's member holds no cluster yet") }
        let made = RandomHex.make(32)
        let result = try await client.txn(
            if: [.absent(clusterIDKey)] + (fence.map { [$0] } ?? []), then: [.put(clusterIDKey, Array(made.utf8))], else: [.get(clusterIDKey)])
        if result.succeeded { return made }
        guard let existing = result.ranges.first?.first else { throw refused }
        return String(decoding: existing.value, as: UTF8.self)
    }

    public func commit(_ change: StoreChange) async throws {
        guard !change.isEmpty else { return }
        let encoder = BerthJSON.encoder(pretty: false)
        var operations: [EtcdOperation] = []
        for node in change.nodes { operations.append(.put(key(.nodes, node.id), Array(try encoder.encode(node)))) }
        for network in change.networks { operations.append(.put(key(.networks, network.id), Array(try encoder.encode(network)))) }
        for service in change.services { operations.append(.put(key(.services, service.id), Array(try encoder.encode(service)))) }
        for replica in change.replicas { operations.append(.put(key(.replicas, replica.id), Array(try encoder.encode(replica)))) }
        for id in change.removedReplicas { operations.append(.delete(key(.replicas, id))) }
        for id in change.removedServices { operations.append(.delete(key(.services, id))) }
        for id in change.removedNetworks { operations.append(.delete(key(.networks, id))) }
        let removedAt = Array(String(Date().timeIntervalSince1970).utf8)
        for id in change.removedNodes {
            operations.append(.delete(key(.nodes, id)))
            operations.append(.put(key(.removedNodes, id), removedAt))
        }
        let conditions = fence.map { [$0] } ?? []
        for batch in try EtcdClient.batches(operations, conditions: conditions) {
            let result = try await client.txn(if: conditions, then: batch, else: [])
            guard result.succeeded else { throw refused }
        }
    }
}
