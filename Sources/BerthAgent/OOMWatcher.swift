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
final class OOMWatcher: Sendable {
    private struct Watch {
        var key: Int64
        var descriptors: [Int32]
    }

    private let epoll: Int32
    private let inotify: Int32
    private let unified: Bool
    private let state = Mutex<(byKey: [Int64: ContainerID], byID: [ContainerID: Watch])>(([:], [:]))
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
                    if let id = self.state.withLock({ $0.byKey[key] }), let notify = self.handler.withLock({ $0 }) { notify(id) }
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
            watch = Watch(key: -Int64(wd), descriptors: [])
        } else {
            var control: Int32 = -1
            let dir = (counterFile as NSString).deletingLastPathComponent
            let efd = berth_watch_v1_oom(epoll, counterFile, "\(dir)/cgroup.event_control", &control)
            guard efd >= 0 else { throw SystemError("cgroup.event_control", path: dir, errno: errno) }
            watch = Watch(key: Int64(efd), descriptors: [efd, control])
        }
        state.withLock {
            $0.byKey[watch.key] = id
            $0.byID[id] = watch
        }
    }

    func unwatch(_ id: ContainerID) {
        guard let watch = state.withLock({ s -> Watch? in
            guard let watch = s.byID.removeValue(forKey: id) else { return nil }
            s.byKey.removeValue(forKey: watch.key)
            return watch
        }) else { return }
        if watch.key < 0 { _ = berth_unwatch_v2_file(inotify, Int32(-watch.key)) }
        for fd in watch.descriptors { close(fd) }
    }
}
