/// A small text format shared by the agent and `berth-shim`, which links no
/// Foundation: one `key=value` per line, keys may repeat (lists keep their
/// order), and `\`, newline and carriage return in values are escaped as
/// `\\`, `\n`, `\r`.
public struct LineRecord: Sendable, Hashable {
    public private(set) var entries: [(key: String, value: String)] = []
    /// Positions in `entries` of each key, for lookups in constant time.
    private var positions: [String: [Int]] = [:]

    public init() {}

    public static func == (a: LineRecord, b: LineRecord) -> Bool {
        a.entries.map { "\($0.key)=\($0.value)" } == b.entries.map { "\($0.key)=\($0.value)" }
    }

    public func hash(into hasher: inout Hasher) {
        for entry in entries {
            hasher.combine(entry.key)
            hasher.combine(entry.value)
        }
    }

    public mutating func add(_ key: String, _ value: String) {
        positions[key, default: []].append(entries.count)
        entries.append((key, value))
    }

    public mutating func add(_ key: String, _ value: some BinaryInteger) {
        add(key, String(value))
    }

    public mutating func add(_ key: String, _ value: Bool) {
        add(key, value ? "1" : "0")
    }

    public mutating func add(_ key: String, _ values: [String]) {
        for value in values { add(key, value) }
    }

    /// The first value of `key`.
    public subscript(key: String) -> String? {
        positions[key]?.first.map { entries[$0].value }
    }

    /// Every value of `key`, in order.
    public func all(_ key: String) -> [String] {
        (positions[key] ?? []).map { entries[$0].value }
    }

    public func int(_ key: String) -> Int? { self[key].flatMap { Int($0) } }
    public func bool(_ key: String) -> Bool { self[key] == "1" }

    /// The text form.
    public var text: String {
        var out: [UInt8] = []
        for (key, value) in entries {
            out += key.utf8
            out.append(UInt8(ascii: "="))
            for byte in value.utf8 {
                switch byte {
                case UInt8(ascii: "\\"): out += "\\\\".utf8
                case UInt8(ascii: "\n"): out += "\\n".utf8
                case UInt8(ascii: "\r"): out += "\\r".utf8
                default: out.append(byte)
                }
            }
            out.append(UInt8(ascii: "\n"))
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses the text form.
    ///
    /// - Throws: `LineRecordError` naming the line that does not parse.
    public init(parsing text: String) throws(LineRecordError) {
        // Works on UTF-8 bytes: '=', '\\' and '\n' are ASCII, so they never
        // occur inside a multi-byte character; a value without escapes is
        // taken whole.
        var number = 0
        for line in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            number += 1
            guard let equals = line.firstIndex(of: UInt8(ascii: "=")) else {
                throw LineRecordError(line: number, reason: "expected key=value")
            }
            let key = String(decoding: line[..<equals], as: UTF8.self)
            let raw = line[line.index(after: equals)...]
            guard raw.contains(UInt8(ascii: "\\")) else {
                add(key, String(decoding: raw, as: UTF8.self))
                continue
            }
            var bytes: [UInt8] = []
            bytes.reserveCapacity(raw.count)
            var escaped = false
            for byte in raw {
                if escaped {
                    switch byte {
                    case UInt8(ascii: "n"): bytes.append(UInt8(ascii: "\n"))
                    case UInt8(ascii: "r"): bytes.append(UInt8(ascii: "\r"))
                    case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\"))
                    default:
                        throw LineRecordError(line: number, reason: "unknown escape \\\(Unicode.Scalar(byte))")
                    }
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else {
                    bytes.append(byte)
                }
            }
            if escaped { throw LineRecordError(line: number, reason: "dangling escape") }
            add(key, String(decoding: bytes, as: UTF8.self))
        }
    }
}

public struct LineRecordError: Error, Sendable, CustomStringConvertible {
    public var line: Int
    public var reason: String
    public var description: String { "line \(line): \(reason)" }
}
