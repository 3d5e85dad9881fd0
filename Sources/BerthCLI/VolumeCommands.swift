import ArgumentParser
import BerthAPI
import BerthLinux
import BerthModel
import BerthTemplate
import FoundationEssentials
import GRPCCore
import SwiftProtobuf

/// `berth volume …`
struct VolumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volume", abstract: "Manage volumes.",
        subcommands: [VolumeCreate.self, VolumeList.self, VolumeInspect.self, VolumeRemove.self, VolumePrune.self])
}

/// A volume as `inspect` and `ls --format json` show it.
struct VolumeView: Encodable {
    var name: String
    var driver: String
    var mountpoint: String
    var labels: [String: String]
    var anonymous: Bool
    var createdAt: Date
    var usedBy: [String]

    init(_ v: Berth_Agent_V1_Volume) {
        name = v.name
        driver = v.driver
        mountpoint = v.mountpoint
        labels = v.labels
        anonymous = v.anonymous
        // docker's mark of an anonymous volume.
        if anonymous { labels["com.docker.volume.anonymous"] = "" }
        createdAt = v.createdAt.date
        usedBy = v.usedBy
    }
}

struct VolumeCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a volume.")
    @OptionGroup var agent: AgentOptions
    @Option(name: .customLong("label"), help: "Set a label (KEY=VALUE).") var labels: [String] = []
    @Argument(help: "The name; a random one when left out.") var name: String?

    func run() async throws {
        if let name { try VolumeName.validate(name) }
        let (name, labels) = (self.name ?? "", KeyValues.labels(labels))
        let response = try await agent.connection().withClient { grpc in
            try await Berth_Agent_V1_Volumes.Client(wrapping: grpc).create(.with {
                $0.name = name
                $0.labels = labels
            })
        }
        Console.print(response.volume.name)
    }
}

struct VolumeList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List volumes.", aliases: ["list"])
    @OptionGroup var agent: AgentOptions
    @Option(help: "A Go template ('table {{.Name}}\\t{{.Mountpoint}}'), json (one object per line), or table (the default).") var format: String?
    @Flag(name: .shortAndLong, help: "Only show names.") var quiet = false
    @Option(name: .shortAndLong, help: "Filter: name=…, dangling=true|false, label=KEY[=VALUE] (repeatable).") var filter: [String] = []

    func run() async throws {
        let filters = try KeyValues.filters(filter)
        let volumes = try await agent.connection().withClient { grpc in
            try await Berth_Agent_V1_Volumes.Client(wrapping: grpc).list(.with { $0.filters = filters }).volumes
        }.map(VolumeView.init)
        if quiet {
            volumes.forEach { Console.print($0.name) }
            return
        }
        try DockerRows.volumes(volumes).print(format)
    }
}

struct VolumeInspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show volumes in detail (docker's JSON).")
    @OptionGroup var agent: AgentOptions
    @Option(name: .shortAndLong, help: "A Go template ('{{.Mountpoint}}'), or json (one line).") var format: String?
    @Argument(completion: NameCompletion.volumes) var names: [String]

    func run() async throws {
        try await Inspected.each(names, format: format) { name in
            try await agent.connection().withClient { try await Inspected.volume(name, $0) }
        }
    }
}

struct VolumeRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove volumes and their data.", aliases: ["remove"])
    @OptionGroup var agent: AgentOptions
    @Flag(name: .shortAndLong, help: "Do not fail for a volume that does not exist.") var force = false
    @Argument(completion: NameCompletion.volumes) var names: [String]

    func run() async throws {
        try await EachName.run(names, tolerate: { force && $0.code == .notFound }) { name in
            _ = try await agent.connection().withClient { grpc in
                try await Berth_Agent_V1_Volumes.Client(wrapping: grpc).remove(.with { $0.name = name })
            }
            Console.print(name)
        }
    }
}

struct VolumePrune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "prune", abstract: "Remove the anonymous volumes no container uses.")
    @OptionGroup var agent: AgentOptions
    @Flag(name: .shortAndLong, help: "Do not ask for confirmation.") var force = false

    func run() async throws {
        guard force || Confirmation.ask("This will remove anonymous volumes not used by any container.") else { return }
        let response = try await agent.connection().withClient { grpc in
            try await Berth_Agent_V1_Volumes.Client(wrapping: grpc).prune(.init())
        }
        if !response.removed.isEmpty {
            Console.print("Deleted Volumes:")
            response.removed.forEach { Console.print($0) }
            Console.print("")
        }
        Console.print("Total reclaimed space: \(Human.size(response.reclaimedBytes))")
    }
}
