/// Rules for the names people give objects (containers, networks, volumes).
public enum ObjectName {
    /// True when `name` matches docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (with a
    /// minimum length) and is at most 253 characters.
    public static func isValid(_ name: String, minimumLength: Int = 2) -> Bool {
        guard name.count >= minimumLength, name.count <= 253, let first = name.first,
            first.isASCII, first.isLetter || first.isNumber
        else { return false }
        return name.allSatisfy { c in
            c.isASCII && (c.isLetter || c.isNumber || c == "_" || c == "." || c == "-")
        }
    }
}

/// A container's identity: 64 lowercase hex digits, shown as its first 12.
public struct ContainerID: Codable, Sendable, Hashable, Comparable, CustomStringConvertible {
    public var rawValue: String

    /// Wraps an ID that is already known to be 64 hex digits.
    ///
    /// - Throws: `BerthError.invalidArgument` otherwise.
    public init(_ rawValue: String) throws {
        guard rawValue.count == 64, rawValue.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            throw BerthError.invalid("container ID \"\(rawValue)\": expected 64 lowercase hex digits")
        }
        self.rawValue = rawValue
    }

    /// A fresh random ID.
    public static func random() -> ContainerID {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }

    /// A random ID from a given generator (tests pass a seeded one).
    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> ContainerID {
        ContainerID(unchecked: RandomHex.make(64, using: &generator))
    }

    init(unchecked: String) { self.rawValue = unchecked }

    /// The first 12 hex digits, as `docker ps` shows them.
    public var short: String { String(rawValue.prefix(12)) }

    public var description: String { rawValue }

    public static func < (a: ContainerID, b: ContainerID) -> Bool { a.rawValue < b.rawValue }

    public init(from decoder: any Decoder) throws {
        try self.init(decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// Random lowercase hex digits: the IDs of containers and networks, the
/// names of anonymous volumes.
public enum RandomHex {
    public static func make<G: RandomNumberGenerator>(_ count: Int = 64, using generator: inout G) -> String {
        let hex = Array("0123456789abcdef")
        var text = ""
        text.reserveCapacity(count)
        // Sixteen digits from each 64 random bits: the system's generator
        // makes a system call for each.
        var bits: UInt64 = 0
        for i in 0..<count {
            if i % 16 == 0 { bits = generator.next() }
            text.append(hex[Int(bits & 0xf)])
            bits >>= 4
        }
        return text
    }

    public static func make(_ count: Int = 64) -> String {
        var generator = SystemRandomNumberGenerator()
        return make(count, using: &generator)
    }
}
