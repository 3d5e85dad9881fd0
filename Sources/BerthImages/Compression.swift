import BerthLinux
import BerthModel
import CZlib
import CZstd

/// How a layer blob is compressed, told by its first bytes (the media type
/// is only a claim; the bytes are what gets unpacked).
public enum LayerCompression: Sendable, Equatable {
    case none
    case gzip
    case zstd

    /// - Parameter magic: at least the blob's first four bytes, fewer for a tiny blob.
    public static func detect(_ magic: some Collection<UInt8>) -> LayerCompression {
        let b = Array(magic.prefix(4))
        if b.count >= 2 && b[0] == 0x1f && b[1] == 0x8b { return .gzip }
        if b.count >= 4 && b == [0x28, 0xb5, 0x2f, 0xfd] { return .zstd }
        return .none
    }
}

/// One decompression library's stream: it owns the buffer its compressed
/// input is read into, and knows whether a member or frame is unfinished.
protocol Decompressor: AnyObject {
    /// "gzip", "zstd": for error messages.
    static var format: String { get }
    init() throws
    var input: UnsafeMutableRawBufferPointer { get }
    /// Whether the input so far stops in the middle of a member or frame.
    var midFrame: Bool { get }
    /// Decompresses from `input` into `output`: bytes consumed, bytes written.
    func step(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> (Int, Int)
}

/// Decompresses a stream (several members or frames back to back too, as
/// pigz and some registries write them) from another byte source; a stream
/// that ends mid-frame is an error, never a short layer.
struct DecompressingByteSource<Inner: ByteSource, Codec: Decompressor>: ByteSource {
    private var inner: Inner
    private let codec: Codec
    private var inputStart = 0
    private var inputEnd = 0
    private var finished = false

    init(_ inner: Inner) throws {
        self.inner = inner
        self.codec = try Codec()
    }

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var produced = 0
        while produced < buffer.count && !finished {
            if inputStart == inputEnd {
                let n = try inner.read(into: codec.input)
                inputStart = 0
                inputEnd = n
                if n == 0 {
                    if codec.midFrame {
                        throw BerthError.invalid("\(Codec.format) stream: truncated (the compressed data ends mid-stream)")
                    }
                    finished = true
                    break
                }
            }
            let (consumed, written) = try codec.step(
                UnsafeRawBufferPointer(rebasing: codec.input[inputStart..<inputEnd]),
                into: UnsafeMutableRawBufferPointer(rebasing: buffer[produced...]))
            inputStart += consumed
            produced += written
        }
        return produced
    }
}

typealias GzipByteSource<Inner: ByteSource> = DecompressingByteSource<Inner, ZStream>
typealias ZstdByteSource<Inner: ByteSource> = DecompressingByteSource<Inner, ZstdStream>

/// A zlib inflate stream (gzip or zlib framing, detected).
final class ZStream: Decompressor {
    static let format = "gzip"
    private var z = z_stream()
    let input = UnsafeMutableRawBufferPointer.allocate(byteCount: 128 * 1024, alignment: 16)
    private(set) var midFrame = false

    init() throws {
        // 15 + 32: the largest window, with gzip or zlib headers detected.
        let rc = inflateInit2_(&z, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        guard rc == Z_OK else {
            input.deallocate()
            throw BerthError(.internal, "zlib: inflateInit failed (\(rc))")
        }
    }

    func step(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> (Int, Int) {
        guard !input.isEmpty, !output.isEmpty else { return (0, 0) }
        midFrame = true
        z.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: Bytef.self))
        z.avail_in = uInt(input.count)
        z.next_out = output.baseAddress!.assumingMemoryBound(to: Bytef.self)
        z.avail_out = uInt(output.count)
        let rc = inflate(&z, Z_NO_FLUSH)
        let consumed = input.count - Int(z.avail_in)
        let written = output.count - Int(z.avail_out)
        switch rc {
        case Z_OK, Z_BUF_ERROR:
            break
        case Z_STREAM_END:
            // Another member may follow; anything else after the end is garbage.
            guard inflateReset(&z) == Z_OK else { throw BerthError(.internal, "zlib: inflateReset failed") }
            midFrame = false
        default:
            let message = z.msg.map { String(cString: $0) } ?? "error \(rc)"
            throw BerthError.invalid("gzip stream: \(message)")
        }
        return (consumed, written)
    }

    deinit {
        inflateEnd(&z)
        input.deallocate()
    }
}

/// Hashes what passes through it: a layer's diff ID while it is unpacked.
/// The digest is read from `digest` once the stream has been read to its end.
public struct DigestingByteSource<Inner: ByteSource>: ByteSource {
    final class State {
        var hasher = DigestingHasher()
    }

    private var inner: Inner
    private let state = State()

    public init(_ inner: Inner) { self.inner = inner }

    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try inner.read(into: buffer)
        state.hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        return n
    }

    /// Reads the digest of everything read so far (also from copies of this source).
    public var digest: () -> Digest {
        let state = self.state
        return { state.hasher.finalize() }
    }
}

/// Reads a file descriptor from where it stands.
public struct FileByteSource: ByteSource {
    let fd: Int32

    public init(fd: Int32) { self.fd = fd }

    /// Reads to the end in chunks of 1 MiB, handing each to `body`.
    ///
    /// - Throws: `SystemError` from a read, or what `body` throws.
    public func forEachChunk(_ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        var source = self
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try source.read(into: $0) }
            if n == 0 { return }
            try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
    }

    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var total = 0
        while total < buffer.count {
            let n = try Descriptor(fd).read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[total...]))
            if n == 0 { break }
            total += n
        }
        return total
    }
}

/// A zstd decompression stream.
final class ZstdStream: Decompressor {
    static let format = "zstd"
    private let d: OpaquePointer
    let input = UnsafeMutableRawBufferPointer.allocate(byteCount: ZSTD_DStreamInSize(), alignment: 16)
    private(set) var midFrame = false

    init() throws {
        guard let d = ZSTD_createDStream() else {
            input.deallocate()
            throw BerthError(.internal, "zstd: cannot create a decompression stream")
        }
        self.d = d
        ZSTD_initDStream(d)
    }

    func step(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> (Int, Int) {
        var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var outBuffer = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
        let rc = ZSTD_decompressStream(d, &outBuffer, &inBuffer)
        if ZSTD_isError(rc) != 0 {
            throw BerthError.invalid("zstd stream: \(String(cString: ZSTD_getErrorName(rc)))")
        }
        // zstd's hint is 0 exactly when a frame is complete.
        midFrame = rc != 0
        return (inBuffer.pos, outBuffer.pos)
    }

    deinit {
        ZSTD_freeDStream(d)
        input.deallocate()
    }
}
