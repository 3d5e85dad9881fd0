/// One thing a node must offer to take one more replica of a request.
///
/// `Scheduler.place` and `Scheduler.explain` both walk the same list,
/// `checks(for:)`: the cheapest first, and only those that can fail for the
/// request. A node's rejection is the first check it fails, whichever asks.
/// A new filter is a case here, placed in the list by its cost.
public enum FeasibilityCheck: Sendable, Hashable, CaseIterable {
    /// The node takes new work (not down, not draining).
    case ready
    case cpu
    case memory
    /// Fewer of the service's replicas than `--replicas-max-per-node`.
    case maxPerNode
    /// Every host port the replica publishes is free.
    case ports
    /// Every placement constraint holds.
    case constraints

    /// Cheapest first: flat arrays, a dictionary, sets, then strings.
    public static let ordered: [FeasibilityCheck] = [.ready, .cpu, .memory, .maxPerNode, .ports, .constraints]

    /// The checks that can fail for `request`, in order.
    public static func checks(for request: PlacementRequest) -> [FeasibilityCheck] {
        ordered.filter { check in
            switch check {
            case .ready, .cpu, .memory: true
            case .maxPerNode: request.maxPerNode > 0
            case .ports: !request.ports.isEmpty
            case .constraints: !request.constraints.isEmpty
            }
        }
    }

    /// Why node `i` fails this check, nil when it passes.
    func rejection(_ request: PlacementRequest, _ cluster: Cluster, _ i: Int) -> Rejection? {
        switch self {
        case .ready:
            return cluster.ready[i] ? nil : .notReady(cluster.nodes[i].availability)
        case .cpu:
            return cluster.freeCPU[i] >= request.resources.milliCPU ? nil : .insufficientCPU
        case .memory:
            return cluster.freeMemory[i] >= request.resources.memoryBytes ? nil : .insufficientMemory
        case .maxPerNode:
            let count = cluster.replicas[request.service]?[Int32(i)] ?? 0
            return request.maxPerNode > 0 && count >= request.maxPerNode ? .maxPerNode(request.maxPerNode) : nil
        case .ports:
            return request.ports.first(where: { cluster.nodes[i].usedPorts.contains($0) }).map(Rejection.portInUse)
        case .constraints:
            return request.constraints.first(where: { !$0.matches(cluster.nodes[i]) }).map(Rejection.constraint)
        }
    }

    /// Clears `fits` for every node that fails this check (the checks after
    /// the common head, which `fits` takes in one pass of its own).
    func exclude(from fits: inout [Bool], _ request: PlacementRequest, _ cluster: Cluster) {
        if self == .maxPerNode {
            for (index, count) in cluster.replicas[request.service] ?? [:] where count >= request.maxPerNode { fits[Int(index)] = false }
        } else {
            for i in fits.indices where fits[i] && rejection(request, cluster, i) != nil { fits[i] = false }
        }
    }
}

extension [FeasibilityCheck] {
    /// The first check node `i` fails, nil when it fits.
    func rejection(_ request: PlacementRequest, _ cluster: Cluster, _ i: Int) -> Rejection? {
        for check in self {
            if let rejection = check.rejection(request, cluster, i) { return rejection }
        }
        return nil
    }

    /// Whether each node fits. The checks every request has, at the head
    /// of every list (`checks(for:)`), are one pass over the flat arrays.
    func fits(_ request: PlacementRequest, _ cluster: Cluster) -> [Bool] {
        let common: [FeasibilityCheck] = [.ready, .cpu, .memory]
        precondition(starts(with: common), "every list of checks begins with ready, cpu, memory")
        let (cpu, memory) = (request.resources.milliCPU, request.resources.memoryBytes)
        let count = cluster.nodes.count
        // Once per placement call over every node: without bounds checks.
        var fits = [Bool](unsafeUninitializedCapacity: count) { out, initialized in
            cluster.ready.withUnsafeBufferPointer { ready in
                cluster.freeCPU.withUnsafeBufferPointer { freeCPU in
                    cluster.freeMemory.withUnsafeBufferPointer { freeMemory in
                        for i in 0..<count { out[i] = ready[i] && freeCPU[i] >= cpu && freeMemory[i] >= memory }
                    }
                }
            }
            initialized = count
        }
        for check in dropFirst(common.count) { check.exclude(from: &fits, request, cluster) }
        return fits
    }
}
