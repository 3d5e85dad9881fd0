import ArgumentParser
import BerthAPI
import BerthLinux
import BerthModel
import BerthTransport
import GRPCCore
import SwiftProtobuf

/// docker's question before a prune: asked whatever standard input is
/// (docker reads the answer from a pipe too); no answer, or anything but
/// yes, is no.
enum Confirmation {
    static func ask(_ warning: String) -> Bool {
        Console.write(Descriptor.standardOutput, Array("WARNING! \(warning)\nAre you sure you want to continue? [y/N] ".utf8))
        guard let answer = readLine() else { return false }
        return ["y", "yes"].contains(answer.filter { !$0.isWhitespace }.lowercased())
    }
}

/// The prunes, each made of the agent's own removals: what the agent
/// refuses to remove (a container that started meanwhile, an image or a
/// network still in use) is left, and the rest goes.
enum Pruning {
    /// Removes the containers that are not running; their IDs.
    static func containers(_ grpc: GRPCClient<NGHTTP2ClientTransport>) async throws -> [String] {
        let client = Berth_Agent_V1_Containers.Client(wrapping: grpc)
        var removed: [String] = []
        for c in try await client.list(.with { $0.all = true }).containers.map(Container.init(proto:))
        where c.status.state != .running && c.status.state != .paused {
            if await refusedOrDone({ _ = try await client.remove(.with { $0.container = c.id.rawValue }) }) { removed.append(c.id.rawValue) }
        }
        return removed
    }

    /// Removes the images no container uses: those without a name, or
    /// (`all`) every one; what was untagged and deleted, as `rmi` says it.
    static func images(all: Bool, _ grpc: GRPCClient<NGHTTP2ClientTransport>) async throws -> [String] {
        let images = Berth_Agent_V1_Images.Client(wrapping: grpc)
        let used = Set(try await Berth_Agent_V1_Containers.Client(wrapping: grpc).list(.with { $0.all = true }).containers.map(Container.init(proto:)).map(\.imageID))
        var lines: [String] = []
        for image in try await images.list(.init()).images.map({ try Image(proto: $0) }) where !used.contains(image.id) && (all || image.names.isEmpty) {
            // Each name untagged, the last one deleting the image (by its ID when it has none).
            for target in image.names.isEmpty ? [image.id] : image.names {
                _ = await refusedOrDone {
                    let r = try await images.remove(.with { $0.image = target })
                    lines += r.untagged.map { "untagged: \($0)" } + r.deleted.map { "deleted: \($0)" }
                }
            }
        }
        return lines
    }

    /// Removes the networks without containers; their names.
    static func networks(_ grpc: GRPCClient<NGHTTP2ClientTransport>) async throws -> [String] {
        let networks = Berth_Agent_V1_Networks.Client(wrapping: grpc)
        var removed: [String] = []
        for network in try await networks.list(.init()).networks where network.endpoints.isEmpty && network.driver == "bridge" {
            if await refusedOrDone({ _ = try await networks.remove(.with { $0.network = network.name }) }) { removed.append(network.name) }
        }
        return removed
    }

    /// Runs a removal: true when done, false when the agent refused it
    /// (in use, running, already gone).
    private static func refusedOrDone(_ removal: () async throws -> Void) async -> Bool {
        do {
            try await removal()
            return true
        } catch {
            return false
        }
    }

    static func report(_ title: String, _ lines: [String]) {
        guard !lines.isEmpty else { return }
        Console.print(title)
        lines.forEach { Console.print($0) }
        Console.print("")
    }
}

/// `berth container prune`: the containers that are not running.
struct ContainerPrune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "prune", abstract: "Remove all stopped containers.")
    @OptionGroup var agent: AgentOptions
    @Flag(name: .shortAndLong, help: "Do not ask for confirmation.") var force = false

    func run() async throws {
        guard force || Confirmation.ask("This will remove all stopped containers.") else { return }
        Pruning.report("Deleted Containers:", try await agent.connection().withClient { try await Pruning.containers($0) })
    }
}

/// `berth image prune [-a]`: images no container uses.
struct ImagePrune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "prune", abstract: "Remove unused images (without a name, or all with -a).")
    @OptionGroup var agent: AgentOptions
    @Flag(name: .shortAndLong, help: "Remove all images no container uses, not only those without a name.") var all = false
    @Flag(name: .shortAndLong, help: "Do not ask for confirmation.") var force = false

    func run() async throws {
        let warning = all ? "This will remove all images without at least one container associated to them." : "This will remove all dangling images."
        guard force || Confirmation.ask(warning) else { return }
        let all = self.all
        Pruning.report("Deleted Images:", try await agent.connection().withClient { try await Pruning.images(all: all, $0) })
    }
}

/// `berth network prune`: networks without containers.
struct NetworkPrune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "prune", abstract: "Remove all networks no container is on.")
    @OptionGroup var agent: AgentOptions
    @Flag(name: .shortAndLong, help: "Do not ask for confirmation.") var force = false

    func run() async throws {
        guard force || Confirmation.ask("This will remove all custom networks not used by at least one container.") else { return }
        Pruning.report("Deleted Networks:", try await agent.connection().withClient { try await Pruning.networks($0) })
    }
}

/// `berth system …`: prune, info and events, docker's spelling.
struct SystemCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "system", abstract: "Manage the agent's host as a whole.", subcommands: [SystemPrune.self, InfoCommand.self, EventsCommand.self])
}

/// `berth system prune [-a] [--volumes]`: stopped containers, networks
/// without containers, unused images, and (with --volumes) anonymous
/// volumes no container uses.
struct SystemPrune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "prune", abstract: "Remove stopped containers, unused networks and images (and volumes).")
    @OptionGroup var agent: AgentOptions
    @Flag(name: .shortAndLong, help: "Remove all images no container uses, not only those without a name.") var all = false
    @Flag(help: "Prune anonymous volumes too.") var volumes = false
    @Flag(name: .shortAndLong, help: "Do not ask for confirmation.") var force = false

    func run() async throws {
        var items = ["all stopped containers", "all networks not used by at least one container"]
        if volumes { items.append("all anonymous volumes not used by at least one container") }
        items.append(all ? "all images without at least one container associated to them" : "all dangling images")
        guard force || Confirmation.ask("This will remove:\n" + items.map { "  - \($0)\n" }.joined()) else { return }
        let (all, volumes) = (self.all, self.volumes)
        try await agent.connection().withClient { grpc in
            Pruning.report("Deleted Containers:", try await Pruning.containers(grpc))
            Pruning.report("Deleted Networks:", try await Pruning.networks(grpc))
            if volumes {
                let pruned = try await Berth_Agent_V1_Volumes.Client(wrapping: grpc).prune(.init())
                Pruning.report("Deleted Volumes:", pruned.removed)
            }
            Pruning.report("Deleted Images:", try await Pruning.images(all: all, grpc))
        }
    }
}
