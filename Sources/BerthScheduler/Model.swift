public import BerthModel

/// CPU in thousandths of a CPU and memory in bytes: what a node offers and
/// what a replica requests.
public struct Resources2D: Sendable, Hashable, CustomStringConvertible {
    public var milliCPU: Int64
    public var memoryBytes: Int64

    public init(milliCPU: Int64, memoryBytes: Int64) {
        self.milliCPU = milliCPU
        self.memoryBytes = memoryBytes
    }

    public static let zero = Resources2D(milliCPU: 0, memoryBytes: 0)

    public var description: String { "\(Double(milliCPU) / 1000) CPU, \(ByteSize(bytes: memoryBytes))" }
}

/// Whether a node takes new work.
public enum NodeAvailability: String, Sendable, Hashable, Codable {
    case ready
    /// No heartbeat within the grace period.
    case down
    /// Being emptied by an operator.
    case draining
}

/// A host port a replica publishes.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public var port: UInt16
    public var transport: PortProtocol

    public init(_ port: UInt16, _ transport: PortProtocol = .tcp) {
        self.port = port
        self.transport = transport
    }

    public var description: String { "\(port)/\(transport.rawValue)" }
}

/// A node as the scheduler sees it.
public struct SchedulerNode: Sendable, Hashable {
    public var id: String
    public var hostname: String
    /// Labels set by operators (`node.labels.KEY`).
    public var labels: [String: String]
    /// The agent's own labels (`engine.labels.KEY`).
    public var engineLabels: [String: String]
    public var availability: NodeAvailability
    public var allocatable: Resources2D
    /// The requests of what runs there now.
    public var allocated: Resources2D
    public var usedPorts: Set<HostPort>

    public init(
        id: String, hostname: String = "", labels: [String: String] = [:], engineLabels: [String: String] = [:],
        availability: NodeAvailability = .ready, allocatable: Resources2D, allocated: Resources2D = .zero, usedPorts: Set<HostPort> = []
    ) {
        self.id = id
        self.hostname = hostname.isEmpty ? id : hostname
        self.labels = labels
        self.engineLabels = engineLabels
        self.availability = availability
        self.allocatable = allocatable
        self.allocated = allocated
        self.usedPorts = usedPorts
    }
}

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

/// `node.labels.KEY==VALUE`, `engine.labels.KEY==VALUE`, `!=` of either,
/// `node.id==…` (the full ID or the 12 digits `node ls` shows),
/// `node.hostname==…` (docker swarm's spelling).
public struct Constraint: Sendable, Hashable, CustomStringConvertible {
    public enum Field: Sendable, Hashable {
        case label(LabelKey)
        case id
        case hostname
    }

    public var field: Field
    public var equals: Bool
    public var value: String

    /// - Throws: `BerthError.invalidArgument` naming what does not parse.
    public init(parsing text: String) throws {
        let expected =
            "expected node.labels.KEY==VALUE (an operator's label), engine.labels.KEY==VALUE (the agent's own), != of either, node.id==ID or node.hostname==NAME"
        let equals: Bool
        let parts: [Substring]
        if let range = text.firstRange(of: "!=") {
            equals = false
            parts = [text[..<range.lowerBound], text[range.upperBound...]]
        } else if let range = text.firstRange(of: "==") {
            equals = true
            parts = [text[..<range.lowerBound], text[range.upperBound...]]
        } else {
            throw BerthError.invalid("constraint \"\(text)\": \(expected)")
        }
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
        self.equals = equals
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
        return matched == equals
    }

    public var description: String {
        let key: String
        switch field {
        case .label(let k): key = k.description
        case .id: key = "node.id"
        case .hostname: key = "node.hostname"
        }
        return "\(key)\(equals ? "==" : "!=")\(value)"
    }
}

/// How a service's replicas are laid over nodes.
public enum PlacementStrategy: Sendable, Hashable {
    /// The default, as swarm and Kubernetes place: the node with the fewest
    /// replicas of the service first (after the spread over a label's values,
    /// when the service has one), then the node that would be fullest
    /// (binpack) among equals.
    case spread
    /// Fill the fullest node that fits (fewest nodes used), whatever the
    /// service already has there.
    case binpack
}

/// What one replica of a service needs.
public struct PlacementRequest: Sendable, Hashable {
    /// Replicas of one service are spread and counted together.
    public var service: String
    /// The service as messages name it.
    public var name: String
    public var resources: Resources2D
    public var constraints: [Constraint]
    public var ports: [HostPort]
    public var strategy: PlacementStrategy
    /// Spread over this label's values first (`--placement-pref spread=…`).
    public var spreadLabel: LabelKey?
    /// At most this many replicas of the service on one node (0: no limit).
    public var maxPerNode: Int

    public init(
        service: String, name: String? = nil, resources: Resources2D, constraints: [Constraint] = [], ports: [HostPort] = [],
        strategy: PlacementStrategy = .spread, spreadLabel: LabelKey? = nil, maxPerNode: Int = 0
    ) {
        self.service = service
        self.name = name ?? service
        self.resources = resources
        self.constraints = constraints
        self.ports = ports
        self.strategy = strategy
        self.spreadLabel = spreadLabel
        self.maxPerNode = maxPerNode
    }

    /// `spread=node.labels.KEY` or `spread=engine.labels.KEY`.
    ///
    /// - Throws: `BerthError.invalidArgument` for anything else.
    public static func spreadLabel(parsingPreference text: String) throws -> LabelKey {
        let prefix = "spread="
        guard text.hasPrefix(prefix), let label = LabelKey(text.dropFirst(prefix.count)) else {
            throw BerthError.invalid("placement preference \"\(text)\": expected spread=node.labels.KEY or spread=engine.labels.KEY")
        }
        return label
    }
}

/// Why a node cannot take a replica: the first filter it fails.
public enum Rejection: Sendable, Hashable, CustomStringConvertible {
    case notReady(NodeAvailability)
    case constraint(Constraint)
    case portInUse(HostPort)
    case maxPerNode(Int)
    case insufficientCPU
    case insufficientMemory

    public var description: String {
        switch self {
        case .notReady(let state): return "node is \(state.rawValue)"
        case .constraint(let c): return "constraint \(c) is not met"
        case .portInUse(let p): return "host port \(p) is in use"
        case .maxPerNode(let n): return "it has \(n) of the service's replicas already (--replicas-max-per-node)"
        case .insufficientCPU: return "insufficient cpu"
        case .insufficientMemory: return "insufficient memory"
        }
    }
}

/// For each node, whether it could take the next replica, and why not.
public struct NodeVerdict: Sendable, Hashable {
    public var node: String
    public var rejection: Rejection?
    /// Higher is preferred among nodes with as many of the service's
    /// replicas (binpack: how full the node would be).
    public var score: Double
    /// The service's replicas on the node already.
    public var replicas: Int
    public var chosen: Bool
}

extension Substring {
    func trimmingCharacters(in character: Character) -> Substring {
        var s = self
        while s.first == character { s = s.dropFirst() }
        while s.last == character { s = s.dropLast() }
        return s
    }
}
