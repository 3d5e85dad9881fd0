/// What a transaction did.
public struct EtcdTxnResult: Sendable, Hashable {
    /// Whether every condition held, so that the `then` branch ran (else the `else` branch did).
    public var succeeded: Bool
    /// The store's revision after the transaction (unchanged when it only read).
    public var revision: Int64
    /// The keys each read (`.get`, `.getPrefix`) of the branch taken found, in
    /// the order of those reads; writes have no entry.
    public var ranges: [[EtcdKeyValue]]

    /// Creates a result.
    public init(succeeded: Bool, revision: Int64, ranges: [[EtcdKeyValue]]) {
        self.succeeded = succeeded
        self.revision = revision
        self.ranges = ranges
    }
}
