import Synchronization

/// One thing made ahead of need (a standby shim, network namespace or
/// cgroup), so that a container's start takes it over instead of waiting
/// for it to be made. It is made in the background (`Background`), taken
/// by the next start, and made again after. None is made while closed; one
/// finished after a close is discarded.
public final class MadeAhead<Item: Sendable>: Sendable {
    private struct State {
        var ready: Item?
        var preparing = false
        var open: Bool
    }
    private let state: Mutex<State>

    public init(open: Bool) {
        state = Mutex(State(open: open))
    }

    /// Makes one in the background, unless one is ready or being made, or
    /// this is closed. `make` returns nil when it could make none (that is
    /// not an error: the next start makes its own); `discard` undoes one no
    /// longer wanted; `ready` hears of one the next `take` can have.
    public func prepare(
        make: @escaping @Sendable () -> Item?, discard: @escaping @Sendable (Item) -> Void, ready: @escaping @Sendable (Item) -> Void = { _ in }
    ) {
        let go = state.withLock { s in
            guard s.open, s.ready == nil, !s.preparing else { return false }
            s.preparing = true
            return true
        }
        guard go else { return }
        Background.run { [self] in
            let made = make()
            let surplus = state.withLock { s -> Item? in
                s.preparing = false
                guard s.open, s.ready == nil else { return made }
                s.ready = made
                return nil
            }
            if let surplus {
                discard(surplus)
            } else if let made {
                ready(made)
            }
        }
    }

    /// The ready one, when `fits` takes it (else it stays ready).
    public func take(where fits: (Item) -> Bool = { _ in true }) -> Item? {
        state.withLock { s in
            guard let ready = s.ready, fits(ready) else { return nil }
            s.ready = nil
            return ready
        }
    }

    /// Lets them be made from now on.
    public func open() {
        state.withLock { $0.open = true }
    }

    /// Makes no more; the one ready, for the caller to discard.
    public func close() -> Item? {
        state.withLock { s in
            s.open = false
            defer { s.ready = nil }
            return s.ready
        }
    }
}
