import FoundationEssentials

/// How a container's output log is rotated: docker's `--log-opt max-size=…`
/// and `--log-opt max-file=…`. A field left out takes the agent's default.
public struct LogConfig: Codable, Sendable, Hashable {
    /// Rotate when the live file would grow past this size.
    public var maxSize: ByteSize?
    /// Files kept, the live one included.
    public var maxFiles: Int?

    public init(maxSize: ByteSize? = nil, maxFiles: Int? = nil) {
        self.maxSize = maxSize
        self.maxFiles = maxFiles
    }

    /// From `--log-opt KEY=VALUE` options.
    ///
    /// - Throws: `BerthError.invalidArgument` for an unknown key or a value
    ///   out of range.
    public init(parsingOptions options: [String]) throws {
        self.init()
        for option in options {
            let kv = option.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw BerthError.invalid("--log-opt \"\(option)\": expected KEY=VALUE") }
            switch kv[0] {
            case "max-size": maxSize = try ByteSize(parsing: kv[1], for: "log max-size")
            case "max-file":
                guard let n = Int(kv[1]) else { throw BerthError.invalid("--log-opt max-file=\(kv[1]): expected a number") }
                maxFiles = n
            default:
                throw BerthError.invalid("--log-opt \"\(kv[0])\": unknown log option; supported are max-size and max-file")
            }
        }
        try validate()
    }

    /// - Throws: `BerthError.invalidArgument` for a size below 4 KiB or
    ///   fewer than one file.
    public func validate() throws {
        if let maxSize, maxSize.bytes < 4096 {
            throw BerthError.invalid("log max-size \(maxSize.bytes): must be at least 4 KiB")
        }
        if let maxFiles, maxFiles < 1 || maxFiles > 100 {
            throw BerthError.invalid("log max-file \(maxFiles): must be between 1 and 100")
        }
    }
}
