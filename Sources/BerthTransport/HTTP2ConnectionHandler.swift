import CNghttp2
import GRPCCore
import Logging
import NIOCore

/// What client and server connections share: an nghttp2 session fed from a
/// channel, output written back in batches that respect the channel's
/// writability, and a scheduler through which stream tasks reach the loop.
class HTTP2ConnectionHandler: ChannelInboundHandler, NGHTTP2SessionDelegate, ConnectionWork {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let limits: TransportLimits
    let logger: Logger
    private(set) var session: NGHTTP2Session!
    private(set) var context: ChannelHandlerContext?
    private(set) var scheduler: ConnectionScheduler!
    private var reading = false
    private var closing = false
    /// Bytes copied out to nghttp2 per stream key since the last report.
    var sentBytes: [Int: Int] = [:]

    init(limits: TransportLimits, logger: Logger) {
        self.limits = limits
        self.logger = logger
    }

    /// Creates the session; subclasses pass their role.
    func makeSession(role: NGHTTP2Session.Role) throws -> NGHTTP2Session {
        try NGHTTP2Session(role: role, settings: limits.sessionSettings, delegate: self)
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.scheduler = ConnectionScheduler(eventLoop: context.eventLoop, work: self)
        do {
            self.session = try makeSession(role: role)
        } catch {
            logger.error("http2 session could not be created", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return
        }
        connectionStarted()
        if context.channel.isActive { flushOutput() }
    }

    func channelActive(context: ChannelHandlerContext) {
        flushOutput()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        reading = true
        do {
            try session.receive(buffer)
        } catch {
            // Rare from a real client, and then worth seeing: the connection ends here.
            logger.info("closing the connection: the peer's HTTP/2 was not understood", metadata: ["error": "\(error)"])
            receiveFailed(error)
            // nghttp2 queued a GOAWAY; send it, then close.
            reading = false
            flushOutput()
            close()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        readCompleted()
        flushOutput()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { flushOutput() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        scheduler.detach()
        connectionClosed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // The socket's own errors (a peer that reset the connection or went
        // away) are ordinary; anything else that ends a connection is worth seeing.
        if error is IOError {
            logger.debug("connection error", metadata: ["error": "\(error)"])
        } else {
            logger.info("closing the connection: \(error)")
        }
        close()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Output

    /// Writes whatever nghttp2 has ready, while the channel can take it.
    func flushOutput() {
        guard let context, context.channel.isActive, !reading else { return }
        var wrote = false
        while context.channel.isWritable {
            var out = context.channel.allocator.buffer(capacity: 16 * 1024)
            let ok = session.drainOutput(into: &out, limit: 256 * 1024)
            if out.readableBytes > 0 {
                context.write(wrapOutboundOut(out), promise: nil)
                wrote = true
            }
            if !ok {
                logger.info("closing the connection: nghttp2 could not produce its output")
                close()
                break
            }
            if out.readableBytes < 256 * 1024 { break }
        }
        if wrote { context.flush() }
        reportSent()
        if !session.isAlive {
            close()
        } else {
            afterFlush()
        }
    }

    private func reportSent() {
        guard !sentBytes.isEmpty else { return }
        let sent = sentBytes
        sentBytes.removeAll(keepingCapacity: true)
        for (key, bytes) in sent { streamSent(key: key, bytes: bytes) }
    }

    /// Closes the channel once.
    func close() {
        guard !closing, let context else { return }
        closing = true
        context.close(promise: nil)
    }

    var isClosing: Bool { closing }

    // MARK: Scheduled work

    func runScheduledWork(flush: [Int], credit: [Int]) {
        guard context != nil else { return }
        for key in credit { returnCredit(key: key) }
        for key in flush { drainStream(key: key) }
        flushOutput()
    }

    // MARK: Hooks for subclasses

    var role: NGHTTP2Session.Role { fatalError("subclass must override") }
    func connectionStarted() {}
    func receiveFailed(_ error: any Error) {}
    func readCompleted() {}
    func afterFlush() {}
    func connectionClosed() {}
    func drainStream(key: Int) {}
    func returnCredit(key: Int) {}
    func streamSent(key: Int, bytes: Int) {}

    // MARK: NGHTTP2SessionDelegate defaults

    func session(beginHeadersOn streamID: Int32, category: nghttp2_headers_category) {}
    func session(header name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>, on streamID: Int32) -> Bool { true }
    func session(headersCompleteOn streamID: Int32, category: nghttp2_headers_category, endStream: Bool) {}
    func session(data: UnsafeRawBufferPointer, on streamID: Int32) {}
    func session(endStreamOn streamID: Int32) {}
    func session(streamClosed streamID: Int32, errorCode: UInt32) {}
    func session(goAwayWithLastStreamID lastStreamID: Int32, errorCode: UInt32) {}
    func session(pingAcknowledged payload: UInt64) {}
    func session(sentEndStreamOn streamID: Int32) {}

    /// Worth seeing: the connection ends with an HTTP/2 error (nghttp2's
    /// for what the peer sent, a frame out of place or a window overflow,
    /// which `receive` does not report as an error; or nghttp2's own).
    func session(sentGoAwayWithError errorCode: UInt32, debugData: String) {
        logger.info(
            "closing the connection: GOAWAY sent with an HTTP/2 error",
            metadata: ["error": "\(NGHTTP2Session.errorName(errorCode))", "detail": "\(debugData)"])
    }

    func session(
        readDataFor streamID: Int32, into buffer: UnsafeMutableRawBufferPointer, eof: inout Bool, trailers: inout [HeaderField]?
    ) -> Int { Int(NGHTTP2_ERR_DEFERRED.rawValue) }
}

/// Outbound bytes a stream holds until nghttp2 asks for them.
struct PendingBody {
    var data = ByteBuffer()

    /// Copies up to `buffer.count` bytes out; returns how many.
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let n = min(buffer.count, data.readableBytes)
        guard n > 0 else { return 0 }
        data.withUnsafeReadableBytes { bytes in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<n]))
        }
        data.moveReaderIndex(forwardBy: n)
        if data.readableBytes == 0 { data.clear() }
        return n
    }

    var isEmpty: Bool { data.readableBytes == 0 }
}

extension Status {
    /// The trailer fields carrying this status.
    func trailerFields(metadata: Metadata) -> [HeaderField] {
        var fields = [HeaderField("grpc-status", String(code.rawValue))]
        if !message.isEmpty {
            fields.append(HeaderField("grpc-message", HeaderCoding.percentEncode(message)))
        }
        for (key, value) in metadata where !HeaderCoding.isReserved(key.lowercased()) {
            fields.append(HeaderField(key.lowercased(), HeaderCoding.headerValue(value)))
        }
        return fields
    }
}

/// The part sizes that count against a stream's outbound watermark.
enum PartSize {
    static func of(_ part: RPCResponsePart<TransportBytes>) -> Int {
        if case .message(let bytes) = part { return bytes.count + 5 }
        return 0
    }

    static func of(_ part: RPCRequestPart<TransportBytes>) -> Int {
        if case .message(let bytes) = part { return bytes.count + 5 }
        return 0
    }
}
