import BerthShimProtocol
import CBerthLinux
import Glibc

/// `berth-shim --bundle DIR --ready-fd N`: starts the container described in
/// DIR/config, reports the outcome on fd N, then supervises it: copies its
/// output to the log, waits on its pidfd, records how it ended (with the
/// cgroup's OOM counter), and answers on DIR/shim.sock. It outlives the
/// agent; it leaves when the agent asks it to (`delete`).
@main
struct Shim {
    static func main() {
        var bundle: String?
        var readyFD: Int32 = -1
        var arguments = CommandLine.arguments.dropFirst()
        while let arg = arguments.popFirst() {
            switch arg {
            case "--bundle": bundle = arguments.popFirst()
            case "--ready-fd": readyFD = arguments.popFirst().flatMap { Int32($0) } ?? -1
            default:
                fatal("unknown argument \(arg); usage: berth-shim --bundle DIR --ready-fd N")
            }
        }
        guard let bundle else { fatal("usage: berth-shim --bundle DIR --ready-fd N") }
        if readyFD >= 0 { _ = fcntl(readyFD, F_SETFD, FD_CLOEXEC) }
        signal(SIGPIPE, SIG_IGN)
        let supervisor: Supervisor
        do {
            supervisor = try Supervisor(bundle: bundle)
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

    static func report(_ start: ShimStart, readyFD: Int32, bundle: String) {
        let text = start.record.text
        try? Files.writeAtomically(text, to: bundle + "/state")
        if readyFD >= 0 {
            Files.writeAll(readyFD, Array(text.utf8))
            close(readyFD)
        }
    }
}

func fatal(_ message: String) -> Never {
    Files.writeAll(2, Array("berth-shim: \(message)\n".utf8))
    exit(2)
}
