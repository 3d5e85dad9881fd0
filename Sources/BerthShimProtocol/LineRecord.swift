/// A small text format shared by the agent and `berth-shim`, which links no
/// Foundation: one `key=value` per line, keys may repeat (lists keep their
/// order), and `\`, newline and carriage return in values are escaped as
/// `\\`, `\n`, `\r`.
public struct LineRecord: Sendable, Hashable {
    public private(set) var entries: [(key: String, value: String)] = []

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
        entries.append((key, value))
    }

    public mutating func add(_ key: String, _ value: some BinaryInteger) {
        entries.append((key, String(value)))
    }

    public mutating func add(_ key: String, _ value: Bool) {
        entries.append((key, value ? "1" : "0"))
    }

    public mutating func add(_ key: String, _ values: [String]) {
        for value in values { entries.append((key, value)) }
    }

    /// The first value of `key`.
    public subscript(key: String) -> String? {
        entries.first { $0.key == key }?.value
    }

    /// Every value of `key`, in order.
    public func all(_ key: String) -> [String] {
        entries.filter { $0.key == key }.map(\.value)
    }

    public func int(_ key: String) -> Int? { self[key].flatMap { Int($0) } }
    public func bool(_ key: String) -> Bool { self[key] == "1" }

    /// The text form.
    public var text: String {
        var out = ""
        for (key, value) in entries {
            out += key
            out += "="
            for ch in value.unicodeScalars {
                switch ch {
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                default: out.unicodeScalars.append(ch)
                }
            }
            out += "\n"
        }
        return out
    }

    /// Parses the text form.
    ///
    /// - Throws: `LineRecordError` naming the line that does not parse.
    public init(parsing text: String) throws(LineRecordError) {
        var number = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            number += 1
            guard let equals = line.firstIndex(of: "=") else {
                throw LineRecordError(line: number, reason: "expected key=value")
            }
            let key = String(line[..<equals])
            var value = ""
            var escaped = false
            for ch in line[line.index(after: equals)...].unicodeScalars {
                if escaped {
                    switch ch {
                    case "n": value += "\n"
                    case "r": value += "\r"
                    case "\\": value += "\\"
                    default: throw LineRecordError(line: number, reason: "unknown escape \\\(ch)")
                    }
                    escaped = false
                } else if ch == "\\" {
                    escaped = true
                } else {
                    value.unicodeScalars.append(ch)
                }
            }
            if escaped { throw LineRecordError(line: number, reason: "dangling escape") }
            entries.append((key, value))
        }
    }
}

public struct LineRecordError: Error, Sendable, CustomStringConvertible {
    public var line: Int
    public var reason: String
    public var description: String { "line \(line): \(reason)" }
}
