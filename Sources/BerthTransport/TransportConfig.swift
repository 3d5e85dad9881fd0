/// Where a transport listens or connects.
public enum TransportAddress: Sendable, Hashable, CustomStringConvertible {
    /// A TCP host and port; port 0 when listening picks a free port.
    case tcp(host: String, port: Int)
    /// A unix-domain socket path.
    case unix(path: String)

    /// Parses `unix:///run/berth/agent.sock`, `unix:/path`, `tcp://host:port`,
    /// `host:port` or `[::1]:port`.
    ///
    /// - Throws: `TransportError.badAddress` with what was expected.
    public init(parsing text: String) throws {
        if text.hasPrefix("unix://") {
            let path = String(text.dropFirst(7))
            guard path.hasPrefix("/") else { throw TransportError.badAddress("address \"\(text)\": a unix socket path must be absolute") }
            self = .unix(path: path)
            return
        }
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard path.hasPrefix("/") else { throw TransportError.badAddress("address \"\(text)\": a unix socket path must be absolute") }
            self = .unix(path: path)
            return
        }
        var rest = Substring(text)
        if rest.hasPrefix("tcp://") { rest = rest.dropFirst(6) }
        if rest.hasPrefix("/") {
            self = .unix(path: String(rest))
            return
        }
        let host: Substring
        let portText: Substring
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]"), rest[rest.index(after: close)...].hasPrefix(":") else {
                throw TransportError.badAddress("address \"\(text)\": expected [IPv6]:PORT")
            }
            host = rest[rest.index(after: rest.startIndex)..<close]
            portText = rest[rest.index(close, offsetBy: 2)...]
        } else {
            guard let colon = rest.lastIndex(of: ":") else {
                throw TransportError.badAddress("address \"\(text)\": expected unix:///PATH or tcp://HOST:PORT")
            }
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        }
        guard let port = Int(portText), (0...65535).contains(port) else {
            throw TransportError.badAddress("address \"\(text)\": the port must be a number from 0 to 65535")
        }
        self = .tcp(host: host.isEmpty ? "0.0.0.0" : String(host), port: port)
    }

    /// `HOST:PORT` (`[V6]:PORT`) for TCP, the path for a unix socket.
    public var hostAndPort: String {
        switch self {
        case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): return path
        }
    }

    public var description: String {
        switch self {
        case .tcp: return "tcp://\(hostAndPort)"
        case .unix(let path): return "unix://\(path)"
        }
    }
}

/// Limits shared by both ends of the transport.
public struct TransportLimits: Sendable, Hashable {
    /// The largest message accepted, in bytes; larger ones end the call with
    /// RESOURCE_EXHAUSTED before their body is read. 4 MiB by default.
    public var maxReceiveMessageSize: Int = 4 * 1024 * 1024
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised to the peer.
    public var maxConcurrentStreams: Int = 100
    /// SETTINGS_MAX_HEADER_LIST_SIZE, enforced on what is received.
    public var maxHeaderListSize: Int = 16 * 1024
    /// SETTINGS_INITIAL_WINDOW_SIZE: bytes a peer may send on one stream
    /// before this side has consumed them.
    public var streamWindowSize: Int = 1024 * 1024
    /// Bytes a peer may send on the whole connection before this side has
    /// consumed them.
    public var connectionWindowSize: Int = 16 * 1024 * 1024

    public init() {}

    var sessionSettings: NGHTTP2SessionSettings {
        NGHTTP2SessionSettings(
            maxConcurrentStreams: UInt32(clamping: maxConcurrentStreams),
            initialStreamWindow: UInt32(clamping: streamWindowSize),
            connectionWindow: Int32(clamping: connectionWindowSize),
            maxHeaderListSize: UInt32(clamping: maxHeaderListSize))
    }
}
