import BerthLinux
import BerthModel
import CZlib
import CZstd
import Glibc

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

/// Inflates a gzip stream (several concatenated members too, as pigz and
/// some registries write them) from another byte source.
public struct GzipByteSource<Inner: ByteSource>: ByteSource {
    private var inner: Inner
    private let stream: ZStream
    private let input: UnsafeMutableRawBufferPointer
    private var inputStart = 0
    private var inputEnd = 0
    private var finished = false
    /// The compressed bytes consumed so far.
    public private(set) var compressedBytes: Int64 = 0

    public init(_ inner: Inner) throws {
        self.inner = inner
        self.stream = try ZStream()
        self.input = stream.input
    }

    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var produced = 0
        while produced < buffer.count && !finished {
            if inputStart == inputEnd {
                let n = try inner.read(into: input)
                compressedBytes += Int64(n)
                inputStart = 0
                inputEnd = n
                if n == 0 {
                    if stream.midMember {
                        throw BerthError.invalid("gzip stream: truncated (the compressed data ends mid-stream)")
                    }
                    finished = true
                    break
                }
            }
            let (consumed, written, ended) = try stream.inflate(
                UnsafeMutableRawBufferPointer(rebasing: input[inputStart..<inputEnd]),
                into: UnsafeMutableRawBufferPointer(rebasing: buffer[produced...]))
            inputStart += consumed
            produced += written
            if ended {
                // Another member may follow; anything else after the end is garbage.
                try stream.reset()
            }
        }
        return produced
    }
}

/// A zlib inflate stream (gzip or zlib framing, detected).
final class ZStream {
    private var z = z_stream()
    /// The compressed bytes read ahead, owned here so a source can fill it.
    let input = UnsafeMutableRawBufferPointer.allocate(byteCount: 128 * 1024, alignment: 16)
    /// True between a member's first byte and its end.
    private(set) var midMember = false

    init() throws {
        // 15 + 32: the largest window, with gzip or zlib headers detected.
        let rc = inflateInit2_(&z, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        guard rc == Z_OK else { throw BerthError(.internal, "zlib: inflateInit failed (\(rc))") }
    }

    func reset() throws {
        guard inflateReset(&z) == Z_OK else { throw BerthError(.internal, "zlib: inflateReset failed") }
        midMember = false
    }

    /// Inflates from `input` into `output`: bytes consumed, bytes written,
    /// and whether a member ended.
    func inflate(_ input: UnsafeMutableRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> (Int, Int, Bool) {
        guard !input.isEmpty, !output.isEmpty else { return (0, 0, false) }
        midMember = true
        z.next_in = input.baseAddress!.assumingMemoryBound(to: Bytef.self)
        z.avail_in = uInt(input.count)
        z.next_out = output.baseAddress!.assumingMemoryBound(to: Bytef.self)
        z.avail_out = uInt(output.count)
        let rc = CZlib.inflate(&z, Z_NO_FLUSH)
        let consumed = input.count - Int(z.avail_in)
        let written = output.count - Int(z.avail_out)
        switch rc {
        case Z_OK, Z_BUF_ERROR:
            return (consumed, written, false)
        case Z_STREAM_END:
            return (consumed, written, true)
        default:
            let message = z.msg.map { String(cString: $0) } ?? "error \(rc)"
            throw BerthError.invalid("gzip stream: \(message)")
        }
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

    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var total = 0
        while total < buffer.count {
            let n = Glibc.read(fd, buffer.baseAddress! + total, buffer.count - total)
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("read", errno: errno)
            }
            if n == 0 { break }
            total += n
        }
        return total
    }
}

/// Decompresses a zstd stream (several frames too) from another byte source.
public struct ZstdByteSource<Inner: ByteSource>: ByteSource {
    private var inner: Inner
    private let stream: ZstdStream
    private let input: UnsafeMutableRawBufferPointer
    private var inputStart = 0
    private var inputEnd = 0
    private var finished = false
    /// Whether the last call left a frame unfinished.
    private var midFrame = false

    public init(_ inner: Inner) throws {
        self.inner = inner
        self.stream = try ZstdStream()
        self.input = stream.input
    }

    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var produced = 0
        while produced < buffer.count && !finished {
            if inputStart == inputEnd {
                let n = try inner.read(into: input)
                inputStart = 0
                inputEnd = n
                if n == 0 {
                    if midFrame { throw BerthError.invalid("zstd stream: truncated (the compressed data ends mid-frame)") }
                    finished = true
                    break
                }
            }
            let (consumed, written, hint) = try stream.decompress(
                UnsafeRawBufferPointer(rebasing: input[inputStart..<inputEnd]),
                into: UnsafeMutableRawBufferPointer(rebasing: buffer[produced...]))
            inputStart += consumed
            produced += written
            midFrame = hint != 0
        }
        return produced
    }
}

final class ZstdStream {
    private let d: OpaquePointer
    /// The compressed bytes read ahead, owned here so a source can fill it.
    let input = UnsafeMutableRawBufferPointer.allocate(byteCount: ZSTD_DStreamInSize(), alignment: 16)

    init() throws {
        guard let d = ZSTD_createDStream() else { throw BerthError(.internal, "zstd: cannot create a decompression stream") }
        self.d = d
        ZSTD_initDStream(d)
    }

    /// Bytes consumed, bytes written, and zstd's hint (0 when a frame ended).
    func decompress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> (Int, Int, Int) {
        var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var outBuffer = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
        let rc = ZSTD_decompressStream(d, &outBuffer, &inBuffer)
        if ZSTD_isError(rc) != 0 {
            throw BerthError.invalid("zstd stream: \(String(cString: ZSTD_getErrorName(rc)))")
        }
        return (inBuffer.pos, outBuffer.pos, rc)
    }

    deinit {
        ZSTD_freeDStream(d)
        input.deallocate()
    }
}
