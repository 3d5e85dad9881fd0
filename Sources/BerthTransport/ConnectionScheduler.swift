import NIOCore
import Synchronization

/// Work a connection does on its event loop when stream tasks ask for it.
protocol ConnectionWork: AnyObject {
    /// Drains the outbound queues of these streams and returns held-back
    /// window for those, then writes what nghttp2 produced.
    func runScheduledWork(flush: [Int], credit: [Int])
}

/// Collects requests from stream tasks (any thread) and runs them on the
/// connection's event loop in one batch: many writes from many tasks cost one
/// event-loop hop and one socket write.
final class ConnectionScheduler: StreamIOOwner {
    private struct Pending {
        var flush: [Int] = []
        var credit: [Int] = []
        var scheduled = false
    }

    let eventLoop: any EventLoop
    private let pending = Mutex(Pending())
    private let target: NIOLoopBoundBox<(any ConnectionWork)?>

    /// Must be created on `eventLoop`.
    init(eventLoop: any EventLoop, work: any ConnectionWork) {
        self.eventLoop = eventLoop
        self.target = NIOLoopBoundBox(work, eventLoop: eventLoop)
    }

    /// Drops the connection; later requests do nothing. Event loop only.
    func detach() {
        target.value = nil
    }

    func streamNeedsFlush(_ key: Int) {
        request { $0.flush.append(key) }
    }

    func streamNeedsCredit(_ key: Int) {
        request { $0.credit.append(key) }
    }

    /// Records a request; the first one since the last run schedules the run.
    private func request(_ record: (inout Pending) -> Void) {
        let schedule = pending.withLock { p in
            record(&p)
            if p.scheduled { return false }
            p.scheduled = true
            return true
        }
        if schedule { eventLoop.execute { self.run() } }
    }

    private func run() {
        let (flush, credit) = pending.withLock { p in
            let work = (p.flush, p.credit)
            p.flush.removeAll(keepingCapacity: true)
            p.credit.removeAll(keepingCapacity: true)
            p.scheduled = false
            return work
        }
        target.value?.runScheduledWork(flush: flush, credit: credit)
    }
}
