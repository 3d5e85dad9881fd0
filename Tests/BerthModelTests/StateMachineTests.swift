import BerthModel
import Foundation
import Testing

@Suite("Container state machine")
struct StateMachineTests {
    /// Every pair of states, and whether one step may take the first to the second.
    static let table: [(ContainerState, ContainerState, Bool)] = {
        let allowed: Set<String> = [
            "created→running", "created→exited", "created→dead",
            "running→paused", "running→exited",
            "paused→running", "paused→exited",
            "exited→running", "exited→dead",
        ]
        var rows: [(ContainerState, ContainerState, Bool)] = []
        for from in ContainerState.allCases {
            for to in ContainerState.allCases {
                rows.append((from, to, allowed.contains("\(from)→\(to)")))
            }
        }
        return rows
    }()

    @Test("the transition table", arguments: table)
    func transition(from: ContainerState, to: ContainerState, allowed: Bool) {
        #expect(from.canTransition(to: to) == allowed)
    }

    @Test("a container's life: create, start, pause, unpause, exit, restart")
    func life() throws {
        let t0 = Date(timeIntervalSince1970: 1_000)
        var status = ContainerStatus(createdAt: t0)
        #expect(status.state == .created)
        try status.markStarted(pid: 42, at: t0.addingTimeInterval(1))
        #expect(status.state == .running && status.pid == 42)
        try status.markPaused()
        #expect(status.state == .paused)
        try status.markResumed()
        try status.markExited(ProcessExit(exitCode: 3), at: t0.addingTimeInterval(5))
        #expect(status.state == .exited && status.exitCode == 3 && status.reason == .error && status.pid == nil)
        try status.markStarted(pid: 43, at: t0.addingTimeInterval(6), restart: true)
        #expect(status.restartCount == 1 && status.exitCode == nil && status.reason == nil)
        try status.markExited(.signaled(.kill, oomKilled: true), at: t0.addingTimeInterval(7))
        #expect(status.exitCode == 137 && status.signal == .kill && status.oomKilled && status.reason == .oomKilled)
        try status.markDead("removal failed: EBUSY")
        #expect(status.state == .dead)
        #expect(throws: BerthError.self) { try status.markStarted(pid: 1, at: t0) }
    }

    @Test("an illegal transition is refused with a clear error and changes nothing")
    func illegal() throws {
        var status = ContainerStatus(createdAt: Date(timeIntervalSince1970: 0))
        try status.markStarted(pid: 7, at: Date(timeIntervalSince1970: 1))
        let before = status
        do {
            try status.markResumed()
            Issue.record("unpausing a running container must fail")
        } catch let error as BerthError {
            #expect(error.code == .failedPrecondition)
            #expect(error.message == "cannot unpause a container that is running (running → running is not allowed)")
        }
        #expect(status == before)
    }

    @Test("OOMKilled comes only from the OOM counter, never from exit code 137")
    func oomOnlyFromCounter() {
        #expect(ProcessExit(exitCode: 137).reason == .error)
        #expect(ProcessExit.signaled(.kill).reason == .killed)
        #expect(ProcessExit.signaled(.kill, oomKilled: true).reason == .oomKilled)
        #expect(ProcessExit(exitCode: 0).reason == .completed)
    }

    @Test("a failed start leaves the container exited with the reason")
    func startFailure() throws {
        var status = ContainerStatus(createdAt: Date(timeIntervalSince1970: 0))
        try status.markStartFailed("exec: \"foo\": executable file not found in $PATH", at: Date(timeIntervalSince1970: 1))
        #expect(status.state == .exited && status.exitCode == 127 && status.reason == .startFailed)
        #expect(status.error?.contains("executable file not found") == true)
    }
}
