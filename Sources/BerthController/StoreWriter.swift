public import BerthModel
import Synchronization

/// The one way the controller's records reach its store: changes are
/// committed one batch at a time, in the order they were submitted, and
/// the changes that queue up behind a commit go together in the next one.
///
/// The owner of the records (the registry, the service manager) decides and
/// changes its memory in one step, submits the change in that same step,
/// and answers its caller once the change is stored. Once a commit fails,
/// the writer refuses every change after it, so that the store never holds
/// a later change without an earlier one; the controller then reads the
/// store again (or, with etcd, stops leading).
public final class StoreWriter: Sendable {
    private struct Pending: Sendable {
        var change: StoreChange
        var done: StoreCompletion
    }

    private struct State: Sendable {
        var pending: [Pending] = []
        var writing = false
        var failure: BerthError?
    }

    private let store: any ControllerStore
    private let state = Mutex(State())
    private let failed: @Sendable (BerthError) -> Void

    /// - Parameter failed: told once, of the first commit that fails.
    public init(store: any ControllerStore, failed: @escaping @Sendable (BerthError) -> Void = { _ in }) {
        self.store = store
        self.failed = failed
    }

    /// The first failure, if a commit failed.
    public var failure: BerthError? { state.withLock { $0.failure } }

    /// Queues `change` after every change submitted before it.
    ///
    /// - Returns: what tells when it is stored (an empty change: when every
    ///   change submitted before it is).
    @discardableResult
    public func submit(_ change: StoreChange) -> StoreCompletion {
        let done = StoreCompletion()
        let (start, refused) = state.withLock { state -> (Bool, BerthError?) in
            if let failure = state.failure { return (false, failure) }
            state.pending.append(Pending(change: change, done: done))
            if state.writing { return (false, nil) }
            state.writing = true
            return (true, nil)
        }
        if let refused { done.finish(.failure(refused)) }
        if start { Task { await self.drain() } }
        return done
    }

    private func drain() async {
        while true {
            let batch = state.withLock { state -> [Pending] in
                defer { state.pending = [] }
                if state.pending.isEmpty { state.writing = false }
                return state.pending
            }
            guard let first = batch.first else { return }
            let merged = batch.dropFirst().reduce(first.change) { $0.merging($1.change) }
            do {
                try await store.commit(merged)
                for pending in batch { pending.done.finish(.success(())) }
            } catch {
                let failure =
                    (error as? BerthError).map { BerthError($0.code, "the change could not be stored: \($0.message)", cause: $0.cause) }
                    ?? BerthError(.internal, "the change could not be stored", underlying: error)
                let refused = state.withLock { state -> [Pending] in
                    state.failure = failure
                    state.writing = false
                    defer { state.pending = [] }
                    return state.pending
                }
                // The owner hears of the failure before any caller does.
                failed(failure)
                for pending in batch + refused { pending.done.finish(.failure(failure)) }
                return
            }
        }
    }
}

/// Tells when a submitted change is stored.
public final class StoreCompletion: Sendable {
    private struct State: Sendable {
        var result: Result<Void, BerthError>?
        var waiters: [CheckedContinuation<Void, any Error>] = []
    }

    private let state = Mutex(State())

    init() {}

    func finish(_ result: Result<Void, BerthError>) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            guard state.result == nil else { return [] }
            state.result = result
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(with: result.mapError { $0 as any Error }) }
    }

    /// Returns once the change is stored.
    ///
    /// - Throws: the `BerthError` its commit (or an earlier one) failed with.
    public func stored() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let result = state.withLock { state -> Result<Void, BerthError>? in
                if state.result == nil { state.waiters.append(continuation) }
                return state.result
            }
            if let result { continuation.resume(with: result.mapError { $0 as any Error }) }
        }
    }
}
