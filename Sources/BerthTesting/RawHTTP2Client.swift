import CNghttp2
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A deliberately low-level HTTP/2 client for tests: it sends exactly the
/// headers, DATA, RST_STREAM and raw bytes a test asks for, so that a server
/// can be fed malformed or hostile input and its answers recorded.
public final class RawHTTP2Client: Sendable {
    /// What the server sent on one stream.
    public struct StreamRecord: Sendable {
        public var headers: [[(String, String)]] = []
        public init() {}
        public var data: [UInt8] = []
        public var closed: UInt32?
        public var dataBytesReceived = 0

        /// The last value of a header across all header blocks.
        public func header(_ name: String) -> String? {
            headers.flatMap { $0 }.last { $0.0 == name }?.1
        }
    }

    /// Everything observed on the connection.
    public struct Record: Sendable {
        public var streams: [Int32: StreamRecord] = [:]
        public var goAway: (lastStreamID: Int32, errorCode: UInt32)?
        public var connectionClosed = false
        public var rawReceived: [UInt8] = []
        public var rawReceivedCount = 0
    }

    private let store: RecordStore
    private let channel: any Channel
    private let handler: NIOLoopBound<Handler>

    /// Connects to a TCP port on 127.0.0.1, or to a unix socket path.
    ///
    /// - Parameter http2: false keeps the connection raw (no preface, no
    ///   session): only `sendRaw` makes sense then.
    public init(port: Int? = nil, unixPath: String? = nil, http2: Bool = true, maxSendHeaderBlock: Int = 1 << 20) async throws {
        let store = RecordStore()
        self.store = store
        // The handler is kept as it is added: the agent may close the
        // connection (it drops one that stays silent) before a lookup
        // in the pipeline would find it.
        let added = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: NIOLoopBound<Handler>.self)
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = Handler(http2: http2, maxSendHeaderBlock: maxSendHeaderBlock, store: store)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    added.succeed(NIOLoopBound(handler, eventLoop: channel.eventLoop))
                }
            }
        do {
            if let unixPath {
                channel = try await bootstrap.connect(unixDomainSocketPath: unixPath).get()
            } else {
                channel = try await bootstrap.connect(host: "127.0.0.1", port: port ?? 0).get()
            }
        } catch {
            added.fail(error)
            throw error
        }
        self.handler = try await added.futureResult.get()
    }

    /// A snapshot of what was observed so far.
    public var observed: Record { store.snapshot }

    /// Opens a stream with exactly these headers (pseudo-headers first).
    /// - Returns: the stream ID.
    public func request(_ headers: [(String, String)], body: [UInt8]? = nil, endStream: Bool = true) async throws -> Int32 {
        try await onLoop { h in try h.submitRequest(headers, body: body, endStream: endStream) }
    }

    /// A POST to a gRPC path with the usual gRPC headers plus `extra`.
    public func grpcRequest(path: String, extra: [(String, String)] = [], body: [UInt8]? = nil, endStream: Bool = true) async throws -> Int32 {
        try await request(
            [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
             ("content-type", "application/grpc"), ("te", "trailers")] + extra,
            body: body, endStream: endStream)
    }

    /// Sends DATA on an open stream.
    public func sendData(_ stream: Int32, _ bytes: [UInt8], endStream: Bool) async throws {
        try await onLoop { h in try h.submitData(stream, bytes, endStream: endStream) }
    }

    /// Sends RST_STREAM.
    public func reset(_ stream: Int32, errorCode: UInt32 = 8) async throws {
        try await onLoop { h in h.reset(stream, errorCode) }
    }

    /// The bytes of a "rapid reset" attack: the connection preface, then
    /// `count` requests each followed at once by RST_STREAM(CANCEL). HPACK is
    /// written by hand (literals without indexing), so no session is needed.
    public static func rapidResetBytes(count: Int, path: String) -> [UInt8] {
        openStreamsBytes(count: count, path: path, reset: true)
    }

    /// The connection preface and `count` requests left open (no END_STREAM),
    /// each reset at once when `reset` is set.
    public static func openStreamsBytes(count: Int, path: String, reset: Bool = false) -> [UInt8] {
        var bytes = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        bytes += frame(type: 4, flags: 0, stream: 0, payload: [])
        var block: [UInt8] = [0x83, 0x86]  // :method POST, :scheme http
        block += [0x04, UInt8(path.utf8.count)] + Array(path.utf8)  // :path
        block += [0x01, 0x01, UInt8(ascii: "x")]  // :authority x
        block += [0x0F, 0x10, 16] + Array("application/grpc".utf8)  // content-type
        for i in 0..<count {
            let stream = UInt32(2 * i + 1)
            bytes += frame(type: 1, flags: 0x4, stream: stream, payload: block)
            if reset { bytes += frame(type: 3, flags: 0, stream: stream, payload: [0, 0, 0, 8]) }
        }
        return bytes
    }

    /// One HTTP/2 frame.
    public static func frame(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8]) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags,
                UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)] + payload
    }

    /// Splits raw bytes received from a server into frames.
    public static func frames(in bytes: [UInt8]) -> [(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8])] {
        var result: [(UInt8, UInt8, UInt32, [UInt8])] = []
        var index = 0
        while index + 9 <= bytes.count {
            let length = Int(bytes[index]) << 16 | Int(bytes[index + 1]) << 8 | Int(bytes[index + 2])
            guard index + 9 + length <= bytes.count else { break }
            let stream = UInt32(bytes[index + 5] & 0x7F) << 24 | UInt32(bytes[index + 6]) << 16 | UInt32(bytes[index + 7]) << 8 | UInt32(bytes[index + 8])
            result.append((bytes[index + 3], bytes[index + 4], stream, Array(bytes[(index + 9)..<(index + 9 + length)])))
            index += 9 + length
        }
        return result
    }

    /// The error code of the first GOAWAY among raw received frames.
    public static func goAwayCode(in bytes: [UInt8]) -> UInt32? {
        guard let goAway = frames(in: bytes).first(where: { $0.type == 7 }), goAway.payload.count >= 8 else { return nil }
        let p = goAway.payload
        return UInt32(p[4]) << 24 | UInt32(p[5]) << 16 | UInt32(p[6]) << 8 | UInt32(p[7])
    }

    /// Writes bytes as they are, bypassing nghttp2.
    public func sendRaw(_ bytes: [UInt8]) async throws {
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        try await channel.writeAndFlush(buffer)
    }

    /// Waits until `condition` holds for what was observed, or `timeout` passes.
    /// - Returns: whether the condition held.
    @discardableResult
    public func wait(timeout: Duration = .seconds(30), until condition: @Sendable (Record) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition(observed) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return condition(observed)
    }

    public func close() async {
        try? await channel.close()
    }

    /// A plain HTTP/1.0 GET (the server closes the connection after the
    /// response, and sends no chunked encoding): the status and the body.
    public static func get(port: Int? = nil, unixPath: String? = nil, path: String) async throws -> (status: Int, body: String) {
        let client = try await RawHTTP2Client(port: port, unixPath: unixPath, http2: false)
        defer { Task { await client.close() } }
        try await client.sendRaw(Array("GET \(path) HTTP/1.0\r\nHost: localhost\r\n\r\n".utf8))
        await client.wait { $0.connectionClosed }
        let text = String(decoding: client.observed.rawReceived, as: UTF8.self)
        guard let statusLine = text.split(separator: "\r\n", maxSplits: 1).first, statusLine.split(separator: " ").count >= 2,
            let status = Int(statusLine.split(separator: " ")[1]), let bodyStart = text.range(of: "\r\n\r\n")
        else { throw NotHTTP(description: "not an HTTP response to GET \(path): \(text.prefix(200))") }
        return (status, String(text[bodyStart.upperBound...]))
    }

    public struct NotHTTP: Error, CustomStringConvertible {
        public var description: String
    }

    private func onLoop<T: Sendable>(_ body: @escaping @Sendable (Handler) throws -> T) async throws -> T {
        let handler = self.handler
        return try await channel.eventLoop.submit { try body(handler.value) }.get()
    }

    // MARK: -

    final class RecordStore: Sendable {
        private let record = Mutex(Record())
        func update(_ change: (inout Record) -> Void) { record.withLock { change(&$0) } }
        var snapshot: Record { record.withLock { $0 } }
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        let http2: Bool
        let store: RecordStore
        var session: OpaquePointer?
        var context: ChannelHandlerContext?
        var bodies: [Int32: (bytes: [UInt8], offset: Int, end: Bool)] = [:]

        init(http2: Bool, maxSendHeaderBlock: Int, store: RecordStore) {
            self.http2 = http2
            self.store = store
            guard http2 else { return }
            var callbacks: OpaquePointer?
            nghttp2_session_callbacks_new(&callbacks)
            nghttp2_session_callbacks_set_on_header_callback(callbacks, rawOnHeader)
            nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, rawOnBeginHeaders)
            nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, rawOnData)
            nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, rawOnClose)
            nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, rawOnFrame)
            var option: OpaquePointer?
            nghttp2_option_new(&option)
            nghttp2_option_set_max_send_header_block_length(option, maxSendHeaderBlock)
            nghttp2_option_set_peer_max_concurrent_streams(option, 100_000)
            var session: OpaquePointer?
            nghttp2_session_client_new2(&session, callbacks, Unmanaged.passUnretained(self).toOpaque(), option)
            nghttp2_option_del(option)
            nghttp2_session_callbacks_del(callbacks)
            self.session = session
            var settings = [nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: 1 << 30)]
            nghttp2_submit_settings(session, 0, &settings, 1)
            nghttp2_session_set_local_window_size(session, 0, 0, Int32.max)
        }

        deinit {
            if let session { nghttp2_session_del(session) }
        }

        func handlerAdded(context: ChannelHandlerContext) {
            self.context = context
        }

        func channelActive(context: ChannelHandlerContext) {
            flush()
            context.fireChannelActive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            let bytes = Array(buffer.readableBytesView)
            store.update {
                $0.rawReceived += bytes.prefix(max(0, 1 << 20 - $0.rawReceived.count))
                $0.rawReceivedCount += bytes.count
            }
            if let session {
                _ = bytes.withUnsafeBufferPointer { nghttp2_session_mem_recv(session, $0.baseAddress, $0.count) }
                flush()
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            store.update { $0.connectionClosed = true }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }

        func flush() {
            guard let session, let context else { return }
            var out = context.channel.allocator.buffer(capacity: 4096)
            while true {
                var pointer: UnsafePointer<UInt8>?
                let n = nghttp2_session_mem_send(session, &pointer)
                if n <= 0 { break }
                out.writeBytes(UnsafeRawBufferPointer(start: pointer, count: n))
            }
            if out.readableBytes > 0 { context.writeAndFlush(NIOAny(out), promise: nil) }
        }

        func submitRequest(_ headers: [(String, String)], body: [UInt8]?, endStream: Bool, flush: Bool = true) throws -> Int32 {
            guard let session else { throw ClientError("no HTTP/2 session") }
            var storage: [[UInt8]] = headers.flatMap { [Array($0.0.utf8), Array($0.1.utf8)] }
            let id: Int32 = storage.withUnsafeMutableBufferPointer { parts in
                var nva: [nghttp2_nv] = []
                for i in stride(from: 0, to: parts.count, by: 2) {
                    let name = parts[i].withUnsafeMutableBufferPointer { $0.baseAddress! }
                    let value = parts[i + 1].withUnsafeMutableBufferPointer { $0.baseAddress! }
                    nva.append(nghttp2_nv(name: name, value: value, namelen: parts[i].count, valuelen: parts[i + 1].count, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
                }
                if body != nil || !endStream {
                    var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: rawRead)
                    return nghttp2_submit_request(session, nil, nva, nva.count, &provider, nil)
                }
                return nghttp2_submit_request(session, nil, nva, nva.count, nil, nil)
            }
            if id < 0 { throw ClientError("nghttp2_submit_request: \(String(cString: nghttp2_strerror(id)))") }
            if body != nil || !endStream {
                bodies[id] = (body ?? [], 0, endStream)
            }
            if flush { self.flush() }
            return id
        }

        func submitData(_ stream: Int32, _ bytes: [UInt8], endStream: Bool) throws {
            guard let session else { throw ClientError("no HTTP/2 session") }
            var body = bodies[stream] ?? ([], 0, false)
            body.bytes += bytes
            body.end = endStream
            bodies[stream] = body
            nghttp2_session_resume_data(session, stream)
            flush()
        }

        func reset(_ stream: Int32, _ code: UInt32, flush: Bool = true) {
            guard let session else { return }
            nghttp2_submit_rst_stream(session, 0, stream, code)
            if flush { self.flush() }
        }

        func read(_ stream: Int32, into buffer: UnsafeMutablePointer<UInt8>, length: Int, flags: UnsafeMutablePointer<UInt32>) -> Int {
            guard var body = bodies[stream] else {
                flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                return 0
            }
            let n = min(length, body.bytes.count - body.offset)
            if n > 0 {
                body.bytes.withUnsafeBufferPointer { src in
                    buffer.update(from: src.baseAddress! + body.offset, count: n)
                }
                body.offset += n
            }
            if body.offset == body.bytes.count {
                body.bytes = []
                body.offset = 0
                if body.end {
                    flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                    bodies[stream] = nil
                    return n
                }
            }
            bodies[stream] = body
            return n > 0 ? n : Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
    }

    public struct ClientError: Error, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }
}

// MARK: - nghttp2 callbacks for RawHTTP2Client

private func rawHandler(_ userData: UnsafeMutableRawPointer?) -> RawHTTP2Client.Handler {
    Unmanaged<RawHTTP2Client.Handler>.fromOpaque(userData!).takeUnretainedValue()
}

private let rawOnBeginHeaders: nghttp2_on_begin_headers_callback = { _, frame, userData in
    guard let frame else { return 0 }
    let id = frame.pointee.hd.stream_id
    rawHandler(userData).store.update { $0.streams[id, default: .init()].headers.append([]) }
    return 0
}

private let rawOnHeader: nghttp2_on_header_callback = { _, frame, name, nameLength, value, valueLength, _, userData in
    guard let frame, let name, let value else { return 0 }
    let id = frame.pointee.hd.stream_id
    let n = String(decoding: UnsafeBufferPointer(start: name, count: nameLength), as: UTF8.self)
    let v = String(decoding: UnsafeBufferPointer(start: value, count: valueLength), as: UTF8.self)
    rawHandler(userData).store.update { r in
        if r.streams[id, default: .init()].headers.isEmpty { r.streams[id, default: .init()].headers.append([]) }
        r.streams[id, default: .init()].headers[r.streams[id]!.headers.count - 1].append((n, v))
    }
    return 0
}

private let rawOnData: nghttp2_on_data_chunk_recv_callback = { session, _, streamID, data, length, userData in
    let bytes = Array(UnsafeBufferPointer(start: data, count: length))
    rawHandler(userData).store.update { r in
        r.streams[streamID, default: .init()].dataBytesReceived += length
        if r.streams[streamID, default: .init()].data.count < 1 << 20 {
            r.streams[streamID, default: .init()].data += bytes
        }
    }
    return 0
}

private let rawOnClose: nghttp2_on_stream_close_callback = { _, streamID, errorCode, userData in
    rawHandler(userData).store.update { $0.streams[streamID, default: .init()].closed = errorCode }
    return 0
}

private let rawOnFrame: nghttp2_on_frame_recv_callback = { _, frame, userData in
    guard let frame else { return 0 }
    if UInt32(frame.pointee.hd.type) == NGHTTP2_GOAWAY.rawValue {
        let last = frame.pointee.goaway.last_stream_id
        let code = frame.pointee.goaway.error_code
        rawHandler(userData).store.update { $0.goAway = (last, code) }
    }
    return 0
}

private let rawRead: nghttp2_data_source_read_callback = { _, streamID, buffer, length, flags, _, userData in
    guard let buffer, let flags else { return 0 }
    return rawHandler(userData).read(streamID, into: buffer, length: length, flags: flags)
}
