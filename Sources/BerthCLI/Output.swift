import BerthModel
import Foundation

/// `--format` as the CLI takes it: the default human layout, or `json`.
enum OutputFormat: String {
    case human
    case json

    /// - Throws: `BerthError.invalidArgument` for anything but `json` or nothing.
    init(_ text: String?) throws {
        switch text {
        case nil, "", "table": self = .human
        case "json", "{{json .}}": self = .json
        case let other?:
            throw BerthError.invalid("--format \"\(other)\": supported formats are json and table")
        }
    }
}

/// Writes to standard output and standard error.
enum Console {
    static func print(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

    static func error(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    static func json<T: Encodable>(_ value: T) throws {
        print(try BerthJSON.string(value))
    }
}
