import BerthShimProtocol
import CBerthContainer
import CBerthSyscalls
import Glibc

/// `berth-shim --bundle DIR --ready-fd N`: starts the container described in
/// DIR/config, reports the outcome on fd N, then supervises it: copies its
/// output to the log, waits on its pidfd, records how it ended (with the
/// cgroup's OOM counter), and answers on DIR/shim.sock. It outlives the
/// agent; it leaves when the agent asks it to (`delete`).
///
/// `berth-shim --standby --bundles DIR --command-fd M --ready-fd N`: the
/// same, but started ahead of need: it waits for `bundle=PATH` (a bundle
/// under DIR) on fd M, then goes on as above. The end of fd M without a
/// bundle (the agent stopped or died) ends it quietly. The agent keeps one
/// such shim ready, so that starting a container does not wait for a
/// process to be executed and initialised.
///
/// `--init-fd K` is a sealed copy of berth-init, for containers that ask for
/// an init; `--exe-fd E` is the sealed copy this shim runs from, which it
/// closes once it knows its identity. Neither image is a host file: a
/// container's process, a clone of this shim until its exec, can reach
/// nothing of the host through /proc/self/exe, and never executes either.
@main
struct Shim {
    static let usage =
        "usage: berth-shim --bundle DIR --ready-fd N | --standby --bundles DIR --command-fd M --ready-fd N; with --init-fd K --exe-fd E"

    static func main() {
        var bundle: String?
        var readyFD: Int32 = -1
        var commandFD: Int32 = -1
        var standby = false
        var bundles: String?
        var initFD: Int32 = -1
        var exeFD: Int32 = -1
        var arguments = CommandLine.arguments.dropFirst()
        while let arg = arguments.popFirst() {
            switch arg {
            case "--bundle": bundle = arguments.popFirst()
            case "--ready-fd": readyFD = arguments.popFirst().flatMap { Int32($0) } ?? -1
            case "--command-fd": commandFD = arguments.popFirst().flatMap { Int32($0) } ?? -1
            case "--bundles": bundles = arguments.popFirst()
            case "--standby": standby = true
            case "--init-fd": initFD = arguments.popFirst().flatMap { Int32($0) } ?? -1
            case "--exe-fd": exeFD = arguments.popFirst().flatMap { Int32($0) } ?? -1
            default:
                fatal("unknown argument \(arg); \(usage)")
            }
        }
        // No process of a container may open this one's /proc/PID files
        // (exe, fd, maps, mem): the clones that become a container's
        // processes inherit this until their exec.
        _ = berth_set_dumpable(0)
        for fd in [readyFD, initFD, exeFD] where fd >= 0 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let images = RuntimeImages(initFD: initFD, exeFD: exeFD)
        signal(SIGPIPE, SIG_IGN)
        if standby {
            guard let bundles, commandFD >= 0 else { fatal(usage) }
            bundle = awaitBundle(commandFD: commandFD, under: bundles)
        }
        guard let bundle else { fatal(usage) }
        // A standby shim is started at the lowest priority, CPU and disk (by
        // the agent's background work); its container gets the usual ones.
        if standby && (berth_set_thread_nice(0) != 0 || berth_set_thread_io_default() != 0) {
            let error = errno
            report(.failed(stage: "restore the shim's priority", errno: error, errnoName: Supervisor.errnoName(error), detail: ""), readyFD: readyFD, bundle: bundle)
            exit(1)
        }
        let supervisor: Supervisor
        do {
            supervisor = try Supervisor(bundle: bundle, images: images)
        } catch {
            report(.failed(stage: "read config", errno: 0, errnoName: "", detail: "\(error)"), readyFD: readyFD, bundle: bundle)
            exit(1)
        }
        let start = supervisor.start()
        report(start, readyFD: readyFD, bundle: bundle)
        guard case .started = start else { exit(1) }
        supervisor.run()
        exit(0)
    }

    /// Waits for the agent to hand over a bundle; on the way, does the work
    /// that is the same for every container (the runtime's first use of
    /// the types that read a config). Leaves when no bundle comes.
    static func awaitBundle(commandFD: Int32, under bundles: String) -> String {
        _ = try? LineRecord(parsing: "warm=1\nwarm=2\n").all("warm")
        // The agent writes one line, then closes its end.
        var line: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while line.count < 8192 && !line.contains(UInt8(ascii: "\n")) {
            let n = buffer.withUnsafeMutableBytes { read(commandFD, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            line += buffer[0..<n]
        }
        close(commandFD)
        line = Array(line.prefix { $0 != UInt8(ascii: "\n") })
        guard !line.isEmpty else { exit(0) }
        guard let record = try? LineRecord(parsing: String(decoding: line, as: UTF8.self)), let bundle = record["bundle"],
            bundle.hasPrefix(bundles + "/"), !bundle.split(separator: "/").contains("..")
        else { fatal("standby: expected bundle=PATH under \(bundles)") }
        // From here on, diagnostics go to the bundle's shim.log, as for a
        // shim started for this container.
        let log = open(bundle + "/shim.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        if log >= 0 {
            dup2(log, 2)
            close(log)
        }
        return bundle
    }

    static func report(_ start: ShimStart, readyFD: Int32, bundle: String) {
        let text = start.record.text
        try? Files.writeAtomically(text, to: bundle + "/state")
        if readyFD >= 0 {
            Files.writeAll(readyFD, Array(text.utf8))
            close(readyFD)
        }
    }
}

/// The runtime's own images as this shim knows them: the init it hands to
/// containers that ask for one, and the files no process of a container may
/// execute (its own image and the init's).
struct RuntimeImages {
    /// A sealed copy of berth-init; -1 when none was given.
    let initFD: Int32
    let forbidden: [berth_file_identity]

    init(initFD: Int32, exeFD: Int32) {
        self.initFD = initFD
        var forbidden: [berth_file_identity] = []
        var identity = berth_file_identity()
        // Its own image: the descriptor it was started from, else /proc/self/exe.
        let exe = exeFD >= 0 ? exeFD : open("/proc/self/exe", Int32(BERTH_O_PATH) | O_CLOEXEC)
        if exe >= 0 {
            if berth_file_identity_of(exe, &identity) == 0 { forbidden.append(identity) }
            close(exe)
        }
        if initFD >= 0, berth_file_identity_of(initFD, &identity) == 0 { forbidden.append(identity) }
        self.forbidden = forbidden
    }
}

func fatal(_ message: String) -> Never {
    Files.writeAll(2, Array("berth-shim: \(message)\n".utf8))
    exit(2)
}
