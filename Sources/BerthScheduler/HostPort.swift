public import BerthModel

/// A host port a replica publishes.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public var port: UInt16
    public var transport: PortProtocol

    public init(_ port: UInt16, _ transport: PortProtocol = .tcp) {
        self.port = port
        self.transport = transport
    }

    public var description: String { "\(port)/\(transport.rawValue)" }
}
