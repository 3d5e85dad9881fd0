import ArgumentParser
import BerthAPI
import BerthModel
import CBerthLinux
import Dispatch
import FoundationEssentials
import Glibc
import GRPCCore
import SwiftProtobuf

/// `berth exec`: a process inside a running container, with the container's
/// namespaces, cgroup, identity, capabilities and seccomp filter; its output
/// here, its exit code as ours.
struct ExecCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "exec", abstract: "Run a command in a running container.")

    @OptionGroup var agent: AgentOptions
    @Flag(name: .shortAndLong, help: "Keep STDIN open and send it to the process.") var interactive = false
    @Flag(name: .shortAndLong, help: "Allocate a pseudo-TTY.") var tty = false
    @Option(name: [.customShort("e"), .long], help: "Set an environment variable (KEY=VALUE, or KEY to take it from here).") var env: [String] = []
    @Option(name: [.customShort("w"), .long], help: "Working directory inside the container.") var workdir: String?
    @Option(name: [.customShort("u"), .long], help: "Username or UID (format: <name|uid>[:<group|gid>]).") var user: String?
    @Argument(help: "The container.") var container: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments.") var command: [String] = []

    func run() async throws {
        guard !command.isEmpty else { throw BerthError.invalid("exec needs a command: berth exec CONTAINER COMMAND [ARG...]") }
        if tty && interactive && isatty(STDIN_FILENO) == 0 {
            throw BerthError.invalid("the input device is not a TTY; drop -t to send a pipe or a file")
        }
        let environment = ProcessInfo.processInfo.environment
        var size: (rows: UInt16, columns: UInt16) = (0, 0)
        if tty { size = Terminal.size(STDOUT_FILENO) ?? Terminal.size(STDIN_FILENO) ?? (24, 80) }
        let start = Berth_Agent_V1_ExecSpec.with {
            $0.container = container
            $0.command = command
            $0.env = EnvironmentFlag.resolve(env, from: environment)
            if let workdir { $0.workingDir = workdir }
            if let user { $0.user = user }
            $0.tty = tty
            $0.attachStdin = interactive
            $0.ttyRows = UInt32(size.rows)
            $0.ttyColumns = UInt32(size.columns)
        }
        // Everything sent after the start: stdin, its end, terminal sizes.
        let (outgoing, send) = AsyncStream<Berth_Agent_V1_ExecRequest>.makeStream()
        let raw = tty && interactive ? Terminal.makeRaw(STDIN_FILENO) : nil
        defer { raw.map { Terminal.restore(STDIN_FILENO, $0) } }
        let stdin = interactive ? StdinReader(send: send) : nil
        defer { stdin?.cancel() }
        let resizes = tty ? ResizeWatcher(send: send) : nil
        defer { resizes?.cancel() }

        var options = CallOptions.defaults
        options.timeout = nil
        let callOptions = options
        let code: Int32
        do {
            code = try await Self.exec(agent: agent, start: start, outgoing: outgoing, send: send, options: callOptions)
        } catch let error as BerthError where error.message.hasPrefix("exec: ") {
            // docker's codes: the program is missing (127) or cannot be run (126).
            Console.error("berth: \(error.message)")
            throw ExitCode(error.code == .notFound ? 127 : 126)
        }
        if code != 0 { throw ExitCode(code) }
    }

    private static func exec(
        agent: AgentOptions, start: Berth_Agent_V1_ExecSpec, outgoing: AsyncStream<Berth_Agent_V1_ExecRequest>,
        send: AsyncStream<Berth_Agent_V1_ExecRequest>.Continuation, options callOptions: CallOptions
    ) async throws -> Int32 {
        try await agent.connection().withClient { grpc in
            try await Berth_Agent_V1_Containers.Client(wrapping: grpc).exec(
                options: callOptions,
                requestProducer: { writer in
                    try await writer.write(.with { $0.start = start })
                    for await message in outgoing { try await writer.write(message) }
                }
            ) { response in
                defer { send.finish() }
                var code: Int32 = -1
                for try await message in response.messages {
                    switch message.response {
                    case .stdout(let bytes): Console.write(STDOUT_FILENO, [UInt8](bytes))
                    case .stderr(let bytes): Console.write(STDERR_FILENO, [UInt8](bytes))
                    case .exitCode(let exit): code = exit
                    case .execID, nil: break
                    }
                }
                return code
            }
        }
    }
}

/// The local terminal: its size, raw mode for an interactive TTY session.
enum Terminal {
    static func size(_ fd: Int32) -> (rows: UInt16, columns: UInt16)? {
        var rows: UInt16 = 0
        var columns: UInt16 = 0
        guard berth_get_window_size(fd, &rows, &columns) == 0, rows > 0, columns > 0 else { return nil }
        return (rows, columns)
    }

    /// Switches `fd` to raw mode; the previous settings, to restore.
    static func makeRaw(_ fd: Int32) -> termios? {
        var saved = termios()
        guard tcgetattr(fd, &saved) == 0 else { return nil }
        var raw = saved
        cfmakeraw(&raw)
        guard tcsetattr(fd, TCSANOW, &raw) == 0 else { return nil }
        return saved
    }

    static func restore(_ fd: Int32, _ settings: termios) {
        var settings = settings
        _ = tcsetattr(fd, TCSANOW, &settings)
    }
}

/// Reads stdin as it becomes readable and sends it; at its end, says so.
final class StdinReader {
    private let source: any DispatchSourceRead

    init(send: AsyncStream<Berth_Agent_V1_ExecRequest>.Continuation) {
        _ = fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK)
        let source = DispatchSource.makeReadSource(fileDescriptor: STDIN_FILENO, queue: DispatchQueue(label: "berth.stdin"))
        // Read until it would block: libdispatch reports a hung-up pipe
        // once, with the last data, so its end is found by reading on.
        source.setEventHandler { [source] in
            var buffer = [UInt8](repeating: 0, count: 32 << 10)
            while true {
                let n = read(STDIN_FILENO, &buffer, buffer.count)
                if n > 0 {
                    send.yield(.with { $0.stdin = Data(buffer[..<n]) })
                    continue
                }
                if n < 0 && errno == EINTR { continue }
                if n < 0 && errno == EAGAIN { return }
                send.yield(.with { $0.closeStdin = true })
                source.cancel()
                return
            }
        }
        source.resume()
        self.source = source
    }

    func cancel() {
        source.cancel()
        _ = fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) & ~O_NONBLOCK)
    }
}

/// Sends the terminal's new size when it changes (SIGWINCH).
final class ResizeWatcher {
    private let source: any DispatchSourceSignal

    init(send: AsyncStream<Berth_Agent_V1_ExecRequest>.Continuation) {
        signal(SIGWINCH, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGWINCH, queue: .global())
        source.setEventHandler {
            guard let size = Terminal.size(STDOUT_FILENO) ?? Terminal.size(STDIN_FILENO) else { return }
            send.yield(.with { $0.resize = .with { $0.rows = UInt32(size.rows); $0.columns = UInt32(size.columns) } })
        }
        source.resume()
        self.source = source
    }

    func cancel() { source.cancel() }
}
