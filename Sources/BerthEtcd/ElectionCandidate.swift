/// One candidate's key in an election.
public struct ElectionCandidate: Sendable, Hashable {
    /// The candidate's election key.
    public var key: String
    /// The value it campaigns with (where it is reached).
    public var value: String
    /// The key's create revision: the lowest leads.
    public var createRevision: Int64
    /// The lease the key is attached to.
    public var lease: Int64

    /// Creates a candidate.
    public init(key: String, value: String, createRevision: Int64, lease: Int64) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.lease = lease
    }
}
