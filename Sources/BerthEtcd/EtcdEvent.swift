/// One change a watch reports, in the store's order.
public enum EtcdEvent: Sendable, Hashable {
    /// The key was written; the value is as it stands after the write.
    case put(EtcdKeyValue)
    /// The key was deleted (or its lease expired or was revoked) at `modRevision`.
    case delete(key: String, modRevision: Int64)

    /// The key that changed.
    public var key: String {
        switch self {
        case .put(let value): value.key
        case .delete(let key, _): key
        }
    }

    /// The revision of the change.
    public var revision: Int64 {
        switch self {
        case .put(let value): value.modRevision
        case .delete(_, let modRevision): modRevision
        }
    }
}
