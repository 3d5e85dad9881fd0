import NIOCore
import NIOHTTP1

/// A response to a plain HTTP request on the gRPC listener.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]

    public init(status: Int = 200, contentType: String = "text/plain; charset=utf-8", body: String) {
        self.init(status: status, contentType: contentType, bytes: Array(body.utf8))
    }

    public init(status: Int = 200, contentType: String, bytes: [UInt8]) {
        self.status = status
        self.contentType = contentType
        self.body = bytes
    }
}

/// Plain HTTP endpoints served beside gRPC on the same listener, by path
/// (`/healthz`, `/metrics`). Only GET and HEAD reach them.
public struct HTTPRoutes: Sendable {
    public typealias Handler = @Sendable () async -> HTTPResponse
    var handlers: [String: Handler] = [:]

    public init() {}

    /// Serves `path` with `handler`.
    public mutating func add(_ path: String, _ handler: @escaping Handler) {
        handlers[path] = handler
    }

    /// The default routes: `/healthz` answers "ok".
    public static var standard: HTTPRoutes {
        var routes = HTTPRoutes()
        routes.add("/healthz") { HTTPResponse(body: "ok\n") }
        return routes
    }
}

/// Answers HTTP/1.1 requests from `HTTPRoutes`, one at a time per connection.
final class HTTP1Handler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: HTTPRoutes
    private var head: HTTPRequestHead?

    init(routes: HTTPRoutes) {
        self.routes = routes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
        let keepAlive = head.isKeepAlive
        let headOnly = head.method == .HEAD
        guard head.method == .GET || head.method == .HEAD else {
            write(HTTPResponse(status: 405, body: "method not allowed; gRPC needs HTTP/2\n"), keepAlive: keepAlive, headOnly: false, context: context)
            return
        }
        guard let handler = routes.handlers[path] else {
            write(HTTPResponse(status: 404, body: "not found\n"), keepAlive: keepAlive, headOnly: headOnly, context: context)
            return
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        Task {
            let response = await handler()
            eventLoop.execute {
                let (handler, context) = loopBound.value
                handler.write(response, keepAlive: keepAlive, headOnly: headOnly, context: context)
            }
        }
    }

    private func write(_ response: HTTPResponse, keepAlive: Bool, headOnly: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: response.contentType)
        headers.add(name: "content-length", value: String(response.body.count))
        if !keepAlive { headers.add(name: "connection", value: "close") }
        let head = HTTPResponseHead(
            version: .http1_1, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if !headOnly {
            let body = context.channel.allocator.buffer(bytes: response.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
