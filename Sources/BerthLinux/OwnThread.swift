import CBerthSyscalls
import Glibc

/// A detached thread of its own (pthread), for work that blocks for long
/// (a watcher's wait, a process's output) and must hold none of Swift's
/// or Dispatch's shared threads. Foundation-free.
public enum OwnThread {
    private final class Box {
        let name: String
        let body: @Sendable () -> Void
        init(_ name: String, _ body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }

    /// Starts `body` on a new detached thread named `name` (at most 15 bytes show).
    public static func start(name: String, _ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(name, body)).toOpaque()
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            let box = Unmanaged<Box>.fromOpaque(raw).takeRetainedValue()
            _ = box.name.withCString { berth_set_thread_name($0) }
            box.body()
            return nil
        }, box)
        guard created == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            fatalError("cannot start a thread (\(name)): \(SystemError("pthread_create", errno: created).errnoName)")
        }
        pthread_detach(thread)
    }
}
