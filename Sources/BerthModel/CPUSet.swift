/// A set of CPU or memory-node numbers as cgroups write them: `0-3,6,8-9`.
public struct CPUSet: Codable, Sendable, Hashable, CustomStringConvertible {
    /// The numbers in the set, ascending and unique.
    public private(set) var members: [Int]

    /// Creates a set from numbers.
    public init<S: Sequence>(_ members: S) where S.Element == Int {
        self.members = Array(Set(members)).sorted()
    }

    /// Parses a list like `0-2,4`.
    ///
    /// - Throws: `BerthError.invalidArgument` for anything that is not a
    ///   comma-separated list of numbers and ascending ranges.
    public init(parsing text: String, for what: String = "cpuset") throws {
        let invalid = BerthError.invalid("\(what) \"\(text)\": expected a list like 0-2,4")
        var result: Set<Int> = []
        let trimmed = text.trimmingSpaces()
        guard !trimmed.isEmpty else { throw invalid }
        for part in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard bounds.count == 1 || bounds.count == 2,
                let low = Int(bounds[0]), low >= 0,
                let high = bounds.count == 2 ? Int(bounds[1]) : low, high >= low, high < 65_536
            else { throw invalid }
            result.formUnion(low...high)
        }
        self.members = result.sorted()
    }

    /// The kernel's list form, with ranges folded: `0-3,6`.
    public var description: String {
        var parts: [String] = []
        var index = 0
        while index < members.count {
            let start = members[index]
            var end = start
            while index + 1 < members.count && members[index + 1] == end + 1 {
                index += 1
                end = members[index]
            }
            parts.append(start == end ? "\(start)" : "\(start)-\(end)")
            index += 1
        }
        return parts.joined(separator: ",")
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        try self.init(parsing: text)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
