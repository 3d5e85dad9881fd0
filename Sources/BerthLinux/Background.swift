import CBerthLinux
import Dispatch
import Foundation
import Glibc

/// Work that can wait: making things ahead of need (a standby shim, network
/// namespace and cgroup) and deleting removed files. Each piece runs on a
/// thread of its own at the lowest CPU priority (nice 19), so that on a
/// busy host it takes no core from a container's start. Its own thread, not
/// one of a shared queue: a thread at nice 19 on a busy host runs rarely,
/// and work queued behind it on a pool of one thread per core (where
/// `Blocking` work runs) would wait as long. Only root may lower a thread's
/// priority; for anyone else the work runs at the usual one.
public enum Background {
    private static let mayRenice = geteuid() == 0

    public static func run(_ work: @escaping @Sendable () -> Void) {
        let thread = Thread {
            if mayRenice { _ = berth_set_thread_nice(19) }
            work()
        }
        thread.name = "berth-background"
        thread.start()
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
