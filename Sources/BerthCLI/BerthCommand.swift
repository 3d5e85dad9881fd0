import ArgumentParser
import BerthAPI
import BerthLinux
import BerthModel
import FoundationEssentials
import GRPCCore

/// Options every command that talks to an agent takes.
struct AgentOptions: ParsableArguments {
    @Option(name: [.customShort("H"), .long], help: "The agent to talk to: unix:///PATH or tcp://HOST:PORT (default $BERTH_HOST, then unix:///run/berth/agent.sock).")
    var host: String?

    @Option(help: "Mutual TLS for a tcp:// agent: a directory with ca.pem, cert.pem and key.pem (default $BERTH_CERT_PATH).")
    var tlsDir: String?

    func connection() throws -> AgentConnection { try AgentConnection(host: host, tlsDir: tlsDir) }
}

/// `berth`: the command line for Berth, with docker's spelling.
public struct BerthCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "berth",
        abstract: "Run and manage containers on Berth agents.",
        version: CLIVersion.version,
        subcommands: [
            RunCommand.self, CreateCommand.self, StartCommand.self, StopCommand.self, RestartCommand.self, KillCommand.self, TopCommand.self, PauseCommand.self,
            UnpauseCommand.self, RemoveCommand.self, PsCommand.self, PortCommand.self, InspectCommand.self, WaitCommand.self, UpdateCommand.self,
            LogsCommand.self, ExecCommand.self, StatsCommand.self, EventsCommand.self, ContainerCommand.self, ImageCommand.self, ImagesAlias.self, TagCommand.self, ImportCommand.self, PullCommand.self, LoadCommand.self, SaveCommand.self, RmiCommand.self, VolumeCommand.self, NetworkCommand.self, NodeCommand.self, ServiceCommand.self, ControllerCommand.self, SystemCommand.self, CompletionCommand.self, LoginCommand.self, LogoutCommand.self, VersionCommand.self, InfoCommand.self,
        ])

    public init() {}

    /// Runs the command line and exits with a status a script can test:
    /// 0 on success, 1 on a reported error, 2 on a usage error; `run`, as
    /// docker's, 125 when Berth failed (a bad flag, no such image, a name
    /// in use) and the container's own status otherwise.
    public static func runAndExit() async -> Never {
        let given = Array(CommandLine.arguments.dropFirst())
        // A shell asking for completions: ArgumentParser's own (asynchronous) entry answers.
        if given.first == "---completion" {
            await main()
            Processes.exit(0)
        }
        let run = isRun(given)
        if let unknown = unknownCommand(given) {
            Console.error(unknown)
            Processes.exit(1)
        }
        do {
            if let host = Self.agentHost(given) { AgentConnection.connectEarly(host: host) }
            let arguments = Self.joiningNegativeValues(Self.movingGlobalOptions(given))
            // Asynchronous parsing: the name completions ask the agent.
            let leaf = await Self.parseLeaf(arguments)
            var command: any ParsableCommand
            if let leaf { command = leaf } else { command = try await asyncParseAsRoot(arguments) }
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            exit(withError: nil)
        } catch let error as BerthError {
            Console.error("berth: \(error)")
            Processes.exit(run ? 125 : 1)
        } catch {
            if run, !(error is ExitCode), exitCode(for: error) != .success {
                Console.error(fullMessage(for: error))
                Processes.exit(125)
            }
            exit(withError: error)
        }
    }
}

extension BerthCommand {
    /// Options that docker takes before the command name (`berth -H unix:///x.sock ps`).
    static let globalOptions: Set<String> = ["-H", "--host"]

    /// Moves global options written before the command path to just after
    /// it, where each command declares them, leaving the command's own
    /// arguments (which may include a container's command line) untouched.
    static func movingGlobalOptions(_ arguments: [String]) -> [String] {
        var (globals, _, rest) = leadingGlobalOptions(arguments)
        guard !globals.isEmpty else { return arguments }
        // Walk the subcommand tree as far as the arguments name it.
        var path: [String] = []
        var commands = configuration.subcommands
        while let next = rest.first, let match = subcommand(named: next, in: commands) {
            path.append(next)
            rest = rest.dropFirst()
            commands = match.configuration.subcommands
        }
        return path + globals + rest
    }

    /// The global options written before the command (`-H X`, `--host=X`),
    /// the host they give (the last one), and the arguments after them.
    static func leadingGlobalOptions(_ arguments: [String]) -> (globals: [String], host: String?, rest: ArraySlice<String>) {
        var globals: [String] = []
        var host: String?
        var rest = arguments[...]
        while let first = rest.first, first.hasPrefix("-") {
            if globalOptions.contains(first), rest.count >= 2 {
                globals += rest.prefix(2)
                host = rest.dropFirst().first
                rest = rest.dropFirst(2)
            } else if let equals = first.firstIndex(of: "="), globalOptions.contains(String(first[..<equals])) {
                globals.append(first)
                host = String(first[first.index(after: equals)...])
                rest = rest.dropFirst()
            } else {
                break
            }
        }
        return (globals, host, rest)
    }

    /// Options whose documented values include negative numbers.
    static let negativeValueOptions: Set<String> = ["--pids-limit", "--memory-swap", "--oom-score-adj", "--memory-swappiness"]

    /// `--pids-limit -1` as `--pids-limit=-1`: docker's documented spelling,
    /// which the parser would otherwise read as an option of its own.
    static func joiningNegativeValues(_ arguments: [String]) -> [String] {
        var out: [String] = []
        var i = 0
        while i < arguments.count {
            let argument = arguments[i]
            if argument == "--" {
                out += arguments[i...]
                break
            }
            if negativeValueOptions.contains(argument), i + 1 < arguments.count, arguments[i + 1].hasPrefix("-"),
                arguments[i + 1].dropFirst().allSatisfy(\.isNumber), arguments[i + 1].count > 1
            {
                out.append(argument + "=" + arguments[i + 1])
                i += 2
                continue
            }
            out.append(argument)
            i += 1
        }
        return out
    }

    /// Commands that do not talk to the agent.
    static let notAgentCommands: Set<String> = ["service", "node", "login", "logout", "help", "completion"]

    /// For a command that talks to the agent: the host given before the
    /// command (`.some(nil)` when none is: the environment's or the
    /// default). nil for a command that does not, or for help.
    static func agentHost(_ arguments: [String]) -> String?? {
        let (_, host, rest) = leadingGlobalOptions(arguments)
        guard let command = rest.first, !command.hasPrefix("-"), !notAgentCommands.contains(command), !rest.contains("--help")
        else { return nil }
        return .some(host)
    }

    /// A top-level command without subcommands (`run`, `ps`…) parsed on its
    /// own: ArgumentParser then builds the command's arguments from its type
    /// fewer times than when it walks down from the root (2–3 ms of
    /// `berth run`). Whatever the command does not take — help, a usage
    /// error, a failed validation — is left to the root's parse (nil), which
    /// reports it with the whole command path.
    static func parseLeaf(_ arguments: [String]) async -> (any ParsableCommand)? {
        guard let name = arguments.first, !name.hasPrefix("-"),
            let leaf = subcommand(named: name, in: configuration.subcommands),
            leaf.configuration.subcommands.isEmpty
        else { return nil }
        // Help comes back as a command of ArgumentParser's own.
        let rest = Array(arguments.dropFirst())
        let parsed: (any ParsableCommand)?
        if let asyncLeaf = leaf as? any AsyncParsableCommand.Type {
            parsed = try? await asyncLeaf.asyncParseAsRoot(rest)
        } else {
            parsed = try? leaf.parseAsRoot(rest)
        }
        guard let parsed, ObjectIdentifier(type(of: parsed)) == ObjectIdentifier(leaf)
        else { return nil }
        return parsed
    }

    /// The command among `commands` that `name` names (or aliases).
    private static func subcommand(named name: String, in commands: [any ParsableCommand.Type]) -> (any ParsableCommand.Type)? {
        commands.first { command in
            let configuration = command.configuration
            return (configuration.commandName ?? String(describing: command).lowercased()) == name || configuration.aliases.contains(name)
        }
    }
}

/// `berth images`: docker's short form of `berth image ls`.
struct ImagesAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "images", abstract: "List images (same as image ls).")
    @OptionGroup var list: ImageListOptions
    func run() async throws {
        var command = ImageList()
        command.agent = list.agent
        command.format = list.format
        command.quiet = list.quiet
        command.digests = list.digests
        command.noTrunc = list.noTrunc
        command.all = list.all
        command.filter = list.filter
        try await command.run()
    }
}

struct ImageListOptions: ParsableArguments {
    @OptionGroup var agent: AgentOptions
    @Option(help: "A Go template ('table {{.Repository}}\\t{{.ID}}'), json (one object per line), or table (the default).") var format: String?
    @Flag(name: .shortAndLong, help: "Only show image IDs.") var quiet = false
    @Flag(help: "Show digests.") var digests = false
    @Flag(help: "Do not truncate IDs.") var noTrunc = false
    @Flag(name: .shortAndLong, help: "Show all images (Berth keeps no intermediate images: the same list).") var all = false
    @Option(name: .shortAndLong, help: "Filter: dangling=true|false, reference=PATTERN (* matches within a part), label=KEY[=VALUE].") var filter: [String] = []
}

enum CLIVersion {
    static let version = "0.1.0"
}
