@testable import BerthAgent
import BerthImages
import BerthModel
import BerthTesting
import Foundation
import Testing

/// Health checks on the fake runtime and the manual clock: the schedule,
/// the status and its events, `--health-on-failure`, restore. The probes
/// themselves (execs in a real container) are tested in HealthTests.
@Suite("health on a fake runtime")
struct HealthSupervisorTests {
    static func checked(_ check: HealthCheck, onFailure: HealthFailureAction = .none, restart: RestartPolicy = .no) -> (inout ContainerSpec) -> Void {
        { spec in
            spec.healthcheck = check
            spec.healthOnFailure = onFailure
            spec.restartPolicy = restart
        }
    }

    /// Moves the clock by `seconds` once a probe loop waits on it, then waits for `probes` probes in all.
    static func tick(_ bench: SupervisorBench, _ id: ContainerID, seconds: Double, probes: Int) async throws {
        try await bench.eventually("a probe waits on the clock") { bench.clock.sleepers > 0 }
        bench.time.advance(by: seconds)
        bench.clock.advance(by: .seconds(seconds))
        try await bench.eventually("probe \(probes)") { bench.runtime.probes(id) >= probes }
    }

    static func health(_ bench: SupervisorBench, _ id: ContainerID) async -> Health? {
        try? await bench.supervisor.inspect(id.rawValue).status.health
    }

    @Test("the first probe one interval after the start, then every interval; unhealthy after the retries with its event, healthy again on a success")
    func schedule() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        let container = try await bench.run(bench.spec("web", configure: Self.checked(HealthCheck(test: ["CMD", "/check"], interval: 2, retries: 2))))
        let id = container.id
        #expect(container.status.health?.status == .starting)
        bench.runtime.answerProbes(id, exitCode: 1)
        try await bench.eventually("the first probe waits") { bench.clock.sleepers > 0 }
        bench.clock.advance(by: .milliseconds(1900))
        try await Task.sleep(for: .milliseconds(20))
        #expect(bench.runtime.probes(id) == 0, "not before the interval")
        bench.clock.advance(by: .milliseconds(100))
        try await bench.eventually("probe 1") { bench.runtime.probes(id) == 1 }
        try await bench.eventually("recorded") { await Self.health(bench, id)?.failingStreak == 1 }
        #expect(await Self.health(bench, id)?.status == .starting)
        try await Self.tick(bench, id, seconds: 2, probes: 2)
        try await bench.eventually("unhealthy") { await Self.health(bench, id)?.status == .unhealthy }
        #expect(await Self.health(bench, id)?.log.count == 2)
        #expect(await Self.health(bench, id)?.log.last?.output == "failed\n")
        bench.runtime.answerProbes(id, exitCode: 0)
        try await Self.tick(bench, id, seconds: 2, probes: 3)
        try await bench.eventually("healthy") { await Self.health(bench, id)?.status == .healthy }
        #expect(try bench.actions(id) == ["create", "start", "health_status: unhealthy", "health_status: healthy"])
        #expect(await bench.state(id) == .running, "--health-on-failure none: it runs on")
    }

    @Test("the image's check is the container's, field by field under the container's flags; --no-healthcheck turns it off")
    func fromImage() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        var config = ImageConfig()
        config.cmd = ["/bin/sh"]
        config.healthcheck = HealthCheck(test: ["CMD-SHELL", "wget -q localhost"], interval: 7, retries: 4)
        let rootfs = "\(bench.dir)/image"
        _ = try bench.images.importRootfs(from: rootfs, reference: try ImageReference(parsing: "checked"), config: config)

        var spec = bench.spec("inherits")
        spec.image = "checked"
        spec.healthcheck = HealthCheck(timeout: 3)
        let inherits = try await bench.run(spec)
        #expect(inherits.spec.healthcheck == HealthCheck(test: ["CMD-SHELL", "wget -q localhost"], interval: 7, timeout: 3, retries: 4))
        #expect(inherits.status.health?.status == .starting)

        spec.name = "unchecked"
        spec.healthcheck = .disabled
        let unchecked = try await bench.run(spec)
        #expect(unchecked.spec.healthcheck?.isDisabled == true)
        #expect(unchecked.status.health == nil)
        try await bench.eventually("the inherited check waits") { bench.clock.sleepers > 0 }
        bench.clock.advance(by: .seconds(60))
        try await bench.eventually("the inherited check runs") { bench.runtime.probes(inherits.id) >= 1 }
        #expect(bench.runtime.probes(unchecked.id) == 0)
    }

    @Test("--health-on-failure restart: stopped with its stop signal and started again after the backoff, though its policy is no")
    func restartAction() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        let container = try await bench.run(
            bench.spec("web", configure: Self.checked(HealthCheck(test: ["CMD", "/check"], interval: 1, retries: 1), onFailure: .restart)))
        let id = container.id
        bench.runtime.answerProbes(id, exitCode: 1)
        try await Self.tick(bench, id, seconds: 1, probes: 1)
        try await bench.eventually("stopped") { await bench.state(id) == .exited }
        #expect(bench.runtime.process(id)?.signals.map(\.name) == ["SIGTERM"])
        // The restart waits out its backoff (100 ms) on the clock.
        try await bench.eventually("running again") {
            bench.clock.advance(by: .milliseconds(20))
            return await bench.state(id) == .running
        }
        let restarted = try await bench.supervisor.inspect("web")
        #expect(restarted.status.restartCount == 1)
        #expect(restarted.status.health == Health(), "its health starts over")
        #expect(try bench.actions(id) == ["create", "start", "health_status: unhealthy", "kill", "die", "restart", "start"])
    }

    @Test("--health-on-failure kill: SIGKILL and the restart policy decides; stop: stopped as a person would, even with always")
    func killAndStop() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        let check = HealthCheck(test: ["CMD", "/check"], interval: 1, retries: 1)
        let killed = try await bench.run(bench.spec("killed", configure: Self.checked(check, onFailure: .kill)))
        let stopped = try await bench.run(bench.spec("stopped", configure: Self.checked(check, onFailure: .stop, restart: .always)))
        bench.runtime.answerProbes(killed.id, exitCode: 1)
        bench.runtime.answerProbes(stopped.id, exitCode: 1)
        try await bench.eventually("both probes wait") { bench.clock.sleepers >= 2 }
        bench.time.advance(by: 1)
        bench.clock.advance(by: .seconds(1))
        try await bench.eventually("both ended") {
            let first = await bench.state(killed.id)
            let second = await bench.state(stopped.id)
            return first == .exited && second == .exited
        }
        #expect(bench.runtime.process(killed.id)?.signals.map(\.name) == ["SIGKILL"])
        #expect(try await bench.supervisor.inspect("killed").status.exitCode == 137)
        #expect(try await bench.supervisor.inspect("stopped").status.stoppedByUser)
        bench.clock.advance(by: .seconds(120))
        try await Task.sleep(for: .milliseconds(50))
        #expect(await bench.state(killed.id) == .exited, "restart policy no")
        #expect(await bench.state(stopped.id) == .exited, "stopped stays stopped, as after `berth stop`")
    }

    @Test("a paused container is not probed; a re-adopted one is probed again with its health history kept")
    func pausedAndRestored() async throws {
        let bench = try SupervisorBench()
        let container = try await bench.run(bench.spec("web", configure: Self.checked(HealthCheck(test: ["CMD", "/check"], interval: 1))))
        let id = container.id
        try await Self.tick(bench, id, seconds: 1, probes: 1)
        try await bench.eventually("healthy") { await Self.health(bench, id)?.status == .healthy }
        // A probe that changes nothing but the log writes the health alone.
        try await Self.tick(bench, id, seconds: 1, probes: 2)
        try await bench.eventually("recorded") { await Self.health(bench, id)?.log.count == 2 }
        try await bench.supervisor.pause("web")
        try await bench.eventually("a probe waits on the clock") { bench.clock.sleepers > 0 }
        bench.clock.advance(by: .seconds(1))
        try await Task.sleep(for: .milliseconds(20))
        #expect(bench.runtime.probes(id) == 2, "frozen: no probe")
        try await bench.supervisor.resume("web")

        // The agent goes away (its loops with it); the container runs on.
        bench.supervisor.shutdown()
        let restarted = try SupervisorBench(sharing: bench)
        defer { restarted.cleanUp() }
        await restarted.supervisor.restore()
        #expect(await Self.health(restarted, id)?.log.count == 2, "the history survives the restart")
        try await restarted.eventually("a probe waits on the clock") { restarted.clock.sleepers > 0 }
        restarted.clock.advance(by: .seconds(1))
        try await restarted.eventually("probed again") { restarted.runtime.probes(id) >= 3 }
        try await restarted.eventually("recorded") { await Self.health(restarted, id)?.log.count == 3 }
    }
}
