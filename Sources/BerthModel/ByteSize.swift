/// A size in bytes, written and read the way docker writes it: `64m`, `1g`,
/// `512k`, `1.5g`, `100` (bytes). Suffixes are binary (1k = 1024 bytes) and
/// may be followed by `b` or `ib` in any case (`64MiB`, `64mb`).
public struct ByteSize: Codable, Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The size in bytes.
    public var bytes: Int64

    /// Creates a size from a count of bytes.
    public init(bytes: Int64) { self.bytes = bytes }

    public static func kibibytes(_ n: Int64) -> ByteSize { ByteSize(bytes: n << 10) }
    public static func mebibytes(_ n: Int64) -> ByteSize { ByteSize(bytes: n << 20) }
    public static func gibibytes(_ n: Int64) -> ByteSize { ByteSize(bytes: n << 30) }

    /// Parses a docker-style size.
    ///
    /// - Parameters:
    ///   - text: the size as a person typed it.
    ///   - what: what the size is for, named in the error (`memory limit`).
    /// - Throws: `BerthError.invalidArgument` naming the value and the expected form.
    public init(parsing text: String, for what: String = "size") throws {
        let invalid = BerthError.invalid("\(what) \"\(text)\": expected a size like 64m or 1g")
        var s = Substring(text.trimmingSpaces())
        guard !s.isEmpty else { throw invalid }
        // Optional trailing "b" / "ib" after a unit letter, or a lone "b".
        let lower = s.lowercased()
        var multiplierShift = 0
        if lower.hasSuffix("ib") || (lower.hasSuffix("b") && lower.count >= 2) {
            let dropCount = lower.hasSuffix("ib") ? 2 : 1
            let stem = lower.dropLast(dropCount)
            if let last = stem.last, last.isLetter {
                s = s.dropLast(dropCount)
            } else if dropCount == 1 {
                s = s.dropLast(1)  // "100b" means 100 bytes
            } else {
                throw invalid
            }
        }
        if let last = s.last, last.isLetter {
            switch last.lowercased() {
            case "k": multiplierShift = 10
            case "m": multiplierShift = 20
            case "g": multiplierShift = 30
            case "t": multiplierShift = 40
            case "p": multiplierShift = 50
            default: throw invalid
            }
            s = s.dropLast()
        }
        guard let value = DecimalText(parsing: s) else { throw invalid }
        guard let bytes = value.scaled(byPowerOfTwo: multiplierShift) else {
            throw BerthError.invalid("\(what) \"\(text)\": too large")
        }
        self.bytes = bytes
    }

    public static func < (a: ByteSize, b: ByteSize) -> Bool { a.bytes < b.bytes }

    /// JSON carries the number of bytes.
    public init(from decoder: any Decoder) throws {
        self.bytes = try decoder.singleValueContainer().decode(Int64.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(bytes)
    }

    /// The size in docker's short form, using the largest unit that divides it
    /// exactly (`64m`, `1g`, `1536k`, `100`).
    public var description: String {
        let units: [(Int, String)] = [(50, "p"), (40, "t"), (30, "g"), (20, "m"), (10, "k")]
        for (shift, suffix) in units where bytes != 0 && bytes % (Int64(1) << shift) == 0 {
            return "\(bytes >> shift)\(suffix)"
        }
        return "\(bytes)"
    }

    /// A human reading with two decimals in binary units, as `docker stats`
    /// prints it: `1.5GiB`, `64MiB`, `512B`.
    public var humanReadable: String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(bytes)
        var index = 0
        while abs(value) >= 1024 && index < units.count - 1 {
            value /= 1024
            index += 1
        }
        if index == 0 { return "\(bytes)B" }
        return "\(DecimalText.format(value, fractionDigits: 2))\(units[index])"
    }
}

/// A non-negative decimal number kept as an integer mantissa and a count of
/// fractional digits, so that parsing "0.5" or "1.5g" needs no floating point.
struct DecimalText: Sendable, Hashable {
    var mantissa: Int64
    var fractionDigits: Int

    /// Parses `123`, `0.5`, `1.25`; rejects signs, exponents, empty parts.
    init?<S: StringProtocol>(parsing text: S) {
        var mantissa: Int64 = 0
        var fractionDigits = 0
        var seenDot = false
        var digits = 0
        for ch in text {
            if ch == "." {
                if seenDot { return nil }
                seenDot = true
                continue
            }
            guard let d = ch.wholeNumberValue, ch.isASCII else { return nil }
            let (m1, o1) = mantissa.multipliedReportingOverflow(by: 10)
            let (m2, o2) = m1.addingReportingOverflow(Int64(d))
            if o1 || o2 { return nil }
            mantissa = m2
            digits += 1
            if seenDot { fractionDigits += 1 }
        }
        if digits == 0 || (seenDot && fractionDigits == 0) { return nil }
        if text.first == "." { return nil }
        self.mantissa = mantissa
        self.fractionDigits = fractionDigits
    }

    /// `self × 2^shift`, truncated toward zero; nil on overflow.
    func scaled(byPowerOfTwo shift: Int) -> Int64? {
        let (scaled, overflow) = mantissa.multipliedReportingOverflow(by: Int64(1) << shift)
        if overflow { return nil }
        var divisor: Int64 = 1
        for _ in 0..<fractionDigits { divisor *= 10 }
        return scaled / divisor
    }

    /// `self × 10^power`, truncated toward zero; nil on overflow.
    func scaled(byPowerOfTen power: Int) -> (value: Int64, exact: Bool)? {
        var value = mantissa
        var remaining = power - fractionDigits
        var exact = true
        while remaining > 0 {
            let (v, o) = value.multipliedReportingOverflow(by: 10)
            if o { return nil }
            value = v
            remaining -= 1
        }
        while remaining < 0 {
            if value % 10 != 0 { exact = false }
            value /= 10
            remaining += 1
        }
        return (value, exact)
    }

    /// Formats a double with a fixed number of fractional digits, trimming
    /// nothing (`1.50`), without Foundation's locale-dependent formatters.
    static func format(_ value: Double, fractionDigits: Int) -> String {
        var scale = 1.0
        for _ in 0..<fractionDigits { scale *= 10 }
        let negative = value < 0
        let rounded = (abs(value) * scale).rounded()
        guard rounded < 9.0e18 else { return String(value) }
        let scaled = Int64(rounded)
        let whole = scaled / Int64(scale)
        var text = "\(negative ? "-" : "")\(whole)"
        if fractionDigits > 0 {
            var fraction = String(scaled % Int64(scale))
            while fraction.count < fractionDigits { fraction = "0" + fraction }
            text += "." + fraction
        }
        return text
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
