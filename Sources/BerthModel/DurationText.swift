import FoundationEssentials

/// Durations as docker and Go spell them on command lines: `10s`, `1m30s`,
/// `500ms`, `2h`, `1.5s`, `0`.
public enum DurationText {
    private static let units: [(String, Double)] = [
        ("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600),
    ]

    /// Seconds in `text`.
    ///
    /// - Parameter flag: the option the text came from, for the message.
    /// - Throws: `BerthError.invalidArgument` for anything but a sum of
    ///   numbers with units (ns, us, ms, s, m, h), or `0`; negative durations too.
    public static func seconds(parsing text: String, for flag: String) throws -> Double {
        let trimmed = text.trimmingSpaces()
        let failure = BerthError.invalid("\(flag) \"\(text)\": expected a duration like 10s, 1m30s or 500ms")
        if trimmed == "0" { return 0 }
        var rest = Substring(trimmed)
        guard !rest.isEmpty else { throw failure }
        var total = 0.0
        while !rest.isEmpty {
            let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            guard !number.isEmpty, let value = Double(number) else { throw failure }
            rest = rest.dropFirst(number.count)
            let unitText = rest.prefix { $0.isLetter }
            // The longest unit that matches ("ms" before "m").
            guard let unit = units.filter({ unitText == $0.0 }).first else { throw failure }
            rest = rest.dropFirst(unitText.count)
            total += value * unit.1
        }
        return total
    }

    /// The shortest of docker's spellings for `seconds`: `5s`, `1m30s`, `250ms`, `0s`.
    public static func format(_ seconds: Double) -> String {
        if seconds <= 0 { return "0s" }
        if seconds < 1 {
            let ms = (seconds * 1000).rounded()
            return ms == ms.rounded(.down) ? "\(Int(ms))ms" : "\(ms)ms"
        }
        var text = ""
        var rest = seconds
        let hours = Int(rest / 3600)
        if hours > 0 {
            text += "\(hours)h"
            rest -= Double(hours) * 3600
        }
        let minutes = Int(rest / 60)
        if minutes > 0 {
            text += "\(minutes)m"
            rest -= Double(minutes) * 60
        }
        if rest > 0.0005 || text.isEmpty {
            let whole = rest.rounded(.down)
            text += rest - whole < 0.0005 ? "\(Int(whole))s" : "\((rest * 1000).rounded() / 1000)s"
        }
        return text
    }
}

/// A point in time as docker's `--since` and `--until` take it: RFC 3339
/// (`2026-01-02T03:04:05Z`), a date (`2026-01-02`, UTC), Unix seconds
/// (`1767322800`, `1767322800.5`), or a duration before now (`10m`, `1h30m`).
public enum TimeText {
    /// - Parameter flag: the option the text came from, for the message.
    /// - Throws: `BerthError.invalidArgument` for anything else.
    public static func date(parsing text: String, for flag: String, now: Date) throws -> Date {
        if let date = RFC3339.parse(text) { return date }
        if text.count == 10, let date = RFC3339.parse(text + "T00:00:00Z") { return date }
        if text.count == 19, let date = RFC3339.parse(text + "Z") { return date }
        if let seconds = Double(text), text.first?.isNumber == true { return Date(timeIntervalSince1970: seconds) }
        if let ago = try? DurationText.seconds(parsing: text, for: flag) { return now.addingTimeInterval(-ago) }
        throw BerthError.invalid("\(flag) \"\(text)\": expected a time (2026-01-02T03:04:05Z, 2026-01-02, Unix seconds) or a duration before now (10m, 1h30m)")
    }
}
