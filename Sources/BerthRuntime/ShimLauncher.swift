import BerthModel
import BerthLinux

/// Starts `berth-shim` processes, keeping one started ahead of need (in
/// standby, waiting for its bundle): a container's start then does not wait
/// for a process to be executed and its runtime initialised.
///
/// Every shim runs from a sealed copy of its executable, never from the
/// file on the host, and holds a sealed copy of `berth-init` for the
/// containers that ask for an init: nothing a container's process can
/// reach before or after its exec leads to a host file (see
/// `SealedExecutable`).
public final class ShimLauncher: Sendable {
    /// The shim's image.
    public let shim: SealedExecutable
    /// The init's image (`--init`).
    public let initImage: SealedExecutable
    /// The directory every bundle is in; a standby shim accepts no other.
    public let bundles: String
    private struct Standby {
        var pid: Int32
        var command: Int32
        var ready: Int32
    }
    private let standby = MadeAhead<Standby>(open: true)
    static let environment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

    public init(shim: SealedExecutable, initImage: SealedExecutable, bundles: String) {
        self.shim = shim
        self.initImage = initImage
        self.bundles = bundles
    }

    /// Seals copies of the two executables.
    ///
    /// - Throws: `BerthError.unavailable` naming the file that cannot be read or sealed.
    public convenience init(shimExecutable: String, initExecutable: String, bundles: String) throws {
        func seal(_ path: String, _ name: String) throws -> SealedExecutable {
            do {
                return try SealedExecutable(copying: path, name: name)
            } catch {
                throw BerthError(.unavailable, "cannot make a sealed copy of \(name) (\(path))", underlying: error)
            }
        }
        self.init(shim: try seal(shimExecutable, "berth-shim"), initImage: try seal(initExecutable, "berth-init"), bundles: bundles)
    }

    /// Starts a shim with `arguments`, from its sealed image, handing it the
    /// init's image and its own (which it closes once it knows its identity).
    private static func spawn(
        shim: SealedExecutable, initImage: SealedExecutable, arguments: [String], stderrPath: String?, input: Bool
    ) throws -> Processes.Spawned {
        let initFD = Processes.passedDescriptor(0, input: input)
        let exeFD = Processes.passedDescriptor(1, input: input)
        return try Processes.spawnSession(
            executable: "/proc/self/fd/\(exeFD)", argv0: "berth-shim",
            arguments: arguments + ["--init-fd", String(initFD), "--exe-fd", String(exeFD)], environment: environment,
            stderrPath: stderrPath, input: input, passing: [initImage.descriptor, shim.descriptor])
    }

    /// Starts a shim for `bundleDir` (its config written already): the
    /// standby one when there is one, else a new one.
    ///
    /// - Returns: the shim's pid and the read end of its report pipe.
    /// - Throws: `BerthError.internal` when no shim can be started.
    public func launch(bundleDir: String) throws -> (pid: Int32, report: Int32) {
        if let ready = standby.take() {
            let written = (try? Descriptor(ready.command).write(Array("bundle=\(bundleDir)\n".utf8))) != nil
            Descriptor(ready.command).close()
            if written { return (ready.pid, ready.ready) }
            // It is gone (killed?): take it back and start one the usual way.
            Descriptor(ready.ready).close()
            try? Processes.signal(ready.pid, Signal.kill.number)
            Processes.waitForExit(ready.pid)
        }
        do {
            let spawned = try Self.spawn(
                shim: shim, initImage: initImage, arguments: ["--bundle", bundleDir, "--ready-fd", "3"], stderrPath: "\(bundleDir)/shim.log",
                input: false)
            return (spawned.pid, spawned.pipe)
        } catch {
            throw BerthError(.internal, "cannot start berth-shim (a sealed copy of \(shim.source))", underlying: error)
        }
    }

    /// Starts the next standby shim in the background, if there is none.
    /// A failure is not an error: the next launch starts a shim itself.
    public func prepare() {
        let (shim, initImage, bundles) = (self.shim, self.initImage, self.bundles)
        standby.prepare(
            make: {
                guard
                    let spawned = try? Self.spawn(
                        shim: shim, initImage: initImage, arguments: ["--standby", "--bundles", bundles, "--command-fd", "4", "--ready-fd", "3"],
                        stderrPath: nil, input: true),
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
        Descriptor(shim.command).close()
        Descriptor(shim.ready).close()
        Processes.waitForExit(shim.pid)
    }
}
