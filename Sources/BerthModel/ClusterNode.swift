import FoundationEssentials

/// An agent as the controller knows it.
public struct ClusterNode: Codable, Sendable, Hashable, Identifiable {
    /// How long an agent waits between attempts to reach a controller that
    /// is away; a restarted controller adds it to every node's grace period.
    public static let retryInterval = Duration.seconds(1)

    /// Whether heartbeats arrive.
    public enum State: String, Codable, Sendable, Hashable {
        case ready
        /// No heartbeat within the grace period.
        case down
    }

    /// Whether an operator lets the node take work.
    public enum Availability: String, Codable, Sendable, Hashable {
        case active
        /// No new work; its replicas move elsewhere.
        case drain
    }

    /// The agent's node ID.
    public var id: String
    public var hostname: String
    /// Where the agent's API is reached (HOST:PORT).
    public var address: String
    /// The agent's own labels (`berth-agent --label`), as it last registered
    /// them: constraints name them `engine.labels.KEY`, as swarm's do.
    public var agentLabels: [String: String]
    /// Labels set by operators through the controller (`berth node label`):
    /// constraints name them `node.labels.KEY`. An agent cannot set these, so
    /// a node cannot make itself eligible for work meant for others.
    public var operatorLabels: [String: String]
    public var capacity: NodeCapacity
    public var allocatable: NodeCapacity
    public var state: State
    public var availability: Availability
    public var registeredAt: Date
    public var lastHeartbeat: Date
    public var agentVersion: String

    public init(
        id: String, hostname: String, address: String, agentLabels: [String: String] = [:], operatorLabels: [String: String] = [:],
        capacity: NodeCapacity, allocatable: NodeCapacity, state: State = .ready, availability: Availability = .active,
        registeredAt: Date, lastHeartbeat: Date, agentVersion: String = ""
    ) {
        self.id = id
        self.hostname = hostname
        self.address = address
        self.agentLabels = agentLabels
        self.operatorLabels = operatorLabels
        self.capacity = capacity
        self.allocatable = allocatable
        self.state = state
        self.availability = availability
        self.registeredAt = registeredAt
        self.lastHeartbeat = lastHeartbeat
        self.agentVersion = agentVersion
    }
}
