import ArgumentParser
import BerthAPI
import BerthLinux
import BerthModel
import BerthTemplate
import SwiftProtobuf

/// `berth container …`: docker's group spelling of the container commands
/// (`container ls`, `container rm`, `container inspect`…).
struct ContainerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "container", abstract: "Manage containers.",
        subcommands: [
            RunCommand.self, CreateCommand.self, StartCommand.self, StopCommand.self, RestartCommand.self, KillCommand.self, PauseCommand.self,
            UnpauseCommand.self, RemoveCommand.self, ContainerList.self, PortCommand.self, ContainerInspect.self, WaitCommand.self,
            UpdateCommand.self, LogsCommand.self, ExecCommand.self, StatsCommand.self, TopCommand.self, ContainerPrune.self,
        ])
}

/// `berth container ls`: `berth ps`.
struct ContainerList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List containers.", aliases: ["ps", "list"])
    @OptionGroup var ps: PsCommand
    func run() async throws { try await ps.run() }
}

/// `berth container inspect`: containers only.
struct ContainerInspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show containers in detail (docker's JSON).")
    @OptionGroup var agent: AgentOptions
    @Option(name: .shortAndLong, help: "A Go template ('{{.State.Status}}'), json (one line), or record (Berth's own record).") var format: String?
    @Argument(completion: NameCompletion.containers) var names: [String]

    func run() async throws {
        var inspect = InspectCommand()
        inspect.agent = agent
        inspect.format = format
        inspect.type = "container"
        inspect.names = names
        try await inspect.run()
    }
}

/// `berth restart`: each container stopped (the stop signal, then
/// SIGKILL after the grace period) and started again, as docker's.
struct RestartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restart", abstract: "Restart containers.")
    @OptionGroup var agent: AgentOptions
    @Option(name: [.customShort("t"), .long], help: "Seconds to wait before killing.") var time: Int32?
    @Argument(completion: NameCompletion.containers) var containers: [String]

    func run() async throws {
        let time = self.time
        try await EachContainer.run(agent, containers) { c, name in
            try await StopCommand.stop(c, name, time: time)
            let started = try await c.start(.with { $0.container = name })
            started.warnings.forEach { Console.error("WARNING: \($0)") }
        }
    }
}

/// `berth top CONTAINER [ps OPTIONS]`: the container's processes as the
/// agent's host's `ps` shows them (`-ef` by default), docker's columns.
struct TopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "top", abstract: "Show the running processes of a container.")
    @OptionGroup var agent: AgentOptions
    @Argument(completion: NameCompletion.containers) var container: String
    @Argument(parsing: .captureForPassthrough, help: "Options for ps (default -ef).") var psOptions: [String] = []

    func run() async throws {
        let (container, options) = (self.container, psOptions)
        let table = try await agent.connection().withClient { grpc in
            try await Berth_Agent_V1_Containers.Client(wrapping: grpc).top(.with {
                $0.container = container
                $0.psArgs = options
            })
        }
        let lines = [table.titles.joined(separator: "\t")] + table.processes.map { $0.fields.joined(separator: "\t") }
        // docker's tabwriter for top: columns 20 wide at least, 3 spaces apart.
        Console.write(Descriptor.standardOutput, Array(TabWriter.align(lines.joined(separator: "\n") + "\n", minWidth: 20, padding: 3).utf8))
    }
}

/// `berth tag SOURCE TARGET`: `berth image tag`.
struct TagCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tag", abstract: "Give an image another name (same as image tag).")
    @OptionGroup var tag: ImageTag
    func run() async throws { try await tag.run() }
}

/// `berth import FILE [REFERENCE]`: `berth image import`.
struct ImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "import", abstract: "Make an image from a root filesystem tar (same as image import).")
    @OptionGroup var image: ImageImport
    func run() async throws { try await image.run() }
}

extension BerthCommand {
    /// The names the command line knows at its top level.
    static var topLevelNames: Set<String> {
        var names: Set<String> = ["help"]
        for command in configuration.subcommands {
            let c = command.configuration
            names.insert(c.commandName ?? String(describing: command).lowercased())
            names.formUnion(c.aliases)
        }
        return names
    }

    /// docker's answer to a command it does not have, or nil.
    static func unknownCommand(_ arguments: [String]) -> String? {
        let (_, _, rest) = leadingGlobalOptions(arguments)
        guard let first = rest.first, !first.hasPrefix("-"), !topLevelNames.contains(first) else { return nil }
        return "berth: '\(first)' is not a berth command.\nSee 'berth --help'"
    }

    /// `run` (or `container run`): docker's run exits 125 when the engine,
    /// not the container, failed.
    static func isRun(_ arguments: [String]) -> Bool {
        let (_, _, rest) = leadingGlobalOptions(arguments)
        return rest.first == "run" || (rest.first == "container" && rest.dropFirst().first == "run")
    }
}
