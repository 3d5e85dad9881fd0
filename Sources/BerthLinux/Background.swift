import CBerthSyscalls
import Dispatch
import Glibc

/// Work that can wait: making things ahead of need (a standby shim, network
/// namespace and cgroup) and deleting removed files. It runs at the lowest
/// CPU priority (nice 19) and in the idle I/O class, so that on a busy host
/// it takes no core and no disk time from a container's start, two pieces
/// at a time. On threads of its own, not a shared queue's: a thread at
/// nice 19 on a busy host runs rarely, and work queued behind it on the
/// global queue's few threads (where `Blocking` work runs) would wait as
/// long. Only root may lower a thread's priority; for anyone else the work
/// runs at the usual one.
public enum Background {
    private static let mayRenice = geteuid() == 0
    private static let slots = DispatchSemaphore(value: 2)

    public static func run(_ work: @escaping @Sendable () -> Void) {
        OwnThread.start(name: "berth-background") {
            if mayRenice {
                _ = berth_set_thread_nice(19)
                _ = berth_set_thread_io_idle()
            }
            slots.wait()
            defer { slots.signal() }
            work()
        }
    }
}

/// Work that blocks (on files, sockets, pipes) and whose result is awaited:
/// on a thread of the global queue, at the usual priority, so that it holds
/// none of Swift's async pool meanwhile.
public enum Blocking {
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
        }
    }
}
