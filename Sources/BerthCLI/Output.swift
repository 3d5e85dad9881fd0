import BerthAPI
import BerthLinux
import BerthModel
import BerthTemplate
import FoundationEssentials
import SwiftProtobuf

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
        write(Descriptor.standardOutput, Array((text + "\n").utf8))
    }

    /// Says so, on standard error, when the controller answered from a
    /// store without a quorum (the answer may be stale).
    static func stale(_ reason: String) {
        if !reason.isEmpty { error("warning: \(reason)") }
    }

    static func error(_ text: String) {
        write(Descriptor.standardError, Array((text + "\n").utf8))
    }

    /// Writes all of `bytes` (a closed pipe ends the attempt quietly, as
    /// docker's CLI does).
    static func write(_ fd: Descriptor, _ bytes: [UInt8]) {
        try? fd.write(bytes)
    }

    static func json<T: Encodable>(_ value: T) throws {
        print(try BerthJSON.string(value))
    }
}

/// `KEY=VALUE` flags.
enum KeyValues {
    /// `--label KEY=VALUE` (a bare `KEY` has an empty value).
    static func labels(_ items: [String]) -> [String: String] {
        var labels: [String: String] = [:]
        for item in items {
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            labels[kv[0]] = kv.count > 1 ? kv[1] : ""
        }
        return labels
    }

    /// `--filter KEY=VALUE`, one filter each, for a list call.
    ///
    /// - Throws: `BerthError.invalidArgument` for one without `=`.
    static func filters(_ items: [String]) throws -> [Berth_Agent_V1_Filter] {
        try items.map { item in
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw BerthError.invalid("filter \"\(item)\": expected KEY=VALUE") }
            return .with {
                $0.key = kv[0]
                $0.values = [kv[1]]
            }
        }
    }
}

/// A template's error as the command line reports it: an invalid argument.
enum Templating {
    static func checked<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as TemplateError {
            throw BerthError.invalid(error.message)
        }
    }
}
