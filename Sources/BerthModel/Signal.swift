/// A Linux signal, by number, parsed from the forms people type:
/// `SIGTERM`, `TERM`, `term`, `15`.
public struct Signal: Codable, Sendable, Hashable, CustomStringConvertible {
    /// The signal number on Linux (x86-64 and arm64 share them).
    public var number: Int32

    public init(number: Int32) { self.number = number }

    public static let hangup = Signal(number: 1)
    public static let interrupt = Signal(number: 2)
    public static let quit = Signal(number: 3)
    public static let kill = Signal(number: 9)
    public static let user1 = Signal(number: 10)
    public static let user2 = Signal(number: 12)
    public static let pipe = Signal(number: 13)
    public static let terminate = Signal(number: 15)
    public static let stop = Signal(number: 19)
    public static let `continue` = Signal(number: 18)
    public static let windowChange = Signal(number: 28)

    static let names: [(String, Int32)] = [
        ("HUP", 1), ("INT", 2), ("QUIT", 3), ("ILL", 4), ("TRAP", 5), ("ABRT", 6),
        ("IOT", 6), ("BUS", 7), ("FPE", 8), ("KILL", 9), ("USR1", 10), ("SEGV", 11),
        ("USR2", 12), ("PIPE", 13), ("ALRM", 14), ("TERM", 15), ("STKFLT", 16),
        ("CHLD", 17), ("CONT", 18), ("STOP", 19), ("TSTP", 20), ("TTIN", 21),
        ("TTOU", 22), ("URG", 23), ("XCPU", 24), ("XFSZ", 25), ("VTALRM", 26),
        ("PROF", 27), ("WINCH", 28), ("IO", 29), ("POLL", 29), ("PWR", 30), ("SYS", 31),
    ]

    /// Parses a signal name or number.
    ///
    /// - Throws: `BerthError.invalidArgument` for an unknown name or a number
    ///   outside 1...64.
    public init(parsing text: String) throws {
        let upper = text.trimmingSpaces().uppercased()
        if let n = Int32(upper) {
            guard (1...64).contains(n) else {
                throw BerthError.invalid("signal \"\(text)\": numbers run from 1 to 64")
            }
            self.number = n
            return
        }
        let bare = upper.hasPrefix("SIG") ? String(upper.dropFirst(3)) : upper
        if bare.hasPrefix("RTMIN") || bare.hasPrefix("RTMAX") {
            let base: Int32 = bare.hasPrefix("RTMIN") ? 34 : 64
            let rest = bare.dropFirst(5)
            if rest.isEmpty {
                self.number = base
                return
            }
            if let offset = Int32(rest), base + offset >= 34, base + offset <= 64 {
                self.number = base + offset
                return
            }
        }
        guard let match = Signal.names.first(where: { $0.0 == bare }) else {
            throw BerthError.invalid("signal \"\(text)\": not a known signal name like SIGTERM or SIGKILL")
        }
        self.number = match.1
    }

    /// `SIGTERM`, or `SIGRTMIN+3`, or the number when it has no name.
    public var name: String {
        if let match = Signal.names.first(where: { $0.1 == number }) { return "SIG" + match.0 }
        if number >= 34 && number <= 64 {
            return number == 34 ? "SIGRTMIN" : "SIGRTMIN+\(number - 34)"
        }
        return String(number)
    }

    public var description: String { name }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let n = try? container.decode(Int32.self) {
            self.init(number: n)
        } else {
            try self.init(parsing: container.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(name)
    }
}
