import BerthAPI
import BerthLinux
import BerthModel
import Foundation
import GRPCCore
import Synchronization
import SwiftProtobuf
import Testing

/// The busybox test image, built once per test run from Debian's busybox-static.
enum TestImage {
    static let directory: URL = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-test-image-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        // Gone with the test process (each process builds its own).
        atexit { try? FileManager.default.removeItem(at: TestImage.directory) }
        return dir
    }()

    static let tar: Result<String, HarnessError> = {
        let script = BuildProducts.root.appendingPathComponent("scripts/build-test-image")
        guard let result = try? Processes.runBlocking("/bin/bash", [script.path, directory.path], environment: ["PATH=/usr/bin:/bin"]),
            result.status == 0
        else {
            return .failure(HarnessError("scripts/build-test-image failed (is busybox-static installed?)"))
        }
        return .success(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
    }()

    /// The test image's root filesystem as a directory.
    static func rootfs() throws -> String {
        _ = try tar.get()
        return directory.appendingPathComponent("busybox-rootfs").path
    }

    /// A static helper that reports which system calls the kernel lets through.
    static let probe = fixture("syscall-probe")

    /// A static helper that races to open and write /proc/PID/exe of every
    /// process it sees (CVE-2019-5736).
    static let racer = fixture("exe-racer")

    /// A static helper that writes a fixed pseudo-random byte sequence.
    static let pattern = fixture("byte-pattern")

    /// `Tests/Fixtures/NAME.c`, built static, for bind-mounting into containers.
    private static func fixture(_ name: String) -> Result<String, HarnessError> {
        let out = directory.appendingPathComponent(name).path
        let source = BuildProducts.root.appendingPathComponent("Tests/Fixtures/\(name).c").path
        guard let result = try? Processes.runBlocking("/usr/bin/cc", ["-static", "-O2", "-o", out, source], environment: ["PATH=/usr/bin:/bin"]),
            result.status == 0
        else {
            return .failure(HarnessError("cannot build Tests/Fixtures/\(name).c (is libc6-dev installed?)"))
        }
        return .success(out)
    }
}

/// Root is needed for namespaces, mounts and cgroups.
enum Privileges {
    static var root: Bool { getuid() == 0 }
}

/// An agent with the test image imported, and a `berth` runner aimed at it.
final class ContainerHost: @unchecked Sendable {
    let agent: AgentProcess

    /// - Parameter agentExecutable: another copy of berth-agent (berth-shim
    ///   and berth-init beside it) instead of the build's.
    init(extraArguments: [String] = [], agentExecutable: String? = nil) async throws {
        agent = try await AgentProcess(extraArguments: extraArguments, tcp: false, executable: agentExecutable)
        let imported = try await berth(["image", "import", try TestImage.tar.get(), "busybox"])
        guard imported.status == 0 else {
            agent.cleanUp()
            throw HarnessError("image import failed: \(imported.stderr)")
        }
    }

    func berth(
        _ arguments: [String], environment: [String: String] = [:], executable: URL? = nil, timeout: Duration = .seconds(120)
    ) async throws -> CommandResult {
        try await agent.berth(arguments, environment: environment, executable: executable, timeout: timeout)
    }

    /// PIDs of the shims of the agent's containers.
    func shims() throws -> [Int32] {
        try FileManager.default.contentsOfDirectory(atPath: "/proc").compactMap { entry in
            guard let pid = Int32(entry), let cmd = try? String(contentsOfFile: "/proc/\(entry)/cmdline", encoding: .utf8),
                cmd.hasPrefix("berth-shim\0"), cmd.contains(agent.state)
            else { return nil }
            return pid
        }
    }

    /// PIDs of the agent's standby shims (started, waiting for a bundle or
    /// just given one).
    func standbyShims() throws -> [Int32] {
        try FileManager.default.contentsOfDirectory(atPath: "/proc").compactMap { entry in
            guard let pid = Int32(entry), let cmd = try? String(contentsOfFile: "/proc/\(entry)/cmdline", encoding: .utf8),
                cmd.contains("--standby"), cmd.contains(agent.state)
            else { return nil }
            return pid
        }
    }

    /// The agent's standby shims still waiting for a bundle (no container
    /// child yet), as soon as there is one: they are made in the
    /// background at the lowest priority, so on a loaded machine this
    /// waits, `timeout` at most (then none).
    func waitingStandbyShims(timeout: Duration = .seconds(30)) async throws -> [Int32] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let waiting = try standbyShims().filter { pid in
                let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
                return children.trimmingCharacters(in: .whitespaces).isEmpty
            }
            if !waiting.isEmpty || ContinuousClock.now > deadline { return waiting }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// `berth inspect` of one container, decoded.
    func inspect(_ name: String) async throws -> Container {
        let result = try await berth(["inspect", "--format", "record", name])
        guard result.status == 0 else {
            // An agent that is gone says why in its log.
            let gone = agent.process.isRunning ? "" : " (the agent exited with \(agent.process.terminationStatus); its log ends:\n\(agent.log.suffix(3000)))"
            throw HarnessError("inspect \(name): \(result.stderr)\(gone)")
        }
        let list = try BerthJSON.decoder().decode([Container].self, from: Data(result.stdout.utf8))
        guard let first = list.first else { throw HarnessError("inspect \(name): empty") }
        return first
    }

    /// Polls until `condition` holds for the container (which may not
    /// exist yet), up to `timeout`.
    func waitFor(_ name: String, timeout: Duration = .seconds(30), _ condition: (Container) -> Bool) async throws -> Container {
        let deadline = ContinuousClock.now + timeout
        while true {
            do {
                let c = try await inspect(name)
                if condition(c) || ContinuousClock.now > deadline { return c }
            } catch where ContinuousClock.now < deadline {
                // Not made yet.
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// A cgroup file of a container (v1 hierarchy `controller`).
    /// True on a pure cgroup v2 host (one hierarchy at /sys/fs/cgroup).
    static let unifiedHierarchy = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers")

    /// The test agent's cgroup parent in `controller`'s hierarchy (v1), or
    /// in the one hierarchy (v2).
    func cgroupParentDir(_ controller: String) -> String {
        Self.unifiedHierarchy ? "/sys/fs/cgroup/\(agent.cgroupParent)" : "/sys/fs/cgroup/\(controller)/\(agent.cgroupParent)"
    }

    func cgroupFile(_ container: Container, _ controller: String, _ file: String) -> String {
        "\(cgroupParentDir(controller))/\(container.id.rawValue)/\(file)"
    }

    /// A number from a `key value` file of the container's cgroup.
    func cgroupValue(_ container: Container, _ controller: String, _ file: String, _ key: String) throws -> Double {
        let text = try String(contentsOfFile: cgroupFile(container, controller, file), encoding: .utf8)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("\(key) ") }), let value = Double(line.split(separator: " ")[1]) else {
            throw BerthError.invalid("no \(key) in \(file)")
        }
        return value
    }

    /// A one-number cgroup file of the container (pids.current, memory.max…).
    func cgroupNumber(_ container: Container, _ controller: String, _ file: String) throws -> UInt64 {
        let text = try String(contentsOfFile: cgroupFile(container, controller, file), encoding: .utf8)
        guard let value = UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { throw HarnessError("\(file): \(text)") }
        return value
    }

    /// Memory charged to the container's cgroup, as the kernel counts it.
    func memoryUsage(_ container: Container) throws -> UInt64 {
        try cgroupNumber(container, "memory", Self.unifiedHierarchy ? "memory.current" : "memory.usage_in_bytes")
    }

    /// CPU seconds the container used, from the kernel's own counter:
    /// cpuacct.usage (ns) on v1, usage_usec of cpu.stat on v2.
    func cpuSeconds(_ container: Container) throws -> Double {
        if Self.unifiedHierarchy { return try cgroupValue(container, "cpu", "cpu.stat", "usage_usec") / 1e6 }
        let text = try String(contentsOfFile: cgroupFile(container, "cpuacct", "cpuacct.usage"), encoding: .utf8)
        return Double(text.trimmingCharacters(in: .whitespacesAndNewlines))! / 1e9
    }

    /// Whether the kernel reports the container's cgroup frozen.
    func isFrozen(_ container: Container) throws -> Bool {
        if Self.unifiedHierarchy { return try cgroupValue(container, "", "cgroup.events", "frozen") == 1 }
        return try String(contentsOfFile: cgroupFile(container, "freezer", "freezer.state"), encoding: .utf8).hasPrefix("FROZEN")
    }

    /// The memory limit in bytes, as the kernel holds it.
    func memoryLimit(_ container: Container) throws -> String {
        let file = Self.unifiedHierarchy ? "memory.max" : "memory.limit_in_bytes"
        return try String(contentsOfFile: cgroupFile(container, "memory", file), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func cleanUp() { agent.cleanUp() }
}

/// Events a watcher has seen, shared with the test.
final class SeenEvents: Sendable {
    private let events = Mutex<[Berth_Agent_V1_Event]>([])
    func withLock<R>(_ body: (inout [Berth_Agent_V1_Event]) -> R) -> R { events.withLock { body(&$0) } }
    var all: [Berth_Agent_V1_Event] { withLock { $0 } }
}

extension AgentProcess {
    /// Watches the agent's events from revision `from` into `seen`, until
    /// `enough` says stop (or the agent goes away).
    func watchEvents(
        from: UInt64, into seen: SeenEvents, until enough: @escaping @Sendable ([Berth_Agent_V1_Event]) -> Bool
    ) async throws {
        try await withClient { client in
            try await Berth_Agent_V1_Events.Client(wrapping: client).watch(.with { $0.fromRevision = from }) { response in
                for try await message in response.messages {
                    if seen.withLock({ $0.append(message.event); return enough($0) }) { break }
                }
            }
        }
    }
}

/// Copies of executables to run.
enum ExecutableCopy {
    /// Copies `source` to `destination` by `cp` in a process of its own: the
    /// test process, whose other threads start processes all the time,
    /// never holds the copy open for writing, so no child of theirs can
    /// inherit that descriptor and make the copy's exec fail with ETXTBSY
    /// (a writer open anywhere makes a file busy for exec).
    static func make(_ source: URL, _ destination: URL) throws {
        let copied = try Processes.runBlocking("/bin/cp", ["--", source.path, destination.path], environment: ["PATH=/usr/bin:/bin"], timeout: .seconds(60))
        guard copied.status == 0 else { throw HarnessError("cp \(source.path) \(destination.path): \(copied.stderr)") }
    }
}
