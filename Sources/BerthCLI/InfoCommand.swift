import ArgumentParser
import BerthAPI
import BerthLinux
import BerthModel
import BerthTemplate
import GRPCCore

/// `berth info`: the agent's host, as `docker info` shows it.
struct InfoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "Show information about the agent's host.")

    @OptionGroup var agent: AgentOptions
    @Option(name: .shortAndLong, help: "A Go template ('{{.ServerVersion}}'), or json (docker's shape, one line).")
    var format: String?

    func run() async throws {
        try Templating.checked { try DockerFormat.validate(format) }
        let info = try await agent.connection().withClient { grpc in
            let node = Berth_Agent_V1_Node.Client(wrapping: grpc)
            return try NodeInfo(proto: try await node.info(Berth_Agent_V1_GetNodeInfoRequest()).info)
        }
        guard let format, !format.isEmpty else { return Console.print(Self.render(info)) }
        Console.write(Descriptor.standardOutput, Array(try Templating.checked { try DockerFormat.one(Self.shape(info), format: format) }.utf8))
    }

    /// docker's `info` shape, for what a Berth agent has.
    static func shape(_ info: NodeInfo) -> TemplateValue {
        let cgroupVersion: String
        switch info.cgroupMode {
        case .v1, .hybrid: cgroupVersion = "1"
        case .v2: cgroupVersion = "2"
        }
        return .object(
            "types.Info",
            [
                "ID": .string(info.id), "Containers": .integer(info.containers.total), "ContainersRunning": .integer(info.containers.running),
                "ContainersPaused": .integer(info.containers.paused), "ContainersStopped": .integer(info.containers.stopped),
                "Images": .integer(info.images), "Driver": .string("overlay"), "CgroupDriver": .string("cgroupfs"), "CgroupVersion": .string(cgroupVersion),
                "KernelVersion": .string(info.kernelVersion), "OperatingSystem": .string(info.operatingSystem), "OSType": .string("linux"),
                "Architecture": .string(info.architecture), "NCPU": .integer(info.capacity.cpus), "MemTotal": .int(info.capacity.memoryBytes),
                "DockerRootDir": .string(info.rootDir), "StateDir": .string(info.stateDir), "Name": .string(info.hostname),
                "Labels": .strings(info.labels.keys.sorted().map { "\($0)=\(info.labels[$0]!)" }), "ServerVersion": .string(info.version.version),
            ])
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
