import BerthModel
public import Foundation
import Logging
import Synchronization

/// This controller's term as the cluster's leader: the records as the
/// store held them when the term began, and what works on them. A term
/// ends when leadership is lost or a change cannot be stored; the next one
/// reads the store again.
public final class ControllerTerm: Sendable {
    public let registry: NodeRegistry
    public let services: ServiceManager
    public let reconciler: Reconciler
    public let writer: StoreWriter
    /// The term's number: the store's revision at which this controller won
    /// (etcd), or 1 for a controller that is alone on its store.
    public let number: Int64
    /// When this controller began to lead.
    public let since: Date

    init(registry: NodeRegistry, services: ServiceManager, reconciler: Reconciler, writer: StoreWriter, number: Int64, since: Date) {
        self.registry = registry
        self.services = services
        self.reconciler = reconciler
        self.writer = writer
        self.number = number
        self.since = since
    }

    var logs: ServiceLogs {
        let reconciler = self.reconciler
        return ServiceLogs(services: services, registry: registry, client: { reconciler.client(for: $0) })
    }
}

/// What reads are answered from: the leader's term, or, on a controller
/// that does not lead, the store's records as read for this call.
public struct ClusterView: Sendable {
    public let registry: NodeRegistry
    public let services: ServiceManager
    /// Why the records may be stale (the store has no quorum); nil when current.
    public let stale: String?

    /// A view of the records `read` holds, which refuses every change.
    init(_ read: StoreRead, grace: Duration, heartbeatInterval: Duration, logger: Logger) {
        let writer = StoreWriter(store: ReadOnlyStore(contents: read.contents))
        registry = NodeRegistry(contents: read.contents, writer: writer, grace: grace, heartbeatInterval: heartbeatInterval, logger: logger)
        services = ServiceManager(contents: read.contents, writer: writer, logger: logger)
        stale = read.stale
    }

    init(_ term: ControllerTerm) {
        registry = term.registry
        services = term.services
        stale = nil
    }
}

/// The records a controller that does not lead has read: it changes none.
struct ReadOnlyStore: ControllerStore {
    let contents: StoreContents

    func load() async throws -> StoreContents { contents }

    func commit(_ change: StoreChange) async throws {
        throw BerthError(.failedPrecondition, "this controller does not lead the cluster; its view of the records is for reading")
    }
}

/// What the API serves from: this controller's term while it leads. A
/// controller that does not lead answers reads from the store and refuses
/// changes with the leader's address, which `berth` and the agents then
/// follow.
public final class ControllerSeat: Sendable {
    private let current = Mutex<ControllerTerm?>(nil)
    /// The leader's address as the store says now; nil when no one leads.
    private let leader: @Sendable () async -> String?
    /// The store's records as they are now, for reads while not leading.
    private let read: @Sendable () async throws -> ClusterView
    private let address: String

    /// - Parameters:
    ///   - address: this controller's own address, for messages.
    ///   - leader: looks up the leader's address.
    ///   - read: reads the store, for reads while this controller does not lead.
    public init(
        address: String, leader: @escaping @Sendable () async -> String?,
        read: @escaping @Sendable () async throws -> ClusterView = { throw BerthError(.unavailable, "this controller does not lead the cluster") }
    ) {
        self.address = address
        self.leader = leader
        self.read = read
    }

    /// The term under way, if this controller leads.
    public var term: ControllerTerm? { current.withLock { $0 } }

    func lead(_ term: ControllerTerm?) {
        current.withLock { $0 = term }
    }

    /// The term to serve a change from.
    ///
    /// - Throws: `BerthError.unavailable`, redirecting to the leader when
    ///   one is known, when this controller does not lead.
    public func serving() async throws -> ControllerTerm {
        if let term = current.withLock({ $0 }) { return term }
        if let leader = await leader(), leader != address {
            throw BerthError(.unavailable, "this controller (\(address)) does not lead the cluster; the leader is at \(leader)", redirect: leader)
        }
        throw BerthError(
            .unavailable,
            "no controller leads the cluster now (an election is under way, or the store has no quorum); try again in a few seconds")
    }

    /// What to answer a read from: the leader's memory, or the store.
    ///
    /// - Throws: `BerthError.unavailable` when this controller does not
    ///   lead and no member of the store answers.
    public func reading() async throws -> ClusterView {
        if let term = current.withLock({ $0 }) { return ClusterView(term) }
        return try await read()
    }
}
