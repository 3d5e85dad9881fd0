/// A node as the scheduler sees it.
public struct SchedulerNode: Sendable, Hashable {
    public var id: String
    public var hostname: String
    /// Labels set by operators (`node.labels.KEY`).
    public var labels: [String: String]
    /// The agent's own labels (`engine.labels.KEY`).
    public var engineLabels: [String: String]
    public var availability: NodeAvailability
    public var allocatable: ResourceRequest
    /// The requests of what runs there now.
    public var allocated: ResourceRequest
    public var usedPorts: Set<HostPort>

    public init(
        id: String, hostname: String = "", labels: [String: String] = [:], engineLabels: [String: String] = [:],
        availability: NodeAvailability = .ready, allocatable: ResourceRequest, allocated: ResourceRequest = .zero, usedPorts: Set<HostPort> = []
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
