public import GRPCCore
public import NIOCore

/// The message bytes BerthTransport hands to and takes from GRPCCore: a
/// `ByteBuffer`, so a received message is a slice of what came off the
/// socket, never a second copy.
public struct TransportBytes: GRPCContiguousBytes, Hashable, Sendable {
    /// The bytes.
    public var buffer: ByteBuffer

    /// Wraps a buffer.
    public init(_ buffer: ByteBuffer) { self.buffer = buffer }

    public init(repeating byte: UInt8, count: Int) {
        self.buffer = ByteBuffer(repeating: byte, count: count)
    }

    public init<Bytes: Sequence>(_ sequence: Bytes) where Bytes.Element == UInt8 {
        self.buffer = ByteBuffer(bytes: sequence)
    }

    public var count: Int { buffer.readableBytes }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeReadableBytes(body)
    }

    public mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeMutableReadableBytes(body)
    }
}
