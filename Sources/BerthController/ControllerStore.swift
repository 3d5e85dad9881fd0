public import BerthModel
import Foundation
import GRDB

/// Where the controller keeps the cluster's desired and known state:
/// SQLite for a single controller (the default), etcd for several.
///
/// The controller reads everything once, when it starts to lead
/// (`load`), and from then on is the store's only writer: it decides in
/// memory and hands each change to a `StoreWriter`, which commits changes
/// one at a time, in order.
public protocol ControllerStore: Sendable {
    /// Everything the store holds, as of one moment.
    ///
    /// - Throws: `BerthError` when the records cannot be read.
    func load() async throws -> StoreContents
    /// Applies every part of `change`, or none of it.
    ///
    /// - Throws: `BerthError`; `unavailable` when the store cannot be
    ///   reached or has no quorum, `failedPrecondition` when this controller
    ///   no longer leads.
    func commit(_ change: StoreChange) async throws
}

/// What a store holds.
public struct StoreContents: Sendable {
    /// The cluster's ID, made at the store's first use and never changed.
    public var clusterID: String
    public var nodes: [ClusterNode]
    /// The IDs of nodes removed from the cluster (`berth node rm`): they may not register again.
    public var removedNodes: Set<String>
    public var services: [ClusterService]
    public var replicas: [Replica]
    /// Overlay networks.
    public var networks: [OverlayNetwork]
    /// The store's revision these were read at (etcd); 0 for SQLite.
    public var revision: Int64

    public init(
        clusterID: String, nodes: [ClusterNode] = [], removedNodes: Set<String> = [], services: [ClusterService] = [], replicas: [Replica] = [],
        networks: [OverlayNetwork] = [], revision: Int64 = 0
    ) {
        self.networks = networks
        self.clusterID = clusterID
        self.revision = revision
        self.nodes = nodes
        self.removedNodes = removedNodes
        self.services = services
        self.replicas = replicas
    }
}

/// Records written together: a service and its replicas never disagree in
/// the store, whatever moment the controller is killed at. An ID is either
/// put or removed in one change, never both.
public struct StoreChange: Sendable, Equatable {
    public var nodes: [ClusterNode] = []
    /// Nodes removed from the cluster: their records go, and their IDs are remembered as removed.
    public var removedNodes: [String] = []
    public var services: [ClusterService] = []
    public var removedServices: [String] = []
    public var replicas: [Replica] = []
    public var removedReplicas: [String] = []
    public var networks: [OverlayNetwork] = []
    public var removedNetworks: [String] = []

    public init(
        nodes: [ClusterNode] = [], removedNodes: [String] = [], services: [ClusterService] = [], removedServices: [String] = [],
        replicas: [Replica] = [], removedReplicas: [String] = [], networks: [OverlayNetwork] = [], removedNetworks: [String] = []
    ) {
        self.networks = networks
        self.removedNetworks = removedNetworks
        self.nodes = nodes
        self.removedNodes = removedNodes
        self.services = services
        self.removedServices = removedServices
        self.replicas = replicas
        self.removedReplicas = removedReplicas
    }

    public var isEmpty: Bool {
        nodes.isEmpty && removedNodes.isEmpty && services.isEmpty && removedServices.isEmpty && replicas.isEmpty && removedReplicas.isEmpty
            && networks.isEmpty && removedNetworks.isEmpty
    }

    /// How many records it writes or removes.
    public var count: Int {
        nodes.count + removedNodes.count + services.count + removedServices.count + replicas.count + removedReplicas.count + networks.count
            + removedNetworks.count
    }

    /// This change followed by `later`, as one: for each ID the last word
    /// counts (a put after a removal puts, a removal after a put removes).
    public func merging(_ later: StoreChange) -> StoreChange {
        func merge<T>(_ puts: [T], _ removals: [String], _ laterPuts: [T], _ laterRemovals: [String], id: (T) -> String) -> ([T], [String]) {
            let replaced = Set(laterPuts.map(id)).union(laterRemovals)
            let keptPuts = puts.filter { !replaced.contains(id($0)) }
            let revived = Set(laterPuts.map(id))
            let keptRemovals = removals.filter { !revived.contains($0) && !laterRemovals.contains($0) }
            return (keptPuts + laterPuts, keptRemovals + laterRemovals)
        }
        var merged = StoreChange()
        (merged.nodes, merged.removedNodes) = merge(nodes, removedNodes, later.nodes, later.removedNodes, id: \.id)
        (merged.services, merged.removedServices) = merge(services, removedServices, later.services, later.removedServices, id: \.id)
        (merged.replicas, merged.removedReplicas) = merge(replicas, removedReplicas, later.replicas, later.removedReplicas, id: \.id)
        (merged.networks, merged.removedNetworks) = merge(networks, removedNetworks, later.networks, later.removedNetworks, id: \.id)
        return merged
    }
}

/// The controller's records in `<data>/controller.db` (SQLite, WAL); every
/// change is a transaction.
public final class SQLiteControllerStore: ControllerStore {
    private let pool: DatabasePool

    /// - Throws: `BerthError.internal` when the file cannot be opened.
    public init(path: String) throws {
        do {
            var configuration = Configuration()
            configuration.busyMode = .timeout(10)
            pool = try DatabasePool(path: path, configuration: configuration)
            var migrator = DatabaseMigrator()
            migrator.registerMigration("v1-nodes") { db in
                try db.create(table: "node") { t in
                    t.column("id", .text).primaryKey()
                    t.column("record", .blob).notNull()
                }
            }
            migrator.registerMigration("v2-services") { db in
                try db.create(table: "meta") { t in
                    t.column("key", .text).primaryKey()
                    t.column("value", .text).notNull()
                }
                try db.execute(sql: "INSERT INTO meta (key, value) VALUES ('cluster_id', ?)", arguments: [RandomHex.make(32)])
                try db.create(table: "service") { t in
                    t.column("id", .text).primaryKey()
                    t.column("name", .text).notNull().unique()
                    t.column("record", .blob).notNull()
                }
                try db.create(table: "replica") { t in
                    t.column("id", .text).primaryKey()
                    t.column("service_id", .text).notNull()
                    t.column("record", .blob).notNull()
                }
            }
            migrator.registerMigration("v3-removed-nodes") { db in
                try db.create(table: "removed_node") { t in
                    t.column("id", .text).primaryKey()
                    t.column("removed_at", .double).notNull()
                }
            }
            migrator.registerMigration("v4-networks") { db in
                try db.create(table: "network") { t in
                    t.column("id", .text).primaryKey()
                    t.column("name", .text).notNull().unique()
                    t.column("record", .blob).notNull()
                }
            }
            try migrator.migrate(pool)
        } catch {
            throw BerthError(.internal, "cannot open the controller database \(path)", underlying: error)
        }
    }

    public func load() async throws -> StoreContents {
        try await wrap("read the cluster's records") {
            try await pool.read { db in
                guard let id = try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'cluster_id'") else {
                    throw BerthError(.internal, "the controller database has no cluster ID")
                }
                let decoder = BerthJSON.decoder()
                return StoreContents(
                    clusterID: id,
                    nodes: try Data.fetchAll(db, sql: "SELECT record FROM node").map { try decoder.decode(ClusterNode.self, from: $0) },
                    removedNodes: Set(try String.fetchAll(db, sql: "SELECT id FROM removed_node")),
                    services: try Data.fetchAll(db, sql: "SELECT record FROM service").map { try decoder.decode(ClusterService.self, from: $0) },
                    replicas: try Data.fetchAll(db, sql: "SELECT record FROM replica").map { try decoder.decode(Replica.self, from: $0) },
                    networks: try Data.fetchAll(db, sql: "SELECT record FROM network").map { try decoder.decode(OverlayNetwork.self, from: $0) })
            }
        }
    }

    public func commit(_ change: StoreChange) async throws {
        guard !change.isEmpty else { return }
        let encoder = BerthJSON.encoder(pretty: false)
        let nodes = try change.nodes.map { ($0.id, try encoder.encode($0)) }
        let services = try change.services.map { ($0.id, $0.spec.name, try encoder.encode($0)) }
        let replicas = try change.replicas.map { ($0.id, $0.serviceID, try encoder.encode($0)) }
        let networks = try change.networks.map { ($0.id, $0.name, try encoder.encode($0)) }
        let removedAt = Date().timeIntervalSince1970
        try await wrap("record a change") {
            try await pool.write { db in
                for id in change.removedNodes {
                    try db.execute(sql: "DELETE FROM node WHERE id = ?", arguments: [id])
                    try db.execute(sql: "INSERT OR REPLACE INTO removed_node (id, removed_at) VALUES (?, ?)", arguments: [id, removedAt])
                }
                for id in change.removedServices { try db.execute(sql: "DELETE FROM service WHERE id = ?", arguments: [id]) }
                for id in change.removedReplicas { try db.execute(sql: "DELETE FROM replica WHERE id = ?", arguments: [id]) }
                for id in change.removedNetworks { try db.execute(sql: "DELETE FROM network WHERE id = ?", arguments: [id]) }
                for (id, name, data) in networks {
                    try db.execute(sql: "INSERT OR REPLACE INTO network (id, name, record) VALUES (?, ?, ?)", arguments: [id, name, data])
                }
                for (id, data) in nodes {
                    try db.execute(sql: "INSERT OR REPLACE INTO node (id, record) VALUES (?, ?)", arguments: [id, data])
                }
                for (id, name, data) in services {
                    try db.execute(sql: "INSERT OR REPLACE INTO service (id, name, record) VALUES (?, ?, ?)", arguments: [id, name, data])
                }
                for (id, service, data) in replicas {
                    try db.execute(sql: "INSERT OR REPLACE INTO replica (id, service_id, record) VALUES (?, ?, ?)", arguments: [id, service, data])
                }
            }
        }
    }

    private func wrap<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as BerthError {
            throw error
        } catch {
            throw BerthError(.internal, "controller store: cannot \(what)", underlying: error)
        }
    }
}
