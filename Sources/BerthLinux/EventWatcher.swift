import CBerthSyscalls
import Glibc

/// One epoll set with one inotify descriptor in it, and cgroup v1 eventfds
/// registered for memory.oom_control: what the OOM watcher waits on.
public final class EventWatcher: Sendable {
    private let epoll: Int32
    private let inotify: Int32

    /// - Throws: `SystemError` when the kernel refuses an epoll set or inotify.
    public init() throws {
        var inotify: Int32 = -1
        let epoll = berth_watch_open(&inotify)
        guard epoll >= 0 else { throw SystemError.last("epoll_create") }
        self.epoll = epoll
        self.inotify = inotify
    }

    /// Watches `path` for modifications; the watch's number (its key is its negation).
    public func watchModifications(of path: String) throws -> Int32 {
        let wd = berth_watch_v2_file(inotify, path)
        guard wd >= 0 else { throw SystemError.last("inotify_add_watch", path: path) }
        return wd
    }

    public func unwatch(_ wd: Int32) { _ = berth_unwatch_v2_file(inotify, wd) }

    /// cgroup v1: an eventfd registered for `oomControl`'s events through
    /// `eventControl`, in the set under `key` (positive, below 2^40, never
    /// used for another); close both descriptors to end it.
    public func watchOOM(control oomControl: String, eventControl: String, key: Int64) throws -> (eventfd: Descriptor, control: Descriptor) {
        var control: Int32 = -1
        let efd = berth_watch_v1_oom(epoll, oomControl, eventControl, key, &control)
        guard efd >= 0 else { throw SystemError.last("cgroup.event_control", path: eventControl) }
        return (Descriptor(efd), Descriptor(control))
    }

    /// Blocks until something fires; the keys of what fired go into `keys`
    /// (eventfds are left to their owner to drain). Their count (0 when
    /// interrupted), nil on an error.
    public func wait(into keys: inout [Int64]) -> Int? {
        let n = keys.withUnsafeMutableBufferPointer { berth_watch_wait(epoll, inotify, $0.baseAddress, Int32($0.count)) }
        return n < 0 ? nil : Int(n)
    }

    /// Takes what an eventfd counted, without waiting.
    public static func drain(_ eventfd: Descriptor) { berth_eventfd_drain(eventfd.raw) }
}
