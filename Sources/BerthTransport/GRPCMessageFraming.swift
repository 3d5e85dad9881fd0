import NIOCore

/// Splits a stream's DATA bytes into gRPC messages: each a 1-byte
/// compressed flag, a 4-byte big-endian length, then the payload.
struct GRPCMessageDeframer {
    enum Failure: Error, Equatable {
        /// A message declared more bytes than the limit allows.
        case tooLarge(declared: UInt32, limit: Int)
        /// The compressed flag is set, and no compression was negotiated.
        case compressed
    }

    let maxMessageSize: Int
    private var buffer: ByteBuffer

    init(maxMessageSize: Int) {
        self.maxMessageSize = maxMessageSize
        self.buffer = ByteBuffer()
    }

    /// Bytes received that do not yet form a whole message.
    var bufferedBytes: Int { buffer.readableBytes }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        if buffer.readableBytes == 0 && buffer.readerIndex > 0 {
            buffer.clear()
        }
        buffer.writeBytes(bytes)
    }

    mutating func append(_ bytes: ByteBuffer) {
        var bytes = bytes
        buffer.writeBuffer(&bytes)
    }

    /// The next whole message, or nil until more bytes arrive.
    ///
    /// - Throws: `Failure` as soon as the 5-byte prefix is readable and
    ///   declares something this side will not accept; nothing of the
    ///   message body needs to have arrived.
    mutating func next() throws(Failure) -> ByteBuffer? {
        guard buffer.readableBytes >= 5,
            let flag = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            let length = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt32.self)
        else { return nil }
        if flag != 0 { throw .compressed }
        if Int(length) > maxMessageSize { throw .tooLarge(declared: length, limit: maxMessageSize) }
        guard buffer.readableBytes >= 5 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 5)
        let message = buffer.readSlice(length: Int(length))
        if buffer.readableBytes == 0 {
            // Let the next append start a fresh buffer rather than grow this one;
            // the message slice keeps the old storage alive as long as it needs.
            buffer = ByteBuffer()
        } else if buffer.readerIndex > 64 * 1024 {
            buffer.discardReadBytes()
        }
        return message
    }
}

enum GRPCMessageFramer {
    /// Writes the 5-byte prefix and the payload.
    static func frame(_ message: ByteBuffer, into out: inout ByteBuffer) {
        out.writeInteger(UInt8(0))
        out.writeInteger(UInt32(message.readableBytes))
        var message = message
        out.writeBuffer(&message)
    }
}
