import Foundation
import Testing

/// Runs every test of a suite on threads of its own instead of Swift's
/// shared pool, which has one thread per core.
///
/// Tests that drive real processes wait for them synchronously in places
/// where nothing else can: a `defer` that stops an agent, kills its shims
/// and removes its cgroups cannot `await`. On the shared pool, two such
/// waits on a two-core machine hold every thread, and each other test in
/// the process (an in-process transport test timing a cancellation, say)
/// stalls for as long as they wait. With this trait those suites wait on
/// threads made for them; the suites that stay on the shared pool keep
/// showing any blocking of it by Berth's own code.
public struct OwnThreadsTrait: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        try await withTaskExecutorPreference(BlockingTaskExecutor.shared) { try await function() }
    }
}

extension Trait where Self == OwnThreadsTrait {
    /// The suite's tests run on threads of their own: see `OwnThreadsTrait`.
    public static var ownThreads: Self { OwnThreadsTrait() }
}

/// A task executor that makes a thread whenever a job would otherwise wait
/// for one: a job blocked in a system call holds only its own thread.
/// Threads stay for the next job (a test process is short-lived; their
/// number is the most jobs that ever ran at once).
public final class BlockingTaskExecutor: TaskExecutor, @unchecked Sendable {
    public static let shared = BlockingTaskExecutor()

    // Guarded by `condition`.
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var next = 0
    private var idle = 0

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        // Every queued job has a waiting thread to take it, or a new one.
        let spawn = jobs.count - next > idle
        if !spawn { condition.signal() }
        condition.unlock()
        if spawn {
            let thread = Thread { [self] in work() }
            thread.name = "test-blocking"
            thread.start()
        }
    }

    private func work() {
        condition.lock()
        while true {
            if next < jobs.count {
                let job = jobs[next]
                next += 1
                if next > 1024 && next * 2 > jobs.count {
                    jobs.removeFirst(next)
                    next = 0
                }
                condition.unlock()
                job.runSynchronously(on: asUnownedTaskExecutor())
                condition.lock()
            } else {
                idle += 1
                condition.wait()
                idle -= 1
            }
        }
    }
}
