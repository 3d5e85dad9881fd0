public import GRPCCore
public import Logging
public import NIOCore
import NIOPosix
import Synchronization

/// gRPC's client transport on HTTP/2 sessions framed by nghttp2, over
/// SwiftNIO sockets (TCP or unix-domain). One connection carries all calls;
/// a lost or draining connection is replaced on the next call.
public final class NGHTTP2ClientTransport: ClientTransport, Sendable {
    public typealias Bytes = TransportBytes

    /// Where and how to connect.
    public struct Config: Sendable {
        public var address: TransportAddress
        public var limits: TransportLimits
        /// The `:authority` of requests; by default the host and port, or
        /// `localhost` for unix sockets.
        public var authority: String?
        public var connectTimeout: Duration
        public var serviceConfig: ServiceConfig
        /// Adds handlers to each new connection before HTTP/2 (TLS goes here).
        /// The Bool it returns tells whether the connection is secure (https).
        public var connectionInitializer: (@Sendable (any Channel) -> EventLoopFuture<Bool>)?

        public init(
            address: TransportAddress, limits: TransportLimits = TransportLimits(), authority: String? = nil,
            connectTimeout: Duration = .seconds(10), serviceConfig: ServiceConfig = ServiceConfig()
        ) {
            self.address = address
            self.limits = limits
            self.authority = authority
            self.connectTimeout = connectTimeout
            self.serviceConfig = serviceConfig
        }
    }

    /// A live connection as tasks see it.
    private struct Connection: Sendable {
        var channel: any Channel
        var handler: NIOLoopBound<ClientConnectionHandler>
        var registry: CallRegistry
        var state: ClientConnectionState
        var scheduler: ConnectionScheduler
    }

    private enum Phase {
        case active
        case shuttingDown
        case closed
    }

    private struct State {
        var phase: Phase = .active
        var current: Connection?
        var connecting: EventLoopFuture<Connection>?
        var all: [ObjectIdentifier: Connection] = [:]
        var openCalls = 0
        var shutdownWaiter: CheckedContinuation<Void, Never>?
        var connectRunning = false
    }

    public let retryThrottle: RetryThrottle?
    private let config: Config
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())
    private let methodConfigs: [MethodDescriptor: MethodConfig]
    private let serviceDefaults: [String: MethodConfig]
    private let globalDefault: MethodConfig?

    public init(config: Config, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger = Logger(label: "berth.transport.client")) {
        self.config = config
        self.group = group
        self.logger = logger
        self.retryThrottle = config.serviceConfig.retryThrottling.map { RetryThrottle(policy: $0) }
        var methods: [MethodDescriptor: MethodConfig] = [:]
        var services: [String: MethodConfig] = [:]
        var global: MethodConfig?
        for methodConfig in config.serviceConfig.methodConfig {
            for name in methodConfig.names {
                if name.service.isEmpty {
                    global = methodConfig
                } else if name.method.isEmpty {
                    services[name.service] = methodConfig
                } else {
                    methods[MethodDescriptor(fullyQualifiedService: name.service, method: name.method)] = methodConfig
                }
            }
        }
        self.methodConfigs = methods
        self.serviceDefaults = services
        self.globalDefault = global
    }

    public func config(forMethod descriptor: MethodDescriptor) -> MethodConfig? {
        methodConfigs[descriptor] ?? serviceDefaults[descriptor.service.fullyQualifiedService] ?? globalDefault
    }

    /// Runs until `beginGracefulShutdown` and the last call are done.
    /// Connections are made on demand by calls.
    public func connect() async throws {
        let proceed = state.withLock { s -> Bool in
            if s.phase == .closed || s.connectRunning { return false }
            s.connectRunning = true
            return true
        }
        guard proceed else {
            throw RPCError(code: .failedPrecondition, message: "the client transport is closed or already running")
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    if s.phase == .closed || (s.phase == .shuttingDown && s.openCalls == 0) { return true }
                    s.shutdownWaiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            self.beginGracefulShutdown()
            self.closeAll()
        }
        closeAll()
    }

    public func beginGracefulShutdown() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.phase == .active { s.phase = .shuttingDown }
            guard s.openCalls == 0 else { return nil }
            s.phase = .closed
            let w = s.shutdownWaiter
            s.shutdownWaiter = nil
            return w
        }
        if let waiter {
            closeAll()
            waiter.resume()
        }
    }

    private func closeAll() {
        let connections = state.withLock { s -> [Connection] in
            s.phase = .closed
            s.current = nil
            return Array(s.all.values)
        }
        for connection in connections {
            let handler = connection.handler
            connection.channel.eventLoop.execute { handler.value.beginGracefulShutdown() }
        }
    }

    public func withStream<T: Sendable>(
        descriptor: MethodDescriptor, options: CallOptions,
        _ closure: (_ stream: RPCStream<Inbound, Outbound>, _ context: ClientContext) async throws -> T
    ) async throws -> T {
        let admitted = state.withLock { s -> Bool in
            guard s.phase == .active else { return false }
            s.openCalls += 1
            return true
        }
        guard admitted else {
            throw RPCError(code: .unavailable, message: "the client is shutting down")
        }
        defer { callEnded() }

        // A connection that closed after it was handed out takes no call.
        // Nothing of the call was sent on it, so the call takes the next
        // connection (a few times at most).
        var attempts = 0
        var connection = try await connection()
        var registered = register(descriptor, on: connection)
        while registered == nil && attempts < 2 {
            attempts += 1
            connection = try await self.connection()
            registered = register(descriptor, on: connection)
        }
        guard let call = registered else {
            throw RPCError(code: .unavailable, message: "the connection to the server was closed")
        }
        let stream = RPCStream(
            descriptor: descriptor,
            inbound: RPCAsyncSequence(wrapping: StreamInbound(io: call.io)),
            outbound: RPCWriter.Closable(wrapping: StreamOutbound(io: call.io)))
        let context = ClientContext(
            descriptor: descriptor,
            remotePeer: NGHTTP2ServerTransport.peerDescription(connection.channel.remoteAddress),
            localPeer: NGHTTP2ServerTransport.peerDescription(connection.channel.localAddress))
        defer { call.io.release() }
        return try await closure(stream, context)
    }

    /// The call registered on `connection`; nil once that connection has closed.
    private func register(_ descriptor: MethodDescriptor, on connection: Connection) -> PendingCall? {
        connection.registry.register { key in
            PendingCall(
                io: ClientIO(key: key, owner: connection.scheduler, watermarks: StreamWatermarks(), sizeOf: PartSize.of),
                descriptor: descriptor)
        }
    }

    private func callEnded() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.openCalls -= 1
            guard s.openCalls == 0, s.phase == .shuttingDown, let w = s.shutdownWaiter else { return nil }
            s.shutdownWaiter = nil
            return w
        }
        if let waiter {
            closeAll()
            waiter.resume()
        }
    }

    // MARK: Connections

    /// Begins connecting now, without waiting, so that a first call made
    /// later finds the connection made (or being made). A failure is kept
    /// by nobody: the first call then connects again and reports its own.
    public func warmUp() {
        state.withLock { s in
            guard s.phase == .active, s.current == nil, s.connecting == nil else { return }
            s.connecting = makeConnection()
        }
    }

    private func connection() async throws -> Connection {
        let future = state.withLock { s -> EventLoopFuture<Connection> in
            if let current = s.current, current.state.isUsable, current.channel.isActive {
                return current.channel.eventLoop.makeSucceededFuture(current)
            }
            s.current = nil
            if let connecting = s.connecting { return connecting }
            let connecting = makeConnection()
            s.connecting = connecting
            return connecting
        }
        do {
            return try await Self.value(of: future)
        } catch is CancellationError {
            throw RPCError(code: .cancelled, message: "the call was cancelled while connecting to \(config.address)")
        } catch let error as RPCError {
            throw error
        } catch {
            throw RPCError(code: .unavailable, message: "cannot connect to \(config.address): \(Self.describe(error))", cause: ConnectFailure(reason: Self.describe(error)))
        }
    }

    /// Waits for a future, but stops waiting (with `CancellationError`) when
    /// the task is cancelled: a call's deadline must not wait out a connect.
    static func value<T: Sendable>(of future: EventLoopFuture<T>) async throws -> T {
        let box = ContinuationBox<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                box.set(continuation)
                future.whenComplete { box.resume(with: $0) }
            }
        } onCancel: {
            box.resume(with: .failure(CancellationError()))
        }
    }

    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError { return reason(io.description) }
        if let connect = error as? NIOConnectionError, let first = connect.connectionErrors.first {
            return describe(first.error)
        }
        if let channel = error as? ChannelError, case .connectTimeout = channel { return "connection timed out" }
        return "\(error)"
    }

    /// "connect(descriptor:addr:size:): No such file or directory) (errno: 2)" → "No such file or directory".
    static func reason(_ description: String) -> String {
        var text = Substring(description)
        if let range = text.ranges(of: " (errno:").last { text = text[..<range.lowerBound] }
        while text.hasSuffix(")") { text = text.dropLast() }
        if let range = text.ranges(of: ": ").last { text = text[range.upperBound...] }
        return String(text)
    }

    private func makeConnection() -> EventLoopFuture<Connection> {
        let registry = CallRegistry()
        let connectionState = ClientConnectionState()
        let limits = config.limits
        let logger = self.logger
        let initializer = config.connectionInitializer
        let authority: String
        switch config.address {
        case .tcp: authority = config.authority ?? config.address.hostAndPort
        case .unix: authority = config.authority ?? "localhost"
        }
        let nanos = config.connectTimeout.components.seconds * 1_000_000_000 + config.connectTimeout.components.attoseconds / 1_000_000_000
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.nanoseconds(nanos))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                let secured: EventLoopFuture<Bool> = initializer?(channel) ?? channel.eventLoop.makeSucceededFuture(false)
                return secured.flatMapThrowing { secure in
                    let handler = ClientConnectionHandler(
                        limits: limits, logger: logger, registry: registry, authority: authority,
                        scheme: secure ? "https" : "http", state: connectionState)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        let channelFuture: EventLoopFuture<any Channel>
        switch config.address {
        case .tcp(let host, let port): channelFuture = bootstrap.connect(host: host, port: port)
        case .unix(let path): channelFuture = bootstrap.connect(unixDomainSocketPath: path)
        }
        let result = channelFuture.flatMapThrowing { channel -> Connection in
            // A peer that answers and closes at once (a TLS-only server
            // sent plaintext) can close the channel before this runs; its
            // pipeline is then empty. That is the server's answer, not a
            // failure to connect.
            guard let handler = try? channel.pipeline.syncOperations.handler(type: ClientConnectionHandler.self),
                let scheduler = connectionState.scheduler
            else {
                throw RPCError(code: .unavailable, message: "the server closed the connection as it was made")
            }
            return Connection(
                channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop), registry: registry,
                state: connectionState, scheduler: scheduler)
        }
        result.whenComplete { [weak self] outcome in
            guard let self else { return }
            let close: (any Channel)? = self.state.withLock { s in
                s.connecting = nil
                guard case .success(let connection) = outcome else { return nil }
                if s.phase == .closed { return connection.channel }
                s.current = connection
                s.all[ObjectIdentifier(connection.channel)] = connection
                return nil
            }
            close?.close(promise: nil)
            if case .success(let connection) = outcome {
                connection.channel.closeFuture.whenComplete { [weak self] _ in
                    self?.state.withLock { s in
                        s.all.removeValue(forKey: ObjectIdentifier(connection.channel))
                        if let current = s.current, current.channel === connection.channel { s.current = nil }
                    }
                }
            }
        }
        return result
    }
}

/// Why a connection could not be made, in a few words (`No such file or directory`).
extension NGHTTP2ClientTransport {
    /// The status message (UNAVAILABLE) of a call the server had begun to
    /// answer when the connection closed: the server went away mid-call.
    public static let closedDuringCallMessage = "the connection to the server closed during the call"
}

public struct ConnectFailure: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public var description: String { reason }
}

/// A continuation resumed at most once, by whichever comes first.
final class ContinuationBox<T: Sendable>: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<T, any Error>?, early: Result<T, any Error>?, done: Bool)>((nil, nil, false))

    func set(_ continuation: CheckedContinuation<T, any Error>) {
        let early: Result<T, any Error>? = state.withLock { s in
            if let early = s.early {
                s.early = nil
                return early
            }
            s.continuation = continuation
            return nil
        }
        if let early { continuation.resume(with: early) }
    }

    func resume(with result: Result<T, any Error>) {
        let continuation: CheckedContinuation<T, any Error>? = state.withLock { s in
            if s.done { return nil }
            s.done = true
            guard let c = s.continuation else {
                s.early = result
                return nil
            }
            s.continuation = nil
            return c
        }
        continuation?.resume(with: result)
    }
}
