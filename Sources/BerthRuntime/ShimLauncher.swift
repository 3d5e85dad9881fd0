import BerthModel
import BerthLinux
import Glibc

/// Starts `berth-shim` processes, keeping one started ahead of need (in
/// standby, waiting for its bundle): a container's start then does not wait
/// for a process to be executed and its runtime initialised.
public final class ShimLauncher: Sendable {
    public let executable: String
    /// The directory every bundle is in; a standby shim accepts no other.
    public let bundles: String
    private struct Standby {
        var pid: Int32
        var command: Int32
        var ready: Int32
    }
    private let standby = MadeAhead<Standby>(open: true)
    static let environment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

    public init(executable: String, bundles: String) {
        self.executable = executable
        self.bundles = bundles
    }

    /// Starts a shim for `bundleDir` (its config written already): the
    /// standby one when there is one, else a new one.
    ///
    /// - Returns: the shim's pid and the read end of its report pipe.
    /// - Throws: `BerthError.internal` when no shim can be started.
    public func launch(bundleDir: String) throws -> (pid: Int32, report: Int32) {
        if let ready = standby.take() {
            let line = Array("bundle=\(bundleDir)\n".utf8)
            let written = line.withUnsafeBytes { write(ready.command, $0.baseAddress, $0.count) }
            close(ready.command)
            if written == line.count { return (ready.pid, ready.ready) }
            // It is gone (killed?): take it back and start one the usual way.
            close(ready.ready)
            kill(ready.pid, SIGKILL)
            var status: Int32 = 0
            waitpid(ready.pid, &status, 0)
        }
        do {
            let spawned = try Processes.spawnSession(
                executable: executable, arguments: ["--bundle", bundleDir, "--ready-fd", "3"], environment: Self.environment,
                stderrPath: "\(bundleDir)/shim.log")
            return (spawned.pid, spawned.pipe)
        } catch {
            throw BerthError(.internal, "cannot start berth-shim (\(executable))", underlying: error)
        }
    }

    /// Starts the next standby shim in the background, if there is none.
    /// A failure is not an error: the next launch starts a shim itself.
    public func prepare() {
        let (executable, bundles) = (self.executable, self.bundles)
        standby.prepare(
            make: {
                guard
                    let spawned = try? Processes.spawnSession(
                        executable: executable, arguments: ["--standby", "--bundles", bundles, "--command-fd", "4", "--ready-fd", "3"],
                        environment: Self.environment, stderrPath: nil, input: true),
                    let command = spawned.input
                else { return nil }
                return Standby(pid: spawned.pid, command: command, ready: spawned.pipe)
            },
            discard: Self.dismiss)
    }

    /// Lets the standby shim go (it leaves on the end of its command pipe),
    /// and starts no more.
    public func shutdown() {
        if let ready = standby.close() { Self.dismiss(ready) }
    }

    private static func dismiss(_ shim: Standby) {
        close(shim.command)
        close(shim.ready)
        var status: Int32 = 0
        while waitpid(shim.pid, &status, 0) < 0 && errno == EINTR {}
    }
}
