import BerthModel
import FoundationEssentials

/// Docker-style human output.
enum Human {
    /// "3 seconds", "About a minute", "2 hours", "5 days".
    static func duration(_ seconds: TimeInterval) -> String {
        let s = Int(max(0, seconds))
        if s < 1 { return "Less than a second" }
        if s == 1 { return "1 second" }
        if s < 60 { return "\(s) seconds" }
        let m = s / 60
        if m == 1 { return "About a minute" }
        if m < 60 { return "\(m) minutes" }
        let h = m / 60
        if h == 1 { return "About an hour" }
        if h < 48 { return "\(h) hours" }
        let d = h / 24
        if d < 14 { return "\(d) days" }
        if d < 60 { return "\(d / 7) weeks" }
        if d < 365 * 2 { return "\(d / 30) months" }
        return "\(d / 365) years"
    }

    static func ago(_ date: Date) -> String { duration(Date().timeIntervalSince(date)) + " ago" }

    /// The STATUS column of `ps`.
    static func status(_ s: ContainerStatus) -> String {
        switch s.state {
        case .created: return "Created"
        case .running: return "Up " + duration(Date().timeIntervalSince(s.startedAt ?? s.createdAt))
        case .paused: return "Up " + duration(Date().timeIntervalSince(s.startedAt ?? s.createdAt)) + " (Paused)"
        case .exited:
            let when = s.finishedAt.map { " " + ago($0) } ?? ""
            return "Exited (\(s.exitCode ?? 0))\(when)"
        case .dead: return "Dead"
        }
    }

    /// Decimal units, as `docker images` shows sizes: "4.26MB".
    static func size(_ bytes: Int64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var value = Double(bytes)
        var i = 0
        while value >= 1000 && i < units.count - 1 {
            value /= 1000
            i += 1
        }
        if i == 0 { return "\(bytes)B" }
        return significant3(value) + units[i]
    }

    /// `value` (1 ≤ value < 1000) with three significant digits and no
    /// trailing zeros, as printf's "%.3g" writes it: 4.26, 42.6, 426, 4.1.
    static func significant3(_ value: Double) -> String {
        if value >= 100 { return String(Int(value.rounded())) }
        let decimals = value >= 10 ? 1 : 2
        let scale = decimals == 1 ? 10.0 : 100.0
        let scaled = Int((value * scale).rounded())
        var text = String(scaled / Int(scale)) + "." + String(scaled % Int(scale)).leftPadded(to: decimals)
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }

    static func truncate(_ text: String, _ width: Int) -> String {
        text.count <= width ? text : String(text.prefix(width - 1)) + "…"
    }
}

/// Columns padded with three spaces, as docker prints tables.
struct Table {
    var rows: [[String]]

    var text: String {
        guard let header = rows.first else { return "" }
        var widths = header.map(\.count)
        for row in rows {
            for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
        }
        return rows.map { row in
            row.enumerated().map { i, cell in
                i == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] + 3 - cell.count)
            }.joined()
        }.joined(separator: "\n")
    }
}

extension String {
    /// Zeros in front up to `width` characters.
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
