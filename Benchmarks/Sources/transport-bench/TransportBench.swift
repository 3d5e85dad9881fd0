import ArgumentParser
import BerthAgent
import BerthTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import NIOPosix

/// Serves the agent's `berth.agent.v1.Node` service — the very
/// `BerthAgent.NodeService` the agent serves — on one of two transports, so
/// that a load generator can compare the transports and nothing else.
@main
struct TransportBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transport-bench",
        abstract: "Benchmark servers for Berth's gRPC transports.",
        subcommands: [Serve.self])
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve berth.agent.v1.Node on 127.0.0.1 until killed; prints \"listening PORT\" when ready.")

    enum Transport: String, ExpressibleByArgument, CaseIterable {
        /// Berth's nghttp2 transport (`BerthTransport.NGHTTP2ServerTransport`).
        case berth
        /// grpc-swift-nio-transport's `HTTP2ServerTransport.Posix`, plaintext.
        case nio
    }

    @Option(help: "berth (NGHTTP2ServerTransport) or nio (HTTP2ServerTransport.Posix).")
    var transport: Transport

    @Option(help: "TCP port on 127.0.0.1; 0 picks a free one.")
    var port = 0

    @Option(help: "Directory for the node ID (NodeDirectory's rootDir); a temporary one if omitted.")
    var root: String?

    @Option(help: "NodeDirectory's stateDir; the root if omitted.")
    var state: String?

    func run() async throws {
        // As the agent does by default: info level, to stderr.
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        let root = self.root ?? NSTemporaryDirectory() + "transport-bench-\(getpid())"
        let state = self.state ?? root
        for directory in [root, state] {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        let node = try NodeDirectory(rootDir: root, stateDir: state)
        let services: [any RegistrableRPCService] = [NodeService(node: node)]

        switch transport {
        case .berth:
            let transport = NGHTTP2ServerTransport(
                config: .init(address: .tcp(host: "127.0.0.1", port: port)),
                group: MultiThreadedEventLoopGroup.singleton,
                logger: Logger(label: "berth.transport"))
            let server = GRPCServer(transport: transport, services: services)
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                guard case .tcp(_, let bound) = try await transport.listeningAddress else {
                    throw ValidationError("NGHTTP2ServerTransport bound a non-TCP address")
                }
                Self.announce(bound)
            }

        case .nio:
            let transport = HTTP2ServerTransport.Posix(
                address: .ipv4(host: "127.0.0.1", port: port),
                transportSecurity: .plaintext,
                eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
            let server = GRPCServer(transport: transport, services: services)
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                guard let bound = try await transport.listeningAddress.ipv4?.port else {
                    throw ValidationError("HTTP2ServerTransport.Posix bound a non-IPv4 address")
                }
                Self.announce(bound)
            }
        }
    }

    static func announce(_ port: Int) {
        FileHandle.standardOutput.write(Data("listening \(port)\n".utf8))
    }
}
