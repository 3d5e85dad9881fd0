import Foundation

/// What has been said of one running container's OOM kills: the cgroup's
/// `oom_kill` counter as last reported, and when. Pure: counter values,
/// times and the exit come in; what to report goes out.
///
/// The counter counts every kill in the cgroup since the run began. Kills of
/// other processes are reported as they happen (an `oom` event while the
/// container runs on); the container's own process was OOM-killed only when
/// a kill not yet reported comes with its exit. With `--init` the victim is
/// the init's child and the init exits 137: a kill reported just before
/// such an exit counts as the container's, and kills at the exit that
/// follow a report just before it belong to the same episode (one event).
struct OOMAccount: Sendable, Hashable {
    /// The counter's value already reported.
    private(set) var reported: UInt64
    private(set) var lastReport: Date?

    /// How close before an exit a report still belongs to it.
    static let episode: TimeInterval = 2

    /// Counting starts from `counter`: 0 for a cgroup made for this run (a
    /// kill before the watch began is this run's too), the counter's value
    /// now for a re-adopted container.
    init(startingAt counter: UInt64) {
        reported = counter
    }

    /// The kernel reported memory pressure and the container's process runs
    /// on: the kills to report in an `oom` event now (0: none).
    mutating func pressure(counter: UInt64?, at now: Date) -> UInt64 {
        guard let counter, counter > reported else { return 0 }
        defer {
            reported = counter
            lastReport = now
        }
        return counter - reported
    }

    /// What the exit says of OOM kills.
    struct Exit: Sendable, Hashable {
        /// The container's own process was OOM-killed.
        var oomKilled: Bool
        /// Kills for one `oom` event recorded with the exit; nil for none.
        var eventKills: UInt64?
    }

    /// The container's process has exited.
    ///
    /// - Parameters:
    ///   - counter: the cgroup's counter now (nil when it cannot be read).
    ///   - shimSaysOOM: the shim saw the counter grow during the run.
    ///   - killed: the process ended by SIGKILL, or exited 137 (an init's
    ///     child killed).
    func exit(counter: UInt64?, shimSaysOOM: Bool, killed: Bool, finishedAt: Date) -> Exit {
        var account = self
        let kills = account.pressure(counter: counter, at: finishedAt)
        let reportedJustBefore = lastReport.map { finishedAt.timeIntervalSince($0) < Self.episode } == true
        let oomKilled = shimSaysOOM && (kills > 0 || (killed && reportedJustBefore))
        return Exit(oomKilled: oomKilled, eventKills: kills > 0 && !reportedJustBefore ? kills : nil)
    }

    /// The exit of a container whose kills were not watched: the shim's word.
    static func unwatchedExit(shimSaysOOM: Bool) -> Exit {
        Exit(oomKilled: shimSaysOOM, eventKills: shimSaysOOM ? 1 : nil)
    }
}
