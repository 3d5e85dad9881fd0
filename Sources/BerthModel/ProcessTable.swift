/// `ps` output narrowed to a container's processes, as docker's `top` makes
/// it: the header's titles, and the rows whose PID is the container's (with
/// the thread lines, PID `-`, that follow one of them); the text after the
/// last title's column start, spaces and all, is the last field (the command).
public struct ProcessTable: Sendable, Hashable {
    public var titles: [String]
    public var processes: [[String]]

    public init(titles: [String], processes: [[String]]) {
        self.titles = titles
        self.processes = processes
    }

    /// - Throws: `BerthError.invalidArgument` when the output has no PID
    ///   column (ps options that leave it out), or a PID that is not a number.
    public init(psOutput: String, pids: Set<Int32>) throws {
        let lines = psOutput.split(separator: "\n", omittingEmptySubsequences: false)
        titles = lines.first.map { $0.split(whereSeparator: \.isWhitespace).map(String.init) } ?? []
        guard let pidIndex = titles.firstIndex(of: "PID") else {
            throw BerthError.invalid("ps options \"\(lines.first ?? "")\": the output has no PID column (ps must show PID for top to find the container's processes)")
        }
        processes = []
        var previousWasOurs = false
        for line in lines.dropFirst() where !line.isEmpty {
            let fields = line.split(whereSeparator: \.isWhitespace).map(String.init)
            guard fields.count > pidIndex else { continue }
            if fields[pidIndex] == "-" {
                if previousWasOurs { processes.append(Self.row(fields, titles: titles.count)) }
                continue
            }
            guard let pid = Int32(fields[pidIndex]) else { throw BerthError.invalid("ps printed a PID that is not a number: \(fields[pidIndex])") }
            previousWasOurs = pids.contains(pid)
            if previousWasOurs { processes.append(Self.row(fields, titles: titles.count)) }
        }
    }

    /// The fields after the last title's joined into one.
    private static func row(_ fields: [String], titles: Int) -> [String] {
        guard titles > 0, fields.count >= titles else { return fields }
        return Array(fields.prefix(titles - 1)) + [fields.dropFirst(titles - 1).joined(separator: " ")]
    }
}
