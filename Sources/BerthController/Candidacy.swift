public import BerthTransport

/// How a controller comes to lead the cluster.
public protocol Candidacy: Sendable {
    /// Returns once this controller leads.
    ///
    /// - Throws: `BerthError` when the store cannot be reached; the caller
    ///   tries again.
    func campaign() async throws -> Mandate
    /// The leader's address as the store says now; nil when no one leads.
    func leader() async -> String?
    /// The controllers campaigning, in election order (the first leads).
    ///
    /// - Throws: `BerthError.unavailable` when the store does not answer.
    func candidates() async throws -> [Candidate]
    /// The store's members and their health (etcd); empty for SQLite.
    func storeMembers() async -> [StoreMemberHealth]
    /// What the store holds now, for a controller that does not lead to
    /// answer reads from: with a quorum when the store has one, else what
    /// a member held last, said to be possibly stale.
    ///
    /// - Throws: `BerthError.unavailable` when no member answers.
    func read() async throws -> StoreRead
    /// Where agents' heartbeats are recorded, when controllers share a
    /// store (nil for SQLite: the only controller keeps them in memory).
    var heartbeats: (any HeartbeatRecords)? { get }
    /// Keeps `list` up to date with the certificates revoked in the store,
    /// until cancelled (etcd); returns at once for SQLite, whose controller
    /// reads its `--revoked` file alone.
    func followRevocations(into list: RevocationList) async
}

/// The store's records as a controller that does not lead read them.
public struct StoreRead: Sendable {
    public var contents: StoreContents
    /// Why these may be stale (the store has no quorum); nil when current.
    public var stale: String?

    public init(contents: StoreContents, stale: String? = nil) {
        self.contents = contents
        self.stale = stale
    }
}

/// A controller in the election.
public struct Candidate: Sendable, Hashable {
    /// Where it is reached.
    public var address: String
    /// Its election key's create revision: its term, if it leads.
    public var term: Int64

    public init(address: String, term: Int64) {
        self.address = address
        self.term = term
    }
}

/// One member of the store as the controller sees it.
public struct StoreMemberHealth: Sendable, Hashable {
    public var endpoint: String
    /// Why it does not answer; nil when it does.
    public var error: String?
    public var leader: Bool
    public var raftTerm: Int64

    public init(endpoint: String, error: String?, leader: Bool, raftTerm: Int64) {
        self.endpoint = endpoint
        self.error = error
        self.leader = leader
        self.raftTerm = raftTerm
    }
}

/// A won election: the store to write with (its writes fail once the
/// mandate is lost), and how to learn of the loss.
public struct Mandate: Sendable {
    /// The store, its every write fenced by this mandate.
    public var store: any ControllerStore
    /// The term's number, greater than every earlier term's.
    public var number: Int64
    /// Returns once leadership is lost (or the task is cancelled).
    public var lost: @Sendable () async -> Void
    /// Gives leadership up, so that another controller may lead at once.
    public var resign: @Sendable () async -> Void

    public init(
        store: any ControllerStore, number: Int64, lost: @escaping @Sendable () async -> Void, resign: @escaping @Sendable () async -> Void
    ) {
        self.store = store
        self.number = number
        self.lost = lost
        self.resign = resign
    }
}

/// A controller alone on its store (SQLite, under its data directory's
/// lock) leads from its start for as long as it runs.
struct SoleCandidacy: Candidacy {
    let store: any ControllerStore
    let address: String

    func campaign() async throws -> Mandate {
        Mandate(
            store: store, number: 1,
            lost: {
                while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
            },
            resign: {})
    }

    func leader() async -> String? { nil }

    func candidates() async throws -> [Candidate] { [Candidate(address: address, term: 1)] }

    func storeMembers() async -> [StoreMemberHealth] { [] }

    func read() async throws -> StoreRead { StoreRead(contents: try await store.load()) }

    var heartbeats: (any HeartbeatRecords)? { nil }

    func followRevocations(into list: RevocationList) async {}
}
