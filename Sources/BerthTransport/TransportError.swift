/// Failures inside the HTTP/2 transport, before they become gRPC statuses.
public enum TransportError: Error, CustomStringConvertible, Sendable {
    /// An nghttp2 call failed with this error code.
    case nghttp2(String, Int32)
    /// The address to listen on or connect to cannot be used.
    case badAddress(String)
    /// The transport was shut down.
    case closed
    /// TLS cannot be set up (a certificate or key that cannot be used).
    case tls(String)

    public var description: String {
        switch self {
        case .nghttp2(let op, let rc):
            return "\(op): \(Self.nghttp2Message(rc))"
        case .badAddress(let message):
            return message
        case .closed:
            return "the transport is shut down"
        case .tls(let message):
            return message
        }
    }

    static func nghttp2Message(_ rc: Int32) -> String {
        String(cString: nghttp2_strerror(rc))
    }
}

import CNghttp2

/// Facts about the nghttp2 library in use.
public enum NGHTTP2Info {
    /// nghttp2's version string, e.g. "1.52.0".
    public static var version: String { NGHTTP2Session.libraryVersion }
}
