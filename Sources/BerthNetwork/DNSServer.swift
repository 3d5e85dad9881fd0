public import BerthModel
import Foundation
public import Logging
public import NIOCore
import NIOPosix
import Synchronization

/// Who answers to which name on which network: running containers, by
/// name and alias. Changed as containers start and stop; read by the
/// resolver on every question.
public final class NameTable: Sendable {
    public struct Entry: Sendable, Hashable {
        public var networkID: String
        public var networkName: String
        public var address: IPv4Address
        /// Lower-cased: the container's name, its aliases on this network.
        public var names: [String]

        public init(networkID: String, networkName: String, address: IPv4Address, names: [String]) {
            self.networkID = networkID
            self.networkName = networkName
            self.address = address
            self.names = names.map { $0.lowercased() }
        }
    }

    private let entries = Mutex<[String: [Entry]]>([:])

    public init() {}

    /// The container's entries, replacing any it had.
    public func register(container: String, _ list: [Entry]) {
        entries.withLock { $0[container] = list }
    }

    public func unregister(container: String) {
        _ = entries.withLock { $0.removeValue(forKey: container) }
    }

    /// The addresses `name` has for a container at `asker` on `networkID`:
    /// names on every network the asker is on (on that network alone for an
    /// asker the table does not know). `name` may also be `name.network`.
    public func lookup(_ name: String, asker: IPv4Address, on networkID: String) -> [IPv4Address] {
        entries.withLock { all in
            let networks = Self.networks(of: asker, on: networkID, in: all)
            var found: [IPv4Address] = []
            for entry in all.values.joined() where networks.contains(entry.networkID) {
                let qualified = entry.names.map { "\($0).\(entry.networkName.lowercased())" }
                if (entry.names.contains(name) || qualified.contains(name)) && !found.contains(entry.address) {
                    found.append(entry.address)
                }
            }
            return found
        }
    }

    /// The name of the container at `address`, for reverse lookups.
    public func name(of address: IPv4Address, asker: IPv4Address, on networkID: String) -> String? {
        entries.withLock { all in
            let networks = Self.networks(of: asker, on: networkID, in: all)
            return all.values.joined().first { networks.contains($0.networkID) && $0.address == address }.flatMap(\.names.first)
        }
    }

    private static func networks(of asker: IPv4Address, on networkID: String, in all: [String: [Entry]]) -> Set<String> {
        // The asker's own registration first: names registered for other
        // nodes' containers (`overlay:` lists) may still hold its address
        // for a moment after it was handed to the asker.
        let candidates = all.sorted { !$0.key.hasPrefix("overlay:") && $1.key.hasPrefix("overlay:") }.map(\.value)
        let mine = candidates.first { $0.contains { $0.networkID == networkID && $0.address == asker } }
        return Set(mine?.map(\.networkID) ?? [networkID])
    }
}

/// The resolver containers on bridge networks use: one UDP listener per
/// network on its gateway address, port 53. It answers containers' names
/// from the `NameTable` and forwards every other question to the host's
/// resolvers (or the agent's `--dns` servers), relaying their answer.
public final class DNSServer: Sendable {
    private let table: NameTable
    private let upstreams: @Sendable () -> [SocketAddress]
    private let group: any EventLoopGroup
    private let logger: Logger
    private let listeners = Mutex<[String: any Channel]>([:])

    public init(table: NameTable, group: any EventLoopGroup, logger: Logger, upstreams: @escaping @Sendable () -> [SocketAddress]) {
        self.table = table
        self.group = group
        self.logger = logger
        self.upstreams = upstreams
    }

    /// The host's resolvers from a resolv.conf text.
    public static func resolvers(inResolvConf text: String) -> [SocketAddress] {
        text.split(separator: "\n").compactMap { line in
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 2, words[0] == "nameserver" else { return nil }
            return try? SocketAddress(ipAddress: String(words[1]), port: 53)
        }
    }

    /// Listens on `address`:`port` for the network (again, if it already did).
    ///
    /// - Throws: the bind's error (the port taken by another resolver bound to that address).
    public func serve(networkID: String, address: IPv4Address, port: Int = 53) async throws {
        stop(networkID: networkID)
        let handler = Handler(server: self, networkID: networkID)
        let channel = try await DatagramBootstrap(group: group)
            .channelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { $0.pipeline.addHandler(handler) }
            .bind(host: address.description, port: port).get()
        listeners.withLock { $0[networkID] = channel }
    }

    /// Whether the resolver listens for the network.
    public func isServing(networkID: String) -> Bool {
        listeners.withLock { $0[networkID] != nil }
    }

    public func stop(networkID: String) {
        let channel = listeners.withLock { $0.removeValue(forKey: networkID) }
        channel?.close(promise: nil)
    }

    public func stopAll() {
        let all = listeners.withLock { l in defer { l.removeAll() }; return Array(l.values) }
        for channel in all { channel.close(promise: nil) }
    }

    /// What becomes of a datagram that arrived.
    enum Reply {
        /// Answered here, from the name table.
        case answer([UInt8])
        /// Not a name of the table's: asked of the upstream resolvers.
        case forward(DNSQuery)
        /// Not a query: dropped.
        case drop
    }

    func reply(to bytes: [UInt8], asker: IPv4Address?, networkID: String) -> Reply {
        guard let query = DNSQuery(bytes) else { return .drop }
        guard query.questionClass == 1 else { return .forward(query) }
        let asker = asker ?? IPv4Address(0)
        if query.type == DNSQuery.typePTR, let address = query.reverseAddress {
            if let name = table.name(of: address, asker: asker, on: networkID) { return .answer(query.answer(pointer: name)) }
            return .forward(query)
        }
        let addresses = table.lookup(query.name, asker: asker, on: networkID)
        guard !addresses.isEmpty else { return .forward(query) }
        // A container's name has only IPv4 addresses: other types get an empty answer.
        return .answer(query.answer(addresses: query.type == DNSQuery.typeA ? addresses : []))
    }

    /// Sends the question to each upstream in turn until one answers
    /// (within 2 s each); nil when none does. All on the event loop, so that
    /// an answer never waits for a thread of the agent's other work.
    func forward(_ bytes: [UInt8], on loop: any EventLoop) -> EventLoopFuture<[UInt8]?> {
        var result = loop.makeSucceededFuture(nil as [UInt8]?)
        for upstream in upstreams() {
            result = result.flatMap { answer in
                if let answer { return loop.makeSucceededFuture(answer) }
                return self.ask(upstream, bytes, on: loop).map { Optional($0) }.recover { _ in nil }
            }
        }
        return result
    }

    private func ask(_ upstream: SocketAddress, _ bytes: [UInt8], on loop: any EventLoop) -> EventLoopFuture<[UInt8]> {
        let reply = loop.makePromise(of: [UInt8].self)
        return DatagramBootstrap(group: loop)
            .channelInitializer { $0.pipeline.addHandler(ReplyHandler(promise: reply)) }
            .bind(host: upstream.protocol == .inet6 ? "::" : "0.0.0.0", port: 0)
            .flatMap { channel in
                let timeout = loop.scheduleTask(in: .seconds(2)) { reply.fail(ChannelError.connectTimeout(.seconds(2))) }
                var buffer = channel.allocator.buffer(capacity: bytes.count)
                buffer.writeBytes(bytes)
                channel.writeAndFlush(AddressedEnvelope(remoteAddress: upstream, data: buffer)).cascadeFailure(to: reply)
                return reply.futureResult.always { _ in
                    timeout.cancel()
                    channel.close(promise: nil)
                }
            }
    }

    final class ReplyHandler: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let promise: EventLoopPromise<[UInt8]>
        init(promise: EventLoopPromise<[UInt8]>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var envelope = unwrapInboundIn(data)
            promise.succeed(envelope.data.readBytes(length: envelope.data.readableBytes) ?? [])
        }
    }

    final class Handler: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        typealias OutboundOut = AddressedEnvelope<ByteBuffer>
        let server: DNSServer
        let networkID: String

        init(server: DNSServer, networkID: String) {
            self.server = server
            self.networkID = networkID
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var envelope = unwrapInboundIn(data)
            guard let bytes = envelope.data.readBytes(length: envelope.data.readableBytes) else { return }
            let remote = envelope.remoteAddress
            let asker = remote.ipAddress.flatMap { try? IPv4Address(parsing: $0) }
            let channel = context.channel
            @Sendable func send(_ answer: [UInt8]) {
                var buffer = channel.allocator.buffer(capacity: answer.count)
                buffer.writeBytes(answer)
                channel.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: buffer), promise: nil)
            }
            switch server.reply(to: bytes, asker: asker, networkID: networkID) {
            case .answer(let answer): send(answer)
            case .drop: return
            case .forward(let query):
                server.forward(bytes, on: context.eventLoop).whenSuccess { answer in send(answer ?? query.failure(rcode: 2)) }
            }
        }
    }
}
