import ArgumentParser
import BerthAPI
import BerthLinux
import BerthModel
import BerthTemplate
import FoundationEssentials
import GRPCCore

/// `berth version`: the client's build and the agent's.
struct VersionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Show the Berth version of the client and the agent.")

    @OptionGroup var agent: AgentOptions
    @Option(name: .shortAndLong, help: "A Go template ('{{.Server.Version}}'), or json (docker's shape, one line).")
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
        try Templating.checked { try DockerFormat.validate(format) }
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
        if let format, !format.isEmpty {
            Console.write(Descriptor.standardOutput, Array(try Templating.checked { try DockerFormat.one(Self.shape(report), format: format) }.utf8))
        } else {
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

    /// docker's `version` shape: Client and Server (nil when the agent did
    /// not answer), the server's components.
    static func shape(_ report: Report) -> TemplateValue {
        let client = report.client
        let server = report.server.map { s in
            TemplateValue.object(
                "*types.Version",
                [
                    "Platform": .object("struct", ["Name": .string("Berth")]),
                    "Components": .list([
                        .object(
                            "types.ComponentVersion",
                            [
                                "Name": .string("Engine"), "Version": .string(s.version),
                                "Details": .strings(["ApiVersion": s.apiVersion, "Arch": s.architecture, "GitCommit": s.gitCommit, "Os": s.os, "SwiftVersion": s.swiftVersion]),
                            ]),
                        .object("types.ComponentVersion", ["Name": .string("nghttp2"), "Version": .string(s.nghttp2Version)]),
                    ]),
                    "Version": .string(s.version), "ApiVersion": .string(s.apiVersion), "GitCommit": .string(s.gitCommit),
                    "SwiftVersion": .string(s.swiftVersion), "Os": .string(s.os), "Arch": .string(s.architecture),
                ], aliases: ["APIVersion": "ApiVersion"])
        }
        return .object(
            "formatter.VersionInfo",
            [
                "Client": .object(
                    "*formatter.clientVersion",
                    [
                        "Platform": .object("struct", ["Name": .string("Berth")]), "Version": .string(client.version), "ApiVersion": .string(client.apiVersion),
                        "DefaultAPIVersion": .string(client.apiVersion), "Os": .string(client.os), "Arch": .string(client.architecture),
                    ], aliases: ["APIVersion": "ApiVersion"]),
                "Server": server ?? .omitted,
            ])
    }

    static var architecture: String {
        #if arch(x86_64)
        return "x86_64"
        #else
        return "aarch64"
        #endif
    }
}
