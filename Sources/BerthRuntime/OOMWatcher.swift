import BerthCgroups
import BerthLinux
import BerthModel
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
        var descriptors: [Descriptor]
    }

    private struct State {
        var byKey: [Int64: Watch] = [:]
        var byID: [ContainerID: Int64] = [:]
        /// v1 keys: 1, 2, 3, … (v2 keys are -wd; inotify's key is 2^40).
        var lastKey: Int64 = 0
    }

    private let events: EventWatcher
    private let unified: Bool
    private let state = Mutex(State())
    /// Called on the watcher's thread with the container whose cgroup
    /// reported memory pressure.
    private let handler = Mutex<(@Sendable (ContainerID) -> Void)?>(nil)

    init?(unified: Bool) {
        guard let events = try? EventWatcher() else { return nil }
        self.events = events
        self.unified = unified
        // The agent keeps its watcher for its whole life.
        OwnThread.start(name: "berth-oom-watch") { [self] in
            var keys = [Int64](repeating: 0, count: 64)
            while true {
                guard let n = self.events.wait(into: &keys) else { return }
                for key in keys.prefix(n) {
                    let id = self.state.withLock { s -> ContainerID? in
                        guard let watch = s.byKey[key] else { return nil }
                        if let eventfd = watch.descriptors.first { EventWatcher.drain(eventfd) }
                        return watch.id
                    }
                    if let id, let notify = self.handler.withLock({ $0 }) { notify(id) }
                }
            }
        }
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
            let wd = try events.watchModifications(of: counterFile)
            watch = Watch(key: -Int64(wd), id: id, descriptors: [])
        } else {
            let key = state.withLock { s in
                s.lastKey += 1
                return s.lastKey
            }
            let dir = counterFile.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
            let (efd, control) = try events.watchOOM(control: counterFile, eventControl: "\(dir)/cgroup.event_control", key: key)
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
            if key < 0 { events.unwatch(Int32(-key)) }
            for fd in watch.descriptors { fd.close() }
        }
    }
}
