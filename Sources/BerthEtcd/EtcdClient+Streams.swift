import BerthModel
import BerthTransport
import FoundationEssentials
import GRPCCore
import Logging
import SwiftProtobuf

/// A stream that stopped serving without a status: the member went quiet
/// (no answer within the request timeout) or ended it.
struct StreamInterrupted: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// An error of a watch's handler, carried out of the call unchanged.
struct HandlerFailure: Error {
    var error: any Error
}

extension EtcdClient {
    // MARK: Keep-alive

    /// Keeps lease `lease` alive: sends a renewal every `every` on a
    /// LeaseKeepAlive stream and calls `renewed` with the TTL of each answer.
    /// A member that fails, ends the stream or leaves a renewal unanswered
    /// for `requestTimeout` is left for the next, for as long as it takes.
    ///
    /// Returns when the task is cancelled.
    ///
    /// - Throws: `EtcdError.leaseExpired` when etcd answers with TTL 0 (the
    ///   lease expired or was revoked); `BerthError` when etcd refuses the stream.
    public func keepAlive(lease: Int64, every interval: Duration, renewed: @escaping @Sendable (_ ttl: Int64) -> Void) async throws {
        try await keepAlive(lease: lease, every: interval, renewedAt: { ttl, _ in renewed(ttl) })
    }

    /// As `keepAlive(lease:every:renewed:)`, with the instant each answered
    /// renewal was sent: etcd restarts the TTL when it receives a renewal,
    /// after it was sent, so the lease lasts at least `ttl` from then.
    func keepAlive(lease: Int64, every interval: Duration, renewedAt renewed: @escaping @Sendable (_ ttl: Int64, _ sent: ContinuousClock.Instant) -> Void)
        async throws
    {
        guard !members.isEmpty else { throw BerthError(.invalidArgument, "cannot keep a lease alive: no etcd endpoint is configured") }
        var index = preferredIndex
        while !Task.isCancelled {
            let member = members[index]
            let reason: String
            do {
                try await keepAliveStream(on: member, lease: lease, every: interval, renewed: renewed)
                reason = "the member ended the stream"
            } catch let error as EtcdError {
                throw error
            } catch {
                if Task.isCancelled { return }
                switch Self.classify(error, what: "keep lease \(String(lease, radix: 16)) alive", timeout: requestTimeout) {
                case .refused(let refusal): throw refusal
                case .memberFailed(let failure): reason = failure
                }
            }
            logger.debug(
                "etcd lease renewal stream failed; trying the next member",
                metadata: ["etcd.endpoint": "\(member.address)", "etcd.lease": "\(String(lease, radix: 16))", "etcd.error": "\(reason)"])
            index = (index + 1) % members.count
            do {
                try await Task.sleep(for: min(interval, .milliseconds(500)))
            } catch {
                return
            }
        }
    }

    private func keepAliveStream(
        on member: Member, lease: Int64, every interval: Duration, renewed: @escaping @Sendable (Int64, ContinuousClock.Instant) -> Void
    ) async throws {
        let clock = ContinuousClock()
        // When each renewal not answered yet was sent; etcd answers in order.
        let unanswered = Locked<[ContinuousClock.Instant]>([])
        let timeout = requestTimeout
        let client = Etcdserverpb_Lease.Client(wrapping: member.grpc)
        let request = Etcdserverpb_LeaseKeepAliveRequest.with { $0.id = lease }
        try await Self.guarded(every: Self.watchdogPeriod(timeout)) {
            guard let oldest = unanswered.withLock({ $0.first }), oldest.duration(to: clock.now) > timeout else { return nil }
            return "no renewal answered within \(Self.text(timeout))"
        } body: {
            try await client.leaseKeepAlive(
                metadata: Self.requireLeader,
                requestProducer: { writer in
                    while true {
                        unanswered.withLock { $0.append(clock.now) }
                        try await writer.write(request)
                        try await Task.sleep(for: interval)
                    }
                },
                onResponse: { response in
                    for try await answer in response.messages {
                        let sent = unanswered.withLock { $0.isEmpty ? nil : $0.removeFirst() }
                        guard answer.ttl > 0 else { throw EtcdError.leaseExpired }
                        if let sent { renewed(answer.ttl, sent) }
                    }
                })
        }
    }

    // MARK: Watch

    /// Watches `key`, or with `prefix` every key under it, from `revision`
    /// (0: from now), and calls `handler` with each batch of changes in the
    /// store's order and the revision they bring the watch to (the last
    /// change's). The history between `revision` and now comes first.
    ///
    /// The request stream stays open while watching (etcd ends a watch when
    /// the client closes its side). When a member fails or goes quiet (no
    /// answer to a progress request within `requestTimeout`), the watch
    /// resumes on the next member after the last revision handled.
    ///
    /// Runs until the handler throws or the task is cancelled.
    ///
    /// - Throws: what the handler throws, unchanged; `EtcdError.compacted`
    ///   when the history from the revision asked (or resumed at) is gone;
    ///   `EtcdError.watchCanceled` when etcd cancels the watch;
    ///   `BerthError` `.unavailable` ("the store has no quorum") when no
    ///   member can serve it; `CancellationError` when cancelled.
    public func watch(
        _ key: String, prefix: Bool = false, from revision: Int64 = 0, handler: @escaping @Sendable (_ events: [EtcdEvent], _ revision: Int64) async throws -> Void
    ) async throws {
        guard !members.isEmpty else { throw BerthError(.invalidArgument, "cannot watch \(key): no etcd endpoint is configured") }
        let what = prefix ? "watch the keys under \(key)" : "watch \(key)"
        let progress = Locked(WatchProgress(next: revision))
        let clock = ContinuousClock()
        var index = preferredIndex
        // Each member's last failure since one last served the watch, and since when.
        var failures: [Int: String] = [:]
        var failing: ContinuousClock.Instant?
        while true {
            let member = members[index]
            let reason: String
            do {
                try await watchStream(on: member, key: key, prefix: prefix, progress: progress, handler: handler)
                reason = "the member ended the watch"
            } catch let failure as HandlerFailure {
                throw failure.error
            } catch let error as EtcdError {
                throw error
            } catch {
                if Task.isCancelled { throw CancellationError() }
                switch Self.classify(error, what: what, timeout: requestTimeout) {
                case .refused(let refusal): throw refusal
                case .memberFailed(let failure): reason = failure
                }
            }
            if progress.withLock({ $0.served }) {
                progress.withLock { $0.served = false }
                failures = [:]
                failing = nil
            }
            failures[index] = reason
            // As a call: no member for `requestTimeout` per member is no quorum.
            let since = failing ?? clock.now
            failing = since
            if since.duration(to: clock.now) >= requestTimeout * members.count { throw noQuorum(what, failures) }
            logger.debug(
                "etcd watch failed; resuming on the next member",
                metadata: ["etcd.endpoint": "\(member.address)", "etcd.key": "\(key)", "etcd.error": "\(reason)"])
            index = (index + 1) % members.count
            try await Task.sleep(for: Self.retryPause)
        }
    }

    /// Follows the keys under `prefix` until the task is cancelled.
    ///
    /// `changed` gets every change after `revision`, in the store's order.
    /// `listed` gets every key under the prefix as of one revision, with the
    /// first revision not yet handed over (its keys with a modification
    /// revision from there on are the news). It is called at the start when
    /// `revision` is 0, and again whenever etcd has compacted away the
    /// history the watch would resume from. A store that cannot be reached
    /// is tried again a second later, from where the watch stood.
    public func follow(
        _ prefix: String, after revision: Int64 = 0, what: String,
        listed: @escaping @Sendable (_ values: [EtcdKeyValue], _ since: Int64) async -> Void,
        changed: @escaping @Sendable (_ events: [EtcdEvent]) async -> Void
    ) async {
        let next = Locked(revision + 1)
        var list = revision == 0
        while !Task.isCancelled {
            do {
                if list {
                    let current = try await range(prefix, prefix: true)
                    await listed(current.values, next.value)
                    next.value = current.revision + 1
                    list = false
                }
                try await watch(prefix, prefix: true, from: next.value) { events, revision in
                    await changed(events)
                    next.value = revision + 1
                }
            } catch EtcdError.compacted(let oldest) {
                logger.info("the history of \(what) was compacted away; listing them again", metadata: ["from": "\(next.value)", "oldest": "\(oldest)"])
                list = true
            } catch {
                if Task.isCancelled { return }
                logger.warning("cannot follow \(what) in the store; trying again", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Where a watch stands, across the members it moves between.
    struct WatchProgress: Sendable {
        /// The revision to watch from when the watch is made again (0: from now).
        var next: Int64
        /// Whether a member has served the watch (answered its creation) since the last failure.
        var served = false
    }

    private func watchStream(
        on member: Member, key: String, prefix: Bool, progress: Locked<WatchProgress>,
        handler: @escaping @Sendable ([EtcdEvent], Int64) async throws -> Void
    ) async throws {
        let clock = ContinuousClock()
        let heard = Locked(clock.now)
        let timeout = requestTimeout
        var create = Etcdserverpb_WatchCreateRequest()
        (create.key, create.rangeEnd) = EtcdKeys.span(key, prefix: prefix)
        create.startRevision = progress.withLock { $0.next }
        let request = Etcdserverpb_WatchRequest.with { $0.createRequest = create }
        let probe = Etcdserverpb_WatchRequest.with { $0.progressRequest = Etcdserverpb_WatchProgressRequest() }
        let client = Etcdserverpb_Watch.Client(wrapping: member.grpc)
        try await Self.guarded(every: Self.watchdogPeriod(timeout)) {
            heard.value.duration(to: clock.now) > timeout * 2 ? "no answer to a progress request within \(Self.text(timeout))" : nil
        } body: {
            try await client.watch(
                metadata: Self.requireLeader,
                requestProducer: { writer in
                    try await writer.write(request)
                    // Kept open: etcd ends the watch when this side closes.
                    // A member silent for the request timeout is asked for
                    // its progress; one that does not answer is left.
                    while true {
                        try await Task.sleep(for: timeout / 4)
                        if heard.value.duration(to: clock.now) >= timeout { try await writer.write(probe) }
                    }
                },
                onResponse: { response in
                    for try await answer in response.messages {
                        heard.value = clock.now
                        if answer.created {
                            progress.withLock { state in
                                state.served = true
                                if state.next == 0 { state.next = answer.header.revision + 1 }
                            }
                        }
                        if answer.compactRevision > 0 { throw EtcdError.compacted(answer.compactRevision) }
                        if answer.canceled { throw EtcdError.watchCanceled(answer.cancelReason) }
                        guard !answer.events.isEmpty else { continue }
                        let events = answer.events.map(EtcdEvent.init(proto:))
                        let revision = events.map(\.revision).max() ?? answer.header.revision
                        progress.withLock { $0.next = revision + 1 }
                        do {
                            try await handler(events, revision)
                        } catch {
                            throw HandlerFailure(error: error)
                        }
                    }
                })
        }
    }

    // MARK: Stream liveness

    /// How often a stream's liveness is checked.
    static func watchdogPeriod(_ timeout: Duration) -> Duration {
        min(timeout / 5, .milliseconds(250))
    }

    /// Runs `body` while `stalled` says nothing; when it gives a reason,
    /// cancels `body` and throws `StreamInterrupted` with it. A stream over
    /// a member that stopped (SIGSTOP, a partition) never fails by itself.
    static func guarded(
        every period: Duration, stalled: @escaping @Sendable () -> String?, body: @escaping @Sendable () async throws -> Void
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await body() }
            group.addTask {
                while true {
                    try await Task.sleep(for: period)
                    if let reason = stalled() { throw StreamInterrupted(reason) }
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }
}
