public import BerthModel
import BerthLinux
import Glibc

/// A host port held for a published port: a socket bound to it (never
/// listening; traffic is forwarded before it would reach the socket), so
/// that no other program can take the port while the container runs, and a
/// port already taken is an error at start, as with docker.
public final class PortReservation: Sendable {
    public let hostIP: IPv4Address?
    public let port: UInt16
    public let transport: PortProtocol
    private let fd: Int32

    /// Binds `hostIP:port` (every address for nil; port 0 picks a free one).
    ///
    /// - Throws: `BerthError.alreadyExists` when the port is taken,
    ///   `invalidArgument` for an address that is not the host's.
    public init(hostIP: IPv4Address?, port: UInt16, transport: PortProtocol) throws {
        let fd = socket(AF_INET, Int32(transport == .tcp ? SOCK_STREAM.rawValue : SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", errno: errno) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = (hostIP?.value ?? 0).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        let where_ = "\(hostIP?.description ?? "0.0.0.0"):\(port)/\(transport.rawValue)"
        guard bound == 0 else {
            let saved = errno
            close(fd)
            switch saved {
            case EADDRINUSE:
                throw BerthError(.alreadyExists, "cannot publish \(where_): the port is already in use on the host")
            case EADDRNOTAVAIL:
                throw BerthError.invalid("cannot publish \(where_): \(hostIP?.description ?? "") is not an address of this host")
            default:
                throw SystemError("bind \(where_)", errno: saved)
            }
        }
        var bound_ = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound_) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        self.fd = fd
        self.hostIP = hostIP
        self.port = UInt16(bigEndian: bound_.sin_port)
        self.transport = transport
    }

    deinit { close(fd) }
}
