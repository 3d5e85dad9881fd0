import BerthModel
import FoundationEssentials
public import Logging
import Synchronization

/// etcd's election recipe (as go.etcd.io/etcd/clientv3/concurrency's
/// `Election`): each candidate writes a key of its own under `prefix`,
/// attached to a lease it keeps alive, and the key with the lowest create
/// revision leads. A candidate waits for the deletion of the key just
/// before its own (not for every change under the prefix), then looks
/// again, until none is before it.
///
/// The leader's key's create revision is its term: the leader puts
/// `fence(for:)` in every write, so that once its key is gone (its lease
/// expired, it resigned) its writes fail, however late it learns it.
/// `lost(_:)` tells it: when etcd refuses a renewal, when no renewal was
/// answered for the lease's TTL since the last answered one was sent (the
/// leader stops no later than etcd expires the lease), or when its key is
/// deleted.
public final class LeaderElection: Sendable {
    /// The store.
    public let client: EtcdClient
    /// Where the candidates' keys are (`/berth/election/`).
    public let prefix: String
    /// The TTL of each candidate's lease, in seconds.
    public let ttl: Int64
    /// What this candidate campaigns with: where it is reached.
    public let value: String
    private let logger: Logger
    /// This candidate's tenure: from a campaign to its end or the next campaign.
    private let current = Mutex<Tenure?>(nil)

    /// - Parameters:
    ///   - prefix: the election's keys are this and a lease ID in hex.
    ///   - seconds: the TTL of the lease: how long a leader that stops
    ///     renewing it (paused, cut off) keeps its key. Renewed every third of it.
    ///   - value: where this candidate is reached, for followers to name.
    public init(client: EtcdClient, prefix: String, ttl seconds: Int64, value: String, logger: Logger) {
        self.client = client
        self.prefix = prefix
        self.ttl = seconds
        self.value = value
        self.logger = logger
    }

    /// Campaigns and waits until this candidate leads: grants a lease and
    /// keeps it alive, writes the candidate's key on it, then waits for every
    /// key before it to go.
    ///
    /// A campaign under way ends the previous one (its lease is revoked).
    ///
    /// - Throws: `BerthError`: `.unavailable` when the store has no quorum
    ///   or the lease was lost while waiting; `CancellationError` when
    ///   cancelled (the lease is revoked).
    public func campaign() async throws -> Leadership {
        if let previous = current.withLock({ $0.take() }) { await end(previous, "campaigned again", revoke: true) }
        let clock = ContinuousClock()
        let asked = clock.now
        let grant = try await client.grantLease(ttl: ttl)
        let key = prefix + String(grant.id, radix: 16)
        let tenure = Tenure(lease: grant.id, key: key, deadline: asked + .seconds(grant.ttl))
        var metadata: Logger.Metadata = ["election.key": "\(key)"]
        let replaced = current.withLock { current in
            defer { current = tenure }
            return current
        }
        if let replaced { await end(replaced, "campaigned again", revoke: true) }
        do {
            keepAlive(tenure, ttl: grant.ttl)
            let written = try await client.txn(
                if: [.absent(key)], then: [.put(key, Array(value.utf8), lease: grant.id)], else: [.get(key)])
            // The key exists only if an earlier try of this very transaction
            // (timed out on another member) was applied: it is this lease's.
            guard let createRevision = written.succeeded ? written.revision : written.ranges.first?.first?.createRevision else {
                throw BerthError(.internal, "the election key \(key) was neither written nor found")
            }
            metadata["election.term"] = "\(createRevision)"
            logger.debug("election campaign started", metadata: metadata)
            try await waitForTurn(tenure, createRevision: createRevision)
            try Task.checkCancellation()
            watchKey(tenure, createRevision: createRevision)
            let leadership = Leadership(key: key, createRevision: createRevision, lease: grant.id, value: value, since: clock.now)
            logger.info("election won", metadata: metadata)
            return leadership
        } catch {
            current.withLock { if $0 === tenure { $0 = nil } }
            await end(tenure, "the campaign failed", revoke: true)
            if Task.isCancelled { throw CancellationError() }
            throw error
        }
    }

    /// Returns when `leadership` is lost: its lease's renewal failed or
    /// went unanswered for its TTL, its key was deleted, or it resigned; at
    /// once when it is not this election's current leadership. Returns when
    /// the task is cancelled too.
    public func lost(_ leadership: Leadership) async {
        guard let tenure = current.withLock({ $0 }), tenure.lease == leadership.lease else { return }
        await tenure.ended()
    }

    /// Stops leading or campaigning: revokes the lease, which deletes the
    /// key, so that the next candidate leads at once.
    public func resign() async {
        guard let tenure = current.withLock({ $0.take() }) else { return }
        await end(tenure, "resigned", revoke: true)
        logger.info("election resigned", metadata: ["election.key": "\(tenure.key)"])
    }

    /// The condition every write of the leader carries: its key still has
    /// the create revision it won with. A deposed leader's writes then fail.
    public func fence(for leadership: Leadership) -> EtcdCondition {
        .created(leadership.key, at: leadership.createRevision)
    }

    /// The current leader: the key with the lowest create revision under
    /// the prefix; nil when there is no candidate.
    ///
    /// - Parameter serializable: as the member asked has it, without a
    ///   quorum (possibly stale).
    /// - Throws: `BerthError` `.unavailable` when the store has no quorum.
    public func leader(serializable: Bool = false) async throws -> (value: String, createRevision: Int64)? {
        let found = try await client.range(prefix, prefix: true, limit: 1, sortByCreateRevision: true, serializable: serializable)
        return found.values.first.map { (String(decoding: $0.value, as: UTF8.self), $0.createRevision) }
    }

    /// Every candidate, the leader first (in create-revision order).
    ///
    /// - Parameter serializable: as `leader(serializable:)`.
    /// - Throws: `BerthError` `.unavailable` when the store has no quorum.
    public func candidates(serializable: Bool = false) async throws -> [ElectionCandidate] {
        try await client.range(prefix, prefix: true, sortByCreateRevision: true, serializable: serializable).values.map {
            ElectionCandidate(key: $0.key, value: String(decoding: $0.value, as: UTF8.self), createRevision: $0.createRevision, lease: $0.lease)
        }
    }

    // MARK: Tenure

    /// Renews the lease every third of its TTL, and ends the tenure when
    /// etcd refuses a renewal or when none was answered for the TTL since
    /// the last answered one was sent: a local deadline, which needs no
    /// answer from anyone.
    private func keepAlive(_ tenure: Tenure, ttl: Int64) {
        let (client, logger) = (self.client, self.logger)
        let renewals = Task {
            do {
                try await client.keepAlive(lease: tenure.lease, every: .seconds(ttl) / 3) { ttl, sent in tenure.renewed(ttl: ttl, sent: sent) }
            } catch {
                if tenure.end("the lease's renewal failed: \(error)") {
                    logger.warning("election lease lost", metadata: ["election.key": "\(tenure.key)", "error": "\(error)"])
                }
            }
        }
        let deadline = Task {
            while !Task.isCancelled {
                let deadline = tenure.deadline
                if ContinuousClock.now >= deadline {
                    if tenure.end("no renewal of the lease was answered within its TTL of \(ttl) s") {
                        logger.warning("election lease renewal overdue", metadata: ["election.key": "\(tenure.key)"])
                    }
                    return
                }
                try? await Task.sleep(until: deadline, clock: .continuous)
            }
        }
        tenure.keep(renewals, renewal: true)
        tenure.keep(deadline)
    }

    /// Waits until no key under the prefix was created before this one:
    /// for the deletion of the one just before, then looks again.
    private func waitForTurn(_ tenure: Tenure, createRevision: Int64) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while true {
                    var request = Etcdserverpb_RangeRequest()
                    (request.key, request.rangeEnd) = EtcdKeys.span(self.prefix, prefix: true)
                    request.sortTarget = .create
                    request.sortOrder = .descend
                    request.limit = 1
                    request.maxCreateRevision = createRevision - 1
                    let before = try await self.client.range(request, what: "read the candidates before \(tenure.key)")
                    guard let ahead = before.values.first else { break }
                    self.logger.debug("election waiting", metadata: ["election.key": "\(tenure.key)", "election.ahead": "\(ahead.key)"])
                    try await self.waitForDeletion(of: ahead.key, after: before.revision)
                }
                // Still ours? The lease may have gone while waiting.
                let first = try await self.client.range(self.prefix, prefix: true, limit: 1, sortByCreateRevision: true).values.first
                guard first?.key == tenure.key, first?.createRevision == createRevision else {
                    throw BerthError(.unavailable, "the election key \(tenure.key) was deleted while it waited to lead (its lease expired)")
                }
            }
            group.addTask {
                await tenure.ended()
                // Cancelled: the wait ended first, or the campaign was cancelled.
                try Task.checkCancellation()
                throw BerthError(
                    .unavailable, "the election's lease was lost while waiting to lead: \(tenure.endReason ?? "it ended")")
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// A watch's way out once the key it waits for is deleted.
    private struct Deleted: Error {}

    /// Returns once `key` is deleted after `revision` (or its history was
    /// compacted: the caller looks again).
    private func waitForDeletion(of key: String, after revision: Int64) async throws {
        do {
            try await client.watch(key, from: revision + 1) { events, _ in
                if events.contains(where: { if case .delete = $0 { true } else { false } }) { throw Deleted() }
            }
        } catch is Deleted {
            return
        } catch EtcdError.compacted {
            return
        }
    }

    /// Ends the tenure when its key is deleted (or no longer the one it
    /// won with).
    private func watchKey(_ tenure: Tenure, createRevision: Int64) {
        let (client, logger) = (self.client, self.logger)
        tenure.keep(
            Task {
                var from = createRevision + 1
                while !Task.isCancelled {
                    do {
                        try await client.watch(tenure.key, from: from) { events, _ in
                            if events.contains(where: { if case .delete = $0 { true } else { false } }) { throw Deleted() }
                        }
                    } catch is Deleted {
                        if tenure.end("the election key was deleted") {
                            logger.warning("election key deleted", metadata: ["election.key": "\(tenure.key)"])
                        }
                        return
                    } catch {
                        if Task.isCancelled { return }
                        // Compacted, or no member serves: read the key itself.
                        if let found = try? await client.range(tenure.key) {
                            guard found.values.first?.createRevision == createRevision else {
                                if tenure.end("the election key was deleted") {
                                    logger.warning("election key deleted", metadata: ["election.key": "\(tenure.key)"])
                                }
                                return
                            }
                            from = found.revision + 1
                        }
                        try? await Task.sleep(for: .milliseconds(500))
                    }
                }
            })
    }

    /// Ends `tenure` and, with `revoke`, revokes its lease (in a task of its
    /// own: a cancelled caller still revokes it).
    private func end(_ tenure: Tenure, _ reason: String, revoke: Bool) async {
        tenure.end(reason)
        guard revoke else { return }
        let (client, logger) = (self.client, self.logger)
        await Task {
            do {
                try await client.revokeLease(tenure.lease)
            } catch let error as BerthError where error.code == .notFound {
                // Expired already: its key is gone.
            } catch {
                logger.warning(
                    "election lease not revoked; its key stays until the lease expires",
                    metadata: ["election.key": "\(tenure.key)", "error": "\(error)"])
            }
        }.value
    }

    /// Stops renewing the current lease without revoking it, as a leader
    /// that was paused or cut off: for tests of what follows.
    func stopRenewing() {
        guard let tenure = current.withLock({ $0 }) else { return }
        tenure.cancelRenewals()
    }
}
