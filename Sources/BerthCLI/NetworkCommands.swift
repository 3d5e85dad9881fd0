import ArgumentParser
import BerthAPI
import BerthModel
import BerthTemplate
import FoundationEssentials
import GRPCCore
import SwiftProtobuf
import BerthTransport

/// `berth network …`
struct NetworkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network", abstract: "Manage networks.",
        subcommands: [
            NetworkCreate.self, NetworkList.self, NetworkInspect.self, NetworkRemove.self, NetworkConnect.self, NetworkDisconnect.self, NetworkPrune.self,
        ])
}

/// Where `network` commands go: an agent (its bridge networks), or the
/// controller (the cluster's overlay networks) when `--controller` is
/// given, or `BERTH_CONTROLLER` is set and neither `-H` nor `BERTH_HOST`
/// is. `network create --driver overlay` always goes to the controller.
struct NetworkTarget: ParsableArguments {
    @Option(name: [.customShort("H"), .long], help: "The agent to talk to: unix:///PATH or tcp://HOST:PORT (default $BERTH_HOST, then unix:///run/berth/agent.sock).")
    var host: String?
    @Option(help: "The controller, for overlay networks: HOST:PORT, or several as HOST:PORT,HOST:PORT (default $BERTH_CONTROLLER).")
    var controller: String?
    @Option(help: "Mutual TLS: a directory with ca.pem, cert.pem and key.pem (default $BERTH_CERT_PATH).")
    var tlsDir: String?

    var toController: Bool {
        let env = ProcessInfo.processInfo.environment
        if controller != nil { return true }
        if host != nil || !(env["BERTH_HOST"] ?? "").isEmpty { return false }
        return !(env["BERTH_CONTROLLER"] ?? "").isEmpty
    }

    /// Runs `call` on the controller's Networks service or the agent's: they take the same messages.
    func call<R: Sendable>(controller useController: Bool? = nil, _ call: @escaping @Sendable (NetworkCalls) async throws -> R) async throws -> R {
        if useController ?? toController {
            var options = try ControllerOptions.parse([])
            options.controller = controller
            options.tlsDir = tlsDir
            return try await options.withController { grpc in try await call(NetworkCalls(controller: .init(wrapping: grpc))) }
        }
        return try await AgentConnection(host: host, tlsDir: tlsDir).withClient { grpc in try await call(NetworkCalls(agent: .init(wrapping: grpc))) }
    }
}

/// The calls the agent's and the controller's Networks services share.
struct NetworkCalls: Sendable {
    let create: @Sendable (Berth_Agent_V1_CreateNetworkRequest) async throws -> Berth_Agent_V1_CreateNetworkResponse
    let list: @Sendable (Berth_Agent_V1_ListNetworksRequest) async throws -> Berth_Agent_V1_ListNetworksResponse
    let inspect: @Sendable (Berth_Agent_V1_InspectNetworkRequest) async throws -> Berth_Agent_V1_InspectNetworkResponse
    let remove: @Sendable (Berth_Agent_V1_RemoveNetworkRequest) async throws -> Berth_Agent_V1_RemoveNetworkResponse

    init(agent c: Berth_Agent_V1_Networks.Client<NGHTTP2ClientTransport>) {
        create = { try await c.create($0) }
        list = { try await c.list($0) }
        inspect = { try await c.inspect($0) }
        remove = { try await c.remove($0) }
    }

    init(controller c: Berth_Controller_V1_Networks.Client<NGHTTP2ClientTransport>) {
        create = { try await c.create($0) }
        list = { try await c.list($0) }
        inspect = { try await c.inspect($0) }
        remove = { try await c.remove($0) }
    }
}

/// A network as `inspect` and `ls --format json` show it.
struct NetworkView: Encodable {
    struct Endpoint: Encodable {
        var containerID: String
        var containerName: String
        var ipv4Address: String
        var macAddress: String
        var aliases: [String]
    }

    var id: String
    var name: String
    var driver: String
    var subnet: String
    var gateway: String
    var bridge: String
    var `internal`: Bool
    var labels: [String: String]
    var createdAt: Date
    var containers: [Endpoint]
    /// An overlay network's VXLAN identifier.
    var vni: UInt32?

    init(_ n: Berth_Agent_V1_Network) {
        id = n.id
        name = n.name
        driver = n.driver
        subnet = n.subnet
        gateway = n.gateway
        bridge = n.bridge
        self.internal = n.internal
        labels = n.labels
        createdAt = n.createdAt.date
        vni = n.vni == 0 ? nil : n.vni
        containers = n.endpoints.map {
            Endpoint(containerID: $0.containerID, containerName: $0.containerName, ipv4Address: $0.ipv4Address, macAddress: $0.macAddress, aliases: $0.aliases)
        }
    }
}

struct NetworkCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a bridge network (on an agent) or an overlay network (on the controller).")
    @OptionGroup var target: NetworkTarget
    @Option(name: [.customShort("d"), .long], help: "bridge (the default: on the agent) or overlay (across the cluster's nodes: on the controller).") var driver = "bridge"
    @Option(help: "Subnet in CIDR form (a free /24 of 10.89.0.0/16 when left out).") var subnet: String?
    @Option(help: "Gateway address in the subnet (its first host when left out).") var gateway: String?
    @Flag(help: "No route out of the network.") var `internal` = false
    @Option(name: .customLong("label"), help: "Set a label (KEY=VALUE).") var labels: [String] = []
    @Argument var name: String

    func run() async throws {
        try Network.validate(name: name)
        if let subnet { _ = try IPv4Subnet(parsing: subnet) }
        let parsed = KeyValues.labels(labels)
        guard ["bridge", "overlay"].contains(driver) else { throw BerthError.invalid("--driver \(driver): expected bridge or overlay") }
        let request = Berth_Agent_V1_CreateNetworkRequest.with {
            $0.name = name
            $0.subnet = subnet ?? ""
            $0.gateway = gateway ?? ""
            $0.internal = self.internal
            $0.labels = parsed
            $0.driver = driver
        }
        let response = try await target.call(controller: driver == "overlay" ? true : nil) { try await $0.create(request) }
        Console.print(response.network.id)
    }
}

struct NetworkList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List networks.", aliases: ["list"])
    @OptionGroup var target: NetworkTarget
    @Option(help: "A Go template ('table {{.Name}}\\t{{.Subnet}}'), json (one object per line), or table (the default).") var format: String?
    @Flag(name: .shortAndLong, help: "Only show IDs.") var quiet = false
    @Flag(help: "Do not truncate IDs.") var noTrunc = false

    func run() async throws {
        let networks = try await target.call { try await $0.list(.init()).networks }.map(NetworkView.init)
        if quiet {
            networks.forEach { Console.print(noTrunc ? $0.id : String($0.id.prefix(12))) }
            return
        }
        try DockerRows.networks(networks, truncate: !noTrunc).print(format)
    }
}

struct NetworkInspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show networks in detail (docker's JSON).")
    @OptionGroup var target: NetworkTarget
    @Option(name: .shortAndLong, help: "A Go template ('{{.IPAM.Config}}'), or json (one line).") var format: String?
    @Argument(completion: NameCompletion.networks) var networks: [String]

    func run() async throws {
        try await Inspected.each(networks, format: format) { name in
            let network = try await target.call { try await $0.inspect(.with { $0.network = name }).network }
            return DockerShape.network(NetworkView(network))
        }
    }
}

struct NetworkRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove networks and their bridges.", aliases: ["remove"])
    @OptionGroup var target: NetworkTarget
    @Argument(completion: NameCompletion.networks) var networks: [String]

    func run() async throws {
        try await EachName.run(networks) { name in
            _ = try await target.call { try await $0.remove(.with { $0.network = name }) }
            Console.print(name)
        }
    }
}

struct NetworkConnect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "connect", abstract: "Put a container on a network (at once if it runs).")
    @OptionGroup var agent: AgentOptions
    @Option(help: "Another name for the container on this network.") var alias: [String] = []
    @Option(help: "The container's IPv4 address on the network.") var ip: String?
    @Argument(completion: NameCompletion.networks) var network: String
    @Argument(completion: NameCompletion.containers) var container: String

    func run() async throws {
        if let ip { _ = try IPv4Address(parsing: ip) }
        let request = Berth_Agent_V1_ConnectNetworkRequest.with {
            $0.network = network
            $0.container = container
            $0.aliases = alias
            $0.ipv4Address = ip ?? ""
        }
        _ = try await agent.connection().withClient { grpc in
            try await Berth_Agent_V1_Networks.Client(wrapping: grpc).connect(request)
        }
    }
}

struct NetworkDisconnect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "disconnect", abstract: "Take a container off a network (at once if it runs).")
    @OptionGroup var agent: AgentOptions
    @Argument(completion: NameCompletion.networks) var network: String
    @Argument(completion: NameCompletion.containers) var container: String

    func run() async throws {
        let request = Berth_Agent_V1_DisconnectNetworkRequest.with {
            $0.network = network
            $0.container = container
        }
        _ = try await agent.connection().withClient { grpc in
            try await Berth_Agent_V1_Networks.Client(wrapping: grpc).disconnect(request)
        }
    }
}
