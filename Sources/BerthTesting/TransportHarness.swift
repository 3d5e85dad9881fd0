public import BerthTransport
import Foundation
public import GRPCCore
import Logging

/// Runs a real server transport on a loopback port or a temporary unix
/// socket and a real client transport against it, for one test body.
public enum TransportHarness {
    public enum Kind: CaseIterable, Sendable {
        case tcp
        case unix
    }

    public static func temporarySocketPath() -> String {
        let dir = FileManager.default.temporaryDirectory.path
        return "\(dir)/berth-test-\(UUID().uuidString.prefix(8)).sock"
    }

    /// Starts a server with `services`, connects a client, runs `body`,
    /// then shuts both down.
    public static func withServerAndClient<R: Sendable>(
        _ kind: Kind = .tcp,
        services: [any RegistrableRPCService],
        limits: TransportLimits = TransportLimits(),
        clientLimits: TransportLimits = TransportLimits(),
        routes: HTTPRoutes = .standard,
        shutdownGrace: Duration? = nil,
        _ body: @Sendable (GRPCClient<NGHTTP2ClientTransport>, NGHTTP2ServerTransport, TransportAddress) async throws -> R
    ) async throws -> R {
        let address: TransportAddress
        switch kind {
        case .tcp: address = .tcp(host: "127.0.0.1", port: 0)
        case .unix: address = .unix(path: temporarySocketPath())
        }
        var logger = Logger(label: "berth.test")
        logger.logLevel = .critical
        var config = NGHTTP2ServerTransport.Config(address: address, limits: limits, routes: routes)
        config.shutdownGrace = shutdownGrace
        let serverTransport = NGHTTP2ServerTransport(config: config, logger: logger)
        let server = GRPCServer(transport: serverTransport, services: services)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.serve() }
            let bound = try await serverTransport.listeningAddress
            let clientTransport = NGHTTP2ClientTransport(config: .init(address: bound, limits: clientLimits), logger: logger)
            defer {
                server.beginGracefulShutdown()
                if case .unix(let path) = bound { unlink(path) }
            }
            let result = try await withGRPCClient(transport: clientTransport) { client in
                try await body(client, serverTransport, bound)
            }
            server.beginGracefulShutdown()
            try await group.waitForAll()
            return result
        }
    }
}
