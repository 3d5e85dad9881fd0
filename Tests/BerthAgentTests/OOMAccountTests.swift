@testable import BerthAgent
import Foundation
import Testing

/// OOM accounting on counter values and times given, without a kernel.
@Suite("OOM accounting")
struct OOMAccountTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("kills of other processes are reported as they come, each once; the exit of a process no kill reached is not OOMKilled")
    func pressure() {
        var account = OOMAccount(startingAt: 0)
        #expect(account.pressure(counter: 0, at: t0) == 0, "pressure without a kill")
        #expect(account.pressure(counter: 2, at: t0) == 2)
        #expect(account.pressure(counter: 2, at: t0.addingTimeInterval(1)) == 0, "reported already")
        #expect(account.pressure(counter: nil, at: t0) == 0, "a counter that cannot be read reports nothing")
        #expect(account.pressure(counter: 3, at: t0.addingTimeInterval(10)) == 1)
        let exit = account.exit(counter: 3, shimSaysOOM: true, killed: false, finishedAt: t0.addingTimeInterval(60))
        #expect(exit == .init(oomKilled: false, eventKills: nil), "every kill was another process's")
    }

    @Test("a kill not yet reported that comes with the exit is the container's own: OOMKilled, with one event")
    func killedAtExit() {
        var account = OOMAccount(startingAt: 0)
        _ = account.pressure(counter: 1, at: t0)
        let exit = account.exit(counter: 2, shimSaysOOM: true, killed: true, finishedAt: t0.addingTimeInterval(30))
        #expect(exit == .init(oomKilled: true, eventKills: 1))
        // The shim's word is needed as well: a counter that moved without it is not trusted.
        #expect(account.exit(counter: 2, shimSaysOOM: false, killed: true, finishedAt: t0.addingTimeInterval(30)).oomKilled == false)
    }

    @Test("--init: a kill reported just before an exit by SIGKILL or 137 is the container's, and one episode makes one event")
    func initEpisode() {
        var account = OOMAccount(startingAt: 0)
        #expect(account.pressure(counter: 1, at: t0) == 1)
        let soon = account.exit(counter: 1, shimSaysOOM: true, killed: true, finishedAt: t0.addingTimeInterval(0.5))
        #expect(soon == .init(oomKilled: true, eventKills: nil), "reported a moment before: the same episode, no second event")
        let more = account.exit(counter: 3, shimSaysOOM: true, killed: true, finishedAt: t0.addingTimeInterval(1))
        #expect(more == .init(oomKilled: true, eventKills: nil), "kills at the exit after a report just before: the same episode")
        let late = account.exit(counter: 1, shimSaysOOM: true, killed: true, finishedAt: t0.addingTimeInterval(OOMAccount.episode + 1))
        #expect(late == .init(oomKilled: false, eventKills: nil), "a report long before is another episode")
        let notKilled = account.exit(counter: 1, shimSaysOOM: true, killed: false, finishedAt: t0.addingTimeInterval(0.5))
        #expect(!notKilled.oomKilled, "an exit of its own after a kill elsewhere")
    }

    @Test("a re-adopted container counts from the counter's value when watching began; an unwatched one has the shim's word")
    func startingPoint() {
        var adopted = OOMAccount(startingAt: 5)
        #expect(adopted.pressure(counter: 5, at: t0) == 0, "kills of an earlier agent's time were reported by it")
        #expect(adopted.pressure(counter: 6, at: t0) == 1)
        #expect(OOMAccount.unwatchedExit(shimSaysOOM: true) == .init(oomKilled: true, eventKills: 1))
        #expect(OOMAccount.unwatchedExit(shimSaysOOM: false) == .init(oomKilled: false, eventKills: nil))
    }
}
