import BerthModel

/// What one replica of a service needs.
public struct PlacementRequest: Sendable, Hashable {
    /// Replicas of one service are spread and counted together.
    public var service: String
    /// The service as messages name it.
    public var name: String
    public var resources: ResourceRequest
    public var constraints: [Constraint]
    public var ports: [HostPort]
    public var strategy: PlacementStrategy
    /// Spread over this label's values first (`--placement-pref spread=…`).
    public var spreadLabel: LabelKey?
    /// At most this many replicas of the service on one node (0: no limit).
    public var maxPerNode: Int

    public init(
        service: String, name: String? = nil, resources: ResourceRequest, constraints: [Constraint] = [], ports: [HostPort] = [],
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
