/// One member of a tar archive, with the fields Berth honours.
public struct TarEntry: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case file
        case directory
        case symlink
        case hardlink
        case characterDevice
        case blockDevice
        case fifo
    }

    /// The path as written in the archive (PAX and GNU long names resolved).
    public var name: String
    public var kind: Kind
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: Int64
    /// Seconds since the epoch.
    public var mtime: Int64
    public var linkName: String
    public var devMajor: UInt32
    public var devMinor: UInt32
    /// Extended attributes from PAX `SCHILY.xattr.*` records.
    public var xattrs: [String: [UInt8]]

    public init(
        name: String, kind: Kind, mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0, size: Int64 = 0, mtime: Int64 = 0,
        linkName: String = "", devMajor: UInt32 = 0, devMinor: UInt32 = 0, xattrs: [String: [UInt8]] = [:]
    ) {
        self.name = name
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.mtime = mtime
        self.linkName = linkName
        self.devMajor = devMajor
        self.devMinor = devMinor
        self.xattrs = xattrs
    }
}

/// A malformed archive: what is wrong and where.
public struct TarError: Error, Sendable, CustomStringConvertible {
    public var offset: Int64
    public var reason: String
    public var description: String { "tar archive at byte \(offset): \(reason)" }
}

/// Where a tar reader gets its bytes.
public protocol ByteSource {
    /// Fills `buffer` completely, or returns how many bytes were read before the end.
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// Reads a tar stream (ustar, GNU and PAX) one entry at a time.
public struct TarReader<Source: ByteSource> {
    private var source: Source
    private var offset: Int64 = 0
    private var remaining: Int64 = 0
    private var padding: Int64 = 0
    private var globalPax: [String: String] = [:]

    public init(_ source: Source) {
        self.source = source
    }

    private mutating func readExactly(_ count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withUnsafeMutableBytes { try source.read(into: $0) }
        offset += Int64(n)
        guard n == count else { throw TarError(offset: offset, reason: "the archive ends in the middle of an entry") }
        return bytes
    }

    /// Skips whatever of the current entry's data was not read.
    private mutating func skipRest() throws {
        var toSkip = remaining + padding
        remaining = 0
        padding = 0
        while toSkip > 0 {
            let chunk = Int(min(toSkip, 65536))
            _ = try readExactly(chunk)
            toSkip -= Int64(chunk)
        }
    }

    /// Reads and discards what follows the archive's end (its trailing zero
    /// blocks), so that a digest taken of the stream covers all of it.
    public mutating func readToEnd() throws {
        remaining = 0
        padding = 0
        var scratch = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = try scratch.withUnsafeMutableBytes { try source.read(into: $0) }
            offset += Int64(n)
            if n == 0 { return }
        }
    }

    /// Reads up to `buffer.count` bytes of the current entry's data; 0 at its end.
    public mutating func readData(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard remaining > 0 else { return 0 }
        let want = Int(min(Int64(buffer.count), remaining))
        let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]))
        offset += Int64(n)
        guard n == want else { throw TarError(offset: offset, reason: "the archive ends in the middle of a file") }
        remaining -= Int64(n)
        return n
    }

    /// The next entry, nil at the end of the archive.
    ///
    /// - Throws: `TarError` for a bad checksum, a malformed number or a truncated archive.
    public mutating func next() throws -> TarEntry? {
        try skipRest()
        var pax: [String: String] = [:]
        var longName: String?
        var longLink: String?
        while true {
            let headerOffset = offset
            var header = [UInt8](repeating: 0, count: 512)
            let n = try header.withUnsafeMutableBytes { try source.read(into: $0) }
            offset += Int64(n)
            if n == 0 { return nil }
            guard n == 512 else { throw TarError(offset: offset, reason: "truncated header") }
            if header.allSatisfy({ $0 == 0 }) { return nil }
            try Self.verifyChecksum(header, at: headerOffset)
            let type = header[156]
            let size = try Self.number(header, 124, 12, at: headerOffset)
            guard size >= 0 else { throw TarError(offset: headerOffset, reason: "negative size") }
            func body() throws -> [UInt8] {
                guard size <= 1 << 20 else { throw TarError(offset: headerOffset, reason: "metadata record of \(size) bytes is too large") }
                let data = try readExactly(Int(size))
                let pad = (512 - Int(size) % 512) % 512
                if pad > 0 { _ = try readExactly(pad) }
                return data
            }
            switch type {
            case UInt8(ascii: "x"):
                pax.merge(try Self.parsePax(body(), at: headerOffset)) { _, new in new }
                continue
            case UInt8(ascii: "g"):
                globalPax.merge(try Self.parsePax(body(), at: headerOffset)) { _, new in new }
                continue
            case UInt8(ascii: "L"):
                longName = Self.cString(try body()[...])
                continue
            case UInt8(ascii: "K"):
                longLink = Self.cString(try body()[...])
                continue
            default:
                break
            }
            let records = globalPax.merging(pax) { _, new in new }
            var name = Self.cString(header[0..<100])
            let magic = Array(header[257..<263])
            if magic == Array("ustar\0".utf8) {
                let prefix = Self.cString(header[345..<500])
                if !prefix.isEmpty { name = prefix + "/" + name }
            }
            if let longName { name = longName }
            if let path = records["path"] { name = path }
            var linkName = Self.cString(header[157..<257])
            if let longLink { linkName = longLink }
            if let path = records["linkpath"] { linkName = path }
            let kind: TarEntry.Kind
            switch type {
            case UInt8(ascii: "0"), 0, UInt8(ascii: "7"): kind = name.hasSuffix("/") ? .directory : .file
            case UInt8(ascii: "1"): kind = .hardlink
            case UInt8(ascii: "2"): kind = .symlink
            case UInt8(ascii: "3"): kind = .characterDevice
            case UInt8(ascii: "4"): kind = .blockDevice
            case UInt8(ascii: "5"): kind = .directory
            case UInt8(ascii: "6"): kind = .fifo
            default:
                throw TarError(offset: headerOffset, reason: "unsupported entry type '\(Character(UnicodeScalar(type)))' for \(name)")
            }
            var entry = TarEntry(
                name: name, kind: kind, mode: UInt32(truncatingIfNeeded: try Self.number(header, 100, 8, at: headerOffset)),
                uid: UInt32(truncatingIfNeeded: try Self.number(header, 108, 8, at: headerOffset)),
                gid: UInt32(truncatingIfNeeded: try Self.number(header, 116, 8, at: headerOffset)),
                size: kind == .file ? size : 0,
                mtime: try Self.number(header, 136, 12, at: headerOffset), linkName: linkName,
                devMajor: UInt32(truncatingIfNeeded: try Self.number(header, 329, 8, at: headerOffset)),
                devMinor: UInt32(truncatingIfNeeded: try Self.number(header, 337, 8, at: headerOffset)))
            if let v = records["size"], let s = Int64(v), kind == .file { entry.size = s }
            if let v = records["uid"], let u = UInt32(v) { entry.uid = u }
            if let v = records["gid"], let g = UInt32(v) { entry.gid = g }
            if let v = records["mtime"], let t = Double(v) { entry.mtime = Int64(t) }
            for (key, value) in records where key.hasPrefix("SCHILY.xattr.") {
                entry.xattrs[String(key.dropFirst("SCHILY.xattr.".count))] = Array(value.utf8)
            }
            // Directories, links and devices carry no data even if a size is set.
            let dataSize = kind == .file ? entry.size : (type == UInt8(ascii: "0") || type == 0 ? size : 0)
            remaining = dataSize
            padding = (512 - dataSize % 512) % 512
            return entry
        }
    }

    static func cString(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Octal, or GNU base-256 when the high bit is set.
    static func number(_ header: [UInt8], _ start: Int, _ length: Int, at offset: Int64) throws -> Int64 {
        let field = header[start..<(start + length)]
        if let first = field.first, first & 0x80 != 0 {
            var value: Int64 = Int64(first & 0x7F)
            for b in field.dropFirst() {
                guard value < Int64.max >> 8 else { throw TarError(offset: offset, reason: "number too large") }
                value = value << 8 | Int64(b)
            }
            return value
        }
        var value: Int64 = 0
        var seen = false
        for b in field {
            if b == 0 || b == UInt8(ascii: " ") {
                if seen { break }
                continue
            }
            guard b >= UInt8(ascii: "0") && b <= UInt8(ascii: "7") else {
                throw TarError(offset: offset, reason: "malformed number field")
            }
            guard value < Int64.max >> 3 else { throw TarError(offset: offset, reason: "number too large") }
            value = value * 8 + Int64(b - UInt8(ascii: "0"))
            seen = true
        }
        return value
    }

    static func verifyChecksum(_ header: [UInt8], at offset: Int64) throws {
        let stored = try number(header, 148, 8, at: offset)
        var unsigned: Int64 = 0
        var signed: Int64 = 0
        for (i, b) in header.enumerated() {
            let v = (148..<156).contains(i) ? UInt8(ascii: " ") : b
            unsigned += Int64(v)
            signed += Int64(Int8(bitPattern: v))
        }
        guard stored == unsigned || stored == signed else {
            throw TarError(offset: offset, reason: "header checksum mismatch (not a tar archive, or a damaged one)")
        }
    }

    static func parsePax(_ data: [UInt8], at offset: Int64) throws -> [String: String] {
        var records: [String: String] = [:]
        var index = 0
        while index < data.count {
            guard let space = data[index...].firstIndex(of: UInt8(ascii: " ")),
                let length = Int(String(decoding: data[index..<space], as: UTF8.self)), length > 0,
                index + length <= data.count
            else { throw TarError(offset: offset, reason: "malformed PAX record") }
            let record = data[(space + 1)..<(index + length - 1)]
            guard let equals = record.firstIndex(of: UInt8(ascii: "=")) else {
                throw TarError(offset: offset, reason: "malformed PAX record")
            }
            records[String(decoding: record[..<equals], as: UTF8.self)] = String(decoding: record[(equals + 1)...], as: UTF8.self)
            index += length
        }
        return records
    }
}

/// Writes tar archives (ustar headers, PAX records where ustar cannot say it).
public struct TarWriter {
    public private(set) var output: [UInt8] = []
    private let sink: (([UInt8]) throws -> Void)?

    /// Collects the archive in `output`.
    public init() { self.sink = nil }

    /// Hands each block of the archive to `sink`.
    public init(sink: @escaping ([UInt8]) throws -> Void) { self.sink = sink }

    private mutating func emit(_ bytes: [UInt8]) throws {
        if let sink { try sink(bytes) } else { output += bytes }
    }

    static func octal(_ value: Int64, _ width: Int) -> [UInt8] {
        var digits = Array(String(value, radix: 8).utf8)
        while digits.count < width - 1 { digits.insert(UInt8(ascii: "0"), at: 0) }
        return digits + [0]
    }

    private static func header(name: String, entry: TarEntry, type: UInt8, size: Int64, linkName: String) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ bytes: [UInt8], _ at: Int, _ max: Int) {
            for (i, b) in bytes.prefix(max).enumerated() { h[at + i] = b }
        }
        put(Array(name.utf8), 0, 100)
        put(octal(Int64(entry.mode & 0o7777), 8), 100, 8)
        put(octal(Int64(min(entry.uid, 0o7777777)), 8), 108, 8)
        put(octal(Int64(min(entry.gid, 0o7777777)), 8), 116, 8)
        put(octal(min(size, 0o77777777777), 12), 124, 12)
        put(octal(max(0, min(entry.mtime, 0o77777777777)), 12), 136, 12)
        h[156] = type
        put(Array(linkName.utf8), 157, 100)
        put(Array("ustar\0".utf8), 257, 6)
        put(Array("00".utf8), 263, 2)
        put(octal(Int64(entry.devMajor), 8), 329, 8)
        put(octal(Int64(entry.devMinor), 8), 337, 8)
        for i in 148..<156 { h[i] = UInt8(ascii: " ") }
        let sum = h.reduce(0) { $0 + Int64($1) }
        put(octal(sum, 7), 148, 7)
        h[155] = UInt8(ascii: " ")
        return h
    }

    private static func paxRecord(_ key: String, _ value: String) -> [UInt8] {
        let body = " \(key)=\(value)\n"
        var length = body.utf8.count + 1
        while String(length).utf8.count + body.utf8.count != length { length += 1 }
        return Array("\(length)\(body)".utf8)
    }

    /// Adds an entry; `data` is the content of a regular file.
    public mutating func append(_ entry: TarEntry, data: [UInt8] = []) throws {
        var entry = entry
        if entry.kind == .file { entry.size = Int64(data.count) }
        try appendHeader(entry)
        if entry.kind == .file && !data.isEmpty {
            try emit(data)
            let pad = (512 - data.count % 512) % 512
            if pad > 0 { try emit([UInt8](repeating: 0, count: pad)) }
        }
    }

    /// Adds a header only; the caller then writes `entry.size` bytes with
    /// `appendData` and finishes with `padData`.
    public mutating func appendHeader(_ entry: TarEntry) throws {
        var name = entry.name
        if entry.kind == .directory && !name.hasSuffix("/") { name += "/" }
        var pax: [UInt8] = []
        if name.utf8.count > 100 { pax += Self.paxRecord("path", name) }
        if entry.linkName.utf8.count > 100 { pax += Self.paxRecord("linkpath", entry.linkName) }
        if entry.size > 0o77777777777 { pax += Self.paxRecord("size", String(entry.size)) }
        if entry.uid > 0o7777777 { pax += Self.paxRecord("uid", String(entry.uid)) }
        if entry.gid > 0o7777777 { pax += Self.paxRecord("gid", String(entry.gid)) }
        for (key, value) in entry.xattrs.sorted(by: { $0.key < $1.key }) {
            pax += Self.paxRecord("SCHILY.xattr.\(key)", String(decoding: value, as: UTF8.self))
        }
        if !pax.isEmpty {
            let paxEntry = TarEntry(name: "PaxHeaders/\(name.suffix(80))", kind: .file, mode: 0o644, mtime: entry.mtime)
            try emit(Self.header(name: paxEntry.name, entry: paxEntry, type: UInt8(ascii: "x"), size: Int64(pax.count), linkName: ""))
            try emit(pax)
            let pad = (512 - pax.count % 512) % 512
            if pad > 0 { try emit([UInt8](repeating: 0, count: pad)) }
        }
        let type: UInt8
        switch entry.kind {
        case .file: type = UInt8(ascii: "0")
        case .hardlink: type = UInt8(ascii: "1")
        case .symlink: type = UInt8(ascii: "2")
        case .characterDevice: type = UInt8(ascii: "3")
        case .blockDevice: type = UInt8(ascii: "4")
        case .directory: type = UInt8(ascii: "5")
        case .fifo: type = UInt8(ascii: "6")
        }
        try emit(Self.header(name: name, entry: entry, type: type, size: entry.kind == .file ? entry.size : 0, linkName: entry.linkName))
    }

    public mutating func appendData(_ data: [UInt8]) throws { try emit(data) }

    public mutating func padData(size: Int64) throws {
        let pad = Int((512 - size % 512) % 512)
        if pad > 0 { try emit([UInt8](repeating: 0, count: pad)) }
    }

    /// The two zero blocks that end an archive.
    public mutating func finish() throws {
        try emit([UInt8](repeating: 0, count: 1024))
    }
}
