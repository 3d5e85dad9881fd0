import BerthModel
import BerthLinux
public import BerthTransport
import Foundation
import GRPCCore
public import Logging
public import ServiceLifecycle

/// How a controller is set up.
public struct ControllerConfiguration: Sendable {
    /// Where the controller's API listens (loopback only without mutual TLS).
    public var listen: TransportAddress = .tcp(host: "127.0.0.1", port: 7450)
    /// Mutual TLS for the API and for calls to agents (`--tls-dir`).
    public var tls: MutualTLS?
    /// Persistent state (`controller.db`).
    public var dataDir = "/var/lib/berth-controller"
    /// No heartbeat for this long: a node is down.
    public var nodeGrace: Duration = .seconds(10)

    public init() {}

    /// - Throws: `BerthError.invalidArgument` for a relative data directory,
    ///   a listener off loopback, or a grace period under a second.
    public func validate() throws {
        guard dataDir.hasPrefix("/") else { throw BerthError.invalid("--data \"\(dataDir)\": must be an absolute path") }
        guard case .tcp(let host, _) = listen else { throw BerthError.invalid("--listen \(listen): expected HOST:PORT") }
        guard tls != nil || host == "::1" || host == "localhost" || host.hasPrefix("127.") else {
            throw BerthError.invalid(
                "--listen \(listen): without TLS anyone who reaches \(host) could control the cluster; listen on a loopback address, or give --tls-dir")
        }
        guard nodeGrace >= .seconds(1) else { throw BerthError.invalid("--node-grace: at least one second") }
    }

    /// Agents heartbeat five times per grace period.
    public var heartbeatInterval: Duration { nodeGrace / 5 }
}

/// The controller: its store, its view of the nodes, and its API, until a
/// graceful shutdown.
public final class Controller: Service, Sendable {
    public let configuration: ControllerConfiguration
    public let registry: NodeRegistry
    public let services: ServiceManager
    private let logger: Logger

    /// - Throws: `BerthError` for a bad configuration or a store that cannot be opened.
    public init(configuration: ControllerConfiguration, logger: Logger) throws {
        try configuration.validate()
        self.configuration = configuration
        self.logger = logger
        try Directories.create(configuration.dataDir, mode: 0o700)
        let store = try SQLiteControllerStore(path: "\(configuration.dataDir)/controller.db")
        registry = try NodeRegistry(
            store: store, grace: configuration.nodeGrace, heartbeatInterval: configuration.heartbeatInterval, logger: logger)
        services = try ServiceManager(store: store, logger: logger)
    }

    public func run() async throws {
        let (wakeups, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        var serverConfig = NGHTTP2ServerTransport.Config(address: configuration.listen)
        serverConfig.connectionInitializer = configuration.tls?.serverInitializer
        let server = GRPCServer(
            transport: NGHTTP2ServerTransport(config: serverConfig, logger: logger),
            services: [
                NodesService(registry: registry),
                ServicesService(services: services, registry: registry, wake: { wake.yield() }),
            ],
            interceptors: [
                PeerRoleInterceptor { method in
                    // Agents announce themselves; everything else is for operators (and controllers).
                    method.service.fullyQualifiedService == "berth.controller.v1.Nodes" && ["Register", "Heartbeat"].contains(method.method)
                        ? [.node] : [.operator, .controller]
                }
            ])
        let registry = self.registry
        let sweepEvery = configuration.nodeGrace / 10
        let reconciler = Reconciler(
            services: services, registry: registry,
            driver: AgentDriver(
                clusterID: services.clusterID,
                connection: { [tls = configuration.tls] in tls?.clientConfig($0, connectTimeout: .seconds(3)) ?? .init(address: $0, connectTimeout: .seconds(3)) },
                logger: logger),
            logger: logger)
        logger.info(
            "controller starting",
            metadata: ["data": "\(configuration.dataDir)", "grace": "\(configuration.nodeGrace)", "tls": "\(configuration.tls?.directory ?? "off")"])
        await registry.renewAll()
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                group.addTask {
                    while !Task.isCancelled && !Task.isShuttingDownGracefully {
                        if !(await registry.sweep()).isEmpty { wake.yield() }
                        try? await Task.sleep(for: sweepEvery)
                    }
                }
                group.addTask {
                    await cancelWhenGracefulShutdown { await reconciler.run(wakeups: wakeups) }
                }
            }
        } onGracefulShutdown: { [logger] in
            logger.info("controller shutting down")
            server.beginGracefulShutdown()
        }
        logger.info("controller stopped")
    }
}
