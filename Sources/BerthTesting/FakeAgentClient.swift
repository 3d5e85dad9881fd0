import BerthController
import BerthModel
import Foundation
import Synchronization

/// An agent in memory, for the reconciler's tests: containers made,
/// started, stopped and removed as a real agent would, images it has or
/// lacks, and calls that hang (until their deadline, on the clock the test
/// moves) or fail as the test says.
public final class FakeAgentClient: AgentClient, Sendable {
    public enum Call: String, Sendable, Hashable, CaseIterable { case list, run, pull, start, remove, logs, overlays }

    private struct State {
        var containers: [Container] = []
        var images: Set<String> = []
        var hanging: Set<Call> = []
        var unreachable = false
        var calls: [Call: Int] = [:]
        var closed = false
        var overlays: [OverlayState] = []
    }

    private let state = Mutex(State())
    private let clock: any Clock<Duration>

    /// - Parameter images: the images the node has.
    public init(images: Set<String> = ["busybox"], clock: any Clock<Duration> = ContinuousClock()) {
        self.clock = clock
        state.withLock { $0.images = images }
    }

    // MARK: What the test sets and reads

    /// Calls of these kinds answer nothing until their deadline.
    public func hang(_ calls: Set<Call>) { state.withLock { $0.hanging = calls } }
    /// Every call fails as if the node were unreachable.
    public func setUnreachable(_ unreachable: Bool) { state.withLock { $0.unreachable = unreachable } }
    public var containers: [Container] { state.withLock { $0.containers } }
    public var images: Set<String> { state.withLock { $0.images } }
    public func calls(_ call: Call) -> Int { state.withLock { $0.calls[call] ?? 0 } }
    public var isClosed: Bool { state.withLock { $0.closed } }
    /// The overlay networks the controller last told the agent of.
    public var overlays: [OverlayState] { state.withLock { $0.overlays } }

    /// Ends a container's process as the agent records it: exited with
    /// `code`, restarted by its policy (`restarts` more times) or not.
    public func exit(_ name: String, code: Int32, restart: Bool = false) {
        state.withLock { s in
            guard let i = s.containers.firstIndex(where: { $0.name == name }) else { return }
            try? s.containers[i].status.markExited(ProcessExit(exitCode: code), at: Date())
            if restart { try? s.containers[i].status.markStarted(pid: 2, at: Date(), restart: true) }
        }
    }

    /// Removes a container behind the controller's back (`berth rm -f`).
    public func delete(_ name: String) { state.withLock { $0.containers.removeAll { $0.name == name } } }

    // MARK: AgentClient

    private func enter(_ call: Call, deadline: Duration) async throws(AgentCallError) {
        let (hangs, unreachable) = state.withLock { s -> (Bool, Bool) in
            s.calls[call, default: 0] += 1
            return (s.hanging.contains(call), s.unreachable)
        }
        if unreachable { throw .unreachable("connection refused") }
        if hangs {
            do {
                try await clock.sleep(for: deadline)
            } catch {
                throw .cancelled
            }
            throw .timedOut(call.rawValue)
        }
    }

    public func containers(cluster: String, deadline: Duration) async throws(AgentCallError) -> [Container] {
        try await enter(.list, deadline: deadline)
        return state.withLock { $0.containers.filter { $0.spec.labels[ReplicaLabel.cluster] == cluster } }
    }

    public func run(_ spec: ContainerSpec, deadline: Duration) async throws(AgentCallError) -> Container {
        try await enter(.run, deadline: deadline)
        return try state.withLock { s throws(AgentCallError) -> Container in
            guard s.images.contains(spec.image) else { throw .imageNotFound(spec.image) }
            let name = spec.name ?? RandomHex.make(12)
            guard !s.containers.contains(where: { $0.name == name }) else { throw .nameInUse(name) }
            var status = ContainerStatus(createdAt: Date())
            try? status.markStarted(pid: 1, at: Date())
            let container = Container(id: ContainerID.random(), name: name, spec: spec, imageID: "sha256:" + RandomHex.make(64), status: status)
            s.containers.append(container)
            return container
        }
    }

    public func setOverlays(_ states: [OverlayState], deadline: Duration) async throws(AgentCallError) {
        try await enter(.overlays, deadline: deadline)
        state.withLock { $0.overlays = states }
    }

    public func pull(image: String, deadline: Duration) async throws(AgentCallError) {
        try await enter(.pull, deadline: deadline)
        state.withLock { _ = $0.images.insert(image) }
    }

    public func start(container: String, deadline: Duration) async throws(AgentCallError) {
        try await enter(.start, deadline: deadline)
        try state.withLock { s throws(AgentCallError) in
            guard let i = s.containers.firstIndex(where: { $0.id.rawValue == container }) else { throw .noSuchContainer(container) }
            try? s.containers[i].status.markStarted(pid: 1, at: Date())
        }
    }

    public func remove(container: String, stopTimeout: Int, deadline: Duration) async throws(AgentCallError) {
        try await enter(.remove, deadline: deadline)
        try state.withLock { s throws(AgentCallError) in
            guard let i = s.containers.firstIndex(where: { $0.id.rawValue == container }) else { throw .noSuchContainer(container) }
            s.containers.remove(at: i)
        }
    }

    public func logs(container: String, follow: Bool, tail: Int?, since: Date?) -> AsyncThrowingStream<LogLine, any Error> {
        state.withLock { $0.calls[.logs, default: 0] += 1 }
        let exists = state.withLock { s in s.containers.contains { $0.name == container } }
        return AsyncThrowingStream { continuation in
            if exists {
                continuation.yield(LogLine(stream: .stdout, time: Date(), bytes: Array("hello from \(container)\n".utf8)))
                continuation.finish()
            } else {
                continuation.finish(throwing: AgentCallError.noSuchContainer(container))
            }
        }
    }

    public func close() { state.withLock { $0.closed = true } }
}

/// Hands out one fake agent per node, made on first use.
public final class FakeAgents: AgentClientFactory, Sendable {
    private let agents = Mutex<[String: FakeAgentClient]>([:])
    private let clock: any Clock<Duration>
    private let images: Set<String>

    public init(images: Set<String> = ["busybox"], clock: any Clock<Duration> = ContinuousClock()) {
        self.clock = clock
        self.images = images
    }

    /// The agent of node `id` (made when first asked for).
    public func agent(_ id: String) -> FakeAgentClient {
        agents.withLock { all in
            if let agent = all[id] { return agent }
            let agent = FakeAgentClient(images: images, clock: clock)
            all[id] = agent
            return agent
        }
    }

    public func client(for node: ClusterNode) -> any AgentClient { agent(node.id) }
}
