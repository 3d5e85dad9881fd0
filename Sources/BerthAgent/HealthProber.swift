import BerthModel
import BerthRuntime
import Foundation
import Synchronization

/// Runs the health probes of containers that have a check, each container
/// on a schedule of its own: the first probe one interval after the start
/// (the start interval during a start period), then one every interval
/// from the previous one's due time, never two at once for a container.
/// A container re-adopted after an agent restart starts at a random point
/// of its interval, so that the probes of containers started together (or
/// re-adopted together) do not all fall due at the same moment.
///
/// It decides nothing about health: each result goes to the supervisor,
/// which records it and acts on a change.
final class HealthProber: Sendable {
    private let runtime: any ContainerRuntime
    private let clock: any Clock<Duration>
    private let metrics: AgentMetrics
    private let loops = Mutex<[ContainerID: Task<Void, Never>]>([:])

    init(runtime: any ContainerRuntime, clock: any Clock<Duration>, metrics: AgentMetrics) {
        self.runtime = runtime
        self.clock = clock
        self.metrics = metrics
    }

    /// What a probe loop is told before each probe.
    enum Target: Sendable {
        /// Probe the process `pid` of the run that started at `run`.
        case running(pid: Int32, run: Date)
        /// Frozen: skip this probe.
        case paused
        /// Not running any more: the loop ends.
        case gone
    }

    /// What follows a recorded probe.
    enum Next: Sendable {
        case after(seconds: Double)
        case stop
    }

    /// Starts probing a container (replacing any loop it had).
    ///
    /// - Parameters:
    ///   - firstDelay: until the first probe.
    ///   - supervisor: asked for the target before each probe, and told each result.
    func watch(_ id: ContainerID, command: [String], timings: HealthTimings, firstDelay: Double, supervisor: ContainerSupervisor) {
        let runtime = self.runtime
        let metrics = self.metrics
        let clock = self.clock
        let task = Task {
            await Self.loop(
                id, clock: clock, runtime: runtime, metrics: metrics, command: command, timings: timings, firstDelay: firstDelay,
                supervisor: supervisor)
        }
        loops.withLock { $0.updateValue(task, forKey: id) }?.cancel()
    }

    /// Stops probing a container.
    func stop(_ id: ContainerID) {
        loops.withLock { $0.removeValue(forKey: id) }?.cancel()
    }

    /// Stops every loop (the agent is shutting down).
    func stopAll() {
        for task in loops.withLock({ loops in defer { loops = [:] }; return Array(loops.values) }) { task.cancel() }
    }

    private static func loop<C: Clock>(
        _ id: ContainerID, clock: C, runtime: any ContainerRuntime, metrics: AgentMetrics, command: [String], timings: HealthTimings,
        firstDelay: Double, supervisor: ContainerSupervisor
    ) async where C.Duration == Duration {
        var due = clock.now.advanced(by: .seconds(firstDelay))
        while !Task.isCancelled {
            do { try await clock.sleep(until: due, tolerance: nil) } catch { return }
            switch await supervisor.probeTarget(id) {
            case .gone:
                return
            case .paused:
                due = due.advanced(by: .seconds(timings.interval))
            case .running(let pid, let run):
                let begun = clock.now
                metrics.probeStarted(late: due.duration(to: begun))
                let probe = await runtime.probe(id, mainPID: pid, command: command, timeout: .seconds(timings.timeout))
                let ended = clock.now
                metrics.probeFinished(after: begun.duration(to: ended), passed: probe.exitCode == 0)
                guard !Task.isCancelled else { return }
                switch await supervisor.recordProbe(id, probe, run: run) {
                case .stop: return
                case .after(let seconds):
                    // A probe that overran its interval is followed at once,
                    // never overlapped.
                    due = max(due.advanced(by: .seconds(seconds)), ended)
                }
            }
        }
    }
}
