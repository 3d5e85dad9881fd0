/// A number of CPUs as docker's `--cpus` takes it ("0.5", "1.5", "2"), kept
/// exactly in billionths of a CPU (docker's NanoCPUs).
public struct CPUQuantity: Codable, Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Billionths of a CPU: 0.5 CPU is 500_000_000.
    public var nanoCPUs: Int64

    /// Creates a quantity from billionths of a CPU.
    public init(nanoCPUs: Int64) { self.nanoCPUs = nanoCPUs }

    /// Creates a quantity of whole CPUs.
    public init(cpus: Int) { self.nanoCPUs = Int64(cpus) * 1_000_000_000 }

    /// Parses a CPU count.
    ///
    /// - Throws: `BerthError.invalidArgument` for text that is not a positive
    ///   decimal number with at most nine fractional digits.
    public init(parsing text: String) throws {
        let trimmed = text.trimmingSpaces()
        guard let decimal = DecimalText(parsing: trimmed) else {
            throw BerthError.invalid("cpus \"\(text)\": expected a positive number of CPUs like 0.5 or 2")
        }
        guard let (nano, exact) = decimal.scaled(byPowerOfTen: 9) else {
            throw BerthError.invalid("cpus \"\(text)\": too large")
        }
        guard exact else {
            throw BerthError.invalid("cpus \"\(text)\": at most nine decimal places are supported")
        }
        guard nano > 0 else {
            throw BerthError.invalid("cpus \"\(text)\": must be greater than 0")
        }
        self.nanoCPUs = nano
    }

    /// The quantity as a double, for display and ratios.
    public var cpus: Double { Double(nanoCPUs) / 1e9 }

    /// The CFS quota in microseconds for a given period (default 100 ms), as
    /// the kernel's `cpu.cfs_quota_us` and `cpu.max` take it.
    public func quotaMicroseconds(period: Int64 = 100_000) -> Int64 {
        nanoCPUs * period / 1_000_000_000
    }

    public static func < (a: CPUQuantity, b: CPUQuantity) -> Bool { a.nanoCPUs < b.nanoCPUs }

    /// JSON carries the exact decimal form, as `--cpus` takes it: "0.5".
    public init(from decoder: any Decoder) throws {
        try self.init(parsing: decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// The shortest decimal form: `0.5`, `2`, `1.25`.
    public var description: String {
        let whole = nanoCPUs / 1_000_000_000
        var fraction = nanoCPUs % 1_000_000_000
        if fraction == 0 { return "\(whole)" }
        var digits = 9
        while fraction % 10 == 0 {
            fraction /= 10
            digits -= 1
        }
        var text = String(fraction)
        while text.count < digits { text = "0" + text }
        return "\(whole).\(text)"
    }
}
