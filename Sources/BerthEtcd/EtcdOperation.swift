/// One operation of a transaction's branch.
public enum EtcdOperation: Sendable, Hashable {
    /// Writes `value` at `key`, attached to `lease` (0: to none).
    case put(String, [UInt8], lease: Int64 = 0)
    /// Deletes `key`, if it exists.
    case delete(String)
    /// Deletes every key that starts with the prefix.
    case deletePrefix(String)
    /// Reads `key`; its result is one of `EtcdTxnResult.ranges`.
    case get(String)
    /// Reads every key that starts with the prefix, in key order; its result
    /// is one of `EtcdTxnResult.ranges`.
    case getPrefix(String)

    /// The key or prefix the operation is about.
    public var key: String {
        switch self {
        case .put(let key, _, _), .delete(let key), .deletePrefix(let key), .get(let key), .getPrefix(let key): key
        }
    }

    /// Whether the operation reads (and so has a result in `EtcdTxnResult.ranges`).
    public var isRead: Bool {
        switch self {
        case .get, .getPrefix: true
        case .put, .delete, .deletePrefix: false
        }
    }
}
