import ArgumentParser
import BerthAPI
import BerthModel
import GRPCCore

/// `berth info`: the agent's host, as `docker info` shows it.
struct InfoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "Show information about the agent's host.")

    @OptionGroup var agent: AgentOptions
    @Option(help: "Output format: json, or table (the default).")
    var format: String?

    func run() async throws {
        let format = try OutputFormat(format)
        let info = try await agent.connection().withClient { grpc in
            let node = Berth_Agent_V1_Node.Client(wrapping: grpc)
            return try NodeInfo(proto: try await node.info(Berth_Agent_V1_GetNodeInfoRequest()).info)
        }
        switch format {
        case .json: try Console.json(info)
        case .human: Console.print(Self.render(info))
        }
    }

    static func render(_ info: NodeInfo) -> String {
        let mode: String
        switch info.cgroupMode {
        case .v1: mode = "1"
        case .v2: mode = "2"
        case .hybrid: mode = "1 (hybrid: v1 controllers, v2 mounted beside them)"
        }
        var lines = [
            "Server:",
            " Containers: \(info.containers.total)",
            "  Running: \(info.containers.running)",
            "  Paused: \(info.containers.paused)",
            "  Stopped: \(info.containers.stopped)",
            " Images: \(info.images)",
            " Server Version: \(info.version.version)",
            " API Version: \(info.version.apiVersion)",
            " Cgroup Version: \(mode)",
            " Kernel Version: \(info.kernelVersion)",
            " Operating System: \(info.operatingSystem)",
            " Architecture: \(info.architecture)",
            " CPUs: \(info.capacity.cpus)",
            " Total Memory: \(ByteSize(bytes: info.capacity.memoryBytes).humanReadable)",
            " Name: \(info.hostname)",
            " ID: \(info.id)",
            " Berth Root Dir: \(info.rootDir)",
            " Berth State Dir: \(info.stateDir)",
        ]
        if !info.labels.isEmpty {
            lines.append(" Labels:")
            for (key, value) in info.labels.sorted(by: { $0.key < $1.key }) { lines.append("  \(key)=\(value)") }
        }
        return lines.joined(separator: "\n")
    }
}
