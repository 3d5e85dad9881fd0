/// What a lease or a watch ends with when etcd itself ends it; every other
/// failure is a `BerthError`.
public enum EtcdError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The revision a watch starts from is older than the store keeps: the
    /// history from it was compacted away. Read the current state and watch
    /// from its revision (at least this one, the oldest still kept).
    case compacted(Int64)
    /// The lease is gone: etcd answered a renewal with TTL 0 (it expired or
    /// was revoked). Keys attached to it are deleted.
    case leaseExpired
    /// etcd cancelled the watch, for this reason.
    case watchCanceled(String)

    public var description: String {
        switch self {
        case .compacted(let revision):
            "the store's history before revision \(revision) was compacted: read again and watch from there"
        case .leaseExpired:
            "the lease expired or was revoked in the store"
        case .watchCanceled(let reason):
            reason.isEmpty ? "the store cancelled the watch" : "the store cancelled the watch: \(reason)"
        }
    }
}
