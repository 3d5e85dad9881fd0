import CBerthLinux
import Dispatch
import Glibc

/// Work that can wait: making things ahead of need (a standby shim, network
/// namespace and cgroup) and deleting removed files. It runs on threads of
/// a queue of its own at the lowest CPU priority (nice 19) while it runs, so
/// that on a busy host it takes no core from a container's start. Only root
/// can give a thread its priority back afterwards; for anyone else the work
/// runs at the usual priority.
public enum Background {
    private static let queue = DispatchQueue(label: "berth.background", attributes: .concurrent)
    private static let mayRenice = geteuid() == 0

    public static func run(_ work: @escaping @Sendable () -> Void) {
        queue.async {
            let lowered = mayRenice && berth_set_thread_nice(19) == 0
            work()
            if lowered { _ = berth_set_thread_nice(0) }
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
