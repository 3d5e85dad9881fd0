import BerthLinux
import BerthModel
import BerthTesting
import Foundation
import Testing

/// Every byte a container writes reaches an attached `run`, `exec` and
/// `logs -f`, in order, however fast it writes, however slow the reader and
/// however often its log rotates: the container is slowed, never a byte
/// dropped (root).
@Suite("containers: every byte of output, through run, exec and logs -f (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(15)))
struct OutputTests {
    static let reader = BuildProducts.root.appendingPathComponent("Tests/Fixtures/slow-reader.py").path

    /// `BYTES LINES SHA256` of what `command` prints on stdout, read by
    /// the slow reader (reads of `chunk` bytes, `pause` seconds apart).
    static func through(_ host: ContainerHost, _ command: String, chunk: Int = 1 << 20, pause: Double = 0) async throws -> (result: String, stderr: String) {
        let berth = try BuildProducts.executable("berth").deletingLastPathComponent().path
        var environment = host.agent.cliEnvironment()
        environment["PATH"] = "\(berth):/usr/bin:/bin"
        let script = "set -o pipefail; \(command) | python3 \(reader) \(chunk) \(pause)"
        let r = try await runCommand(URL(fileURLWithPath: "/bin/bash"), ["-c", script], environment: environment, timeout: .seconds(600))
        #expect(r.status == 0, "\(command): \(r.stderr.suffix(2000))")
        return (r.stdout.trimmingCharacters(in: .whitespacesAndNewlines), r.stderr)
    }

    /// What the same command gives on the host.
    static func expected(_ command: String) async throws -> String {
        let r = try await runCommand(
            URL(fileURLWithPath: "/bin/bash"), ["-c", "set -o pipefail; \(command) | python3 \(reader) 1048576 0"], environment: ["PATH": "/usr/bin:/bin"],
            timeout: .seconds(600))
        #expect(r.status == 0, "\(r.stderr)")
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("run: 3,000,000 lines, 200 MB of binary output and 500,000 stderr lines arrive whole and in order, through a slow reader too; the log rotated meanwhile")
    func run() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let pattern = try TestImage.pattern.get()
        let lines = try await Self.expected("seq 1 3000000")
        #expect(lines.hasPrefix("22888896 3000000 "), "\(lines)")
        let fast = try await Self.through(host, "berth run --rm --log-opt max-size=1m busybox seq 1 3000000")
        #expect(fast.result == lines)
        let slow = try await Self.through(host, "berth run --rm --log-opt max-size=1m busybox seq 1 3000000", chunk: 65536, pause: 0.004)
        #expect(slow.result == lines)
        // Binary, 200 MB, while the agent's memory stays where it was.
        let rssBefore = host.agent.residentBytes
        let binary = try await Self.expected("\(pattern) 200000000")
        let got = try await Self.through(host, "berth run --rm -v \(pattern):/pattern:ro busybox /pattern 200000000")
        #expect(got.result == binary)
        let rssAfter = host.agent.residentBytes
        #expect(rssAfter - rssBefore < 64 << 20, "agent RSS \(rssBefore >> 20) MiB → \(rssAfter >> 20) MiB")
        // stderr, on its own stream.
        let errors = try await Self.expected("seq 1 500000")
        let stderr = try await Self.through(host, "berth run --rm busybox sh -c 'seq 1 500000 >&2' 2>&1 >/dev/null")
        #expect(stderr.result == errors)
        // The log kept rotating: it holds only the newest part of the output.
        #expect(try await host.berth(["run", "--name", "kept", "--log-opt", "max-size=1m", "--log-opt", "max-file=2", "busybox", "seq", "1", "3000000"]).status == 0)
        let tail = try await host.berth(["logs", "--tail", "3", "kept"])
        #expect(tail.stdout == "2999998\n2999999\n3000000\n", "\(tail.stdout.prefix(200))")
    }

    @Test("exec: 3,000,000 lines and 200 MB arrive whole and in order, through a slow reader too")
    func exec() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let pattern = try TestImage.pattern.get()
        #expect(try await host.berth(["run", "-d", "--name", "box", "-v", "\(pattern):/pattern:ro", "busybox", "sleep", "1000"]).status == 0)
        let lines = try await Self.expected("seq 1 3000000")
        let slow = try await Self.through(host, "berth exec box seq 1 3000000", chunk: 65536, pause: 0.004)
        #expect(slow.result == lines)
        let binary = try await Self.expected("\(pattern) 200000000")
        let got = try await Self.through(host, "berth exec box /pattern 200000000")
        #expect(got.result == binary)
    }

    @Test("logs -f follows a log that rotates every megabyte: every line in order, or it says which were lost")
    func logsFollow() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        // The writer starts once the follower is following.
        #expect(try await host.berth([
            "run", "-d", "--name", "writer", "--log-opt", "max-size=1m", "--log-opt", "max-file=3", "busybox", "sh", "-c",
            "while [ ! -e /tmp/go ]; do sleep 0.05; done; seq 1 1000000",
        ]).status == 0)
        async let following = Self.through(host, "berth logs -f writer")
        try await Task.sleep(for: .seconds(2))
        #expect(try await host.berth(["exec", "writer", "touch", "/tmp/go"]).status == 0)
        let followed = try await following
        let complete = try await Self.expected("seq 1 1000000")
        if followed.result != complete {
            // Only when the reader fell three files behind, and then it says so.
            #expect(followed.stderr.contains("are missing here"), "\(followed.result) \(followed.stderr)")
        }
        // After the fact: what the log still holds, whole lines, the newest last.
        let tail = try await host.berth(["logs", "--tail", "2", "writer"])
        #expect(tail.stdout == "999999\n1000000\n")
        let all = try await host.berth(["logs", "writer"])
        let kept = all.stdout.split(separator: "\n")
        #expect(kept.last == "1000000")
        #expect(kept.count > 100_000 && kept.count < 1_000_000, "\(kept.count) lines kept with 3 files of 1 MB")
        // Consecutive numbers: nothing lost or reordered inside what is kept.
        let numbers = kept.compactMap { Int($0) }
        #expect(numbers.count == kept.count)
        #expect(zip(numbers, numbers.dropFirst()).allSatisfy { $1 == $0 + 1 })
    }
}
