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
