import BerthModel

/// The nodes of a cluster and what is placed on them, laid out for the
/// scheduler's inner loop: free CPU and memory in flat arrays, so that
/// judging every node for a replica is a pass over contiguous memory.
public struct Cluster: Sendable {
    public private(set) var nodes: [SchedulerNode]
    var freeCPU: [Int64]
    var freeMemory: [Int64]
    var inverseCPU: [Double]
    var inverseMemory: [Double]
    /// Whether each node is ready.
    var ready: [Bool]
    /// Replicas of each service on each node.
    var replicas: [String: [Int32: Int32]] = [:]
    /// For a label: each node's value as a small number, and the values.
    var labelValues: [String: (ids: [Int32], count: Int)] = [:]
    /// Each node's position, by ID.
    let indexByID: [String: Int]

    public init(nodes: [SchedulerNode]) {
        self.nodes = nodes
        indexByID = Dictionary(nodes.enumerated().map { ($1.id, $0) }, uniquingKeysWith: { first, _ in first })
        ready = nodes.map { $0.availability == .ready }
        freeCPU = nodes.map { $0.allocatable.milliCPU - $0.allocated.milliCPU }
        freeMemory = nodes.map { $0.allocatable.memoryBytes - $0.allocated.memoryBytes }
        inverseCPU = nodes.map { $0.allocatable.milliCPU > 0 ? 1 / Double($0.allocatable.milliCPU) : 0 }
        inverseMemory = nodes.map { $0.allocatable.memoryBytes > 0 ? 1 / Double($0.allocatable.memoryBytes) : 0 }
    }

    /// Records a replica of `service` running on the node at `index` (one
    /// placed before, or just placed).
    mutating func add(_ request: PlacementRequest, at index: Int) {
        freeCPU[index] -= request.resources.milliCPU
        freeMemory[index] -= request.resources.memoryBytes
        nodes[index].allocated.milliCPU += request.resources.milliCPU
        nodes[index].allocated.memoryBytes += request.resources.memoryBytes
        for port in request.ports { nodes[index].usedPorts.insert(port) }
        replicas[request.service, default: [:]][Int32(index), default: 0] += 1
    }

    /// Takes back what `add` recorded.
    mutating func remove(_ request: PlacementRequest, at index: Int) {
        freeCPU[index] += request.resources.milliCPU
        freeMemory[index] += request.resources.memoryBytes
        nodes[index].allocated.milliCPU -= request.resources.milliCPU
        nodes[index].allocated.memoryBytes -= request.resources.memoryBytes
        for port in request.ports { nodes[index].usedPorts.remove(port) }
        replicas[request.service]?[Int32(index)]? -= 1
        if replicas[request.service]?[Int32(index)] == 0 { replicas[request.service]?[Int32(index)] = nil }
        if replicas[request.service]?.isEmpty == true { replicas[request.service] = nil }
    }

    /// Each node's value of `label` as a number (nodes without it share one).
    mutating func labelIDs(_ label: String) -> (ids: [Int32], count: Int) {
        if let cached = labelValues[label] { return cached }
        var numbers: [String: Int32] = [:]
        let ids = nodes.map { node -> Int32 in
            let value = node.labels[label] ?? ""
            if let n = numbers[value] { return n }
            let n = Int32(numbers.count)
            numbers[value] = n
            return n
        }
        labelValues[label] = (ids, numbers.count)
        return (ids, numbers.count)
    }

    /// Adds a replica that already runs on node `id` (when the cluster is
    /// rebuilt from the store).
    public mutating func record(_ request: PlacementRequest, onNode id: String) {
        guard let index = indexByID[id] else { return }
        add(request, at: index)
    }

    /// Takes back a replica recorded on node `id` (one being shut down).
    public mutating func remove(_ request: PlacementRequest, fromNode id: String) {
        guard let index = indexByID[id], (replicas[request.service]?[Int32(index)] ?? 0) > 0 else { return }
        remove(request, at: index)
    }

    /// How many replicas of `service` each node has.
    public func replicas(of service: String) -> [String: Int] {
        var result: [String: Int] = [:]
        for (index, count) in replicas[service] ?? [:] { result[nodes[Int(index)].id] = Int(count) }
        return result
    }

    /// Nodes that hold anything.
    public var nodesInUse: Int { nodes.filter { $0.allocated != .zero }.count }
}

/// Where replicas go: feasibility filters (node state, label constraints,
/// host ports, CPU and memory requests), then a score (binpack, or spread
/// over a label's values), then the best node. Pure: no I/O, no clock.
public enum Scheduler {
    /// Places `count` replicas, all or none.
    ///
    /// - Returns: the chosen node IDs, in order; `cluster` has them recorded.
    /// - Throws: `BerthError.resourceExhausted` saying how many replicas
    ///   could not be placed and why, per reason and node count ("insufficient
    ///   memory on 3 of 3 nodes"); `cluster` is then unchanged.
    public static func place(_ request: PlacementRequest, count: Int, on cluster: inout Cluster) throws -> [String] {
        var chosen: [Int] = []
        chosen.reserveCapacity(count)
        var feasible = staticFeasibility(request, cluster)
        let labels: (ids: [Int32], count: Int)?
        if case .spread(let label) = request.strategy { labels = cluster.labelIDs(label) } else { labels = nil }
        for placed in 0..<count {
            guard let index = best(request, in: cluster, feasible: feasible, labels: labels) else {
                let verdicts = explain(request, on: cluster)
                for index in chosen.reversed() { cluster.remove(request, at: index) }
                throw BerthError(
                    .resourceExhausted,
                    "cannot place \(count - placed) of \(count) replicas of \(request.name): \(summary(verdicts))")
            }
            cluster.add(request, at: index)
            // A replica's host ports are now taken on that node.
            if !request.ports.isEmpty { feasible[index] = false }
            chosen.append(index)
        }
        return chosen.map { cluster.nodes[$0].id }
    }

    /// Places `count` replicas if they all fit, else as many as fit.
    ///
    /// - Returns: the chosen node IDs, and why not all fit (nil when they did).
    public static func placeAsMany(_ request: PlacementRequest, count: Int, on cluster: inout Cluster) -> (nodes: [String], unplaced: BerthError?) {
        do {
            return (try place(request, count: count, on: &cluster), nil)
        } catch {
            var nodes: [String] = []
            while nodes.count < count, let node = try? place(request, count: 1, on: &cluster).first { nodes.append(node) }
            return (nodes, error as? BerthError ?? BerthError(.internal, "\(error)"))
        }
    }

    /// Every node's verdict for the next replica, best first among those
    /// that fit (what `service create --dry-run` shows).
    public static func explain(_ request: PlacementRequest, on cluster: Cluster) -> [NodeVerdict] {
        var cluster = cluster
        let labels: (ids: [Int32], count: Int)?
        if case .spread(let label) = request.strategy { labels = cluster.labelIDs(label) } else { labels = nil }
        let best = best(request, in: cluster, feasible: staticFeasibility(request, cluster), labels: labels)
        var verdicts = cluster.nodes.indices.map { i in
            NodeVerdict(
                node: cluster.nodes[i].id, rejection: rejection(request, cluster, i), score: binpackScore(request, cluster, i), chosen: i == best)
        }
        verdicts.sort { a, b in
            if (a.rejection == nil) != (b.rejection == nil) { return a.rejection == nil }
            if a.chosen != b.chosen { return a.chosen }
            return a.score > b.score
        }
        return verdicts
    }

    /// "insufficient memory on 3 of 3 nodes; …", the most common reason first.
    public static func summary(_ verdicts: [NodeVerdict]) -> String {
        var counts: [String: Int] = [:]
        for verdict in verdicts { if let r = verdict.rejection { counts[r.description, default: 0] += 1 } }
        guard !counts.isEmpty else { return "no node fits" }
        return counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
            .map { "\($0.key) on \($0.value) of \(verdicts.count) nodes" }.joined(separator: "; ")
    }

    /// The first filter node `i` fails, nil when it fits.
    static func rejection(_ request: PlacementRequest, _ cluster: Cluster, _ i: Int) -> Rejection? {
        let node = cluster.nodes[i]
        if node.availability != .ready { return .notReady(node.availability) }
        if let failed = request.constraints.first(where: { !$0.matches(node) }) { return .constraint(failed) }
        if let port = request.ports.first(where: { node.usedPorts.contains($0) }) { return .portInUse(port) }
        if cluster.freeCPU[i] < request.resources.milliCPU { return .insufficientCPU }
        if cluster.freeMemory[i] < request.resources.memoryBytes { return .insufficientMemory }
        return nil
    }

    /// The filters that do not change as this request's replicas are
    /// placed (state, constraints, ports), once per node.
    static func staticFeasibility(_ request: PlacementRequest, _ cluster: Cluster) -> [Bool] {
        if request.constraints.isEmpty && request.ports.isEmpty { return cluster.ready }
        return cluster.nodes.map { node in
            node.availability == .ready && request.constraints.allSatisfy { $0.matches(node) }
                && !request.ports.contains { node.usedPorts.contains($0) }
        }
    }

    /// How full the node would be with the replica: the sum of its CPU and
    /// memory fractions (kube-scheduler's MostAllocated), 2 less the free
    /// fractions left.
    @inline(__always)
    static func binpackScore(_ request: PlacementRequest, _ cluster: Cluster, _ i: Int) -> Double {
        2 - Double(cluster.freeCPU[i] - request.resources.milliCPU) * cluster.inverseCPU[i]
            - Double(cluster.freeMemory[i] - request.resources.memoryBytes) * cluster.inverseMemory[i]
    }

    /// The best feasible node for one more replica, nil when none fits.
    static func best(_ request: PlacementRequest, in cluster: Cluster, feasible: [Bool], labels: (ids: [Int32], count: Int)?) -> Int? {
        let cpu = request.resources.milliCPU
        let memory = request.resources.memoryBytes
        switch request.strategy {
        case .binpack:
            var bestIndex = -1
            var bestScore = -Double.infinity
            for i in cluster.freeCPU.indices where feasible[i] && cluster.freeCPU[i] >= cpu && cluster.freeMemory[i] >= memory {
                let score = binpackScore(request, cluster, i)
                if score > bestScore {
                    bestScore = score
                    bestIndex = i
                }
            }
            return bestIndex >= 0 ? bestIndex : nil
        case .spread:
            // The label value with the fewest replicas of the service wins;
            // binpack decides within it. Nodes without the label count as one value ("").
            guard let labels else { return nil }
            var perValue = [Int32](repeating: 0, count: labels.count)
            for (index, count) in cluster.replicas[request.service] ?? [:] { perValue[Int(labels.ids[Int(index)])] += count }
            var bestIndex = -1
            var bestKey = (Int32.max, -Double.infinity)
            for i in cluster.nodes.indices where feasible[i] && cluster.freeCPU[i] >= cpu && cluster.freeMemory[i] >= memory {
                let key = (perValue[Int(labels.ids[i])], binpackScore(request, cluster, i))
                if key.0 < bestKey.0 || (key.0 == bestKey.0 && key.1 > bestKey.1) {
                    bestKey = key
                    bestIndex = i
                }
            }
            return bestIndex >= 0 ? bestIndex : nil
        }
    }
}
