import NIOCore

/// The first bytes of a connection decide what it speaks: the HTTP/2
/// connection preface means gRPC, an HTTP/1.1 request line means the plain
/// HTTP endpoints (`/healthz`, `/metrics`), anything else is closed.
final class ProtocolSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    enum Decision {
        case http2
        case http1
        case garbage
    }

    private static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    private static let methods = ["GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "TRACE ", "CONNECT "].map { Array($0.utf8) }

    private var buffered: ByteBuffer?
    private let configure: (Decision, ChannelHandlerContext) throws -> Void
    private let closing: @Sendable (String) -> Void
    private var timeout: Scheduled<Void>?

    /// - Parameters:
    ///   - closing: told why, when this handler closes the connection.
    ///   - configure: adds the handlers for the protocol after this one; it
    ///     is called once, on the event loop.
    init(closing: @escaping @Sendable (String) -> Void, configure: @escaping (Decision, ChannelHandlerContext) throws -> Void) {
        self.closing = closing
        self.configure = configure
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // A peer that sends nothing recognisable for 10 s is let go.
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let closing = self.closing
        timeout = context.eventLoop.scheduleTask(in: .seconds(10)) {
            closing("nothing recognisable within 10 s")
            loopBound.value.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timeout?.cancel()
    }

    static func decide(_ bytes: ByteBufferView) -> Decision? {
        let n = min(bytes.count, preface.count)
        if bytes.prefix(n).elementsEqual(preface.prefix(n)) {
            return n == preface.count ? .http2 : nil
        }
        var undecided = false
        for method in methods {
            let m = min(bytes.count, method.count)
            if bytes.prefix(m).elementsEqual(method.prefix(m)) {
                if m == method.count { return .http1 }
                undecided = true
            }
        }
        return undecided ? nil : .garbage
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered == nil {
            buffered = incoming
        } else {
            buffered!.writeBuffer(&incoming)
        }
        guard let decision = Self.decide(buffered!.readableBytesView) else { return }
        timeout?.cancel()
        if decision == .garbage {
            context.close(promise: nil)
            return
        }
        do {
            try configure(decision, context)
        } catch {
            closing("\(error)")
            context.close(promise: nil)
            return
        }
        let bytes = buffered!
        buffered = nil
        context.fireChannelRead(wrapInboundOut(bytes))
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    typealias InboundOut = ByteBuffer
}
