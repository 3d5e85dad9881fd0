import BerthLinux
import BerthModel
import Foundation
import Testing

/// The busybox test image, built once per test run from Debian's busybox-static.
enum TestImage {
    static let directory: URL = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-test-image-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
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

    /// A static helper that reports which system calls the kernel lets through.
    static let probe: Result<String, HarnessError> = {
        let out = directory.appendingPathComponent("syscall-probe").path
        let source = BuildProducts.root.appendingPathComponent("Tests/Fixtures/syscall-probe.c").path
        guard let result = try? Processes.runBlocking("/usr/bin/cc", ["-static", "-O2", "-o", out, source], environment: ["PATH=/usr/bin:/bin"]),
            result.status == 0
        else {
            return .failure(HarnessError("cannot build the syscall probe (is libc6-dev installed?)"))
        }
        return .success(out)
    }()
}

/// Root is needed for namespaces, mounts and cgroups.
enum Privileges {
    static var root: Bool { getuid() == 0 }
}

/// An agent with the test image imported, and a `berth` runner aimed at it.
final class ContainerHost: @unchecked Sendable {
    let agent: AgentProcess

    init() async throws {
        agent = try await AgentProcess(tcp: false)
        let imported = try await berth(["image", "import", try TestImage.tar.get(), "busybox"])
        guard imported.status == 0 else {
            agent.cleanUp()
            throw HarnessError("image import failed: \(imported.stderr)")
        }
    }

    func berth(_ arguments: [String], timeout: Duration = .seconds(120)) async throws -> CommandResult {
        var env = ProcessInfo.processInfo.environment
        env["BERTH_HOST"] = "unix://\(agent.socketPath)"
        return try await runCommand(try BuildProducts.executable("berth"), arguments, environment: env, timeout: timeout)
    }

    /// `berth inspect` of one container, decoded.
    func inspect(_ name: String) async throws -> Container {
        let result = try await berth(["inspect", name])
        guard result.status == 0 else { throw HarnessError("inspect \(name): \(result.stderr)") }
        let list = try BerthJSON.decoder().decode([Container].self, from: Data(result.stdout.utf8))
        guard let first = list.first else { throw HarnessError("inspect \(name): empty") }
        return first
    }

    /// Polls until `condition` holds for the container, up to `timeout`.
    func waitFor(_ name: String, timeout: Duration = .seconds(30), _ condition: (Container) -> Bool) async throws -> Container {
        let deadline = ContinuousClock.now + timeout
        while true {
            let c = try await inspect(name)
            if condition(c) || ContinuousClock.now > deadline { return c }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// A cgroup file of a container (v1 hierarchy `controller`).
    func cgroupFile(_ container: Container, _ controller: String, _ file: String) -> String {
        "/sys/fs/cgroup/\(controller)/\(agent.cgroupParent)/\(container.id.rawValue)/\(file)"
    }

    func cleanUp() { agent.cleanUp() }
}
