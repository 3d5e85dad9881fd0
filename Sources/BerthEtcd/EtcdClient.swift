import BerthModel
public import BerthTransport
import FoundationEssentials
import GRPCCore
public import Logging
import SwiftProtobuf
import Synchronization

/// Berth's client of etcd's v3 API: key ranges, transactions, leases,
/// watches and member status, over BerthTransport's HTTP/2.
///
/// There is one gRPC client per member (endpoint), made at init. A call
/// starts at the member that answered last and, when a member cannot
/// answer (it is down, has no leader, or lets the try's `requestTimeout`
/// pass), tries the next, round after round; when none could for
/// `requestTimeout` per member in all, it throws `BerthError` code
/// `.unavailable` with a message that starts "the store has no quorum" and
/// names each member's failure. What etcd refuses is a `BerthError` with a
/// code that says why (a lease not found is `.notFound`, a compacted
/// revision `.outOfRange`, a transaction too large `.resourceExhausted`).
/// Callers see Berth's values only, never the generated messages.
public final class EtcdClient: Sendable {
    /// etcd 3.4's default `--max-txn-ops`: operations in one branch of a transaction.
    public static let maxOperationsPerTxn = 128
    /// etcd 3.4's default `--max-request-bytes`: the largest request it takes, encoded.
    public static let maxRequestBytes = 1_572_864
    /// The largest response read: a range answer can be far larger than a request.
    static let maxResponseBytes = 64 * 1024 * 1024

    /// One member as the client reaches it.
    struct Member: Sendable {
        let address: TransportAddress
        let grpc: GRPCClient<NGHTTP2ClientTransport>
    }

    /// How long one try of a call waits for a member before trying the next.
    public let requestTimeout: Duration
    let members: [Member]
    let logger: Logger
    private let runners: [Task<Void, Never>]
    /// The member that answered last: calls start there.
    private let preferred = Mutex(0)

    /// Makes a client of the members at `endpoints` (connections are made on
    /// the first call, and again after a member goes away).
    ///
    /// - Parameters:
    ///   - tls: Berth's mutual TLS, on TCP; nil speaks plain HTTP/2.
    ///   - requestTimeout: the deadline of each try of a call, on one member.
    public init(endpoints: [TransportAddress], tls: MutualTLS?, requestTimeout: Duration = .seconds(5), logger: Logger) {
        var quiet = logger
        quiet.logLevel = .critical
        var members: [Member] = []
        var runners: [Task<Void, Never>] = []
        for address in endpoints {
            var config = tls?.clientConfig(address, connectTimeout: requestTimeout) ?? .init(address: address, connectTimeout: requestTimeout)
            config.limits.maxReceiveMessageSize = Self.maxResponseBytes
            let grpc = GRPCClient(transport: NGHTTP2ClientTransport(config: config, logger: quiet))
            members.append(Member(address: address, grpc: grpc))
            runners.append(Task { try? await grpc.runConnections() })
        }
        self.members = members
        self.runners = runners
        self.requestTimeout = requestTimeout
        self.logger = logger
    }

    deinit {
        for runner in runners { runner.cancel() }
    }

    /// The members' addresses, in the order given.
    public var endpoints: [TransportAddress] { members.map(\.address) }

    /// Closes every connection once the calls under way (watches and
    /// keep-alives included) end.
    public func close() {
        for member in members { member.grpc.beginGracefulShutdown() }
    }

    /// Parses `etcd://HOST:PORT[,HOST:PORT...]`, as `berth-controller --store` takes it.
    ///
    /// - Throws: `BerthError` `.invalidArgument` saying what is wrong with `text`.
    public static func endpoints(parsing text: String) throws -> [TransportAddress] {
        let expected = "expected etcd://HOST:PORT, or several separated by commas (etcd://10.0.0.1:2379,10.0.0.2:2379)"
        guard text.hasPrefix("etcd://") else {
            throw BerthError.invalid("store \"\(text)\": \(expected)")
        }
        var list = text.dropFirst("etcd://".count)
        if list.hasSuffix("/") { list = list.dropLast() }
        guard !list.isEmpty else { throw BerthError.invalid("store \"\(text)\": no endpoint is given; \(expected)") }
        var addresses: [TransportAddress] = []
        for item in list.split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else { throw BerthError.invalid("store \"\(text)\": an endpoint between two commas is empty; \(expected)") }
            guard !item.contains("/"), !item.hasPrefix(":") else {
                throw BerthError.invalid("store \"\(text)\": endpoint \"\(item)\" is not HOST:PORT; \(expected)")
            }
            let address: TransportAddress
            do {
                address = try TransportAddress(parsing: String(item))
            } catch {
                throw BerthError.invalid("store \"\(text)\": endpoint \"\(item)\" is not HOST:PORT with a port from 1 to 65535; \(expected)")
            }
            guard case .tcp(_, let port) = address, port > 0 else {
                throw BerthError.invalid("store \"\(text)\": endpoint \"\(item)\" has port 0; etcd's client port is usually 2379")
            }
            guard !addresses.contains(address) else { throw BerthError.invalid("store \"\(text)\": endpoint \"\(item)\" is listed twice") }
            addresses.append(address)
        }
        return addresses
    }

    /// The end of the range of every key that starts with `prefix`, for
    /// `range(from:end:)`: the prefix with its last byte incremented.
    public static func prefixEnd(_ prefix: String) -> [UInt8] {
        EtcdKeys.prefixEnd(Array(prefix.utf8))
    }

    // MARK: Keys

    /// Reads `key`, or with `prefix` every key that starts with it (in key
    /// order, or in create-revision order with `sortByCreateRevision`).
    ///
    /// - Parameters:
    ///   - limit: at most this many keys (0: all); `more` tells whether there were more.
    ///   - revision: the store as it was at this revision (0: as it is now).
    ///   - serializable: answered by the member asked, from its own copy,
    ///     without asking the raft leader: possibly stale, but available
    ///     without a quorum.
    /// - Returns: the keys found, the store's revision they were read at,
    ///   and whether `limit` left keys out.
    /// - Throws: `BerthError`: `.unavailable` ("the store has no quorum") when
    ///   no member answers; `.outOfRange` for a compacted or future revision.
    public func range(
        _ key: String, prefix: Bool = false, limit: Int = 0, sortByCreateRevision: Bool = false, revision: Int64 = 0, serializable: Bool = false
    ) async throws -> (values: [EtcdKeyValue], revision: Int64, more: Bool) {
        var request = Etcdserverpb_RangeRequest()
        (request.key, request.rangeEnd) = EtcdKeys.span(key, prefix: prefix)
        request.limit = Int64(limit)
        request.revision = revision
        request.serializable = serializable
        if sortByCreateRevision {
            request.sortTarget = .create
            request.sortOrder = .ascend
        }
        return try await range(request, what: prefix ? "read the keys under \(key)" : "read \(key)")
    }

    /// Reads the keys from `start` (included) to `end` (excluded), in key
    /// order: a page of a large range, continued from the last key read
    /// plus `"\0"`.
    ///
    /// - Parameters:
    ///   - end: the first key past the range, as bytes (`prefixEnd(_:)` gives
    ///     the end of a prefix).
    ///   - limit: at most this many keys (0: all); `more` tells whether there were more.
    ///   - revision: the store as it was at this revision (0: as it is now):
    ///     the pages of one listing read at the first page's revision are one moment's.
    /// - Throws: as `range(_:prefix:limit:sortByCreateRevision:revision:serializable:)`.
    public func range(from start: String, end: [UInt8], limit: Int = 0, revision: Int64 = 0, serializable: Bool = false) async throws -> (
        values: [EtcdKeyValue], revision: Int64, more: Bool
    ) {
        let request = Etcdserverpb_RangeRequest.with {
            $0.key = Data(start.utf8)
            $0.rangeEnd = Data(end)
            $0.limit = Int64(limit)
            $0.revision = revision
            $0.serializable = serializable
        }
        return try await range(request, what: "read the keys from \(start)")
    }

    func range(_ request: Etcdserverpb_RangeRequest, what: String) async throws -> (values: [EtcdKeyValue], revision: Int64, more: Bool) {
        let response = try await call(what, requireLeader: !request.serializable) { grpc, metadata, options in
            try await Etcdserverpb_KV.Client(wrapping: grpc).range(request, metadata: metadata, options: options)
        }
        return (response.kvs.map(EtcdKeyValue.init(proto:)), response.header.revision, response.more)
    }

    /// Writes `value` at `key`, attached to `lease` (0: to none).
    ///
    /// - Returns: the store's revision after the write (the key's modification revision).
    /// - Throws: `BerthError`: `.unavailable` when no member answers;
    ///   `.notFound` when the lease does not exist; `.resourceExhausted` when
    ///   the value is larger than etcd takes.
    @discardableResult
    public func put(_ key: String, _ value: [UInt8], lease: Int64 = 0) async throws -> Int64 {
        let request = Etcdserverpb_PutRequest.with {
            $0.key = Data(key.utf8)
            $0.value = Data(value)
            $0.lease = lease
        }
        let response = try await call("write \(key)") { grpc, metadata, options in
            try await Etcdserverpb_KV.Client(wrapping: grpc).put(request, metadata: metadata, options: options)
        }
        return response.header.revision
    }

    /// Deletes `key`, or with `prefix` every key that starts with it.
    ///
    /// - Returns: how many keys were deleted.
    /// - Throws: `BerthError` `.unavailable` when no member answers.
    @discardableResult
    public func delete(_ key: String, prefix: Bool = false) async throws -> Int64 {
        let request = Etcdserverpb_DeleteRangeRequest.with { ($0.key, $0.rangeEnd) = EtcdKeys.span(key, prefix: prefix) }
        let response = try await call(prefix ? "delete the keys under \(key)" : "delete \(key)") { grpc, metadata, options in
            try await Etcdserverpb_KV.Client(wrapping: grpc).deleteRange(request, metadata: metadata, options: options)
        }
        return response.deleted
    }

    /// Runs a transaction: when every condition holds, the `then` operations,
    /// else the `else` operations, all at one revision.
    ///
    /// - Returns: which branch ran, the revision after it, and what its reads found.
    /// - Throws: `BerthError`: `.unavailable` when no member answers;
    ///   `.resourceExhausted` when a branch has more operations or bytes than
    ///   etcd takes (`batches(_:conditions:)` splits a large change);
    ///   `.invalidArgument` when a branch writes one key twice.
    public func txn(if conditions: [EtcdCondition], then success: [EtcdOperation], else failure: [EtcdOperation] = []) async throws
        -> EtcdTxnResult
    {
        let request = Etcdserverpb_TxnRequest.with {
            $0.compare = conditions.map(\.proto)
            $0.success = success.map(\.proto)
            $0.failure = failure.map(\.proto)
        }
        let keys = (success + failure).map(\.key)
        let what =
            switch keys.count {
            case 0: "run a transaction without operations"
            case 1: "run a transaction on \(keys[0])"
            default: "run a transaction of \(keys.count) operations on \(keys[0]) and others"
            }
        let response = try await call(what) { grpc, metadata, options in
            try await Etcdserverpb_KV.Client(wrapping: grpc).txn(request, metadata: metadata, options: options)
        }
        return EtcdTxnResult(proto: response)
    }

    /// Discards the history before `revision`: watches and reads from
    /// earlier revisions then fail as compacted.
    ///
    /// - Throws: `BerthError`: `.outOfRange` when the revision was compacted
    ///   already or is in the future; `.unavailable` when no member answers.
    public func compact(to revision: Int64) async throws {
        let request = Etcdserverpb_CompactionRequest.with { $0.revision = revision }
        _ = try await call("compact the history before revision \(revision)") { grpc, metadata, options in
            try await Etcdserverpb_KV.Client(wrapping: grpc).compact(request, metadata: metadata, options: options)
        }
    }

    // MARK: Leases

    /// Grants a lease of `seconds`; keys attached to it are deleted when it
    /// expires (unless kept alive) or is revoked.
    ///
    /// - Returns: the lease's ID and the TTL etcd granted (it may be longer
    ///   than asked: etcd's minimum is about 1.5 election timeouts).
    /// - Throws: `BerthError` `.unavailable` when no member answers.
    public func grantLease(ttl seconds: Int64) async throws -> (id: Int64, ttl: Int64) {
        let request = Etcdserverpb_LeaseGrantRequest.with { $0.ttl = seconds }
        let response = try await call("grant a lease of \(seconds) s") { grpc, metadata, options in
            try await Etcdserverpb_Lease.Client(wrapping: grpc).leaseGrant(request, metadata: metadata, options: options)
        }
        guard response.error.isEmpty else {
            throw BerthError(.failedPrecondition, "the store refused to grant a lease of \(seconds) s", cause: response.error)
        }
        return (response.id, response.ttl)
    }

    /// Revokes a lease: the keys attached to it are deleted at once.
    ///
    /// - Throws: `BerthError`: `.notFound` when the lease does not exist
    ///   (it expired or was revoked); `.unavailable` when no member answers.
    public func revokeLease(_ id: Int64) async throws {
        let request = Etcdserverpb_LeaseRevokeRequest.with { $0.id = id }
        _ = try await call("revoke lease \(String(id, radix: 16))") { grpc, metadata, options in
            try await Etcdserverpb_Lease.Client(wrapping: grpc).leaseRevoke(request, metadata: metadata, options: options)
        }
    }

    // MARK: Members

    /// Asks every member for its status (Maintenance.Status), all at once,
    /// each within `requestTimeout`; a member that does not answer has its
    /// failure in `error`.
    ///
    /// - Returns: one status per endpoint, in the order of `endpoints`.
    public func status() async -> [EtcdMemberStatus] {
        let options = callOptions
        return await withTaskGroup(of: (Int, EtcdMemberStatus).self) { group in
            for (index, member) in members.enumerated() {
                group.addTask {
                    do {
                        let status = try await Etcdserverpb_Maintenance.Client(wrapping: member.grpc).status(
                            Etcdserverpb_StatusRequest(), options: options)
                        let answer = EtcdMemberStatus(
                            endpoint: member.address, error: nil, alarms: status.errors, memberID: status.header.memberID,
                            leaderID: status.leader, raftTerm: Int64(clamping: status.raftTerm), revision: status.header.revision,
                            version: status.version, databaseSize: status.dbSize)
                        return (index, answer)
                    } catch {
                        return (index, EtcdMemberStatus(endpoint: member.address, error: Self.reason(error, timeout: options.timeout)))
                    }
                }
            }
            var statuses: [EtcdMemberStatus?] = Array(repeating: nil, count: members.count)
            for await (index, status) in group { statuses[index] = status }
            return statuses.compactMap { $0 }
        }
    }

    // MARK: Calls and failover

    /// Each try's options: the request timeout, on the wire too (etcd stops).
    var callOptions: CallOptions {
        var options = CallOptions.defaults
        options.timeout = requestTimeout
        return options
    }

    /// etcd's "require leader" metadata: a member without a raft leader
    /// refuses at once ("etcdserver: no leader") instead of letting the call
    /// wait out its timeout, and ends streams when it loses its leader.
    static let requireLeader: Metadata = ["hasleader": "true"]

    /// The index of the member calls start at.
    var preferredIndex: Int { preferred.withLock { $0 } }

    /// Remembers that member `index` answered.
    func answered(_ index: Int) {
        preferred.withLock { $0 = index }
    }

    /// Runs one call on the members in turn, from the one that answered
    /// last, until one answers or refuses. A member that cannot answer
    /// (down, without a leader, silent for `requestTimeout`) is left for the
    /// next; rounds go on, a moment apart, for `requestTimeout` per member
    /// in all, which rides out a raft election (a second or two), and no
    /// longer.
    ///
    /// - Throws: `BerthError`: the refusal of a member, mapped; or
    ///   `.unavailable` "the store has no quorum" naming each member's last
    ///   failure; `CancellationError` when the task is cancelled.
    func call<Response: Sendable>(
        _ what: String, requireLeader: Bool = true,
        _ body: (GRPCClient<NGHTTP2ClientTransport>, Metadata, CallOptions) async throws -> Response
    ) async throws -> Response {
        guard !members.isEmpty else { throw BerthError(.invalidArgument, "cannot \(what): no etcd endpoint is configured") }
        let clock = ContinuousClock()
        let end = clock.now + requestTimeout * members.count
        let metadata = requireLeader ? Self.requireLeader : [:]
        var failures: [Int: String] = [:]
        var index = preferredIndex
        var tries = 0
        while true {
            let remaining = clock.now.duration(to: end)
            guard remaining > .zero else { break }
            let member = members[index]
            var options = callOptions
            options.timeout = min(requestTimeout, remaining)
            do {
                let response = try await body(member.grpc, metadata, options)
                answered(index)
                return response
            } catch {
                if Task.isCancelled { throw CancellationError() }
                switch Self.classify(error, what: what, timeout: options.timeout ?? requestTimeout) {
                case .refused(let refusal):
                    answered(index)
                    throw refusal
                case .memberFailed(let reason):
                    logger.debug(
                        "etcd member failed a call; trying the next",
                        metadata: ["etcd.endpoint": "\(member.address)", "etcd.call": "\(what)", "etcd.error": "\(reason)"])
                    failures[index] = reason
                }
            }
            tries += 1
            index = (index + 1) % members.count
            if tries % members.count == 0 {
                try await Task.sleep(for: min(Self.retryPause, clock.now.duration(to: end)))
            }
        }
        throw noQuorum(what, failures)
    }

    /// The pause after a round in which no member could answer.
    static let retryPause = Duration.milliseconds(200)

    /// The error of a call no member could answer, with each member's last failure.
    func noQuorum(_ what: String, _ failures: [Int: String]) -> BerthError {
        let named = members.indices.compactMap { index in failures[index].map { "\(members[index].address.hostAndPort): \($0)" } }
        return BerthError(
            .unavailable,
            "the store has no quorum: no etcd member could \(what) (\(named.joined(separator: "; "))); "
                + "a majority of the members must run and reach each other")
    }
}
