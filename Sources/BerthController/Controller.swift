import BerthModel
import BerthLinux
public import BerthTransport
import Foundation
import GRPCCore
public import Logging
public import ServiceLifecycle
import Synchronization

/// How a controller is set up.
public struct ControllerConfiguration: Sendable {
    /// Where the controller's API listens (loopback only without mutual TLS).
    public var listen: TransportAddress = .tcp(host: "127.0.0.1", port: 7450)
    /// Mutual TLS for the API and for calls to agents (`--tls-dir`).
    public var tls: MutualTLS?
    /// Revoked certificates' serials (`--revoked`); by default `revoked` in the TLS directory.
    public var revocationFile: String?
    /// Persistent state (`controller.db`).
    public var dataDir = "/var/lib/berth-controller"
    /// No heartbeat for this long: a node is down.
    public var nodeGrace: Duration = .seconds(10)
    /// How long each kind of call to an agent may take.
    public var deadlines = AgentDeadlines()

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

/// The controller: its store, its view of the nodes, its reconciler and
/// its API, until a graceful shutdown. It holds an exclusive lock on its
/// data directory for as long as it runs.
public final class Controller: Service, Sendable {
    public let configuration: ControllerConfiguration
    public let registry: NodeRegistry
    public let services: ServiceManager
    /// What `/metrics` shows.
    public let metrics = ControllerMetrics()
    /// The planner's passes and the node workers.
    public let reconciler: Reconciler
    private let lock: ProcessLock
    private let revoked: RevocationList?
    private let logger: Logger

    /// - Throws: `BerthError` for a bad configuration, a data directory
    ///   another process holds (naming it), or a store that cannot be opened.
    public init(configuration: ControllerConfiguration, logger: Logger) throws {
        try configuration.validate()
        self.logger = logger
        try Directories.create(configuration.dataDir, mode: 0o700)
        let lockPath = "\(configuration.dataDir)/lock"
        do {
            lock = try ProcessLock(
                path: lockPath,
                holder: "berth-controller pid \(SystemInfo.processID), listening on \(configuration.listen), since \(ISO8601DateFormatter().string(from: Date()))")
        } catch let held as ProcessLock.Held {
            throw BerthError(
                .failedPrecondition,
                "the data directory \(configuration.dataDir) is in use by \(held.holder); a second controller on the same data would undo the first one's work. Stop that one, or give this one another --data")
        } catch {
            throw BerthError(.internal, "cannot lock \(lockPath)", underlying: error)
        }
        var configuration = configuration
        let revoked = configuration.tls.map { RevocationList(path: configuration.revocationFile ?? "\($0.directory)/revoked") }
        if let revoked { configuration.tls?.admit = { revoked.refusal($0) } }
        self.revoked = revoked
        self.configuration = configuration
        let store = try SQLiteControllerStore(path: "\(configuration.dataDir)/controller.db")
        let wake = WakeLater()
        registry = try NodeRegistry(
            store: store, grace: configuration.nodeGrace, heartbeatInterval: configuration.heartbeatInterval, logger: logger,
            changed: { wake.wake() })
        services = try ServiceManager(store: store, logger: logger, metrics: metrics)
        reconciler = Reconciler(
            services: services, registry: registry, clients: GRPCAgentClients(tls: configuration.tls, logger: logger), deadlines: configuration.deadlines,
            metrics: metrics, logger: logger)
        wake.target = reconciler
    }

    /// `/metrics` on the controller's listener.
    var routes: HTTPRoutes {
        var routes = HTTPRoutes.standard
        let (metrics, registry, services) = (self.metrics, self.registry, self.services)
        routes.add("/metrics") {
            let nodes = await registry.list()
            let (all, replicas) = await services.snapshot()
            let text = metrics.render(ControllerMetrics.Snapshot(nodes: nodes, services: all, replicas: replicas))
            return HTTPResponse(contentType: "text/plain; version=0.0.4; charset=utf-8", bytes: Array(text.utf8))
        }
        return routes
    }

    public func run() async throws {
        var serverConfig = NGHTTP2ServerTransport.Config(address: configuration.listen, routes: routes)
        serverConfig.connectionInitializer = configuration.tls?.serverInitializer
        let reconciler = self.reconciler
        let revoked = self.revoked
        let server = GRPCServer(
            transport: NGHTTP2ServerTransport(config: serverConfig, logger: logger),
            services: [
                NodesService(registry: registry, revoked: revoked, removed: { await reconciler.evict($0) }),
                ServicesService(
                    services: services, registry: registry,
                    logs: ServiceLogs(services: services, registry: registry, client: { reconciler.client(for: $0) }),
                    wake: { reconciler.wake() }),
            ],
            interceptors: [
                RevokedPeerInterceptor(revoked: revoked),
                PeerRoleInterceptor { method in
                    // Agents announce themselves; everything else is for operators (and controllers).
                    method.service.fullyQualifiedService == "berth.controller.v1.Nodes" && ["Register", "Heartbeat"].contains(method.method)
                        ? [.node] : [.operator, .controller]
                },
            ])
        let registry = self.registry
        let sweepEvery = configuration.nodeGrace / 10
        logger.info(
            "controller starting",
            metadata: ["data": "\(configuration.dataDir)", "grace": "\(configuration.nodeGrace)", "tls": "\(configuration.tls?.directory ?? "off")"])
        await registry.renewAll()
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                group.addTask {
                    while !Task.isCancelled && !Task.isShuttingDownGracefully {
                        await registry.sweep()
                        try? await Task.sleep(for: sweepEvery)
                    }
                }
                group.addTask {
                    await cancelWhenGracefulShutdown { await reconciler.run() }
                }
            }
        } onGracefulShutdown: { [logger] in
            logger.info("controller shutting down")
            server.beginGracefulShutdown()
        }
        logger.info("controller stopped")
        _ = lock
    }
}

/// A wake-up for a reconciler made after the registry that calls it.
final class WakeLater: Sendable {
    private let slot = Mutex<Reconciler?>(nil)
    var target: Reconciler? {
        get { slot.withLock { $0 } }
        set { slot.withLock { $0 = newValue } }
    }
    func wake() { target?.wake() }
}
