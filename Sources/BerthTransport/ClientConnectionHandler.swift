import CNghttp2
import GRPCCore
import Logging
import NIOCore
import Synchronization

typealias ClientIO = StreamIO<RPCResponsePart<TransportBytes>, RPCRequestPart<TransportBytes>>

/// A call registered by a task and not yet seen by the event loop.
struct PendingCall: Sendable {
    var io: ClientIO
    var descriptor: MethodDescriptor
}

/// Calls handed from tasks to a client connection's event loop.
final class CallRegistry: Sendable {
    private let calls = Mutex<(pending: [Int: PendingCall], closed: Bool)>(([:], false))
    private let nextKey = Atomic<Int>(1)

    /// The call, registered; nil once the connection has closed (no one
    /// would ever finish it).
    func register(_ make: (Int) -> PendingCall) -> PendingCall? {
        let key = nextKey.wrappingAdd(1, ordering: .relaxed).oldValue
        let call = make(key)
        return calls.withLock { c in
            guard !c.closed else { return nil }
            c.pending[key] = call
            return call
        }
    }

    func take(_ key: Int) -> PendingCall? {
        calls.withLock { $0.pending.removeValue(forKey: key) }
    }

    /// Every call not yet taken; later registrations are refused.
    func close() -> [PendingCall] {
        calls.withLock { c in
            c.closed = true
            let all = Array(c.pending.values)
            c.pending.removeAll()
            return all
        }
    }
}

/// One client-side HTTP/2 connection speaking gRPC.
final class ClientConnectionHandler: HTTP2ConnectionHandler {
    private final class Stream {
        let key: Int
        let io: ClientIO
        let descriptor: MethodDescriptor
        var id: Int32 = 0
        var requestSent = false
        var body = PendingBody()
        var finishedWriting = false
        var deframer: GRPCMessageDeframer
        var httpStatus: Int?
        var contentType: String?
        var grpcStatus: Int?
        var grpcMessage: String?
        var metadata = Metadata()
        var headerBytes = 0
        var responseStarted = false
        var statusDelivered = false

        init(key: Int, io: ClientIO, descriptor: MethodDescriptor, maxMessageSize: Int) {
            self.key = key
            self.io = io
            self.descriptor = descriptor
            self.deframer = GRPCMessageDeframer(maxMessageSize: maxMessageSize)
        }
    }

    private let registry: CallRegistry
    private let authority: String
    private let scheme: String
    private var byKey: [Int: Stream] = [:]
    private var byID: [Int32: Stream] = [:]
    private let state: ClientConnectionState

    init(limits: TransportLimits, logger: Logger, registry: CallRegistry, authority: String, scheme: String, state: ClientConnectionState) {
        self.registry = registry
        self.authority = authority
        self.scheme = scheme
        self.state = state
        super.init(limits: limits, logger: logger)
    }

    override var role: NGHTTP2Session.Role { .client }

    override func connectionStarted() {
        state.ready(scheduler: scheduler)
    }

    override func connectionClosed() {
        state.closed()
        let status = Status(code: .unavailable, message: "the connection to the server was closed")
        // A call the server had answered was cut off, not refused.
        let cutOff = Status(code: .unavailable, message: NGHTTP2ClientTransport.closedDuringCallMessage)
        for stream in byKey.values { deliverStatus(stream, stream.responseStarted ? cutOff : status, metadata: [:]) }
        for call in registry.close() {
            call.io.deliver(.status(status, [:]), bytes: 0)
            call.io.finishInbound()
            call.io.failOutbound(RPCError(code: .unavailable, message: status.message))
        }
        byKey.removeAll()
        byID.removeAll()
    }

    override func afterFlush() {
        if state.isDraining && byKey.isEmpty && !session.wantsWrite { close() }
    }

    /// No new calls; close once the open ones are done.
    func beginGracefulShutdown() {
        state.drain()
        if byKey.isEmpty {
            session.submitGoAway(lastStreamID: 0, errorCode: NGHTTP2_NO_ERROR.rawValue)
            flushOutput()
            close()
        }
    }

    // MARK: Requests

    override func drainStream(key: Int) {
        let stream: Stream
        if let existing = byKey[key] {
            stream = existing
        } else if let call = registry.take(key) {
            stream = Stream(key: key, io: call.io, descriptor: call.descriptor, maxMessageSize: limits.maxReceiveMessageSize)
            byKey[key] = stream
        } else {
            return
        }
        let io = stream.io
        let (parts, finished) = io.takeOutbound()
        if io.isReleased && !stream.statusDelivered {
            // The task is done with a call the server has not finished: cancel it.
            if stream.requestSent {
                session.submitReset(streamID: stream.id, errorCode: NGHTTP2_CANCEL.rawValue)
            }
            forget(stream)
            return
        }
        if io.isReleased {
            forget(stream)
            return
        }
        for part in parts {
            switch part {
            case .metadata(let metadata):
                guard !stream.requestSent else { continue }
                var headers = [
                    HeaderField(":method", "POST"), HeaderField(":scheme", scheme),
                    HeaderField(":path", "/" + stream.descriptor.fullyQualifiedMethod),
                    HeaderField(":authority", authority), HeaderField("content-type", "application/grpc"),
                    HeaderField("te", "trailers"), HeaderField("user-agent", "berth-transport/1"),
                ]
                for (name, value) in metadata where !HeaderCoding.isReserved(name.lowercased()) {
                    headers.append(HeaderField(name.lowercased(), HeaderCoding.headerValue(value)))
                }
                let id = session.submitRequest(headers: headers)
                if id < 0 {
                    deliverStatus(
                        stream, Status(code: .unavailable, message: "the request could not be sent: \(TransportError.nghttp2Message(id))"),
                        metadata: [:])
                    forget(stream)
                    return
                }
                stream.id = id
                stream.requestSent = true
                byID[id] = stream
            case .message(let bytes):
                guard stream.requestSent, !stream.finishedWriting else { continue }
                GRPCMessageFramer.frame(bytes.buffer, into: &stream.body.data)
            }
        }
        if finished { stream.finishedWriting = true }
        if stream.requestSent { session.resumeData(streamID: stream.id) }
    }

    private func forget(_ stream: Stream) {
        byKey.removeValue(forKey: stream.key)
        if stream.id != 0 { byID.removeValue(forKey: stream.id) }
    }

    override func session(
        readDataFor streamID: Int32, into buffer: UnsafeMutableRawBufferPointer, eof: inout Bool, trailers: inout [HeaderField]?
    ) -> Int {
        guard let stream = byID[streamID] else {
            eof = true
            return 0
        }
        let n = stream.body.read(into: buffer)
        if n > 0 { sentBytes[stream.key, default: 0] += n }
        if stream.body.isEmpty && stream.finishedWriting {
            eof = true
            return n
        }
        return n > 0 ? n : Int(NGHTTP2_ERR_DEFERRED.rawValue)
    }

    override func streamSent(key: Int, bytes: Int) {
        byKey[key]?.io.outboundSent(bytes)
    }

    // MARK: Responses

    override func session(beginHeadersOn streamID: Int32, category: nghttp2_headers_category) {
        guard let stream = byID[streamID] else { return }
        stream.headerBytes = 0
    }

    override func session(header name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>, on streamID: Int32) -> Bool {
        guard let stream = byID[streamID] else { return true }
        stream.headerBytes += name.count + value.count + 32
        if stream.headerBytes > limits.maxHeaderListSize { return false }
        let key = String(decoding: name, as: UTF8.self)
        let text = String(decoding: value, as: UTF8.self)
        switch key {
        case ":status": stream.httpStatus = Int(text)
        case "content-type": stream.contentType = text
        case "grpc-status": stream.grpcStatus = Int(text)
        case "grpc-message": stream.grpcMessage = HeaderCoding.percentDecode(text)
        default:
            if !HeaderCoding.isReserved(key) {
                HeaderCoding.addMetadata(name: key, value: text, to: &stream.metadata)
            }
        }
        return true
    }

    override func session(headersCompleteOn streamID: Int32, category: nghttp2_headers_category, endStream: Bool) {
        guard let stream = byID[streamID] else { return }
        let metadata = stream.metadata
        stream.metadata = Metadata()
        if !stream.responseStarted {
            stream.responseStarted = true
            guard stream.httpStatus == 200 else {
                var status = Status(httpStatusCode: stream.httpStatus ?? 0)
                if let code = stream.grpcStatus, let c = Status.Code(rawValue: code) {
                    status = Status(code: c, message: stream.grpcMessage ?? status.message)
                }
                deliverStatus(stream, status, metadata: metadata)
                if !endStream { session.submitReset(streamID: streamID, errorCode: NGHTTP2_CANCEL.rawValue) }
                return
            }
            if endStream {
                deliverTrailers(stream, metadata: metadata)
                return
            }
            guard let contentType = stream.contentType, contentType.hasPrefix("application/grpc") else {
                deliverStatus(
                    stream,
                    Status(code: .internalError, message: "the server answered with content-type \"\(stream.contentType ?? "")\", not application/grpc"),
                    metadata: metadata)
                session.submitReset(streamID: streamID, errorCode: NGHTTP2_CANCEL.rawValue)
                return
            }
            stream.io.deliver(.metadata(metadata), bytes: 0)
            return
        }
        // Trailers.
        deliverTrailers(stream, metadata: metadata)
    }

    private func deliverTrailers(_ stream: Stream, metadata: Metadata) {
        if stream.deframer.bufferedBytes > 0 {
            deliverStatus(
                stream,
                Status(code: .internalError, message: "the response ended inside a message (\(stream.deframer.bufferedBytes) bytes)"),
                metadata: metadata)
            return
        }
        let status: Status
        if let code = stream.grpcStatus, let c = Status.Code(rawValue: code) {
            status = Status(code: c, message: stream.grpcMessage ?? "")
        } else {
            status = Status(code: .internalError, message: "the server's trailers carry no grpc-status")
        }
        deliverStatus(stream, status, metadata: metadata)
    }

    private func deliverStatus(_ stream: Stream, _ status: Status, metadata: Metadata) {
        guard !stream.statusDelivered else { return }
        stream.statusDelivered = true
        stream.io.deliver(.status(status, metadata), bytes: 0)
        stream.io.finishInbound()
        stream.io.failOutbound(RPCError(code: .cancelled, message: "the server has ended the call"))
    }

    override func session(data: UnsafeRawBufferPointer, on streamID: Int32) {
        session.consumeConnection(bytes: data.count)
        guard let stream = byID[streamID], !stream.statusDelivered else {
            session.consume(streamID: streamID, bytes: data.count)
            return
        }
        stream.deframer.append(data)
        do {
            while let message = try stream.deframer.next() {
                stream.io.deliver(.message(TransportBytes(message)), bytes: message.readableBytes)
            }
        } catch .tooLarge(let declared, let limit) {
            deliverStatus(
                stream,
                Status(code: .resourceExhausted, message: "response message of \(declared) bytes is larger than the limit of \(limit) bytes"),
                metadata: [:])
            session.submitReset(streamID: streamID, errorCode: NGHTTP2_CANCEL.rawValue)
            session.consume(streamID: streamID, bytes: data.count)
            return
        } catch {
            deliverStatus(stream, Status(code: .internalError, message: "compressed response received, but no encoding was negotiated"), metadata: [:])
            session.submitReset(streamID: streamID, errorCode: NGHTTP2_CANCEL.rawValue)
            session.consume(streamID: streamID, bytes: data.count)
            return
        }
        if stream.io.creditNow(data.count) {
            session.consume(streamID: streamID, bytes: data.count)
        }
    }

    override func returnCredit(key: Int) {
        guard let stream = byKey[key], stream.id != 0 else { return }
        session.consume(streamID: stream.id, bytes: stream.io.takeDeferredCredit())
    }

    override func session(streamClosed streamID: Int32, errorCode: UInt32) {
        guard let stream = byID.removeValue(forKey: streamID) else { return }
        sentBytes.removeValue(forKey: stream.key)
        if !stream.statusDelivered {
            let code: Status.Code
            switch errorCode {
            case NGHTTP2_REFUSED_STREAM.rawValue: code = .unavailable
            case NGHTTP2_CANCEL.rawValue: code = .cancelled
            case NGHTTP2_ENHANCE_YOUR_CALM.rawValue: code = .resourceExhausted
            case NGHTTP2_INADEQUATE_SECURITY.rawValue: code = .permissionDenied
            default: code = .internalError
            }
            deliverStatus(
                stream,
                Status(code: code, message: "the server reset the stream (\(NGHTTP2Session.errorName(errorCode)))"),
                metadata: [:])
        }
        if stream.io.isReleased { byKey.removeValue(forKey: stream.key) }
    }

    override func session(goAwayWithLastStreamID lastStreamID: Int32, errorCode: UInt32) {
        state.drain()
    }
}

/// The lifecycle of a client connection, readable from any thread.
final class ClientConnectionState: Sendable {
    private struct S {
        var scheduler: ConnectionScheduler?
        var draining = false
        var closed = false
    }

    private let s = Mutex(S())

    func ready(scheduler: ConnectionScheduler) { s.withLock { $0.scheduler = scheduler } }
    func drain() { s.withLock { $0.draining = true } }
    func closed() { s.withLock { $0.closed = true } }

    var isDraining: Bool { s.withLock { $0.draining || $0.closed } }
    var isUsable: Bool { s.withLock { !$0.draining && !$0.closed } }
    var scheduler: ConnectionScheduler? { s.withLock { $0.scheduler } }
}
