import BerthModel

/// `node.labels.KEY==VALUE`, `engine.labels.KEY==VALUE`, `!=` of either,
/// `node.id==…` (the full ID or the 12 digits `node ls` shows),
/// `node.hostname==…` (docker swarm's spelling).
public struct Constraint: Sendable, Hashable, CustomStringConvertible {
    public enum Field: Sendable, Hashable {
        case label(LabelKey)
        case id
        case hostname
    }

    /// `==` or `!=`.
    public enum Operator: String, Sendable, Hashable {
        case equal = "=="
        case notEqual = "!="
    }

    public var field: Field
    public var op: Operator
    public var value: String

    /// - Throws: `BerthError.invalidArgument` naming what does not parse.
    public init(parsing text: String) throws {
        let expected =
            "expected node.labels.KEY==VALUE (an operator's label), engine.labels.KEY==VALUE (the agent's own), != of either, node.id==ID or node.hostname==NAME"
        guard let op = [Operator.notEqual, .equal].first(where: { text.contains($0.rawValue) }),
            let range = text.firstRange(of: op.rawValue)
        else {
            throw BerthError.invalid("constraint \"\(text)\": \(expected)")
        }
        let parts = [text[..<range.lowerBound], text[range.upperBound...]]
        let key = parts[0].trimmingCharacters(in: " ")
        let value = parts[1].trimmingCharacters(in: " ")
        guard !value.isEmpty else { throw BerthError.invalid("constraint \"\(text)\": the value is empty; \(expected)") }
        switch key {
        case "node.id": field = .id
        case "node.hostname": field = .hostname
        default:
            guard let label = LabelKey(key) else {
                throw BerthError.invalid("constraint \"\(text)\": unknown attribute \"\(key)\"; \(expected)")
            }
            field = .label(label)
        }
        self.op = op
        self.value = String(value)
    }

    public func matches(_ node: SchedulerNode) -> Bool {
        let matched: Bool
        switch field {
        case .label(let key): matched = key.value(on: node) == value
        // The short ID `node ls` prints names the node as well as its full ID.
        case .id: matched = node.id == value || (value.count >= 12 && node.id.hasPrefix(value))
        case .hostname: matched = node.hostname == value
        }
        return matched == (op == .equal)
    }

    public var description: String {
        let key: String
        switch field {
        case .label(let k): key = k.description
        case .id: key = "node.id"
        case .hostname: key = "node.hostname"
        }
        return "\(key)\(op.rawValue)\(value)"
    }
}

extension Substring {
    func trimmingCharacters(in character: Character) -> Substring {
        var s = self
        while s.first == character { s = s.dropFirst() }
        while s.last == character { s = s.dropLast() }
        return s
    }
}
