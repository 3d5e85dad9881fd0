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
    public var labels: [String: String]
    public var availability: NodeAvailability
    public var allocatable: Resources2D
    /// The requests of what runs there now.
    public var allocated: Resources2D
    public var usedPorts: Set<HostPort>

    public init(
        id: String, hostname: String = "", labels: [String: String] = [:], availability: NodeAvailability = .ready,
        allocatable: Resources2D, allocated: Resources2D = .zero, usedPorts: Set<HostPort> = []
    ) {
        self.id = id
        self.hostname = hostname.isEmpty ? id : hostname
        self.labels = labels
        self.availability = availability
        self.allocatable = allocatable
        self.allocated = allocated
        self.usedPorts = usedPorts
    }
}

/// `node.labels.KEY==VALUE`, `node.labels.KEY!=VALUE`, `node.id==…`,
/// `node.hostname==…` (docker swarm's spelling).
public struct Constraint: Sendable, Hashable, CustomStringConvertible {
    public enum Field: Sendable, Hashable {
        case label(String)
        case id
        case hostname
    }

    public var field: Field
    public var equals: Bool
    public var value: String

    /// - Throws: `BerthError.invalidArgument` naming what does not parse.
    public init(parsing text: String) throws {
        let expected = "expected node.labels.KEY==VALUE, node.labels.KEY!=VALUE, node.id==ID or node.hostname==NAME"
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
        case let k where k.hasPrefix("node.labels.") && k.count > "node.labels.".count:
            field = .label(String(k.dropFirst("node.labels.".count)))
        default:
            throw BerthError.invalid("constraint \"\(text)\": unknown attribute \"\(key)\"; \(expected)")
        }
        self.equals = equals
        self.value = String(value)
    }

    public func matches(_ node: SchedulerNode) -> Bool {
        let actual: String?
        switch field {
        case .label(let key): actual = node.labels[key]
        case .id: actual = node.id
        case .hostname: actual = node.hostname
        }
        return (actual == value) == equals
    }

    public var description: String {
        let key: String
        switch field {
        case .label(let k): key = "node.labels.\(k)"
        case .id: key = "node.id"
        case .hostname: key = "node.hostname"
        }
        return "\(key)\(equals ? "==" : "!=")\(value)"
    }
}

/// How replicas are spread over nodes.
public enum PlacementStrategy: Sendable, Hashable {
    /// Fill the fullest node that fits (fewest nodes used).
    case binpack
    /// Even out replicas over the values of a node label (`spread=node.labels.zone`),
    /// binpack within each value.
    case spread(label: String)

    /// - Throws: `BerthError.invalidArgument` for anything but `spread=node.labels.KEY`.
    public init(parsingPreference text: String) throws {
        let prefix = "spread=node.labels."
        guard text.hasPrefix(prefix), text.count > prefix.count else {
            throw BerthError.invalid("placement preference \"\(text)\": expected spread=node.labels.KEY")
        }
        self = .spread(label: String(text.dropFirst(prefix.count)))
    }
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

    public init(
        service: String, name: String? = nil, resources: Resources2D, constraints: [Constraint] = [], ports: [HostPort] = [],
        strategy: PlacementStrategy = .binpack
    ) {
        self.service = service
        self.name = name ?? service
        self.resources = resources
        self.constraints = constraints
        self.ports = ports
        self.strategy = strategy
    }
}

/// Why a node cannot take a replica: the first filter it fails.
public enum Rejection: Sendable, Hashable, CustomStringConvertible {
    case notReady(NodeAvailability)
    case constraint(Constraint)
    case portInUse(HostPort)
    case insufficientCPU
    case insufficientMemory

    public var description: String {
        switch self {
        case .notReady(let state): return "node is \(state.rawValue)"
        case .constraint(let c): return "constraint \(c) is not met"
        case .portInUse(let p): return "host port \(p) is in use"
        case .insufficientCPU: return "insufficient cpu"
        case .insufficientMemory: return "insufficient memory"
        }
    }
}

/// For each node, whether it could take the next replica, and why not.
public struct NodeVerdict: Sendable, Hashable {
    public var node: String
    public var rejection: Rejection?
    /// Higher is preferred (binpack: how full the node would be).
    public var score: Double
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
