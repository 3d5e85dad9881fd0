import Logging

/// How long each step of one operation took, in milliseconds, for its debug
/// log line: `var steps = StepTimes(); …; steps.lap("network"); …`.
struct StepTimes {
    private var last = ContinuousClock.now
    private(set) var metadata: Logger.Metadata = [:]

    /// Records the time since the previous lap (or the start) under `step`.
    mutating func lap(_ step: String) {
        let now = ContinuousClock.now
        let (seconds, attoseconds) = (now - last).components
        let milliseconds = Double(seconds) * 1e3 + Double(attoseconds) / 1e15
        metadata[step] = "\((milliseconds * 100).rounded() / 100)ms"
        last = now
    }
}
