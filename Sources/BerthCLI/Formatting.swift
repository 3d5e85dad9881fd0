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
        case .running:
            let up = "Up " + duration(Date().timeIntervalSince(s.startedAt ?? s.createdAt))
            switch s.health?.status {
            case nil: return up
            case .starting: return up + " (health: starting)"
            case .healthy: return up + " (healthy)"
            case .unhealthy: return up + " (unhealthy)"
            }
        case .paused: return "Up " + duration(Date().timeIntervalSince(s.startedAt ?? s.createdAt)) + " (Paused)"
        case .exited:
            let when = s.finishedAt.map { " " + ago($0) } ?? ""
            return "Exited (\(s.exitCode ?? 0))\(when)"
        case .dead: return "Dead"
        }
    }

    /// Decimal units, as `docker images` shows sizes: "4.26MB".
    static func size(_ bytes: Int64) -> String {
        scaled(Double(bytes), base: 1000, units: ["B", "kB", "MB", "GB", "TB"], digits: 3)
    }

    /// Binary units, as `docker stats` shows memory: "1.523MiB".
    static func binarySize(_ bytes: UInt64) -> String {
        scaled(Double(bytes), base: 1024, units: ["B", "KiB", "MiB", "GiB", "TiB"], digits: 4)
    }

    /// "12.34%".
    static func percent(_ value: Double) -> String {
        let hundredths = Int((value * 100).rounded())
        return "\(hundredths / 100).\(String(hundredths % 100).leftPadded(to: 2))%"
    }

    private static func scaled(_ bytes: Double, base: Double, units: [String], digits: Int) -> String {
        var value = bytes
        var i = 0
        while value >= base && i < units.count - 1 {
            value /= base
            i += 1
        }
        if i == 0 { return "\(Int(bytes))B" }
        return significant(value, digits: digits) + units[i]
    }

    /// `value` (1 ≤ value < 10000) with `digits` significant digits and no
    /// trailing zeros, as printf's "%.3g" or "%.4g" writes it: 4.26, 42.6, 426, 4.1.
    static func significant(_ value: Double, digits: Int) -> String {
        var decimals = digits - 1
        var magnitude = 10.0
        while decimals > 0 && value >= magnitude {
            decimals -= 1
            magnitude *= 10
        }
        var scale = 1
        for _ in 0..<decimals { scale *= 10 }
        let scaled = Int((value * Double(scale)).rounded())
        if decimals == 0 { return String(scaled) }
        var text = String(scaled / scale) + "." + String(scaled % scale).leftPadded(to: decimals)
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
