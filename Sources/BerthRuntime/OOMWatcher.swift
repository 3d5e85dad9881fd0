import BerthCgroups
import BerthLinux
import BerthModel
import CBerthLinux
import Foundation
import Synchronization

/// Tells the supervisor when the kernel reports memory pressure in a
/// container's cgroup, so that an OOM kill of a process in a container that
/// keeps running becomes an `oom` event as it happens (the exit of the
/// container's own process is counted at its exit). v1: an eventfd per
/// cgroup registered for memory.oom_control; v2: inotify on memory.events.
/// One thread waits on all of them.
///
/// A v1 eventfd is closed, and drained, only under the state's lock, and is
/// known to the epoll set by a key of its own, never by its number: a
/// descriptor closed as its cgroup goes (when the kernel signals it, too)
/// can be another file a moment later (a socket, a blob being read), which
/// the watcher must never read.
final class OOMWatcher: Sendable {
    private struct Watch {
        var key: Int64
        var id: ContainerID
        /// v1: the eventfd and the oom_control descriptor.
        var descriptors: [Int32]
    }

    private struct State {
        var byKey: [Int64: Watch] = [:]
        var byID: [ContainerID: Int64] = [:]
        /// v1 keys: 1, 2, 3, … (v2 keys are -wd; inotify's key is 2^40).
        var lastKey: Int64 = 0
    }

    private let epoll: Int32
    private let inotify: Int32
    private let unified: Bool
    private let state = Mutex(State())
    /// Called on the watcher's thread with the container whose cgroup
    /// reported memory pressure.
    private let handler = Mutex<(@Sendable (ContainerID) -> Void)?>(nil)

    init?(unified: Bool) {
        var inotify: Int32 = -1
        let epoll = berth_watch_open(&inotify)
        guard epoll >= 0 else { return nil }
        self.epoll = epoll
        self.inotify = inotify
        self.unified = unified
        // The agent keeps its watcher for its whole life.
        let thread = Thread { [self] in
            var keys = [Int64](repeating: 0, count: 64)
            while true {
                let n = berth_watch_wait(self.epoll, self.inotify, &keys, Int32(keys.count))
                if n < 0 { return }
                for key in keys.prefix(Int(n)) {
                    let id = self.state.withLock { s -> ContainerID? in
                        guard let watch = s.byKey[key] else { return nil }
                        if let eventfd = watch.descriptors.first { berth_eventfd_drain(eventfd) }
                        return watch.id
                    }
                    if let id, let notify = self.handler.withLock({ $0 }) { notify(id) }
                }
            }
        }
        thread.name = "berth-oom-watch"
        thread.start()
    }

    func onPressure(_ notify: @escaping @Sendable (ContainerID) -> Void) {
        handler.withLock { $0 = notify }
    }

    /// Starts watching a container's cgroup, given its OOM counter file
    /// (memory.oom_control on v1, memory.events on v2).
    ///
    /// - Throws: `SystemError` when the kernel refuses the registration.
    func watch(_ id: ContainerID, counterFile: String) throws {
        unwatch(id)
        let watch: Watch
        if unified {
            let wd = berth_watch_v2_file(inotify, counterFile)
            guard wd >= 0 else { throw SystemError("inotify_add_watch", path: counterFile, errno: errno) }
            watch = Watch(key: -Int64(wd), id: id, descriptors: [])
        } else {
            let key = state.withLock { s in
                s.lastKey += 1
                return s.lastKey
            }
            var control: Int32 = -1
            let dir = (counterFile as NSString).deletingLastPathComponent
            let efd = berth_watch_v1_oom(epoll, counterFile, "\(dir)/cgroup.event_control", key, &control)
            guard efd >= 0 else { throw SystemError("cgroup.event_control", path: dir, errno: errno) }
            watch = Watch(key: key, id: id, descriptors: [efd, control])
        }
        state.withLock {
            $0.byKey[watch.key] = watch
            $0.byID[id] = watch.key
        }
    }

    func unwatch(_ id: ContainerID) {
        // Closed under the lock the watcher drains under: it reads no
        // descriptor of a watch that is gone.
        state.withLock { s in
            guard let key = s.byID.removeValue(forKey: id), let watch = s.byKey.removeValue(forKey: key) else { return }
            if key < 0 { _ = berth_unwatch_v2_file(inotify, Int32(-key)) }
            for fd in watch.descriptors { close(fd) }
        }
    }
}
