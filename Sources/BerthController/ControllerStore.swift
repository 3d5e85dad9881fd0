public import BerthModel
import Foundation
import GRDB

/// Where the controller keeps the cluster's desired and known state. SQLite
/// by default; the protocol is what another store (etcd, for several
/// controllers) implements.
public protocol ControllerStore: Sendable {
    func nodes() throws -> [ClusterNode]
    /// Inserts or replaces a node's record.
    func put(_ node: ClusterNode) throws
    /// Removes a node's record and remembers its ID as removed, in one step.
    func remove(node id: String) throws
    /// The IDs of nodes removed from the cluster (`berth node rm`): they may not register again.
    func removedNodes() throws -> Set<String>
    /// The cluster's ID, made at the store's first use and never changed.
    func clusterID() throws -> String
    func services() throws -> [ClusterService]
    func replicas() throws -> [Replica]
    /// Applies every part of `change`, or none of it.
    func commit(_ change: StoreChange) throws
}

/// Records written together: a service and its replicas never disagree in
/// the store, whatever moment the controller is killed at.
public struct StoreChange: Sendable {
    public var services: [ClusterService] = []
    public var removedServices: [String] = []
    public var replicas: [Replica] = []
    public var removedReplicas: [String] = []

    public init(services: [ClusterService] = [], removedServices: [String] = [], replicas: [Replica] = [], removedReplicas: [String] = []) {
        self.services = services
        self.removedServices = removedServices
        self.replicas = replicas
        self.removedReplicas = removedReplicas
    }

    public var isEmpty: Bool { services.isEmpty && removedServices.isEmpty && replicas.isEmpty && removedReplicas.isEmpty }
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
            try migrator.migrate(pool)
        } catch {
            throw BerthError(.internal, "cannot open the controller database \(path)", underlying: error)
        }
    }

    public func nodes() throws -> [ClusterNode] {
        try wrap("read nodes") {
            try pool.read { db in try Data.fetchAll(db, sql: "SELECT record FROM node").map { try BerthJSON.decoder().decode(ClusterNode.self, from: $0) } }
        }
    }

    public func put(_ node: ClusterNode) throws {
        let data = try BerthJSON.encoder(pretty: false).encode(node)
        try wrap("record node \(node.id)") {
            try pool.write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO node (id, record) VALUES (?, ?)", arguments: [node.id, data])
            }
        }
    }

    public func remove(node id: String) throws {
        try wrap("remove node \(id)") {
            try pool.write { db in
                try db.execute(sql: "DELETE FROM node WHERE id = ?", arguments: [id])
                try db.execute(
                    sql: "INSERT OR REPLACE INTO removed_node (id, removed_at) VALUES (?, ?)", arguments: [id, Date().timeIntervalSince1970])
            }
        }
    }

    public func removedNodes() throws -> Set<String> {
        try wrap("read removed nodes") {
            Set(try pool.read { db in try String.fetchAll(db, sql: "SELECT id FROM removed_node") })
        }
    }

    public func clusterID() throws -> String {
        try wrap("read the cluster ID") {
            guard let id = try pool.read({ db in try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'cluster_id'") }) else {
                throw BerthError(.internal, "the controller database has no cluster ID")
            }
            return id
        }
    }

    public func services() throws -> [ClusterService] {
        try wrap("read services") {
            try pool.read { db in try Data.fetchAll(db, sql: "SELECT record FROM service").map { try BerthJSON.decoder().decode(ClusterService.self, from: $0) } }
        }
    }

    public func replicas() throws -> [Replica] {
        try wrap("read replicas") {
            try pool.read { db in try Data.fetchAll(db, sql: "SELECT record FROM replica").map { try BerthJSON.decoder().decode(Replica.self, from: $0) } }
        }
    }

    public func commit(_ change: StoreChange) throws {
        guard !change.isEmpty else { return }
        let encoder = BerthJSON.encoder(pretty: false)
        let services = try change.services.map { ($0, try encoder.encode($0)) }
        let replicas = try change.replicas.map { ($0, try encoder.encode($0)) }
        try wrap("record a change of services") {
            try pool.write { db in
                for id in change.removedServices { try db.execute(sql: "DELETE FROM service WHERE id = ?", arguments: [id]) }
                for id in change.removedReplicas { try db.execute(sql: "DELETE FROM replica WHERE id = ?", arguments: [id]) }
                for (service, data) in services {
                    try db.execute(
                        sql: "INSERT OR REPLACE INTO service (id, name, record) VALUES (?, ?, ?)", arguments: [service.id, service.spec.name, data])
                }
                for (replica, data) in replicas {
                    try db.execute(
                        sql: "INSERT OR REPLACE INTO replica (id, service_id, record) VALUES (?, ?, ?)", arguments: [replica.id, replica.serviceID, data])
                }
            }
        }
    }

    private func wrap<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as BerthError {
            throw error
        } catch {
            throw BerthError(.internal, "controller store: cannot \(what)", underlying: error)
        }
    }
}
