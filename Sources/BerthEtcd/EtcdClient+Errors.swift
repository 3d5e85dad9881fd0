import BerthModel
import BerthTransport
import GRPCCore

extension EtcdClient {
    /// What one member's failure of a call means for the call.
    enum Outcome {
        /// The member could not answer (down, no leader, no answer in time):
        /// another member may.
        case memberFailed(String)
        /// The store answered and refused: every member would.
        case refused(BerthError)
    }

    /// Whether a member's failure of a call is worth trying another member for.
    static func classify(_ error: any Error, what: String, timeout: Duration) -> Outcome {
        if let error = error as? BerthError { return .refused(error) }
        guard let rpc = error as? RPCError else { return .memberFailed(reason(error, timeout: timeout)) }
        switch rpc.code {
        case .unavailable, .deadlineExceeded, .unknown, .cancelled, .aborted:
            // etcd answers UNAVAILABLE without a quorum ("etcdserver: no
            // leader", "request timed out", "leader changed"); the transport
            // when it cannot connect or the connection closes mid-call.
            return .memberFailed(reason(rpc, timeout: timeout))
        default:
            return .refused(refusal(rpc, what: what))
        }
    }

    /// Why a member did not answer, in a few words.
    static func reason(_ error: any Error, timeout: Duration?) -> String {
        guard let rpc = error as? RPCError else { return "\(error)" }
        if rpc.code == .deadlineExceeded { return "no answer within \(timeout.map(text) ?? "the deadline")" }
        if let connect = rpc.cause as? ConnectFailure { return "cannot connect (\(connect.reason))" }
        return rpc.message
    }

    /// A duration as a person reads it: `5 s`, `250 ms`.
    static func text(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        if attoseconds == 0 { return "\(seconds) s" }
        return "\(seconds * 1000 + attoseconds / 1_000_000_000_000_000) ms"
    }

    /// What etcd refused, as Berth's error: a code by what etcd said, and a
    /// message that says what the store refused and, where it helps, what to do.
    static func refusal(_ rpc: RPCError, what: String) -> BerthError {
        let said = rpc.message
        let known: [(text: String, code: BerthError.Code, explanation: String)] = [
            ("requested lease not found", .notFound, "the lease does not exist (it expired or was revoked)"),
            ("required revision has been compacted", .outOfRange, "that revision's history was compacted; read the current state instead"),
            ("required revision is a future revision", .outOfRange, "that revision is newer than the store's"),
            ("too many operations in txn request", .resourceExhausted, "the transaction has more operations than etcd takes (--max-txn-ops, 128 by default)"),
            ("request is too large", .resourceExhausted, "the request is larger than etcd takes (--max-request-bytes, 1.5 MiB by default)"),
            ("larger than max", .resourceExhausted, "the request is larger than etcd takes (--max-request-bytes, 1.5 MiB by default)"),
            ("database space exceeded", .resourceExhausted, "etcd's database is full: compact and defragment it, or raise --quota-backend-bytes"),
            ("too many requests", .resourceExhausted, "etcd has too many requests pending; try again later"),
            ("duplicate key given in txn request", .invalidArgument, "a transaction writes one key twice"),
            ("lease already exists", .alreadyExists, "a lease with that ID exists already"),
            ("too large lease TTL", .outOfRange, "the lease's TTL is longer than etcd allows"),
            ("permission denied", .permissionDenied, "etcd's authentication does not allow it"),
        ]
        if let match = known.first(where: { said.contains($0.text) }) {
            return BerthError(match.code, "the store refused to \(what): \(match.explanation)", cause: said)
        }
        let code: BerthError.Code =
            switch rpc.code {
            case .invalidArgument: .invalidArgument
            case .notFound: .notFound
            case .alreadyExists: .alreadyExists
            case .failedPrecondition: .failedPrecondition
            case .outOfRange: .outOfRange
            case .resourceExhausted: .resourceExhausted
            case .permissionDenied, .unauthenticated: .permissionDenied
            case .unimplemented: .unimplemented
            default: .internal
            }
        let stripped = said.hasPrefix("etcdserver: ") ? String(said.dropFirst("etcdserver: ".count)) : said
        return BerthError(code, "the store refused to \(what): \(stripped)", cause: said)
    }
}
