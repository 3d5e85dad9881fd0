import CNghttp2
import NIOCore
import NIOPosix

/// An HTTP/2 server for tests that answers every request by resetting its
/// stream with one error code, so a client's handling of RST_STREAM from the
/// server can be checked.
public final class ResettingHTTP2Server: Sendable {
    private let channel: any Channel
    public let port: Int

    /// Listens on 127.0.0.1 (a free port) and resets every stream with `errorCode`.
    public init(errorCode: UInt32) async throws {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(errorCode: errorCode))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        self.channel = channel
        self.port = channel.localAddress?.port ?? 0
    }

    public func close() async {
        try? await channel.close()
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        let errorCode: UInt32
        var session: OpaquePointer?
        var context: ChannelHandlerContext?

        init(errorCode: UInt32) {
            self.errorCode = errorCode
        }

        func handlerAdded(context: ChannelHandlerContext) {
            self.context = context
            var callbacks: OpaquePointer?
            nghttp2_session_callbacks_new(&callbacks)
            nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, resettingOnFrame)
            var session: OpaquePointer?
            nghttp2_session_server_new(&session, callbacks, Unmanaged.passUnretained(self).toOpaque())
            nghttp2_session_callbacks_del(callbacks)
            self.session = session
            nghttp2_submit_settings(session, 0, nil, 0)
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            if let session { nghttp2_session_del(session) }
            session = nil
        }

        func channelActive(context: ChannelHandlerContext) {
            flush()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(unwrapInboundIn(data).readableBytesView)
            _ = bytes.withUnsafeBufferPointer { nghttp2_session_mem_recv(session, $0.baseAddress, $0.count) }
            flush()
        }

        func flush() {
            guard let session, let context else { return }
            var out = context.channel.allocator.buffer(capacity: 1024)
            while true {
                var pointer: UnsafePointer<UInt8>?
                let n = nghttp2_session_mem_send(session, &pointer)
                if n <= 0 { break }
                out.writeBytes(UnsafeRawBufferPointer(start: pointer, count: n))
            }
            if out.readableBytes > 0 { context.writeAndFlush(NIOAny(out), promise: nil) }
        }
    }
}

private let resettingOnFrame: nghttp2_on_frame_recv_callback = { session, frame, userData in
    guard let frame, UInt32(frame.pointee.hd.type) == NGHTTP2_HEADERS.rawValue else { return 0 }
    let handler = Unmanaged<ResettingHTTP2Server.Handler>.fromOpaque(userData!).takeUnretainedValue()
    nghttp2_submit_rst_stream(session, 0, frame.pointee.hd.stream_id, handler.errorCode)
    return 0
}
