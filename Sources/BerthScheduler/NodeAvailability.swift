/// Whether a node takes new work.
public enum NodeAvailability: String, Sendable, Hashable, Codable {
    case ready
    /// No heartbeat within the grace period.
    case down
    /// Being emptied by an operator.
    case draining
}
