import ArgumentParser
import BerthAPI
import BerthModel
import BerthTransport
import FoundationEssentials
import GRPCCore
import SwiftProtobuf

/// Where the controller is: `--controller`, then `BERTH_CONTROLLER`, then
/// 127.0.0.1:7450; several controllers as a comma-separated list.
struct ControllerOptions: ParsableArguments {
    @Option(help: "The controller: HOST:PORT or tcp://HOST:PORT, or several as HOST:PORT,HOST:PORT,... (default $BERTH_CONTROLLER, then 127.0.0.1:7450).")
    var controller: String?

    @Option(help: "Mutual TLS: a directory with ca.pem, cert.pem and key.pem (default $BERTH_CERT_PATH).")
    var tlsDir: String?

    /// Runs `body` with a client of the leading controller: a controller
    /// that does not lead names the one that does, which is then asked; one
    /// that cannot be reached is passed over for the next in the list. A
    /// call that reached a controller is never sent twice.
    func withController<R: Sendable>(_ body: @Sendable (GRPCClient<NGHTTP2ClientTransport>) async throws -> R) async throws -> R {
        let given = controller ?? ProcessInfo.processInfo.environment["BERTH_CONTROLLER"].flatMap { $0.isEmpty ? nil : $0 }
        var queue = (given ?? "").split(separator: ",").map(String.init)
        if queue.isEmpty { queue = [given ?? "tcp://127.0.0.1:7450"] }
        var redirects = 0
        var last: BerthError?
        // With several, a controller that takes a connection but does not
        // answer (frozen, overloaded) is passed over: a cheap call that
        // changes nothing goes first, and must be answered within 3 s.
        let probe = queue.count > 1
        while !queue.isEmpty {
            let address = queue.removeFirst()
            do {
                return try await AgentConnection.controller(address, tlsDir: tlsDir).withClient { grpc in
                    if probe { try await Self.probe(grpc, address) }
                    return try await body(grpc)
                }
            } catch let error as BerthError {
                last = error
                if let leader = error.redirect, redirects < 3 {
                    redirects += 1
                    queue.insert(leader, at: 0)
                } else if error.code == .unavailable && (error.message.hasPrefix(AgentConnection.notConnected) || error.redirect != nil) && !queue.isEmpty {
                    continue
                } else {
                    throw error
                }
            }
        }
        throw last ?? BerthError.invalid("no controller address given")
    }

    private static func probe(_ grpc: GRPCClient<NGHTTP2ClientTransport>, _ address: String) async throws {
        var options = CallOptions.defaults
        options.timeout = .seconds(3)
        do {
            _ = try await Berth_Controller_V1_Controllers.Client(wrapping: grpc).list(.init(), options: options)
        } catch let error as RPCError where error.code == .deadlineExceeded {
            throw BerthError(.unavailable, "\(AgentConnection.notConnected) the Berth controller at \(address): it took the connection but did not answer within 3 s")
        }
    }
}

/// `berth node …`: the cluster's agents, as the controller knows them.
struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Manage the cluster's nodes (through the controller).",
        subcommands: [NodeList.self, NodeInspect.self, NodeDrain.self, NodeActivate.self, NodeLabel.self, NodeRemove.self])
}

/// A node as `inspect` and `ls --format json` show it.
struct NodeView: Encodable {
    var id: String
    var hostname: String
    var address: String
    var state: String
    var availability: String
    /// Set by operators (`berth node label`): `node.labels.KEY` in constraints.
    var labels: [String: String]
    /// The agent's own (`berth-agent --label`): `engine.labels.KEY` in constraints.
    var agentLabels: [String: String]
    var cpus: Double
    var memoryBytes: Int64
    var registeredAt: Date
    var lastHeartbeat: Date
    var agentVersion: String

    init(_ n: Berth_Controller_V1_ClusterNode) {
        id = n.id
        hostname = n.hostname
        address = n.address
        state = n.state == .ready ? "ready" : "down"
        availability = n.availability == .drain ? "drain" : "active"
        labels = n.labels
        agentLabels = n.agentLabels
        cpus = Double(n.allocatable.milliCpu) / 1000
        memoryBytes = n.allocatable.memoryBytes
        registeredAt = n.registeredAt.date
        lastHeartbeat = n.lastHeartbeat.date
        agentVersion = n.agentVersion
    }
}

struct NodeList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List nodes.", aliases: ["list"])
    @OptionGroup var options: ControllerOptions
    @Flag(name: .shortAndLong, help: "Only display node IDs.") var quiet = false
    @Option(help: "Output format: json, or table (the default).") var format: String?

    func run() async throws {
        let format = try OutputFormat(format)
        let reply = try await options.withController { grpc in
            try await Berth_Controller_V1_Nodes.Client(wrapping: grpc).list(.init())
        }
        Console.stale(reply.stale)
        let nodes = reply.nodes
        if quiet {
            nodes.forEach { Console.print($0.id) }
            return
        }
        switch format {
        case .json: try Console.json(nodes.map(NodeView.init))
        case .human:
            let rows = nodes.map { n -> [String] in
                let view = NodeView(n)
                let labels = (view.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                    + view.agentLabels.sorted { $0.key < $1.key }.map { "engine.\($0.key)=\($0.value)" }).joined(separator: ",")
                return [String(n.id.prefix(12)), n.hostname, n.address, view.state.uppercased(), view.availability.capitalized,
                        "\(n.allocatable.milliCpu / 1000) / \(Human.size(view.memoryBytes))", labels]
            }
            Console.print(Table(rows: [["ID", "HOSTNAME", "ADDRESS", "STATUS", "AVAILABILITY", "CPUS / MEMORY", "LABELS"]] + rows).text)
        }
    }
}

struct NodeInspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show nodes in detail (JSON).")
    @OptionGroup var options: ControllerOptions
    @Argument var nodes: [String]

    func run() async throws {
        var views: [NodeView] = []
        try await EachName.run(nodes) { name in
            let reply = try await options.withController { grpc in
                try await Berth_Controller_V1_Nodes.Client(wrapping: grpc).inspect(.with { $0.node = name })
            }
            Console.stale(reply.stale)
            views.append(NodeView(reply.node))
        }
        try Console.json(views)
    }
}

/// Sends one node update and prints the node's ID.
func updateNode(_ options: ControllerOptions, _ request: Berth_Controller_V1_UpdateNodeRequest) async throws {
    let node = try await options.withController { grpc in
        try await Berth_Controller_V1_Nodes.Client(wrapping: grpc).update(request).node
    }
    Console.print(node.id)
}

struct NodeDrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "drain", abstract: "Take no new work on a node and move its replicas away.")
    @OptionGroup var options: ControllerOptions
    @Argument var node: String
    func run() async throws { try await updateNode(options, .with { $0.node = node; $0.availability = .drain }) }
}

struct NodeActivate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "activate", abstract: "Let a drained node take work again.")
    @OptionGroup var options: ControllerOptions
    @Argument var node: String
    func run() async throws { try await updateNode(options, .with { $0.node = node; $0.availability = .active }) }
}

struct NodeRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove nodes from the cluster: down ones, or with --force any. Their replicas run elsewhere; a removed node may not join again.",
        aliases: ["remove"])
    @OptionGroup var options: ControllerOptions
    @Flag(name: .shortAndLong, help: "Also remove a node that is ready (its agent is refused from then on).") var force = false
    @Argument var nodes: [String]

    func run() async throws {
        let force = self.force
        try await EachName.run(nodes) { name in
            let id = try await options.withController { grpc in
                try await Berth_Controller_V1_Nodes.Client(wrapping: grpc).remove(.with { $0.node = name; $0.force = force }).id
            }
            Console.print(id)
        }
    }
}

struct NodeLabel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "label",
        abstract: "Add or remove a node's operator labels (node.labels.KEY); the agent's own labels (engine.labels.KEY) come from its --label flags.")
    @OptionGroup var options: ControllerOptions
    @Option(name: .customLong("add"), help: "A label to add, KEY=VALUE (repeatable).") var add: [String] = []
    @Option(name: .customLong("rm"), help: "A label key to remove (repeatable).") var remove: [String] = []
    @Argument var node: String

    func run() async throws {
        var labels: [String: String] = [:]
        for entry in add {
            let parts = entry.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, !parts[0].isEmpty else { throw BerthError.invalid("--add \"\(entry)\": expected KEY=VALUE") }
            labels[String(parts[0])] = String(parts[1])
        }
        guard !labels.isEmpty || !remove.isEmpty else { throw BerthError.invalid("nothing to change: give --add KEY=VALUE or --rm KEY") }
        let removed = remove
        try await updateNode(options, .with { $0.node = node; $0.addLabels = labels; $0.removeLabels = removed })
    }
}
