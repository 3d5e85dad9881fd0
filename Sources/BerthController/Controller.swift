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
    /// Persistent state (`controller.db`, with the SQLite store) and the lock.
    public var dataDir = "/var/lib/berth-controller"
    /// Where the cluster's records are kept.
    public var store: StoreLocation = .sqlite
    /// The address other controllers, agents and `berth` reach this one at
    /// (`--advertise`); by default the listening address.
    public var advertise: String?
    /// With etcd: how long a leader that stops renewing keeps leading.
    public var leaderLease: Duration = .seconds(5)
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
        guard leaderLease >= .seconds(2) else { throw BerthError.invalid("--leader-lease: at least two seconds") }
        if case .etcd = store, advertise == nil, host == "0.0.0.0" || host == "::" {
            throw BerthError.invalid(
                "--listen \(listen): other controllers send callers to this one's address, and \(host) is none; give --advertise HOST:PORT")
        }
    }

    /// The address other controllers, agents and `berth` reach this one at.
    public var advertisedAddress: String {
        advertise ?? listen.hostAndPort
    }

    /// Agents heartbeat five times per grace period.
    public var heartbeatInterval: Duration { nodeGrace / 5 }
}

/// The controller: its API, served for as long as it runs, and, while it
/// leads the cluster, a term of its registry, service manager and
/// reconciler on what the store holds. Alone on SQLite it leads from its
/// start (it holds an exclusive lock on its data directory); on etcd it
/// campaigns, serves a term while it leads, and campaigns again after.
public final class Controller: Service, Sendable {
    public let configuration: ControllerConfiguration
    /// What `/metrics` shows.
    public let metrics = ControllerMetrics()
    /// The term under way, if this controller leads.
    public let seat: ControllerSeat
    private let candidacy: any Candidacy
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
        switch configuration.store {
        case .sqlite:
            candidacy = SoleCandidacy(
                store: try SQLiteControllerStore(path: "\(configuration.dataDir)/controller.db"), address: configuration.advertisedAddress)
        case .etcd(let endpoints, let tlsDirectory):
            candidacy = try EtcdCandidacy(
                endpoints: endpoints, tlsDirectory: tlsDirectory, address: configuration.advertisedAddress, lease: configuration.leaderLease, logger: logger)
        }
        let candidacy = self.candidacy
        let (grace, interval) = (configuration.nodeGrace, configuration.heartbeatInterval)
        seat = ControllerSeat(
            address: configuration.advertisedAddress, leader: { await candidacy.leader() },
            read: { ClusterView(try await candidacy.read(), grace: grace, heartbeatInterval: interval, logger: logger) })
    }

    /// `/metrics` on the controller's listener.
    var routes: HTTPRoutes {
        var routes = HTTPRoutes.standard
        let (metrics, seat) = (self.metrics, self.seat)
        routes.add("/metrics") {
            var snapshot = ControllerMetrics.Snapshot(nodes: [], services: [], replicas: [])
            if let term = seat.term {
                snapshot.nodes = await term.registry.list()
                (snapshot.services, snapshot.replicas) = await term.services.snapshot()
            }
            let text = metrics.render(snapshot)
            return HTTPResponse(contentType: "text/plain; version=0.0.4; charset=utf-8", bytes: Array(text.utf8))
        }
        return routes
    }

    public func run() async throws {
        var serverConfig = NGHTTP2ServerTransport.Config(address: configuration.listen, routes: routes)
        serverConfig.connectionInitializer = configuration.tls?.serverInitializer
        let revoked = self.revoked
        let transport = NGHTTP2ServerTransport(config: serverConfig, logger: logger)
        let server = GRPCServer(
            transport: transport,
            services: [
                NodesService(seat: seat, revoked: revoked, heartbeats: candidacy.heartbeats, address: configuration.advertisedAddress),
                ServicesService(seat: seat),
                ControllerNetworksService(seat: seat),
                ControllersService(
                    seat: seat, candidacy: candidacy, address: configuration.advertisedAddress, store: "\(configuration.store)"),
            ],
            interceptors: [
                RevokedPeerInterceptor(revoked: revoked),
                PeerRoleInterceptor { method in
                    // Agents announce themselves; everything else is for operators (and controllers).
                    method.service.fullyQualifiedService == "berth.controller.v1.Nodes" && ["Register", "Heartbeat"].contains(method.method)
                        ? [.node] : [.operator, .controller]
                },
            ])
        logger.info(
            "controller starting",
            metadata: [
                "data": "\(configuration.dataDir)", "store": "\(configuration.store)", "grace": "\(configuration.nodeGrace)",
                "tls": "\(configuration.tls?.directory ?? "off")",
            ])
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                if let revoked {
                    // Certificates revoked in the store (etcd), besides the --revoked file.
                    group.addTask { await cancelWhenGracefulShutdown { await self.candidacy.followRevocations(into: revoked) } }
                }
                group.addTask {
                    // Campaign only once listening: the address it campaigns with is then this process's.
                    _ = try await transport.listeningAddress
                    await cancelWhenGracefulShutdown { await self.lead() }
                }
            }
        } onGracefulShutdown: { [logger] in
            logger.info("controller shutting down")
            server.beginGracefulShutdown()
        }
        logger.info("controller stopped")
        _ = lock
    }

    /// Campaigns, leads until the term ends, and campaigns again, until cancelled.
    func lead() async {
        while !Task.isCancelled {
            let mandate: Mandate
            do {
                mandate = try await candidacy.campaign()
            } catch {
                if Task.isCancelled { break }
                logger.error("campaign failed; trying again", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            await serve(mandate)
        }
    }

    /// One term: the records read from the store, a registry, service
    /// manager and reconciler on them, until leadership is lost, a change
    /// cannot be stored, or the controller stops.
    private func serve(_ mandate: Mandate) async {
        let contents: StoreContents
        do {
            contents = try await mandate.store.load()
        } catch {
            logger.error("the store cannot be read; this controller stands down", metadata: ["error": "\(error)"])
            await mandate.resign()
            try? await Task.sleep(for: .seconds(1))
            return
        }
        let (failures, failed) = AsyncStream<BerthError>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let writer = StoreWriter(store: mandate.store, failed: { failed.yield($0) })
        let wake = WakeLater()
        let registry = NodeRegistry(
            contents: contents, writer: writer, grace: configuration.nodeGrace, heartbeatInterval: configuration.heartbeatInterval, logger: logger,
            changed: { wake.wake() })
        let services = ServiceManager(contents: contents, writer: writer, logger: logger, metrics: metrics)
        let reconciler = Reconciler(
            services: services, registry: registry, clients: GRPCAgentClients(tls: configuration.tls, logger: logger), deadlines: configuration.deadlines,
            metrics: metrics, logger: logger)
        wake.target = reconciler
        let term = ControllerTerm(registry: registry, services: services, reconciler: reconciler, writer: writer, number: mandate.number, since: Date())
        // Every node gets a full grace period from the start of the term.
        await registry.renewAll()
        seat.lead(term)
        logger.info("leading the cluster", metadata: ["term": "\(mandate.number)", "nodes": "\(contents.nodes.count)", "services": "\(contents.services.count)"])
        let sweepEvery = configuration.nodeGrace / 10
        let logger = self.logger
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await reconciler.run() }
            group.addTask {
                while !Task.isCancelled {
                    await registry.sweep()
                    try? await Task.sleep(for: sweepEvery)
                }
            }
            if let heartbeats = candidacy.heartbeats {
                // Heartbeats other controllers recorded (and this one's own).
                group.addTask {
                    await heartbeats.follow(after: contents.revision) { ids in
                        for id in ids { _ = try? await registry.heartbeat(id: id) }
                    }
                }
            }
            group.addTask {
                await mandate.lost()
                if !Task.isCancelled { logger.warning("leadership lost: this controller stops acting and follows", metadata: ["term": "\(mandate.number)"]) }
            }
            group.addTask {
                for await failure in failures {
                    logger.error("a change could not be stored: the term ends, and the store is read again", metadata: ["error": "\(failure)"])
                    return
                }
            }
            _ = await group.next()
            seat.lead(nil)
            group.cancelAll()
        }
        failed.finish()
        // Also when the controller is stopping (this task is cancelled then):
        // another controller leads at once instead of after the lease.
        await Task { await mandate.resign() }.value
    }
}

/// Where the controller keeps the cluster's records.
public enum StoreLocation: Sendable, CustomStringConvertible {
    /// `controller.db` in the data directory: one controller.
    case sqlite
    /// An etcd cluster, for several controllers with one leader; its own
    /// client certificates in `tlsDirectory` (ca.pem, cert.pem, key.pem).
    case etcd(endpoints: [TransportAddress], tlsDirectory: String?)

    public var description: String {
        switch self {
        case .sqlite: return "sqlite"
        case .etcd(let endpoints, _): return "etcd://" + endpoints.map(\.hostAndPort).joined(separator: ",")
        }
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
