
/// The file format of a container's log, as `berth-shim` writes it and the
/// agent reads it.
///
/// The shim logs what it reads from the container's stdout and stderr pipes
/// as it reads it: one record per read, not per line, so that the cost of
/// the time and the stream is paid per read (a few bytes), not per line:
///
///     file    = header record*
///     header  = "BERTHLOG" u32le(version=1) u32le(flags) u64le(sequence) i64le(base)   (32 bytes)
///     record  = u8(stream: 1 stdout, 2 stderr) varint(zigzag(nanos - base)) varint(length) bytes(length)
///
/// `sequence` numbers the files of one container's log (each rotation
/// starts the next), so that a reader following the log knows which file
/// comes after the one it read, or that one it needed was rotated away.
/// `base` is the time of the file's first record, in nanoseconds since the
/// epoch; a record's time is kept as its distance from it. `flags` say
/// which streams' first bytes in the file continue a line begun in the
/// file before (1: stdout, 2: stderr): a reader that no longer has that
/// file leaves the fragment out. A rotation comes when the next record
/// would pass the size limit: the record is split at the limit, so no
/// file is larger than the limit.
///
/// Beside each log file, `FILE.idx` holds one entry per `indexInterval`
/// bytes of records: where a record starts, its time, and how many line
/// breaks come before it in the file. `logs --tail` and `--since` start
/// from the entry nearest to what they want instead of reading the whole
/// file.
public enum ContainerLogFormat {
    public static let magic: [UInt8] = Array("BERTHLOG".utf8)
    public static let version: UInt32 = 1
    public static let headerSize = 32
    /// Bytes of records between two index entries.
    public static let indexInterval = 256 * 1024
    public static let indexEntrySize = 24
    /// The longest record a reader takes (the shim reads at most 64 KiB at a time).
    public static let maxRecord = 1 << 20

    public enum Stream: UInt8, Sendable, Hashable {
        case stdout = 1
        case stderr = 2
    }

    public struct Header: Sendable, Hashable {
        public var sequence: UInt64
        /// Nanoseconds since the epoch.
        public var base: Int64
        /// Streams whose first bytes here continue a line of the file before.
        public var continues: Set<Stream>

        public init(sequence: UInt64, base: Int64, continues: Set<Stream> = []) {
            self.sequence = sequence
            self.base = base
            self.continues = continues
        }

        public var bytes: [UInt8] {
            var out = magic
            out.appendLittleEndian(version)
            out.appendLittleEndian(UInt32(continues.reduce(0) { $0 | $1.rawValue }))
            out.appendLittleEndian(sequence)
            out.appendLittleEndian(UInt64(bitPattern: base))
            return out
        }

        /// Nil unless `bytes` starts with a whole header of this version.
        public init?(_ bytes: some RandomAccessCollection<UInt8>) {
            guard bytes.count >= headerSize else { return nil }
            let b = Array(bytes.prefix(headerSize))
            guard Array(b[0..<8]) == magic, b.littleEndian(UInt32.self, at: 8) == version else { return nil }
            let flags = b.littleEndian(UInt32.self, at: 12)
            self.init(
                sequence: b.littleEndian(UInt64.self, at: 16), base: Int64(bitPattern: b.littleEndian(UInt64.self, at: 24)),
                continues: Set([Stream.stdout, .stderr].filter { flags & UInt32($0.rawValue) != 0 }))
        }
    }

    /// One read of the container's output.
    public struct Record: Sendable, Hashable {
        public var stream: Stream
        /// Nanoseconds since the epoch.
        public var nanos: Int64
        public var payload: [UInt8]

        public init(stream: Stream, nanos: Int64, payload: [UInt8]) {
            self.stream = stream
            self.nanos = nanos
            self.payload = payload
        }
    }

    /// The bytes of a record in a file whose base is `base`, before the payload.
    public static func recordPrefix(stream: Stream, nanos: Int64, length: Int, base: Int64) -> [UInt8] {
        var out: [UInt8] = [stream.rawValue]
        let delta = nanos &- base
        out.appendVarint(UInt64(bitPattern: (delta << 1) ^ (delta >> 63)))
        out.appendVarint(UInt64(length))
        return out
    }

    public enum Decoded: Sendable, Hashable {
        /// A record, and the bytes it took.
        case record(Record, size: Int)
        /// The bytes end within a record: read more.
        case incomplete
        /// Not a record: the file is damaged here.
        case malformed
    }

    /// Decodes the record at the start of `bytes`.
    public static func decode(_ bytes: UnsafeRawBufferPointer, base: Int64) -> Decoded {
        guard let tag = bytes.first else { return .incomplete }
        guard let stream = Stream(rawValue: tag) else { return .malformed }
        var offset = 1
        let zigzag: UInt64
        let length: UInt64
        switch readVarint(bytes, &offset) {
        case .value(let v): zigzag = v
        case .incomplete: return .incomplete
        case .malformed: return .malformed
        }
        switch readVarint(bytes, &offset) {
        case .value(let v): length = v
        case .incomplete: return .incomplete
        case .malformed: return .malformed
        }
        guard length <= UInt64(maxRecord) else { return .malformed }
        guard bytes.count - offset >= Int(length) else { return .incomplete }
        let delta = Int64(bitPattern: zigzag >> 1) ^ -Int64(bitPattern: zigzag & 1)
        let payload = Array(bytes[offset..<(offset + Int(length))])
        return .record(Record(stream: stream, nanos: base &+ delta, payload: payload), size: offset + Int(length))
    }

    enum Varint {
        case value(UInt64)
        case incomplete
        case malformed
    }

    /// The varint at `offset`, which moves past it.
    static func readVarint(_ bytes: UnsafeRawBufferPointer, _ offset: inout Int) -> Varint {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while offset < bytes.count {
            let byte = bytes[offset]
            offset += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return .value(value) }
            shift += 7
            if shift > 63 { return .malformed }
        }
        return .incomplete
    }

    /// One entry of a log's index.
    public struct IndexEntry: Sendable, Hashable {
        /// Where a record starts in the log file.
        public var offset: UInt64
        /// The time of that record.
        public var nanos: Int64
        /// Line breaks in the file before `offset`.
        public var lines: UInt64

        public init(offset: UInt64, nanos: Int64, lines: UInt64) {
            self.offset = offset
            self.nanos = nanos
            self.lines = lines
        }

        public var bytes: [UInt8] {
            var out: [UInt8] = []
            out.appendLittleEndian(offset)
            out.appendLittleEndian(UInt64(bitPattern: nanos))
            out.appendLittleEndian(lines)
            return out
        }

        /// The entries in `bytes` (a trailing partial entry is left out).
        public static func all(_ bytes: [UInt8]) -> [IndexEntry] {
            stride(from: 0, to: bytes.count - indexEntrySize + 1, by: indexEntrySize).map { at in
                IndexEntry(
                    offset: bytes.littleEndian(UInt64.self, at: at), nanos: Int64(bitPattern: bytes.littleEndian(UInt64.self, at: at + 8)),
                    lines: bytes.littleEndian(UInt64.self, at: at + 16))
            }
        }
    }

    /// `path`'s index file.
    public static func indexPath(_ path: String) -> String { path + ".idx" }

    /// The line breaks in `bytes` (what an index counts).
    public static func lineBreaks(_ bytes: UnsafeRawBufferPointer) -> Int {
        // Branch-free, so that the optimiser vectorises it.
        var count = 0
        for byte in bytes { count &+= byte == 10 ? 1 : 0 }
        return count
    }

    public static func lineBreaks(_ bytes: [UInt8]) -> Int { bytes.withUnsafeBytes { lineBreaks($0) } }
}

extension [UInt8] {
    mutating func appendVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        append(UInt8(v))
    }

    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    func littleEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var value: T = 0
        for i in 0..<MemoryLayout<T>.size { value |= T(self[offset + i]) << (8 * i) }
        return value
    }
}
