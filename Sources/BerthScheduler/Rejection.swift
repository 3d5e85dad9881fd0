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
