public import BerthImages
public import BerthModel
import Foundation
import GRDB
import Synchronization

/// The agent's records in `<root>/agent.db` (SQLite, WAL): containers,
/// images and the event log. Every change is a transaction: a crash at any
/// moment leaves the database as it was before or after the change.
public final class AgentDatabase: ImageIndex, Sendable {
    private let pool: DatabasePool
    public let path: String
    /// How many events the log keeps; older ones are deleted as new ones
    /// arrive (revisions are never reused).
    public let eventRetention: Int
    /// Wakes the event log's watchers after each append.
    public let eventSignal: EventSignal
    /// The decoded rows of the small tables that every container start
    /// reads (images, networks, volumes), by table, kept from the first read
    /// until a write to the table. This process is the database's only
    /// writer (the agent holds the host lock); a write drops its table's
    /// rows once it is committed, under the lock a read keeps while it
    /// fills them, so no read keeps rows older than the last write.
    private let rows = Mutex<[String: any Sendable]>([:])

    /// Opens (creating and migrating as needed) the database.
    ///
    /// - Throws: `BerthError.internal` when the file cannot be opened.
    public init(path: String, eventRetention: Int = 100_000) throws {
        self.path = path
        self.eventRetention = max(1, eventRetention)
        // Memory holds no event the log no longer keeps.
        self.eventSignal = EventSignal(keeping: min(4096, self.eventRetention))
        do {
            var configuration = Configuration()
            configuration.busyMode = .timeout(10)
            pool = try DatabasePool(path: path, configuration: configuration)
            try Self.migrator.migrate(pool)
        } catch {
            throw BerthError(.internal, "cannot open the agent database \(path)", underlying: error)
        }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.create(table: "container") { t in
                t.column("id", .text).primaryKey()
                t.column("name", .text).notNull().unique()
                t.column("record", .blob).notNull()
            }
            try db.create(table: "image") { t in
                t.column("id", .text).primaryKey()
                t.column("record", .blob).notNull()
            }
            try db.create(table: "event") { t in
                t.autoIncrementedPrimaryKey("revision")
                t.column("time", .double).notNull()
                t.column("type", .text).notNull()
                t.column("action", .text).notNull()
                t.column("actor", .text).notNull()
                t.column("attributes", .blob).notNull()
            }
        }
        m.registerMigration("v2-volumes") { db in
            try db.create(table: "volume") { t in
                t.column("name", .text).primaryKey()
                t.column("record", .blob).notNull()
            }
        }
        m.registerMigration("v3-networks") { db in
            try db.create(table: "network") { t in
                t.column("id", .text).primaryKey()
                t.column("name", .text).notNull().unique()
                t.column("record", .blob).notNull()
            }
        }
        m.registerMigration("v4-health") { db in
            // A container's health between two writes of its record: a
            // probe writes this small row, not the whole record (a write of
            // the record removes the row).
            try db.create(table: "health") { t in
                t.column("id", .text).primaryKey()
                t.column("record", .blob).notNull()
            }
        }
        return m
    }

    private static let encoder = BerthJSON.encoder(pretty: false)
    private static let decoder = BerthJSON.decoder()

    private func wrap<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as BerthError {
            throw error
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw BerthError(.alreadyExists, "\(what): \(error.message ?? "constraint failed")")
        } catch {
            throw BerthError(.internal, "agent database: \(what)", underlying: error)
        }
    }

    // MARK: Containers

    public func allContainers() throws -> [Container] {
        try wrap("read containers") {
            try pool.read { db in
                var health: [String: Data] = [:]
                for row in try Row.fetchAll(db, sql: "SELECT id, record FROM health") { health[row["id"]] = row["record"] }
                return try Data.fetchAll(db, sql: "SELECT record FROM container").map {
                    var container = try Self.decoder.decode(Container.self, from: $0)
                    if let data = health[container.id.rawValue] {
                        container.status.restoreHealth(try Self.decoder.decode(Health.self, from: data))
                    }
                    return container
                }
            }
        }
    }

    /// Records a container's health after a probe that changed nothing else
    /// (its record keeps the health it was last written with).
    public func updateHealth(_ id: ContainerID, _ health: Health) throws {
        let data = try Self.encoder.encode(health)
        try wrap("update health") {
            try pool.write { db in
                try db.cachedStatement(sql: "INSERT OR REPLACE INTO health (id, record) VALUES (?, ?)").execute(arguments: [id.rawValue, data])
            }
        }
    }

    /// Inserts a new container, and appends events in the same transaction.
    ///
    /// - Throws: `BerthError.alreadyExists` when the name is taken.
    @discardableResult
    public func insert(_ container: Container, events: [PendingEvent] = []) throws -> [Event] {
        let data = try Self.encoder.encode(container)
        return try wrap("container name \"\(container.name)\" is already in use") {
            try pool.write { db in
                try db.cachedStatement(sql: "INSERT INTO container (id, name, record) VALUES (?, ?, ?)").execute(arguments: [container.id.rawValue, container.name, data])
                return try appendAll(events, db)
            }
        }
    }

    /// Replaces a container's record, and appends events in the same transaction.
    @discardableResult
    public func update(_ container: Container, events: [PendingEvent] = []) throws -> [Event] {
        let data = try Self.encoder.encode(container)
        return try wrap("update container") {
            try pool.write { db in
                try db.cachedStatement(sql: "UPDATE container SET name = ?, record = ? WHERE id = ?").execute(arguments: [container.name, data, container.id.rawValue])
                try db.cachedStatement(sql: "DELETE FROM health WHERE id = ?").execute(arguments: [container.id.rawValue])
                return try appendAll(events, db)
            }
        }
    }

    /// Removes a container's record, and appends events in the same transaction.
    @discardableResult
    public func delete(container id: ContainerID, events: [PendingEvent] = []) throws -> [Event] {
        try wrap("delete container") {
            try pool.write { db in
                try db.cachedStatement(sql: "DELETE FROM container WHERE id = ?").execute(arguments: [id.rawValue])
                try db.cachedStatement(sql: "DELETE FROM health WHERE id = ?").execute(arguments: [id.rawValue])
                return try appendAll(events, db)
            }
        }
    }

    // MARK: Images

    public func allImages() throws -> [Image] { try records("image", "images") }

    public func save(_ image: Image) throws {
        let data = try Self.encoder.encode(image)
        try wrap("save image") {
            try pool.write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO image (id, record) VALUES (?, ?)", arguments: [image.id, data])
            }
        }
        changed("image")
    }

    public func deleteImage(id: String) throws {
        try wrap("delete image") {
            try pool.write { db in try db.execute(sql: "DELETE FROM image WHERE id = ?", arguments: [id]) }
        }
        changed("image")
    }

    // MARK: Volumes and networks

    /// The decoded records of a table with a `record` column.
    private func records<T: Decodable & Sendable>(_ table: String, _ what: String) throws -> [T] {
        try rows.withLock { rows in
            if let kept = rows[table] as? [T] { return kept }
            let read: [T] = try wrap("read \(what)") {
                try pool.read { db in try Data.fetchAll(db, sql: "SELECT record FROM \(table)").map { try Self.decoder.decode(T.self, from: $0) } }
            }
            rows[table] = read
            return read
        }
    }

    /// Drops the kept rows of a table just written.
    private func changed(_ table: String) {
        _ = rows.withLock { $0.removeValue(forKey: table) }
    }

    /// Inserts a record (with its key columns) and its events in one transaction.
    private func insertRecord<T: Encodable>(
        _ table: String, keys: [(String, String)], _ value: T, events: [PendingEvent], taken: String
    ) throws -> [Event] {
        let data = try Self.encoder.encode(value)
        let columns = (keys.map(\.0) + ["record"]).joined(separator: ", ")
        let marks = Array(repeating: "?", count: keys.count + 1).joined(separator: ", ")
        let arguments = StatementArguments(keys.map { $0.1.databaseValue } + [data.databaseValue])
        defer { changed(table) }
        return try wrap(taken) {
            try pool.write { db in
                try db.execute(sql: "INSERT INTO \(table) (\(columns)) VALUES (\(marks))", arguments: arguments)
                return try appendAll(events, db)
            }
        }
    }

    /// Deletes a record and appends its events in one transaction.
    private func deleteRecord(_ table: String, key: String, _ value: String, events: [PendingEvent]) throws -> [Event] {
        defer { changed(table) }
        return try wrap("remove \(table) \(value)") {
            try pool.write { db in
                try db.execute(sql: "DELETE FROM \(table) WHERE \(key) = ?", arguments: [value])
                return try appendAll(events, db)
            }
        }
    }

    public func allVolumes() throws -> [Volume] { try records("volume", "volumes") }

    /// - Throws: `BerthError.alreadyExists` when the name is taken.
    public func insert(_ volume: Volume, events: [PendingEvent]) throws -> [Event] {
        try insertRecord("volume", keys: [("name", volume.name)], volume, events: events, taken: "volume \(volume.name) already exists")
    }

    public func delete(volume name: String, events: [PendingEvent]) throws -> [Event] {
        try deleteRecord("volume", key: "name", name, events: events)
    }

    public func allNetworks() throws -> [Network] { try records("network", "networks") }

    /// - Throws: `BerthError.alreadyExists` when the name is taken.
    public func insert(_ network: Network, events: [PendingEvent]) throws -> [Event] {
        try insertRecord("network", keys: [("id", network.id), ("name", network.name)], network, events: events, taken: "network \(network.name) already exists")
    }

    public func delete(network id: String, events: [PendingEvent]) throws -> [Event] {
        try deleteRecord("network", key: "id", id, events: events)
    }

    // MARK: Events

    /// An event before the log gives it a revision.
    public struct PendingEvent: Sendable {
        public var type: EventType
        public var action: EventAction
        public var actorID: String
        public var attributes: [String: String]
        public var time: Date

        public init(type: EventType, action: EventAction, actorID: String, attributes: [String: String] = [:], time: Date = Date()) {
            self.type = type
            self.action = action
            self.actorID = actorID
            self.attributes = attributes
            self.time = time
        }
    }

    static func append(_ event: PendingEvent, _ db: GRDB.Database) throws -> Event {
        let attributes = try encoder.encode(event.attributes)
        // Statements prepared once per connection: these run on every state change.
        try db.cachedStatement(sql: "INSERT INTO event (time, type, action, actor, attributes) VALUES (?, ?, ?, ?, ?)")
            .execute(arguments: [event.time.timeIntervalSince1970, event.type.rawValue, event.action.rawValue, event.actorID, attributes])
        return Event(
            revision: UInt64(db.lastInsertedRowID), time: event.time, type: event.type, action: event.action, actorID: event.actorID,
            attributes: event.attributes)
    }

    /// Appends events in the caller's transaction, trims the log to its
    /// retention, and wakes watchers once the transaction has committed.
    private func appendAll(_ events: [PendingEvent], _ db: GRDB.Database) throws -> [Event] {
        guard !events.isEmpty else { return [] }
        let appended = try events.map { try Self.append($0, db) }
        if let last = appended.last?.revision, last > UInt64(eventRetention) {
            try db.cachedStatement(sql: "DELETE FROM event WHERE revision <= ?").execute(arguments: [Int64(last - UInt64(eventRetention))])
        }
        let signal = eventSignal
        db.afterNextTransaction(onCommit: { _ in signal.notify(appended) })
        return appended
    }

    /// The oldest revision the log still holds (nil when it holds none)
    /// and the latest revision ever given (0 before the first event).
    public func eventBounds() throws -> (oldest: UInt64?, latest: UInt64) {
        try wrap("read event bounds") {
            try pool.read { db in
                let oldest = try Int64.fetchOne(db, sql: "SELECT MIN(revision) FROM event")
                let latest = try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'event'") ?? 0
                return (oldest.map { UInt64($0) }, UInt64(latest))
            }
        }
    }

    /// Appends events on their own.
    @discardableResult
    public func append(_ events: [PendingEvent]) throws -> [Event] {
        try wrap("append events") {
            try pool.write { db in try appendAll(events, db) }
        }
    }

    /// Events after `revision`, oldest first, at most `limit`.
    public func events(after revision: UInt64, limit: Int = 10_000) throws -> [Event] {
        try wrap("read events") {
            try pool.read { db in
                try Row.fetchAll(
                    db, sql: "SELECT revision, time, type, action, actor, attributes FROM event WHERE revision > ? ORDER BY revision LIMIT ?",
                    arguments: [Int64(revision), limit]
                ).map { row in
                    let attributes: Data = row["attributes"]
                    return Event(
                        revision: UInt64(row["revision"] as Int64), time: Date(timeIntervalSince1970: row["time"]),
                        type: EventType(rawValue: row["type"]) ?? .container, action: EventAction(rawValue: row["action"]),
                        actorID: row["actor"], attributes: (try? Self.decoder.decode([String: String].self, from: attributes)) ?? [:])
                }
            }
        }
    }
}

/// A wake-up for the event log's watchers: each append bumps a generation;
/// a watcher that found nothing new waits until the generation moves past
/// the one it read before looking. Nothing is buffered here: the log is the
/// buffer, so a slow watcher never holds up the agent.
public final class EventSignal: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var waiters: [UUID: CheckedContinuation<Void, Never>] = [:]
        /// The latest committed events, in revision order and without a gap:
        /// a watcher that has caught up takes new events from here instead
        /// of reading them back from the database.
        var recent: [Event] = []
    }

    private let state = Mutex(State())
    /// How many committed events stay in memory.
    let recentLimit: Int

    public init(keeping recentLimit: Int = 4096) { self.recentLimit = recentLimit }

    public var generation: UInt64 { state.withLock { $0.generation } }

    /// Called once a transaction that appended `events` has committed.
    /// Commits are serialized, so events arrive in revision order.
    func notify(_ events: [Event] = []) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.generation &+= 1
            if let first = events.first {
                if let last = s.recent.last, last.revision + 1 != first.revision { s.recent = [] }
                s.recent += events
                if s.recent.count > recentLimit { s.recent.removeFirst(s.recent.count - recentLimit) }
            }
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Committed events after `revision` (at most `limit`) from memory; nil
    /// when memory does not hold all of them (the database does).
    func recent(after revision: UInt64, limit: Int) -> [Event]? {
        state.withLock { s -> [Event]? in
            guard let first = s.recent.first, let last = s.recent.last, first.revision <= revision + 1 else { return nil }
            if revision >= last.revision { return [] }
            let start = Int(revision + 1 - first.revision)
            return Array(s.recent[start..<min(s.recent.count, start + limit)])
        }
    }

    /// Returns when the generation is no longer `seen` (at once if it has
    /// moved already), or when the task is cancelled.
    public func wait(after seen: UInt64) async {
        let id = UUID()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.generation != seen || Task.isCancelled { return true }
                    s.waiters[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
