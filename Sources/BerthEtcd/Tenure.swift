import Synchronization

/// One candidacy on one lease, from the lease's grant to its end: the
/// tasks that keep it (renewals, the local deadline, the key's watch) and
/// who waits for its end.
///
/// States: running → ended (by the first of: a failed renewal, the local
/// deadline, the key's deletion, a resignation). Ended is final; it cancels
/// the tasks and wakes every waiter.
final class Tenure: Sendable {
    let lease: Int64
    let key: String

    private struct State {
        /// Until when the lease certainly lives: the send instant of the last
        /// answered renewal plus the TTL etcd answered.
        var deadline: ContinuousClock.Instant
        /// Why the tenure ended; nil while it runs.
        var ended: String?
        var tasks: [Task<Void, Never>] = []
        /// The task that renews the lease (one of `tasks`).
        var renewal: Task<Void, Never>?
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
    }

    private let state: Mutex<State>

    init(lease: Int64, key: String, deadline: ContinuousClock.Instant) {
        self.lease = lease
        self.key = key
        state = Mutex(State(deadline: deadline))
    }

    /// Until when the lease certainly lives.
    var deadline: ContinuousClock.Instant { state.withLock { $0.deadline } }

    /// Why the tenure ended; nil while it runs.
    var endReason: String? { state.withLock { $0.ended } }

    /// A renewal sent at `sent` was answered with `ttl` seconds.
    func renewed(ttl: Int64, sent: ContinuousClock.Instant) {
        state.withLock { $0.deadline = max($0.deadline, sent + .seconds(ttl)) }
    }

    /// Keeps `task` to cancel at the end (at once when it has ended);
    /// `renewal` marks the one that renews the lease.
    func keep(_ task: Task<Void, Never>, renewal: Bool = false) {
        let ended = state.withLock { state in
            if state.ended == nil {
                state.tasks.append(task)
                if renewal { state.renewal = task }
            }
            return state.ended != nil
        }
        if ended { task.cancel() }
    }

    /// Stops renewing the lease, leaving the rest running: the local
    /// deadline then ends the tenure, as it would a leader cut off.
    func cancelRenewals() {
        state.withLock { $0.renewal }?.cancel()
    }

    /// Ends the tenure for `reason`; false when it had ended already.
    @discardableResult
    func end(_ reason: String) -> Bool {
        let taken = state.withLock { state -> (tasks: [Task<Void, Never>], waiters: [CheckedContinuation<Void, Never>])? in
            guard state.ended == nil else { return nil }
            state.ended = reason
            defer {
                state.tasks = []
                state.renewal = nil
                state.waiters = [:]
            }
            return (state.tasks, Array(state.waiters.values))
        }
        guard let taken else { return false }
        for task in taken.tasks { task.cancel() }
        for waiter in taken.waiters { waiter.resume() }
        return true
    }

    /// Returns when the tenure has ended, or when the task is cancelled.
    func ended() async {
        let id = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state in
                    if state.ended != nil || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}
