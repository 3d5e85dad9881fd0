public import BerthModel
import BerthLinux

/// A host port held for a published port: a socket bound to it (never
/// listening; traffic is forwarded before it would reach the socket), so
/// that no other program can take the port while the container runs, and a
/// port already taken is an error at start, as with docker.
public final class PortReservation: Sendable {
    public let hostIP: IPv4Address?
    public let port: UInt16
    public let transport: PortProtocol
    private let socket: BoundSocket

    /// Binds `hostIP:port` (every address for nil; port 0 picks a free one).
    ///
    /// - Throws: `BerthError.alreadyExists` when the port is taken,
    ///   `invalidArgument` for an address that is not the host's.
    public init(hostIP: IPv4Address?, port: UInt16, transport: PortProtocol) throws {
        let where_ = "\(hostIP?.description ?? "0.0.0.0"):\(port)/\(transport.rawValue)"
        do {
            socket = try BoundSocket(address: hostIP?.value ?? 0, port: port, udp: transport == .udp)
        } catch let error as SystemError where error.code == .addressInUse {
            throw BerthError(.alreadyExists, "cannot publish \(where_): the port is already in use on the host")
        } catch let error as SystemError where error.code == .addressNotAvailable {
            throw BerthError.invalid("cannot publish \(where_): \(hostIP?.description ?? "") is not an address of this host")
        } catch let error as SystemError {
            throw SystemError("bind \(where_)", errno: error.errno)
        }
        self.hostIP = hostIP
        self.port = socket.port
        self.transport = transport
    }
}
