import ArgumentParser
import BerthAPI
import BerthLinux
import BerthModel
import Dispatch
import FoundationEssentials
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
    @Argument(help: "The container.", completion: NameCompletion.containers) var container: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments.") var command: [String] = []

    func run() async throws {
        guard !command.isEmpty else { throw BerthError.invalid("exec needs a command: berth exec CONTAINER COMMAND [ARG...]") }
        if tty && interactive && !Descriptor.standardInput.isTerminal {
            throw BerthError.invalid("the input device is not a TTY; drop -t to send a pipe or a file")
        }
        let environment = ProcessInfo.processInfo.environment
        var size: (rows: UInt16, columns: UInt16) = (0, 0)
        if tty { size = Terminal.size(of: .standardOutput) ?? Terminal.size(of: .standardInput) ?? (24, 80) }
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
        let raw = tty && interactive ? Terminal.makeRaw(.standardInput) : nil
        defer { raw.map { Terminal.restore(.standardInput, $0) } }
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
                    case .stdout(let bytes): Console.write(Descriptor.standardOutput, [UInt8](bytes))
                    case .stderr(let bytes): Console.write(Descriptor.standardError, [UInt8](bytes))
                    case .exitCode(let exit): code = exit
                    case .execID, nil: break
                    }
                }
                return code
            }
        }
    }
}

/// Reads stdin as it becomes readable and sends it; at its end, says so.
final class StdinReader {
    private let source: any DispatchSourceRead

    init(send: AsyncStream<Berth_Agent_V1_ExecRequest>.Continuation) {
        try? Descriptor.standardInput.setNonBlocking(true)
        let source = DispatchSource.makeReadSource(fileDescriptor: Descriptor.standardInput.raw, queue: DispatchQueue(label: "berth.stdin"))
        // Read until it would block: libdispatch reports a hung-up pipe
        // once, with the last data, so its end is found by reading on.
        source.setEventHandler { [source] in
            var buffer = [UInt8](repeating: 0, count: 32 << 10)
            while true {
                let n: Int?
                do { n = try buffer.withUnsafeMutableBytes { try Descriptor.standardInput.tryRead(into: $0) } } catch { n = 0 }
                guard let n else { return }  // nothing more for now
                if n > 0 {
                    send.yield(.with { $0.stdin = Data(buffer[..<n]) })
                    continue
                }
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
        try? Descriptor.standardInput.setNonBlocking(false)
    }
}

/// Sends the terminal's new size when it changes (SIGWINCH).
final class ResizeWatcher {
    private let source: any DispatchSourceSignal

    init(send: AsyncStream<Berth_Agent_V1_ExecRequest>.Continuation) {
        Signals.ignore(Signal.windowChange.number)
        let source = DispatchSource.makeSignalSource(signal: Signal.windowChange.number, queue: .global())
        source.setEventHandler {
            guard let size = Terminal.size(of: .standardOutput) ?? Terminal.size(of: .standardInput) else { return }
            send.yield(.with { $0.resize = .with { $0.rows = UInt32(size.rows); $0.columns = UInt32(size.columns) } })
        }
        source.resume()
        self.source = source
    }

    func cancel() { source.cancel() }
}
