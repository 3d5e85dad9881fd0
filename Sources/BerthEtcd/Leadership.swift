/// A won election: the leader's key and term, as long as its lease lives.
public struct Leadership: Sendable, Hashable {
    /// The leader's election key: the election's prefix and its lease's ID in hex.
    public var key: String
    /// The key's create revision: the term. Later terms have larger numbers.
    public var createRevision: Int64
    /// The lease the key is attached to.
    public var lease: Int64
    /// The value the leader campaigned with (where it is reached).
    public var value: String
    /// When the campaign was won.
    public var since: ContinuousClock.Instant

    /// Creates a leadership.
    public init(key: String, createRevision: Int64, lease: Int64, value: String, since: ContinuousClock.Instant) {
        self.key = key
        self.createRevision = createRevision
        self.lease = lease
        self.value = value
        self.since = since
    }
}
