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
