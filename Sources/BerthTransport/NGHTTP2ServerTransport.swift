public import GRPCCore
public import Logging
public import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

import FoundationEssentials

/// gRPC's server transport on HTTP/2 sessions framed by nghttp2, over
/// SwiftNIO sockets (TCP or unix-domain). Plain HTTP/1.1 requests on the same
/// listener are answered from `HTTPRoutes`.
public final class NGHTTP2ServerTransport: ServerTransport, Sendable {
    public typealias Bytes = TransportBytes

    /// How and where the server listens.
    public struct Config: Sendable {
        public var address: TransportAddress
        public var limits: TransportLimits
        public var routes: HTTPRoutes
        /// File mode for a unix socket (0600: the owner only).
        public var unixSocketMode: UInt32
        /// Adds handlers in front of the protocol detection for each accepted
        /// connection (TLS goes here).
        public var connectionInitializer: (@Sendable (any Channel) -> EventLoopFuture<Void>)?
        /// False for a plain HTTP listener (`--metrics-listen`): only the
        /// routes answer, an HTTP/2 connection is closed.
        public var serveGRPC: Bool = true
        /// How long a graceful shutdown lets calls in flight finish. Past
        /// it, every call still open (a watch, a follow, one waiting on
        /// something that will not come) ends with UNAVAILABLE and
        /// `shutdownMessage`, then the handlers still running are cancelled
        /// and the connections closed. nil: calls are never cut short.
        public var shutdownGrace: Duration?

        public init(
            address: TransportAddress, limits: TransportLimits = TransportLimits(), routes: HTTPRoutes = .standard,
            unixSocketMode: UInt32 = 0o600
        ) {
            self.address = address
            self.limits = limits
            self.routes = routes
            self.unixSocketMode = unixSocketMode
        }
    }

    private enum Phase {
        case idle
        case listening(any Channel)
        case shuttingDown
        case stopped
    }

    private struct State {
        var phase: Phase = .idle
        var connections: [ObjectIdentifier: NIOLoopBound<ServerConnectionHandler>] = [:]
        var pendingChannels = 0
        /// The task running the calls' handlers, while listening.
        var handlers: Task<Void, Never>?
    }

    private let config: Config
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())
    private let streams: AsyncStream<AcceptedStream>
    private let streamsContinuation: AsyncStream<AcceptedStream>.Continuation
    private let bound: EventLoopPromise<TransportAddress>

    /// Creates a transport; nothing listens until `listen` runs.
    public init(config: Config, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger = Logger(label: "berth.transport")) {
        self.config = config
        self.group = group
        self.logger = logger
        (self.streams, self.streamsContinuation) = AsyncStream.makeStream(of: AcceptedStream.self)
        self.bound = group.next().makePromise(of: TransportAddress.self)
    }

    /// The address actually bound (with the port chosen when 0 was asked for).
    ///
    /// - Throws: the bind error when listening failed.
    public var listeningAddress: TransportAddress {
        get async throws { try await bound.futureResult.get() }
    }

    /// The status of a call that a graceful shutdown ended past its grace.
    public static let shutdownMessage = "the server is shutting down"

    private struct Acceptor: StreamAcceptor {
        let continuation: AsyncStream<AcceptedStream>.Continuation
        func accept(_ stream: AcceptedStream) {
            if case .terminated = continuation.yield(stream) {
                stream.io.fail(RPCError(code: .unavailable, message: "the server is shutting down"))
            }
        }
    }

    public func listen(
        streamHandler: @escaping @Sendable (_ stream: RPCStream<Inbound, Outbound>, _ context: ServerContext) async -> Void
    ) async throws {
        let channel: any Channel
        do {
            channel = try await bind()
        } catch {
            bound.fail(error)
            streamsContinuation.finish()
            throw error
        }
        let proceed = state.withLock { s -> Bool in
            guard case .idle = s.phase else { return false }
            s.phase = .listening(channel)
            return true
        }
        guard proceed else {
            try? await channel.close()
            bound.fail(TransportError.closed)
            throw RPCError(code: .failedPrecondition, message: "the server transport is already listening or shut down")
        }
        bound.succeed(Self.address(of: channel, fallback: config.address))
        logger.info("listening", metadata: ["address": "\(Self.address(of: channel, fallback: config.address))"])

        // The handlers run in a task of their own (with this task's locals),
        // so that the end of a shutdown's grace can cancel every one still
        // running, wherever the accepting loop is by then.
        let handlers = Task {
            await withDiscardingTaskGroup { group in
                for await accepted in streams {
                    group.addTask {
                        await withServerContextRPCCancellationHandle { handle in
                            accepted.io.attach(handle)
                            let context = ServerContext(
                                descriptor: accepted.stream.descriptor, remotePeer: accepted.remotePeer,
                                localPeer: accepted.localPeer, cancellation: handle)
                            await streamHandler(accepted.stream, context)
                            accepted.io.finishOutbound()
                        }
                    }
                }
                // Cancelled, or shut down with every connection closed.
                forceClose()
            }
        }
        state.withLock { $0.handlers = handlers }
        await withTaskCancellationHandler {
            await handlers.value
        } onCancel: {
            handlers.cancel()
        }
        state.withLock {
            $0.phase = .stopped
            $0.handlers = nil
        }
    }

    public func beginGracefulShutdown() {
        let (channel, connections) = state.withLock { s -> ((any Channel)?, [NIOLoopBound<ServerConnectionHandler>]) in
            switch s.phase {
            case .listening(let channel):
                s.phase = .shuttingDown
                return (channel, Array(s.connections.values))
            case .idle:
                s.phase = .stopped
                return (nil, [])
            case .shuttingDown, .stopped:
                return (nil, [])
            }
        }
        channel?.close(promise: nil)
        for connection in connections {
            connection.eventLoop.execute { connection.value.beginGracefulShutdown() }
        }
        if channel != nil, let grace = config.shutdownGrace {
            let nanos = grace.components.seconds * 1_000_000_000 + grace.components.attoseconds / 1_000_000_000
            group.next().scheduleTask(in: .nanoseconds(max(0, nanos))) { [weak self] in self?.endRemainingCalls() }
        }
        finishIfDrained()
    }

    /// Past the shutdown grace: every call still open ends with UNAVAILABLE,
    /// then the handlers still running are cancelled (after the statuses,
    /// so that the status a client sees is the transport's).
    private func endRemainingCalls() {
        let found = state.withLock { s -> ([NIOLoopBound<ServerConnectionHandler>], Task<Void, Never>)? in
            guard case .shuttingDown = s.phase, let handlers = s.handlers else { return nil }
            return (Array(s.connections.values), handlers)
        }
        guard let (connections, handlers) = found else { return }
        if !connections.isEmpty {
            logger.info("ending calls still open at shutdown", metadata: ["connections": "\(connections.count)"])
        }
        let status = Status(code: .unavailable, message: Self.shutdownMessage)
        let ended = connections.map { connection in
            connection.eventLoop.submit { connection.value.endCalls(status) }
        }
        EventLoopFuture.andAllComplete(ended, on: group.next()).whenComplete { _ in
            handlers.cancel()
        }
    }

    private func forceClose() {
        let (channel, connections) = state.withLock { s -> ((any Channel)?, [NIOLoopBound<ServerConnectionHandler>]) in
            var channel: (any Channel)?
            if case .listening(let c) = s.phase { channel = c }
            s.phase = .stopped
            return (channel, Array(s.connections.values))
        }
        channel?.close(promise: nil)
        for connection in connections {
            connection.eventLoop.execute { connection.value.close() }
        }
        streamsContinuation.finish()
    }

    private func finishIfDrained() {
        let done = state.withLock { s -> Bool in
            switch s.phase {
            case .shuttingDown, .stopped: return s.connections.isEmpty && s.pendingChannels == 0
            default: return false
            }
        }
        if done { streamsContinuation.finish() }
    }

    // MARK: Binding

    private func bind() async throws -> any Channel {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { [self] channel in
                self.initialize(channel)
            }
        switch config.address {
        case .tcp(let host, let port):
            return try await bootstrap.bind(host: host, port: port).get()
        case .unix(let path):
            try await Self.prepareUnixSocketPath(path, group: group)
            let channel = try await bootstrap.bind(unixDomainSocketPath: path).get()
            do {
                try FileManager.default.setAttributes([.posixPermissions: Int(config.unixSocketMode)], ofItemAtPath: path)
            } catch {
                try? await channel.close()
                throw TransportError.badAddress("cannot set the mode of \(path): \(error)")
            }
            return channel
        }
    }

    /// Removes a stale socket file left by a process that is gone; refuses to
    /// touch a live socket or anything that is not a socket.
    public static func prepareUnixSocketPath(_ path: String, group: any EventLoopGroup) async throws {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { return }
        guard attributes[.type] as? FileAttributeType == .typeSocket else {
            throw TransportError.badAddress("\(path) exists and is not a socket; remove it or choose another --socket")
        }
        do {
            let probe = try await ClientBootstrap(group: group).connect(unixDomainSocketPath: path).get()
            try? await probe.close()
            throw TransportError.badAddress("another process is already listening on \(path)")
        } catch let error as TransportError {
            throw error
        } catch {
            // Nobody answers: the file is left over from a process that is gone.
            do {
                try FileManager.default.removeItem(atPath: path)
            } catch {
                throw TransportError.badAddress("\(path): cannot remove the stale socket: \(error)")
            }
        }
    }

    private func initialize(_ channel: any Channel) -> EventLoopFuture<Void> {
        state.withLock { $0.pendingChannels += 1 }
        let remote = Self.peerDescription(channel.remoteAddress)
        let local = Self.peerDescription(channel.localAddress)
        let limits = config.limits
        let routes = config.routes
        let serveGRPC = config.serveGRPC
        let logger = self.logger
        let acceptor = Acceptor(continuation: streamsContinuation)
        let closing: @Sendable (String) -> Void = { why in
            logger.info("connection closed before its first request", metadata: ["peer": "\(remote)", "why": "\(why)"])
        }
        let makeSniffer = { @Sendable [weak self] in ProtocolSniffer(closing: closing) { [weak self] decision, context in
            let pipeline = context.pipeline.syncOperations
            switch decision {
            case .http2:
                guard serveGRPC else { throw TransportError.closed }
                let key = ObjectIdentifier(context.channel)
                let handler = ServerConnectionHandler(
                    limits: limits, logger: logger, acceptor: acceptor, remotePeer: remote, localPeer: local,
                    peer: MutualTLS.peerIdentity(pipeline), onClose: { [weak self] in self?.connectionClosed(key) })
                guard let self, self.register(key, NIOLoopBound(handler, eventLoop: context.eventLoop)) else {
                    throw TransportError.closed
                }
                try pipeline.addHandler(handler, position: .after(context.handler))
            case .http1:
                try pipeline.addHandlers(
                    [
                        ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)),
                        HTTPResponseEncoder(),
                        HTTPServerPipelineHandler(),
                        HTTP1Handler(routes: routes),
                    ], position: .after(context.handler))
            case .garbage:
                break
            }
        } }
        let added: EventLoopFuture<Void>
        if let initializer = config.connectionInitializer {
            added = initializer(channel).flatMapThrowing {
                try channel.pipeline.syncOperations.addHandler(makeSniffer())
            }
        } else {
            added = channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(makeSniffer()) }
        }
        return added.always { [weak self] _ in
            self?.state.withLock { $0.pendingChannels -= 1 }
        }
    }

    private func register(_ key: ObjectIdentifier, _ handler: NIOLoopBound<ServerConnectionHandler>) -> Bool {
        state.withLock { s in
            guard case .listening = s.phase else { return false }
            s.connections[key] = handler
            return true
        }
    }

    private func connectionClosed(_ key: ObjectIdentifier) {
        state.withLock { _ = $0.connections.removeValue(forKey: key) }
        finishIfDrained()
    }

    static func peerDescription(_ address: SocketAddress?) -> String {
        guard let address else { return "unknown" }
        switch address {
        case .v4(let a): return "ipv4:\(a.host):\(address.port ?? 0)"
        case .v6(let a): return "ipv6:[\(a.host)]:\(address.port ?? 0)"
        case .unixDomainSocket: return "unix:\(address.pathname ?? "")"
        }
    }

    static func address(of channel: any Channel, fallback: TransportAddress) -> TransportAddress {
        guard let address = channel.localAddress else { return fallback }
        switch address {
        case .v4(let a): return .tcp(host: a.host, port: address.port ?? 0)
        case .v6(let a): return .tcp(host: a.host, port: address.port ?? 0)
        case .unixDomainSocket: return .unix(path: address.pathname ?? "")
        }
    }
}
