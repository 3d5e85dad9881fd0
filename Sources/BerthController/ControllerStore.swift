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
