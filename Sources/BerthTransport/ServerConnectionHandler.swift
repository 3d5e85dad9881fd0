import CNghttp2
import GRPCCore
import Logging
import NIOCore

typealias ServerIO = StreamIO<RPCRequestPart<TransportBytes>, RPCResponsePart<TransportBytes>>

/// A request stream accepted by a connection, on its way to a handler task.
struct AcceptedStream: Sendable {
    var stream: RPCStream<
        RPCAsyncSequence<RPCRequestPart<TransportBytes>, any Error>,
        RPCWriter<RPCResponsePart<TransportBytes>>.Closable
    >
    var io: ServerIO
    var remotePeer: String
    var localPeer: String
}

/// Where a connection sends the streams it accepts.
protocol StreamAcceptor: Sendable {
    func accept(_ stream: AcceptedStream)
}

/// One server-side HTTP/2 connection speaking gRPC: validates requests,
/// turns DATA into messages, enforces deadlines and limits, and sends
/// responses with trailers.
final class ServerConnectionHandler: HTTP2ConnectionHandler {
    private final class Stream {
        let id: Int32
        var headerBytes = 0
        var headersTooLarge = false
        var method: String?
        var path: String?
        var contentType: String?
        var encoding: String?
        var timeout: Duration?
        var metadata = Metadata()
        var deframer: GRPCMessageDeframer
        var io: ServerIO?
        var inboundEnded = false
        /// Set when the transport ended the call itself (deadline, bad message);
        /// later parts from the handler are dropped and DATA is discarded.
        var terminated = false
        var responseStarted = false
        var body = PendingBody()
        var trailers: [HeaderField]?
        var finishedWriting = false
        var endSent = false
        var deadline: Scheduled<Void>?
        var deadlineAt: NIODeadline?
        var descriptor: MethodDescriptor?

        init(id: Int32, maxMessageSize: Int) {
            self.id = id
            self.deframer = GRPCMessageDeframer(maxMessageSize: maxMessageSize)
        }
    }

    private let acceptor: any StreamAcceptor
    private let peers: (remote: String, local: String)
    private var streams: [Int32: Stream] = [:]
    private var newStreams: [Stream] = []
    private var draining = false
    private var goAwaySent = false
    private var shutdownPingPayload: UInt64 = 0x6265_7274_6867_6f61  // "berthgoa"
    private let watermarks = StreamWatermarks()
    /// Called with the outcome when the connection ends.
    private let onClose: @Sendable () -> Void
    /// The TLS peer's certificate (role, CN, serial), passed to handlers in
    /// each request's metadata; nil without TLS.
    private let peer: PeerIdentity?

    init(
        limits: TransportLimits, logger: Logger, acceptor: any StreamAcceptor,
        remotePeer: String, localPeer: String, peer: PeerIdentity? = nil, onClose: @escaping @Sendable () -> Void
    ) {
        self.acceptor = acceptor
        self.peers = (remotePeer, localPeer)
        self.peer = peer
        self.onClose = onClose
        super.init(limits: limits, logger: logger)
    }

    override var role: NGHTTP2Session.Role { .server }

    override func connectionClosed() {
        let error = RPCError(code: .unavailable, message: "the connection was closed")
        for stream in streams.values {
            stream.deadline?.cancel()
            stream.io?.fail(error)
        }
        streams.removeAll()
        newStreams.removeAll()
        onClose()
    }

    // MARK: Graceful shutdown

    /// Announces shutdown: in-flight calls finish, new ones are refused, and
    /// the connection closes when the last call is done.
    func beginGracefulShutdown() {
        guard !draining, !isClosing else { return }
        draining = true
        session.submitShutdownNotice()
        session.submitPing(payload: shutdownPingPayload)
        flushOutput()
        // If the peer never answers the PING, do not wait for it forever.
        context?.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { [weak self] in
            self?.sendFinalGoAway()
        }
    }

    /// Past a graceful shutdown's grace: every call still open ends with
    /// `status` (its handler's reads and writes fail, its RPC is cancelled),
    /// written out with the final GOAWAY.
    func endCalls(_ status: Status) {
        guard !isClosing else { return }
        for stream in streams.values where stream.io != nil {
            terminate(stream, status: status)
        }
        sendFinalGoAway()
        flushOutput()
    }

    override func session(pingAcknowledged payload: UInt64) {
        if payload == shutdownPingPayload { sendFinalGoAway() }
    }

    private func sendFinalGoAway() {
        guard draining, !goAwaySent, !isClosing else { return }
        goAwaySent = true
        session.submitGoAway(lastStreamID: session.lastProcessedStreamID, errorCode: NGHTTP2_NO_ERROR.rawValue)
        flushOutput()
    }

    override func afterFlush() {
        if goAwaySent && streams.isEmpty && !session.wantsWrite { close() }
    }

    // MARK: Requests

    override func session(beginHeadersOn streamID: Int32, category: nghttp2_headers_category) {
        guard category == NGHTTP2_HCAT_REQUEST else { return }
        streams[streamID] = Stream(id: streamID, maxMessageSize: limits.maxReceiveMessageSize)
    }

    override func session(header name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>, on streamID: Int32) -> Bool {
        guard let stream = streams[streamID], stream.io == nil else { return true }
        stream.headerBytes += name.count + value.count + 32
        if stream.headerBytes > limits.maxHeaderListSize {
            stream.headersTooLarge = true
            stream.metadata = Metadata()
            return true
        }
        if stream.headersTooLarge { return true }
        let key = String(decoding: name, as: UTF8.self)
        let text = String(decoding: value, as: UTF8.self)
        switch key {
        case ":method": stream.method = text
        case ":path": stream.path = text
        case "content-type": stream.contentType = text
        case "grpc-encoding": stream.encoding = text
        case "grpc-timeout":
            stream.timeout = HeaderCoding.parseTimeout(text)
            stream.metadata.addString(text, forKey: key)
        case PeerRole.metadataKey, PeerIdentity.nameKey, PeerIdentity.serialKey:
            // Only the transport says who the peer is.
            break
        default:
            if !HeaderCoding.isReserved(key) {
                HeaderCoding.addMetadata(name: key, value: text, to: &stream.metadata)
            }
        }
        return true
    }

    override func session(headersCompleteOn streamID: Int32, category: nghttp2_headers_category, endStream: Bool) {
        guard let stream = streams[streamID] else { return }
        if category != NGHTTP2_HCAT_REQUEST {
            // Trailers from a client: gRPC has none, but they end the request.
            if endStream { session(endStreamOn: streamID) }
            return
        }
        stream.inboundEnded = endStream
        if let rejection = validate(stream) {
            stream.terminated = true
            respondTrailersOnly(stream, httpStatus: rejection.httpStatus, status: rejection.status, extra: rejection.extra)
            return
        }
        guard let path = stream.path else { return }
        let slash = path.dropFirst().firstIndex(of: "/")!
        let descriptor = MethodDescriptor(
            fullyQualifiedService: String(path[path.index(after: path.startIndex)..<slash]),
            method: String(path[path.index(after: slash)...]))
        let io = ServerIO(key: Int(streamID), owner: scheduler, watermarks: watermarks, sizeOf: PartSize.of)
        stream.io = io
        stream.descriptor = descriptor
        if let peer {
            stream.metadata.addString(peer.role, forKey: PeerRole.metadataKey)
            stream.metadata.addString(peer.name, forKey: PeerIdentity.nameKey)
            stream.metadata.addString(peer.serial, forKey: PeerIdentity.serialKey)
        }
        io.deliver(.metadata(stream.metadata), bytes: 0)
        stream.metadata = Metadata()
        if endStream { io.finishInbound() }
        if let timeout = stream.timeout, let context {
            let nanos = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
            stream.deadlineAt = .now() + .nanoseconds(max(0, nanos))
            stream.deadline = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(max(0, nanos))) { [weak self] in
                self?.deadlineExpired(streamID)
            }
        }
        newStreams.append(stream)
    }

    private struct Rejection {
        var httpStatus: Int
        var status: Status
        var extra: [HeaderField] = []
    }

    private func validate(_ stream: Stream) -> Rejection? {
        if stream.headersTooLarge {
            return Rejection(
                httpStatus: 200,
                status: Status(
                    code: .resourceExhausted,
                    message: "request headers exceed the limit of \(limits.maxHeaderListSize) bytes"))
        }
        guard stream.method == "POST" else {
            return Rejection(
                httpStatus: 405,
                status: Status(code: .unimplemented, message: "gRPC requires the POST method, not \(stream.method ?? "none")"),
                extra: [HeaderField("allow", "POST")])
        }
        guard let contentType = stream.contentType, contentType.hasPrefix("application/grpc") else {
            return Rejection(
                httpStatus: 415,
                status: Status(
                    code: .internalError,
                    message: "content-type \"\(stream.contentType ?? "")\" is not a gRPC content-type (application/grpc)"))
        }
        guard let path = stream.path, path.hasPrefix("/"), let slash = path.dropFirst().firstIndex(of: "/"),
            slash > path.index(after: path.startIndex), path.index(after: slash) < path.endIndex
        else {
            return Rejection(
                httpStatus: 200,
                status: Status(code: .unimplemented, message: "malformed method path \"\(stream.path ?? "")\"; expected /package.Service/Method"))
        }
        if let encoding = stream.encoding, encoding != "identity" {
            return Rejection(
                httpStatus: 200,
                status: Status(code: .unimplemented, message: "message encoding \"\(encoding)\" is not supported"),
                extra: [HeaderField("grpc-accept-encoding", "identity")])
        }
        return nil
    }

    override func readCompleted() {
        guard !newStreams.isEmpty else { return }
        let accepted = newStreams
        newStreams.removeAll(keepingCapacity: true)
        for stream in accepted {
            guard let io = stream.io, let descriptor = stream.descriptor, streams[stream.id] === stream else { continue }
            // A stream opened and reset in the same read never reaches a task.
            let rpc = RPCStream(
                descriptor: descriptor,
                inbound: RPCAsyncSequence(wrapping: StreamInbound(io: io)),
                outbound: RPCWriter.Closable(wrapping: StreamOutbound(io: io)))
            acceptor.accept(AcceptedStream(stream: rpc, io: io, remotePeer: peers.remote, localPeer: peers.local))
        }
    }

    override func session(data: UnsafeRawBufferPointer, on streamID: Int32) {
        session.consumeConnection(bytes: data.count)
        guard let stream = streams[streamID], let io = stream.io, !stream.terminated else {
            session.consume(streamID: streamID, bytes: data.count)
            return
        }
        stream.deframer.append(data)
        do {
            while let message = try stream.deframer.next() {
                io.deliver(.message(TransportBytes(message)), bytes: message.readableBytes)
            }
        } catch .tooLarge(let declared, let limit) {
            terminate(
                stream,
                status: Status(
                    code: .resourceExhausted,
                    message: "message of \(declared) bytes is larger than the limit of \(limit) bytes"))
            session.consume(streamID: streamID, bytes: data.count)
            return
        } catch {
            terminate(
                stream,
                status: Status(code: .internalError, message: "compressed message received, but no message encoding was negotiated"))
            session.consume(streamID: streamID, bytes: data.count)
            return
        }
        if io.creditNow(data.count) {
            session.consume(streamID: streamID, bytes: data.count)
        }
    }

    override func session(endStreamOn streamID: Int32) {
        guard let stream = streams[streamID] else { return }
        stream.inboundEnded = true
        guard let io = stream.io, !stream.terminated else { return }
        if stream.deframer.bufferedBytes > 0 {
            terminate(
                stream,
                status: Status(
                    code: .internalError,
                    message: "the request ended inside a message (\(stream.deframer.bufferedBytes) bytes of an incomplete message)"))
            return
        }
        io.finishInbound()
    }

    override func returnCredit(key: Int) {
        let id = Int32(key)
        guard let stream = streams[id], let io = stream.io else { return }
        session.consume(streamID: id, bytes: io.takeDeferredCredit())
    }

    override func session(streamClosed streamID: Int32, errorCode: UInt32) {
        guard let stream = streams.removeValue(forKey: streamID) else { return }
        stream.deadline?.cancel()
        sentBytes.removeValue(forKey: Int(streamID))
        guard let io = stream.io else { return }
        if !stream.endSent || errorCode != NGHTTP2_NO_ERROR.rawValue {
            io.fail(
                RPCError(
                    code: .cancelled,
                    message: "the client reset the stream (\(NGHTTP2Session.errorName(errorCode)))"))
        }
    }

    override func session(sentEndStreamOn streamID: Int32) {
        guard let stream = streams[streamID] else { return }
        stream.endSent = true
        if !stream.inboundEnded {
            // The answer is complete; tell the client to stop sending.
            session.submitReset(streamID: streamID, errorCode: NGHTTP2_NO_ERROR.rawValue)
        }
    }

    // MARK: Responses

    override func drainStream(key: Int) {
        let id = Int32(key)
        guard let stream = streams[id], let io = stream.io else { return }
        let (parts, finished) = io.takeOutbound()
        if stream.terminated || stream.finishedWriting { return }
        var dropped = 0
        for part in parts {
            switch part {
            case .metadata(let metadata):
                guard !stream.responseStarted, stream.trailers == nil else { continue }
                var headers = [HeaderField(":status", "200"), HeaderField("content-type", "application/grpc")]
                for (name, value) in metadata where !HeaderCoding.isReserved(name.lowercased()) {
                    headers.append(HeaderField(name.lowercased(), HeaderCoding.headerValue(value)))
                }
                let rc = session.submitResponse(streamID: id, headers: headers, hasBody: true)
                if rc != 0 {
                    logger.debug("response could not be submitted", metadata: ["stream": "\(id)", "error": "\(TransportError.nghttp2Message(rc))"])
                    stream.terminated = true
                    io.fail(RPCError(code: .unavailable, message: "the stream is closed"))
                    return
                }
                stream.responseStarted = true
            case .message(let bytes):
                guard stream.responseStarted, stream.trailers == nil else {
                    dropped += bytes.count + 5
                    continue
                }
                GRPCMessageFramer.frame(bytes.buffer, into: &stream.body.data)
            case .status(let status, let metadata):
                guard stream.trailers == nil else { continue }
                if status.code == .ok || status.code == .cancelled, let deadline = stream.deadlineAt, NIODeadline.now() >= deadline {
                    // A handler that finished (or was cancelled) after the deadline did not answer in time.
                    stream.trailers = Status(code: .deadlineExceeded, message: "the deadline set by grpc-timeout expired").trailerFields(metadata: [:])
                } else {
                    stream.trailers = status.trailerFields(metadata: metadata)
                }
            }
        }
        if dropped > 0 { io.outboundSent(dropped) }
        if stream.trailers != nil || finished {
            stream.finishedWriting = true
            stream.deadline?.cancel()
            if let trailers = stream.trailers {
                if !stream.responseStarted {
                    let rc = session.submitResponse(
                        streamID: id,
                        headers: [HeaderField(":status", "200"), HeaderField("content-type", "application/grpc")] + trailers,
                        hasBody: false)
                    if rc != 0 { session.submitReset(streamID: id, errorCode: NGHTTP2_INTERNAL_ERROR.rawValue) }
                    return
                }
            } else {
                // The handler gave up without a status.
                session.submitReset(streamID: id, errorCode: NGHTTP2_INTERNAL_ERROR.rawValue)
                return
            }
        }
        if stream.responseStarted { session.resumeData(streamID: id) }
    }

    override func session(
        readDataFor streamID: Int32, into buffer: UnsafeMutableRawBufferPointer, eof: inout Bool, trailers: inout [HeaderField]?
    ) -> Int {
        guard let stream = streams[streamID] else {
            eof = true
            return 0
        }
        let n = stream.body.read(into: buffer)
        if n > 0 { sentBytes[Int(streamID), default: 0] += n }
        if stream.body.isEmpty, stream.finishedWriting, let t = stream.trailers {
            eof = true
            trailers = t
            return n
        }
        return n > 0 ? n : Int(NGHTTP2_ERR_DEFERRED.rawValue)
    }

    override func streamSent(key: Int, bytes: Int) {
        streams[Int32(key)]?.io?.outboundSent(bytes)
    }

    // MARK: Ending calls from the transport

    /// Ends a call with a status the transport chose: the handler's reads
    /// and writes fail from now on, and the client gets the status.
    private func terminate(_ stream: Stream, status: Status) {
        guard !stream.terminated, !stream.finishedWriting else { return }
        stream.terminated = true
        stream.deadline?.cancel()
        stream.io?.fail(RPCError(code: RPCError.Code(status.code) ?? .unknown, message: status.message))
        stream.finishedWriting = true
        stream.trailers = status.trailerFields(metadata: [:])
        if stream.responseStarted {
            session.resumeData(streamID: stream.id)
        } else {
            _ = session.submitResponse(
                streamID: stream.id,
                headers: [HeaderField(":status", "200"), HeaderField("content-type", "application/grpc")] + stream.trailers!,
                hasBody: false)
        }
    }

    private func deadlineExpired(_ streamID: Int32) {
        guard let stream = streams[streamID] else { return }
        terminate(stream, status: Status(code: .deadlineExceeded, message: "the deadline set by grpc-timeout expired"))
        flushOutput()
    }

    private func respondTrailersOnly(_ stream: Stream, httpStatus: Int, status: Status, extra: [HeaderField]) {
        stream.finishedWriting = true
        let headers =
            [HeaderField(":status", String(httpStatus)), HeaderField("content-type", "application/grpc")] + extra
            + status.trailerFields(metadata: [:])
        _ = session.submitResponse(streamID: stream.id, headers: headers, hasBody: false)
    }
}
