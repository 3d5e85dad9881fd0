import BerthAPI
import BerthModel
import BerthCgroups
import BerthImages
import BerthLinux
import BerthRuntime
import Foundation
public import BerthTransport
import GRPCCore
public import Logging
import NIOCore
import NIOPosix
public import ServiceLifecycle

/// How an agent is set up: where it listens and keeps its state.
public struct AgentConfiguration: Sendable {
    /// The local control socket (mode 0600).
    public var socketPath: String = "/run/berth/agent.sock"
    /// An optional TCP listener.
    public var listen: TransportAddress?
    /// An optional plain-HTTP listener for `/metrics` and `/healthz` only:
    /// it answers no gRPC, so it may face the network a Prometheus server
    /// scrapes from.
    public var metricsListen: TransportAddress?
    /// Persistent state: the node ID, later images and containers.
    public var rootDir: String = "/var/lib/berth"
    /// Runtime state: sockets, shim state, mount points.
    public var stateDir: String = "/run/berth"
    public var labels: [String: String] = [:]
    public var limits = TransportLimits()
    /// The berth-shim executable; by default the one beside the agent's own.
    public var shimExecutable: String?
    /// The berth-init executable (`--init`); by default the one beside the agent's own.
    public var initExecutable: String?
    /// Berth's subtree in each cgroup hierarchy.
    public var cgroupParent = "berth"
    /// How many events the event log keeps.
    public var eventRetention = 100_000
    /// Containers' log rotation, unless a container sets its own.
    public var log = LogConfig(maxSize: .mebibytes(10), maxFiles: 3)
    /// Registries (`host[:port]`) that may be pulled from over plain HTTP
    /// (those on loopback always may).
    public var insecureRegistries: Set<String> = []
    /// The default network (`--bridge none` turns it off, `--bridge-subnet` places it).
    public var defaultBridge = DefaultBridge.subnet(nil)
    /// Where the embedded resolver forwards names that are not containers'
    /// (`--dns`, IP or IP:PORT); empty: the host's resolvers.
    public var dnsServers: [String] = []
    /// The controllers this agent registers with (the leader among them), if any.
    public var controllers: [TransportAddress] = []
    /// Where the controller reaches this agent (HOST:PORT); by default the TCP listener's address.
    public var advertise: String?
    /// How long a graceful shutdown (SIGTERM) lets calls in flight finish;
    /// calls still open then (a watch, a follow, an attached run or exec)
    /// end with UNAVAILABLE, and the agent exits.
    public var shutdownGrace: Duration = .seconds(2)
    /// Mutual TLS (`--tls-dir`): the TCP listener takes only clients with a
    /// certificate from the cluster's CA, and the controller is called with
    /// this agent's. The unix socket stays for local root.
    public var tls: MutualTLS?

    public init() {}

    /// The address the controller is given: `advertise`, else the TCP listener's.
    var advertisedAddress: String? {
        if let advertise { return advertise }
        if case .tcp? = listen { return listen?.hostAndPort }
        return nil
    }

    /// Checks the configuration before anything is created.
    ///
    /// - Throws: `BerthError.invalidArgument` for relative paths, or a TCP
    ///   listener that is not on loopback (remote control needs mutual TLS).
    public func validate() throws {
        for (flag, path) in [("--socket", socketPath), ("--root", rootDir), ("--state", stateDir)] where !path.hasPrefix("/") {
            throw BerthError.invalid("\(flag) \"\(path)\": must be an absolute path")
        }
        do {
            try log.validate()
        } catch let error as BerthError {
            throw BerthError.invalid("--log-max-size/--log-max-file: \(error.message)")
        }
        guard eventRetention >= 1 else {
            throw BerthError.invalid("--event-retention \(eventRetention): the event log keeps at least one event")
        }
        for server in dnsServers where (try? Self.dnsAddress(server)) == nil {
            throw BerthError.invalid("--dns \(server): expected an IP address, or IP:PORT")
        }
        if case .subnet(let subnet?) = defaultBridge {
            do { _ = try IPv4Subnet(parsing: subnet) } catch let error as BerthError {
                throw BerthError.invalid("--bridge-subnet: \(error.message)")
            }
        }
        if !controllers.isEmpty {
            guard let address = advertisedAddress, !address.hasSuffix(":0") else {
                throw BerthError.invalid(
                    "--controller needs an address the controller can reach this agent at: --listen HOST:PORT (not port 0) or --advertise HOST:PORT")
            }
        }
        if let metricsListen, case .unix = metricsListen {
            throw BerthError.invalid("--metrics-listen \(metricsListen): expected HOST:PORT")
        }
        if let listen {
            guard case .tcp(let host, _) = listen else {
                throw BerthError.invalid("--listen \(listen): expected HOST:PORT")
            }
            guard tls != nil || Self.isLoopback(host) else {
                throw BerthError.invalid(
                    "--listen \(listen): a TCP listener without TLS would let anyone who reaches \(host) control this host; "
                        + "listen on a loopback address (127.0.0.1 or ::1), use the unix socket, or give --tls-dir")
            }
        }
    }

    /// `1.2.3.4`, `1.2.3.4:5353`, `::1` or `[::1]:5353`, as a socket address.
    static func dnsAddress(_ text: String) throws -> SocketAddress {
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            let port = rest.isEmpty ? 53 : Int(rest.dropFirst()) ?? -1
            guard rest.isEmpty || rest.hasPrefix(":"), (1...65535).contains(port) else { throw BerthError.invalid(text) }
            return try SocketAddress(ipAddress: host, port: port)
        }
        let parts = text.split(separator: ":")
        if parts.count == 2, let port = Int(parts[1]), (1...65535).contains(port) {
            return try SocketAddress(ipAddress: String(parts[0]), port: port)
        }
        return try SocketAddress(ipAddress: text, port: 53)
    }

    /// With mutual TLS and a controller: the node ID in this agent's node
    /// certificate (its CN), which the controller lets it register as.
    ///
    /// - Throws: `BerthError.invalidArgument` for a certificate that is not a
    ///   node's, or names no node ID.
    func certifiedNodeID() throws -> String? {
        guard let tls else { return nil }
        let identity = tls.identity
        guard identity.role == PeerRole.node.rawValue else {
            throw BerthError.invalid(
                "--tls-dir \(tls.directory): its certificate is a \(identity.role.isEmpty ? "certificate without a role" : identity.role + " certificate"); an agent registers with a node certificate (berth-controller ca issue --role node)")
        }
        guard identity.name.count == 32, identity.name.allSatisfy({ $0.isHexDigit }) else {
            throw BerthError.invalid(
                "--tls-dir \(tls.directory): its certificate names no node ID (its CN is \"\(identity.name)\"); issue one with berth-controller ca issue --role node --node-id ID, ID being this agent's \(rootDir)/node-id if it has one")
        }
        return identity.name
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "::1" || host == "localhost" || host.hasPrefix("127.")
    }
}

/// The agent: its services served on the unix socket and, optionally, TCP,
/// until a graceful shutdown (SIGTERM, SIGINT) lets in-flight calls finish
/// for `shutdownGrace` and ends those still open.
public final class Agent: Service, Sendable {
    public let configuration: AgentConfiguration
    public let node: NodeDirectory
    public let database: AgentDatabase
    public let images: ImageStore
    public let supervisor: ContainerSupervisor
    public let metrics = AgentMetrics()
    /// Revoked certificates' serials, as the controller last handed them over.
    let revoked: RevocationList
    let environment: RuntimeEnvironment
    let runtime: ShimRuntime
    let stats: StatsReader
    private let logger: Logger

    /// Prepares the directories and the node's identity.
    ///
    /// - Throws: `BerthError` when the configuration is invalid or the
    ///   directories cannot be made.
    public init(configuration: AgentConfiguration, logger: Logger) throws {
        try configuration.validate()
        // A peer that has gone (a standby shim killed before its bundle
        // came, a closed pipe or socket) must be an error to handle, never
        // a signal that ends the agent.
        Signals.ignore(Signal.pipe.number)
        // Certificates the controller says are revoked are refused here too.
        var configuration = configuration
        let revoked = RevocationList()
        self.revoked = revoked
        configuration.tls?.admit = { revoked.refusal($0) }
        self.configuration = configuration
        self.logger = logger
        do {
            try Directories.create(configuration.rootDir, mode: 0o700)
            try Directories.create(configuration.stateDir, mode: 0o700)
            let socketDir = String(configuration.socketPath[..<(configuration.socketPath.lastIndex(of: "/") ?? configuration.socketPath.startIndex)])
            if !socketDir.isEmpty { try Directories.create(socketDir, mode: 0o711) }
        } catch let error as SystemError {
            throw BerthError(.permissionDenied, "cannot prepare the agent's directories: \(error)")
        }
        self.node = try NodeDirectory(
            rootDir: configuration.rootDir, stateDir: configuration.stateDir, labels: configuration.labels,
            certifiedID: configuration.controllers.isEmpty ? nil : try configuration.certifiedNodeID())
        let beside = (Processes.currentExecutable as NSString).deletingLastPathComponent
        let shim = configuration.shimExecutable ?? beside + "/berth-shim"
        guard FileManager.default.isExecutableFile(atPath: shim) else {
            throw BerthError(.unavailable, "berth-shim not found at \(shim); install it beside berth-agent or pass --shim PATH")
        }
        let initExecutable = configuration.initExecutable ?? beside + "/berth-init"
        guard FileManager.default.isExecutableFile(atPath: initExecutable) else {
            throw BerthError(.unavailable, "berth-init not found at \(initExecutable); install it beside berth-agent or pass --init-path PATH")
        }
        self.environment = RuntimeEnvironment(
            rootDir: configuration.rootDir, stateDir: configuration.stateDir, shimExecutable: shim, initExecutable: initExecutable,
            logMaxBytes: Int(configuration.log.maxSize?.bytes ?? 10 << 20), logMaxFiles: configuration.log.maxFiles ?? 3)
        self.database = try AgentDatabase(path: "\(configuration.rootDir)/agent.db", eventRetention: configuration.eventRetention)
        var registry = RegistryClient.Options()
        registry.insecureRegistries = configuration.insecureRegistries
        self.images = try ImageStore(root: configuration.rootDir, index: database, registryOptions: registry, logger: logger)
        let cgroups = try CgroupV1Driver.detectDriver(parent: configuration.cgroupParent)
        let info = node.info()
        let networking = try ContainerNetworking(
            database: database, nodeID: node.id, stateDir: configuration.stateDir, defaultBridge: configuration.defaultBridge,
            dnsServers: configuration.dnsServers.isEmpty ? nil : try configuration.dnsServers.map(AgentConfiguration.dnsAddress), logger: logger)
        self.runtime = try ShimRuntime(environment: environment, cgroups: cgroups, logger: logger)
        self.stats = StatsReader(cgroups: cgroups)
        self.supervisor = try ContainerSupervisor(
            database: database, images: images, volumes: try VolumeStore(root: "\(configuration.rootDir)/volumes", database: database),
            runtime: runtime, host: info.capacity, networking: networking,
            logger: logger, metrics: metrics)
    }

    /// Every service the agent answers.
    public var services: [any RegistrableRPCService] {
        let supervisor = self.supervisor
        let images = self.images
        return [
            NodeService(node: node, counts: { (await supervisor.counts, (try? images.list().count) ?? 0) }),
            ContainersService(supervisor: supervisor, runtime: runtime, environment: environment, stats: stats),
            ImagesService(images: images, supervisor: supervisor, database: database),
            VolumesService(volumes: supervisor.volumes, supervisor: supervisor),
            NetworksService(networking: supervisor.networking, supervisor: supervisor),
            EventsService(database: database, metrics: metrics),
        ]
    }

    /// Plain HTTP on the same listeners: `/healthz` and `/metrics`.
    public var routes: HTTPRoutes {
        var routes = HTTPRoutes.standard
        let endpoint = MetricsEndpoint(supervisor: supervisor, stats: stats, database: database, metrics: metrics, cgroupParent: configuration.cgroupParent)
        routes.add("/metrics") { HTTPResponse(contentType: MetricsEndpoint.contentType, bytes: await endpoint.render()) }
        return routes
    }

    public func run() async throws {
        // A second agent on a live socket must stop before it changes anything on the host.
        try await NGHTTP2ServerTransport.prepareUnixSocketPath(configuration.socketPath, group: MultiThreadedEventLoopGroup.singleton)
        var addresses: [TransportAddress] = [.unix(path: configuration.socketPath)]
        if let listen = configuration.listen { addresses.append(listen) }
        var listeners = addresses.map { address in
            var config = NGHTTP2ServerTransport.Config(address: address, limits: configuration.limits, routes: routes)
            config.shutdownGrace = configuration.shutdownGrace
            if case .tcp = address { config.connectionInitializer = configuration.tls?.serverInitializer }
            // Over TLS, only the controller and operators control this host; nodes' certificates do not.
            let roles = PeerRoleInterceptor { _ in [.controller, .operator] }
            let revocations = RevokedPeerInterceptor(revoked: revoked)
            return GRPCServer(
                transport: NGHTTP2ServerTransport(config: config, logger: logger), services: services, interceptors: [metrics.interceptor, revocations, roles])
        }
        if let metricsListen = configuration.metricsListen {
            var config = NGHTTP2ServerTransport.Config(address: metricsListen, limits: configuration.limits, routes: routes)
            config.serveGRPC = false
            config.shutdownGrace = configuration.shutdownGrace
            listeners.append(GRPCServer(transport: NGHTTP2ServerTransport(config: config, logger: logger), services: []))
        }
        let servers = listeners
        logger.info(
            "agent starting",
            metadata: [
                "node.id": "\(node.id)", "socket": "\(configuration.socketPath)", "root": "\(configuration.rootDir)",
                "state": "\(configuration.stateDir)",
            ])
        // Networks first: a re-adopted container's names, ports and
        // interfaces are back before its record is.
        for problem in await supervisor.networking.reconcile(containers: await supervisor.list(all: true)) {
            logger.error("network not restored", metadata: ["error": "\(problem)"])
        }
        await supervisor.restore()
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                for server in servers {
                    group.addTask { try await server.serve() }
                }
                if !configuration.controllers.isEmpty, let advertise = configuration.advertisedAddress {
                    let supervisor = self.supervisor
                    let link = ControllerLink(
                        controllers: configuration.controllers, tls: configuration.tls, advertise: advertise, node: node, version: BuildInfo.version, logger: logger,
                        revoked: revoked,
                        replicas: { await supervisor.list(all: false).filter { $0.spec.labels[ReplicaLabel.cluster] != nil } },
                        stop: { container in _ = try? await supervisor.stop(container.id.rawValue) })
                    group.addTask { await cancelWhenGracefulShutdown { await link.run() } }
                }
            }
        } onGracefulShutdown: { [logger] in
            logger.info("agent shutting down")
            for server in servers { server.beginGracefulShutdown() }
        }
        supervisor.shutdown()
        // The socket file would outlive the process; the next agent would
        // have to find out it is stale.
        try? FileManager.default.removeItem(atPath: configuration.socketPath)
        logger.info("agent stopped")
    }
}
