/// A node label as constraints and preferences name it: `node.labels.KEY`
/// (set by operators) or `engine.labels.KEY` (the agent's own), as swarm
/// spells them.
public enum LabelKey: Sendable, Hashable, CustomStringConvertible {
    case node(String)
    case engine(String)

    /// `node.labels.KEY` or `engine.labels.KEY`; nil for anything else.
    init?(_ text: Substring) {
        for (prefix, make) in [("node.labels.", LabelKey.node), ("engine.labels.", LabelKey.engine)]
        where text.hasPrefix(prefix) && text.count > prefix.count {
            self = make(String(text.dropFirst(prefix.count)))
            return
        }
        return nil
    }

    /// The node's value of this label, nil when it has none.
    public func value(on node: SchedulerNode) -> String? {
        switch self {
        case .node(let key): return node.labels[key]
        case .engine(let key): return node.engineLabels[key]
        }
    }

    public var description: String {
        switch self {
        case .node(let key): return "node.labels.\(key)"
        case .engine(let key): return "engine.labels.\(key)"
        }
    }
}
