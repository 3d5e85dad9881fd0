import ArgumentParser
import BerthAPI
import BerthModel
import FoundationEssentials
import GRPCCore

/// `berth version`: the client's build and the agent's.
struct VersionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Show the Berth version of the client and the agent.")

    @OptionGroup var agent: AgentOptions
    @Option(help: "Output format: json, or table (the default).")
    var format: String?

    struct Report: Codable {
        struct Client: Codable {
            var version: String
            var apiVersion: String
            var os: String
            var architecture: String
        }

        var client: Client
        var server: VersionInfo?
        var serverError: String?
    }

    func run() async throws {
        let format = try OutputFormat(format)
        let connection = try agent.connection()
        let client = Report.Client(version: CLIVersion.version, apiVersion: "v1", os: "linux", architecture: Self.architecture)
        var report = Report(client: client)
        do {
            report.server = try await connection.withClient { grpc in
                let node = Berth_Agent_V1_Node.Client(wrapping: grpc)
                return VersionInfo(proto: try await node.version(Berth_Agent_V1_GetVersionRequest()).version)
            }
        } catch let error as BerthError {
            report.serverError = error.description
        }
        switch format {
        case .json:
            try Console.json(report)
        case .human:
            var lines = [
                "Client:", " Version:       \(client.version)", " API version:   \(client.apiVersion)",
                " OS/Arch:       \(client.os)/\(client.architecture)",
            ]
            if let server = report.server {
                lines += [
                    "", "Server:", " Version:       \(server.version)", " API version:   \(server.apiVersion)",
                    " Git commit:    \(server.gitCommit)", " Swift:         \(server.swiftVersion)",
                    " nghttp2:       \(server.nghttp2Version)", " OS/Arch:       \(server.os)/\(server.architecture)",
                ]
            }
            Console.print(lines.joined(separator: "\n"))
        }
        if let error = report.serverError {
            Console.error("berth: \(error)")
            throw ExitCode(1)
        }
    }

    static var architecture: String {
        #if arch(x86_64)
        return "x86_64"
        #else
        return "aarch64"
        #endif
    }
}
