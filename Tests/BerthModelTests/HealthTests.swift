import BerthModel
import Foundation
import Testing

@Suite("health checks")
struct HealthTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func probe(_ code: Int32, at seconds: Double) -> HealthProbe {
        HealthProbe(start: t0 + seconds, end: t0 + seconds + 0.01, exitCode: code, output: code == 0 ? "ok" : "down")
    }

    @Test("flags as docker reads them: --health-cmd is CMD-SHELL, durations in Go's spelling, nil without flags")
    func flags() throws {
        let check = try #require(
            try HealthCheck(
                command: "curl -f http://localhost/ || exit 1", interval: "1m30s", timeout: "500ms", startPeriod: "10s", startInterval: "1s",
                retries: 5, disabled: false))
        #expect(check.test == ["CMD-SHELL", "curl -f http://localhost/ || exit 1"])
        #expect(check.interval == 90)
        #expect(check.timeout == 0.5)
        #expect(check.startPeriod == 10)
        #expect(check.startInterval == 1)
        #expect(check.retries == 5)
        #expect(try HealthCheck(command: nil, interval: nil, timeout: nil, startPeriod: nil, startInterval: nil, retries: nil, disabled: false) == nil)
        #expect(try HealthCheck(command: nil, interval: nil, timeout: nil, startPeriod: nil, startInterval: nil, retries: nil, disabled: true) == .disabled)
    }

    @Test("bad flags get docker's words and no check")
    func badFlags() throws {
        func error(_ body: () throws -> HealthCheck?) -> String {
            do {
                _ = try body()
                return "no error"
            } catch let error as BerthError {
                return error.message
            } catch {
                return "\(error)"
            }
        }
        #expect(
            error { try HealthCheck(command: "true", interval: nil, timeout: nil, startPeriod: nil, startInterval: nil, retries: nil, disabled: true) }
                == "--no-healthcheck conflicts with --health-* options")
        #expect(
            error { try HealthCheck(command: nil, interval: "10us", timeout: nil, startPeriod: nil, startInterval: nil, retries: nil, disabled: false) }
                == "--health-interval should be at least 1ms")
        #expect(
            error { try HealthCheck(command: nil, interval: nil, timeout: nil, startPeriod: nil, startInterval: nil, retries: -1, disabled: false) }
                == "--health-retries cannot be negative")
        #expect(
            error { try HealthCheck(command: nil, interval: "soon", timeout: nil, startPeriod: nil, startInterval: nil, retries: nil, disabled: false) }
                .contains("expected a duration"))
        #expect(throws: BerthError.self) { try HealthCheck(test: ["EXEC", "true"]).validate() }
        #expect(throws: BerthError.self) { try HealthCheck(test: ["CMD"]).validate() }
        #expect(throws: BerthError.self) { try HealthFailureAction(parsing: "reboot") }
        #expect(try HealthFailureAction(parsing: "Restart") == .restart)
    }

    @Test("HEALTHCHECK instructions: options, shell and JSON forms, NONE")
    func instruction() throws {
        let shell = try HealthCheck(parsingInstruction: "--interval=5s --retries=2 CMD wget -q -O- http://localhost/")
        #expect(shell == HealthCheck(test: ["CMD-SHELL", "wget -q -O- http://localhost/"], interval: 5, retries: 2))
        let exec = try HealthCheck(parsingInstruction: #"--timeout=2s CMD ["/bin/check", "--fast"]"#)
        #expect(exec == HealthCheck(test: ["CMD", "/bin/check", "--fast"], timeout: 2))
        #expect(try HealthCheck(parsingInstruction: "NONE") == .disabled)
        #expect(throws: BerthError.self) { try HealthCheck(parsingInstruction: "--every=5s CMD true") }
        #expect(throws: BerthError.self) { try HealthCheck(parsingInstruction: "RUN true") }
        #expect(throws: BerthError.self) { try HealthCheck(parsingInstruction: "--interval=5s NONE") }
    }

    @Test("the container's check over the image's, field by field; NONE turns the image's off")
    func merge() {
        let image = HealthCheck(test: ["CMD", "/check"], interval: 10, timeout: 3, retries: 4)
        #expect(HealthCheck().merged(over: image) == image)
        #expect(HealthCheck(interval: 1).merged(over: image) == HealthCheck(test: ["CMD", "/check"], interval: 1, timeout: 3, retries: 4))
        #expect(HealthCheck(test: ["CMD-SHELL", "true"]).merged(over: image)?.test == ["CMD-SHELL", "true"])
        #expect(HealthCheck.disabled.merged(over: image)?.isDisabled == true)
        #expect(HealthCheck().merged(over: nil) == nil)
        #expect(HealthCheck(interval: 5).merged(over: nil) == nil, "timings without a test are no check")
    }

    @Test("probe commands and docker's defaults")
    func commandsAndDefaults() {
        #expect(HealthCheck(test: ["CMD-SHELL", "exit 1"]).probeCommand(shell: []) == ["/bin/sh", "-c", "exit 1"])
        #expect(HealthCheck(test: ["CMD-SHELL", "exit 1"]).probeCommand(shell: ["/bin/ash", "-eo", "pipefail", "-c"]) == ["/bin/ash", "-eo", "pipefail", "-c", "exit 1"])
        #expect(HealthCheck(test: ["CMD", "/bin/true", "x"]).probeCommand(shell: []) == ["/bin/true", "x"])
        #expect(HealthCheck.disabled.probeCommand(shell: []) == nil)
        let timings = HealthCheck(test: ["CMD", "true"]).effective
        #expect(timings == HealthTimings(interval: 30, timeout: 30, startPeriod: 0, startInterval: 5, retries: 3))
    }

    @Test("healthy on a success, unhealthy after `retries` failures in a row, healthy again on a success")
    func transitions() {
        let timings = HealthTimings(interval: 1, timeout: 1, startPeriod: 0, startInterval: 5, retries: 3)
        var health = Health()
        #expect(health.status == .starting)
        #expect(health.record(Self.probe(1, at: 1), timings: timings, sinceStart: 1) == nil)
        #expect(health.record(Self.probe(1, at: 2), timings: timings, sinceStart: 2) == nil)
        #expect(health.failingStreak == 2)
        #expect(health.record(Self.probe(1, at: 3), timings: timings, sinceStart: 3) == .unhealthy)
        #expect(health.record(Self.probe(1, at: 4), timings: timings, sinceStart: 4) == nil, "already unhealthy")
        #expect(health.failingStreak == 4)
        #expect(health.record(Self.probe(0, at: 5), timings: timings, sinceStart: 5) == .healthy)
        #expect(health.failingStreak == 0)
        #expect(health.log.count == Health.kept, "the last five probes")
        #expect(health.log.last?.start == Self.t0 + 5)
        #expect(health.log.first?.start == Self.t0 + 1)
    }

    @Test("failures in the start period do not count while starting; a success ends the start period's grace")
    func startPeriod() {
        let timings = HealthTimings(interval: 10, timeout: 1, startPeriod: 30, startInterval: 2, retries: 1)
        var health = Health()
        #expect(health.record(Self.probe(1, at: 2), timings: timings, sinceStart: 2) == nil)
        #expect(health.failingStreak == 0)
        #expect(timings.nextDelay(status: .starting, sinceStart: 2) == 2, "the start interval during the start period")
        #expect(health.record(Self.probe(0, at: 4), timings: timings, sinceStart: 4) == .healthy)
        #expect(timings.nextDelay(status: .healthy, sinceStart: 4) == 10)
        #expect(health.record(Self.probe(1, at: 14), timings: timings, sinceStart: 14) == .unhealthy, "once healthy, failures count")
        var late = Health()
        #expect(late.record(Self.probe(1, at: 31), timings: timings, sinceStart: 31) == .unhealthy, "after the start period")
    }

    @Test("output is cut at 4 KiB, never inside a character")
    func outputCut() {
        #expect(HealthProbe.text(of: Array("ok\n".utf8)) == "ok\n")
        let long = [UInt8](repeating: UInt8(ascii: "a"), count: 4095) + Array("é and more".utf8)
        let text = HealthProbe.text(of: long)
        #expect(text.utf8.count == 4095, "the two-byte é would not fit: cut before it")
        #expect(!text.contains("\u{FFFD}"))
        #expect(HealthProbe.text(of: [UInt8](repeating: UInt8(ascii: "b"), count: 10_000)).utf8.count == HealthProbe.maxOutput)
    }

    @Test("a status records probes only while running, and starts over at each start")
    func status() throws {
        var status = ContainerStatus(createdAt: Self.t0)
        let timings = HealthTimings(interval: 1, timeout: 1, startPeriod: 0, startInterval: 1, retries: 1)
        #expect(status.recordProbe(Self.probe(1, at: 1), timings: timings) == nil)
        try status.markStarted(pid: 10, at: Self.t0, healthChecked: true)
        #expect(status.health?.status == .starting)
        #expect(status.recordProbe(Self.probe(1, at: 1), timings: timings) == .unhealthy)
        try status.markExited(ProcessExit(exitCode: 0), at: Self.t0 + 2)
        #expect(status.health?.status == .unhealthy, "kept after the exit, as docker shows it")
        try status.markStarted(pid: 11, at: Self.t0 + 3, restart: true, healthChecked: true)
        #expect(status.health == Health())
        try status.markExited(ProcessExit(exitCode: 0), at: Self.t0 + 4)
        try status.markStarted(pid: 12, at: Self.t0 + 5)
        #expect(status.health == nil, "no check, no health")
    }

    @Test("--health-on-failure restart restarts after the policy's backoff, whatever the policy, unless a person stopped it")
    func restartForHealth() {
        #expect(RestartPolicy.no.afterExit(exitCode: 137, restartCount: 3, stoppedByUser: false, autoRemove: false, restartForHealth: true)
            == .restart(after: RestartPolicy.backoff(attempt: 3)))
        #expect(RestartPolicy.no.afterExit(exitCode: 137, restartCount: 3, stoppedByUser: true, autoRemove: false, restartForHealth: true) == .stay)
    }

    @Test("Health and probes encode with docker's names")
    func dockerNames() throws {
        var health = Health()
        health.record(Self.probe(0, at: 1), timings: HealthCheck(test: ["CMD", "true"]).effective, sinceStart: 1)
        let json = try BerthJSON.string(health, pretty: false)
        #expect(json.contains(#""Status":"healthy""#))
        #expect(json.contains(#""FailingStreak":0"#))
        #expect(json.contains(#""Log":[{"#))
        #expect(json.contains(#""ExitCode":0"#))
        #expect(json.contains(#""Output":"ok""#))
        #expect(try BerthJSON.decoder().decode(Health.self, from: Data(json.utf8)) == health)
    }
}
