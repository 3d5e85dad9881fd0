public import BerthTransport

/// How one etcd member answers Maintenance.Status, or why it does not.
public struct EtcdMemberStatus: Sendable, Hashable {
    /// The endpoint asked.
    public var endpoint: TransportAddress
    /// Why the member did not answer; nil when it did.
    public var error: String?
    /// The alarms the member reports (`NOSPACE`: its database is full), and
    /// other errors it knows of; empty when all is well.
    public var alarms: [String]
    /// The member's ID (0 when it did not answer).
    public var memberID: UInt64
    /// The ID of the member it takes as the raft leader (0: none, or no answer).
    public var leaderID: UInt64
    /// The raft term the member is in.
    public var raftTerm: Int64
    /// The member's store revision.
    public var revision: Int64
    /// etcd's version on the member (`3.4.23`).
    public var version: String
    /// The size of its database file, in bytes.
    public var databaseSize: Int64

    /// Whether the member answered and is the raft leader.
    public var isLeader: Bool { error == nil && memberID != 0 && memberID == leaderID }

    /// Creates a status.
    public init(
        endpoint: TransportAddress, error: String?, alarms: [String] = [], memberID: UInt64 = 0, leaderID: UInt64 = 0, raftTerm: Int64 = 0, revision: Int64 = 0,
        version: String = "", databaseSize: Int64 = 0
    ) {
        self.endpoint = endpoint
        self.error = error
        self.alarms = alarms
        self.memberID = memberID
        self.leaderID = leaderID
        self.raftTerm = raftTerm
        self.revision = revision
        self.version = version
        self.databaseSize = databaseSize
    }
}
