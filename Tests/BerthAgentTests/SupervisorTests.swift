@testable import BerthAgent
import BerthImages
import BerthModel
import BerthRuntime
import BerthTesting
import Foundation
import Logging
import Synchronization
import Testing

/// A supervisor on records of its own, with a fake runtime and a manual
/// clock: the state machine, restart policy, OOM reporting, restore and
/// removal in milliseconds, without root, processes or kernel features.
final class SupervisorBench: Sendable {
    let dir: String
    let database: AgentDatabase
    let images: ImageStore
    let runtime: FakeContainerRuntime
    let clock = ManualClock()
    /// The time of records, events, starts and exits.
    let time: WallTime
    let networking: ContainerNetworking
    let supervisor: ContainerSupervisor

    static let logger = Logger(label: "berth.test.supervisor")

    /// - Parameter sharing: another bench whose records and runtime this one
    ///   takes over, as a restarted agent does.
    init(sharing previous: SupervisorBench? = nil) throws {
        if let previous {
            dir = previous.dir
            runtime = previous.runtime
            time = previous.time
        } else {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-supervisor-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let time = WallTime()
            self.time = time
            runtime = FakeContainerRuntime(now: { time.now })
        }
        database = try AgentDatabase(path: "\(dir)/agent.db")
        images = try ImageStore(root: dir, index: database, logger: Self.logger)
        networking = try ContainerNetworking(
            database: database, nodeID: "0000fa4e" + String(repeating: "0", count: 56), stateDir: "\(dir)/state", defaultBridge: .none,
            dnsServers: [], logger: Self.logger)
        supervisor = try ContainerSupervisor(
            database: database, images: images, volumes: try VolumeStore(root: "\(dir)/volumes", database: database), runtime: runtime,
            host: NodeCapacity(cpus: 4, memoryBytes: 8 << 30), networking: networking, logger: Self.logger, clock: clock,
            now: { [time] in time.now })
        if previous == nil {
            let rootfs = "\(dir)/image"
            try FileManager.default.createDirectory(atPath: rootfs + "/etc", withIntermediateDirectories: true)
            try Data("root:x:0:0:root:/root:/bin/sh\n".utf8).write(to: URL(fileURLWithPath: rootfs + "/etc/passwd"))
            var config = ImageConfig()
            config.cmd = ["/bin/sh"]
            _ = try images.importRootfs(from: rootfs, reference: try ImageReference(parsing: "busybox"), config: config)
        }
    }

    /// Removes the bench's files (the fake runtime made nothing else).
    func cleanUp() {
        supervisor.shutdown()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func spec(_ name: String, _ command: [String] = ["sleep", "1000"], configure: (inout ContainerSpec) -> Void = { _ in }) -> ContainerSpec {
        var spec = ContainerSpec(image: "busybox")
        spec.name = name
        spec.command = command
        spec.network = "none"
        configure(&spec)
        return spec
    }

    /// create then start.
    func run(_ spec: ContainerSpec) async throws -> Container {
        let (created, _) = try await supervisor.create(spec)
        return try await supervisor.start(created.id.rawValue).0
    }

    /// The container's events, by action.
    func actions(_ id: ContainerID) throws -> [String] {
        try database.events(after: 0).filter { $0.actorID == id.rawValue }.map(\.action.rawValue)
    }

    /// Waits (a bounded number of turns) until `condition` holds; the
    /// supervisor's work after a fake exit runs on tasks of its own.
    func eventually(_ what: String, _ condition: () async throws -> Bool) async throws {
        for _ in 0..<2000 {
            if try await condition() { return }
            await Task.yield()
            try await Task.sleep(for: .microseconds(200))
        }
        Issue.record("never came: \(what)")
    }

    func state(_ id: ContainerID) async -> ContainerState? { try? await supervisor.inspect(id.rawValue).status.state }
}

/// A wall clock that moves when told.
final class WallTime: Sendable {
    private let date = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
    var now: Date { date.withLock { $0 } }
    func advance(by seconds: TimeInterval) { date.withLock { $0 = $0.addingTimeInterval(seconds) } }
}

@Suite("supervisor on a fake runtime")
struct SupervisorTests {
    @Test("create, start, stop, start again, pause, kill, wait: each transition persisted with its event, in order")
    func stateMachine() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        let started = try await bench.run(bench.spec("web"))
        let id = started.id
        #expect(started.status.state == .running)
        let pid = try #require(started.status.pid)
        #expect(bench.runtime.process(id)?.pid == pid)

        let stopped = try await bench.supervisor.stop("web")
        #expect(stopped.status.state == .exited)
        #expect(stopped.status.exitCode == 143, "SIGTERM's exit")
        #expect(stopped.status.stoppedByUser)
        #expect(bench.runtime.process(id)?.signals.map(\.name) == ["SIGTERM"])
        #expect(try bench.actions(id) == ["create", "start", "kill", "die", "stop"])

        _ = try await bench.supervisor.start("web")
        try await bench.supervisor.pause("web")
        #expect(await bench.state(id) == .paused)
        #expect(bench.runtime.process(id)?.paused == true)
        await #expect(throws: BerthError.self) { try await bench.supervisor.start("web") }
        try await bench.supervisor.resume("web")
        try await bench.supervisor.kill("web", signal: .kill)
        let exited = try await bench.supervisor.wait("web")
        #expect(exited.status.exitCode == 137)
        #expect(try bench.actions(id) == ["create", "start", "kill", "die", "stop", "start", "pause", "unpause", "kill", "die"])
        #expect(bench.runtime.process(id)?.retired == true, "the exited process's supervision is let go")
    }

    @Test("stop waits the grace period on the supervisor's clock, then kills; a process that ignores SIGTERM is killed")
    func stopEscalates() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        bench.runtime.ignore(.terminate)
        let id = try await bench.run(bench.spec("stubborn")).id
        let stopping = Task { try await bench.supervisor.stop("stubborn", timeout: 30) }
        try await bench.eventually("the grace period waits on the clock") { bench.clock.sleepers > 0 }
        #expect(bench.runtime.process(id)?.signals.map(\.name) == ["SIGTERM"])
        #expect(await bench.state(id) == .running, "still in its grace period")
        bench.clock.advance(by: .seconds(30))
        let stopped = try await stopping.value
        #expect(stopped.status.exitCode == 137)
        #expect(bench.runtime.process(id)?.signals.map(\.name) == ["SIGTERM", "SIGKILL"])
        #expect(try bench.actions(id) == ["create", "start", "kill", "kill", "die", "stop"])
    }

    @Test("on-failure:2 restarts after docker's backoff on the clock, twice, then stays exited; a zero exit is not restarted")
    func restartPolicy() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        let id = try await bench.run(bench.spec("flaky") { $0.restartPolicy = .onFailure(maxRetries: 2) }).id
        for round in 1...2 {
            bench.runtime.exit(id, code: 1)
            try await bench.eventually("exit \(round) recorded, restart waiting") {
                await bench.state(id) == .exited && bench.clock.sleepers > 0
            }
            #expect(bench.runtime.starts == round, "no restart before the delay")
            bench.clock.advance(by: .seconds(60))
            try await bench.eventually("restart \(round)") { await bench.state(id) == .running }
            #expect(try await bench.supervisor.inspect("flaky").status.restartCount == round)
        }
        bench.runtime.exit(id, code: 1)
        try await bench.eventually("third exit recorded") { await bench.state(id) == .exited }
        bench.clock.advance(by: .seconds(600))
        try await Task.sleep(for: .milliseconds(20))
        #expect(await bench.state(id) == .exited, "the retries are used up")
        #expect(bench.runtime.starts == 3)
        #expect(try bench.actions(id).filter { $0 == "restart" }.count == 2)

        let fine = try await bench.run(bench.spec("fine") { $0.restartPolicy = .onFailure(maxRetries: 2) }).id
        bench.runtime.exit(fine, code: 0)
        try await bench.eventually("zero exit recorded") { await bench.state(fine) == .exited }
        #expect(bench.clock.sleepers == 0, "nothing waits to restart it")
    }

    @Test("a stop during the restart delay ends the policy: the container stays exited, marked stopped by the user")
    func stopDuringBackoff() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        let id = try await bench.run(bench.spec("looping") { $0.restartPolicy = .always }).id
        bench.runtime.exit(id, code: 3)
        try await bench.eventually("restart waiting") { bench.clock.sleepers > 0 }
        let stopped = try await bench.supervisor.stop("looping")
        #expect(stopped.status.state == .exited)
        #expect(stopped.status.stoppedByUser)
        bench.clock.advance(by: .seconds(60))
        try await Task.sleep(for: .milliseconds(20))
        #expect(await bench.state(id) == .exited)
        #expect(bench.runtime.starts == 1)
    }

    @Test("always restarts after a success too; a stop that comes while a restart is being launched stops that run, and nothing restarts after it")
    func stopDuringRestartLaunch() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        let id = try await bench.run(bench.spec("quick") { $0.restartPolicy = .always }).id
        bench.runtime.exit(id, code: 0)
        try await bench.eventually("restart waiting") { bench.clock.sleepers > 0 }
        bench.runtime.holdStarts()
        bench.clock.advance(by: .seconds(60))
        try await bench.eventually("the restart's start under way") { bench.runtime.startsHeld == 1 }
        let stopping = Task { try await bench.supervisor.stop("quick", timeout: 5) }
        // The stop has marked the record and waits for the launch under way.
        try await bench.eventually("the stop under way") { try await bench.supervisor.inspect("quick").status.stoppedByUser }
        bench.runtime.releaseStarts()
        let stopped = try await stopping.value
        #expect(stopped.status.state == .exited)
        #expect(stopped.status.stoppedByUser)
        #expect(stopped.status.restartCount == 1, "the run being launched was started, then stopped")
        #expect(bench.runtime.process(id)?.signals.map(\.name) == ["SIGTERM"])
        bench.clock.advance(by: .seconds(600))
        try await Task.sleep(for: .milliseconds(20))
        #expect(await bench.state(id) == .exited)
        #expect(bench.runtime.starts == 2)
    }

    @Test("an OOM kill of another process is an oom event while the container runs; its own, later, is OOMKilled with one event more")
    func oomReporting() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        let id = try await bench.run(bench.spec("hungry")).id
        bench.runtime.oomKill(id, processes: 2)
        try await bench.eventually("the victim's grace waits on the clock") { bench.clock.sleepers > 0 }
        bench.clock.advance(by: ContainerSupervisor.oomVictimGrace)
        try await bench.eventually("oom event") { try bench.actions(id).contains("oom") }
        let oom = try bench.database.events(after: 0).filter { $0.actorID == id.rawValue && $0.action == .oom }
        #expect(oom.map { $0.attributes["kills"] } == ["2"])
        #expect(oom.map(\.time) == [bench.time.now], "the event carries the supervisor's time")
        #expect(await bench.state(id) == .running)

        bench.time.advance(by: 60)
        bench.runtime.oomKill(id, main: true)
        let exited = try await bench.supervisor.wait("hungry")
        #expect(exited.status.oomKilled)
        #expect(exited.status.exitCode == 137)
        bench.clock.advance(by: ContainerSupervisor.oomVictimGrace)
        try await Task.sleep(for: .milliseconds(20))
        let actions = try bench.actions(id)
        #expect(actions == ["create", "start", "oom", "oom", "die"], "one event per episode, none twice")
    }

    @Test("--init: a kill reported just before the init exits 137 is the container's own, in one episode (one event)")
    func oomEpisode() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        let id = try await bench.run(bench.spec("init") { $0.initProcess = true }).id
        bench.runtime.oomKill(id)
        try await bench.eventually("the victim's grace waits on the clock") { bench.clock.sleepers > 0 }
        bench.clock.advance(by: ContainerSupervisor.oomVictimGrace)
        try await bench.eventually("oom event") { try bench.actions(id).contains("oom") }
        bench.time.advance(by: 0.5)
        bench.runtime.exit(id, code: 137, oomKilled: true)
        let exited = try await bench.supervisor.wait("init")
        #expect(exited.status.oomKilled)
        #expect(try bench.actions(id) == ["create", "start", "oom", "die"])
    }

    @Test("restore: a running process is re-adopted, one that exited meanwhile is recorded, a vanished shim is a 255 exit, always restarts")
    func restore() async throws {
        let first = try SupervisorBench()
        defer { first.cleanUp() }
        let running = try await first.run(first.spec("running")).id
        let exited = try await first.run(first.spec("exited")).id
        let vanished = try await first.run(first.spec("vanished")).id
        let always = try await first.run(first.spec("always") { $0.restartPolicy = .always }).id
        _ = try await first.supervisor.stop("always")
        _ = try await first.supervisor.update("always", resources: Resources(), restartPolicy: .always)
        // The agent goes away; processes live on.
        first.supervisor.shutdown()
        first.runtime.exit(exited, code: 7)
        first.runtime.loseShim(vanished)

        let second = try SupervisorBench(sharing: first)
        await second.supervisor.restore()
        #expect(await second.state(running) == .running)
        #expect(second.runtime.released.contains(running), "an attached run's held output goes to the log")
        let gone = try await second.supervisor.inspect("exited")
        #expect(gone.status.state == .exited && gone.status.exitCode == 7, "\(gone.status)")
        let lost = try await second.supervisor.inspect("vanished")
        #expect(lost.status.state == .exited && lost.status.exitCode == 255)
        #expect(await second.state(always) == .exited, "stopped by the user: no restart")

        // The re-adopted process is followed: its exit reaches the record.
        second.runtime.exit(running, code: 0)
        try await second.eventually("re-adopted exit") { await second.state(running) == .exited }
        #expect(try second.actions(running).suffix(1) == ["die"])
    }

    @Test("removal: refused while running, forced it kills first; --rm removes at the exit; a failed start is recorded as exit 127")
    func removal() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        let id = try await bench.run(bench.spec("victim")).id
        await #expect(throws: BerthError.self) { try await bench.supervisor.remove("victim", force: false) }
        #expect(bench.runtime.deleted.isEmpty)
        try await bench.supervisor.remove("victim", force: true)
        await #expect(throws: BerthError.self) { try await bench.supervisor.inspect("victim") }
        #expect(bench.runtime.deleted == [id])
        #expect(try bench.actions(id) == ["create", "start", "kill", "die", "destroy"])

        let temporary = try await bench.run(bench.spec("temporary") { $0.autoRemove = true }).id
        bench.runtime.exit(temporary, code: 0)
        try await bench.eventually("removed at its exit") { await bench.state(temporary) == nil }
        #expect(bench.runtime.deleted == [id, temporary])
        #expect(!bench.runtime.created.contains(temporary), "its directories went with it")

        bench.runtime.missing("nosuch")
        let (created, _) = try await bench.supervisor.create(bench.spec("broken", ["nosuch"]))
        await #expect(throws: BerthError.self) { try await bench.supervisor.start("broken") }
        // Waited for after the failed start (a created container is not waited for: a
        // waiter that came before the start would have had it as created).
        let failed = try await bench.supervisor.wait("broken")
        #expect(failed.status.state == .exited)
        #expect(failed.status.exitCode == 127)
        #expect(failed.status.error == "exec: \"nosuch\": executable file not found in $PATH")
        #expect(try bench.actions(created.id) == ["create", "die"])
    }

    @Test("a prepare that fails leaves the container created and the runtime unstarted")
    func prepareFails() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        let (created, _) = try await bench.supervisor.create(bench.spec("unprepared"))
        bench.runtime.failNextPrepare(BerthError.invalid("no such device: /dev/nothing"))
        await #expect(throws: BerthError.self) { try await bench.supervisor.start("unprepared") }
        #expect(await bench.state(created.id) == .created)
        #expect(bench.runtime.starts == 0)
        _ = try await bench.supervisor.start("unprepared")
        #expect(await bench.state(created.id) == .running)
    }

    @Test("a shim that stops answering makes the container exited (255) with the reason, and ends waiters")
    func lostShim() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        let id = try await bench.run(bench.spec("fragile")).id
        try await bench.eventually("monitor waiting") { bench.runtime.waited(id) }
        let waiter = Task { try await bench.supervisor.wait("fragile") }
        bench.runtime.loseShim(id)
        let lost = try await waiter.value
        #expect(lost.status.exitCode == 255)
        #expect(try bench.database.events(after: 0).last { $0.actorID == id.rawValue }?.attributes["error"]?.contains("stopped answering") == true)
    }
}
