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
    var labelValues: [LabelKey: (ids: [Int32], count: Int)] = [:]
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
    mutating func labelIDs(_ label: LabelKey) -> (ids: [Int32], count: Int) {
        if let cached = labelValues[label] { return cached }
        var numbers: [String: Int32] = [:]
        let ids = nodes.map { node -> Int32 in
            let value = label.value(on: node) ?? ""
            if let n = numbers[value] { return n }
            let n = Int32(numbers.count)
            numbers[value] = n
            return n
        }
        labelValues[label] = (ids, numbers.count)
        return (ids, numbers.count)
    }

    /// The replicas of `service` on each node, by node position.
    func counts(of service: String) -> [Int32] {
        var counts = [Int32](repeating: 0, count: nodes.count)
        for (index, count) in replicas[service] ?? [:] { counts[Int(index)] = count }
        return counts
    }

    /// A node's position, nil for a node the cluster does not have.
    public func index(of id: String) -> Int? { indexByID[id] }

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
/// host ports, replicas per node, CPU and memory requests), then scores in
/// order (a label's spread when asked for, the service's spread over
/// nodes, binpack), then the best node. Pure: no I/O, no clock.
public enum Scheduler {
    /// Places `count` replicas, all or none.
    ///
    /// - Parameter avoid: nodes to use only when no other fits (where the
    ///   replicas' slot failed before).
    /// - Returns: the chosen node IDs, in order; `cluster` has them recorded.
    /// - Throws: `BerthError.resourceExhausted` saying how many replicas
    ///   could not be placed and why, per reason and node count ("insufficient
    ///   memory on 3 of 3 nodes"); `cluster` is then unchanged.
    public static func place(_ request: PlacementRequest, count: Int, on cluster: inout Cluster, avoid: Set<String> = []) throws -> [String] {
        var chosen: [Int] = []
        chosen.reserveCapacity(count)
        var feasible = staticFeasibility(request, cluster)
        var scoring = Scoring(request, &cluster, avoid: avoid)
        for placed in 0..<count {
            guard let index = best(request, in: cluster, feasible: feasible, scoring: scoring) else {
                let verdicts = explain(request, on: cluster)
                for index in chosen.reversed() { cluster.remove(request, at: index) }
                throw BerthError(
                    .resourceExhausted,
                    "cannot place \(count - placed) of \(count) replicas of \(request.name): \(summary(verdicts))")
            }
            cluster.add(request, at: index)
            scoring.add(at: index)
            // A replica's host ports are now taken on that node.
            if !request.ports.isEmpty { feasible[index] = false }
            if request.maxPerNode > 0, scoring.onNode[index] >= request.maxPerNode { feasible[index] = false }
            chosen.append(index)
        }
        return chosen.map { cluster.nodes[$0].id }
    }

    /// Places `count` replicas if they all fit, else as many as fit.
    ///
    /// - Returns: the chosen node IDs, and why not all fit (nil when they did).
    public static func placeAsMany(
        _ request: PlacementRequest, count: Int, on cluster: inout Cluster, avoid: Set<String> = []
    ) -> (nodes: [String], unplaced: BerthError?) {
        do {
            return (try place(request, count: count, on: &cluster, avoid: avoid), nil)
        } catch {
            var nodes: [String] = []
            while nodes.count < count, let node = try? place(request, count: 1, on: &cluster, avoid: avoid).first { nodes.append(node) }
            return (nodes, error as? BerthError ?? BerthError(.internal, "\(error)"))
        }
    }

    /// Why node `id` cannot take one more replica of `request`, nil when it can
    /// (a global service's replica goes to a node of its own choosing).
    public static func rejection(_ request: PlacementRequest, onNode id: String, in cluster: Cluster) -> Rejection? {
        guard let index = cluster.index(of: id) else { return .notReady(.down) }
        return rejection(request, cluster, index)
    }

    /// Every node's verdict for the next replica, best first among those
    /// that fit (what `service create --dry-run` shows).
    public static func explain(_ request: PlacementRequest, on cluster: Cluster) -> [NodeVerdict] {
        var cluster = cluster
        let scoring = Scoring(request, &cluster, avoid: [])
        let best = best(request, in: cluster, feasible: staticFeasibility(request, cluster), scoring: scoring)
        var verdicts = cluster.nodes.indices.map { i in
            NodeVerdict(
                node: cluster.nodes[i].id, rejection: rejection(request, cluster, i), score: binpackScore(request, cluster, i),
                replicas: Int(cluster.replicas[request.service]?[Int32(i)] ?? 0), chosen: i == best)
        }
        verdicts.sort { a, b in
            if (a.rejection == nil) != (b.rejection == nil) { return a.rejection == nil }
            if a.chosen != b.chosen { return a.chosen }
            if a.replicas != b.replicas { return a.replicas < b.replicas }
            return a.score > b.score
        }
        return verdicts
    }

    /// "insufficient memory on 3 of 3 nodes; …", the most common reason first.
    public static func summary(_ verdicts: [NodeVerdict]) -> String {
        var counts: [String: Int] = [:]
        for verdict in verdicts { if let r = verdict.rejection { counts[r.description, default: 0] += 1 } }
        guard !counts.isEmpty else { return verdicts.isEmpty ? "the cluster has no nodes" : "no node fits" }
        return counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
            .map { "\($0.key) on \($0.value) of \(verdicts.count) nodes" }.joined(separator: "; ")
    }

    /// The first filter node `i` fails, nil when it fits.
    static func rejection(_ request: PlacementRequest, _ cluster: Cluster, _ i: Int) -> Rejection? {
        let node = cluster.nodes[i]
        if node.availability != .ready { return .notReady(node.availability) }
        if let failed = request.constraints.first(where: { !$0.matches(node) }) { return .constraint(failed) }
        if let port = request.ports.first(where: { node.usedPorts.contains($0) }) { return .portInUse(port) }
        if request.maxPerNode > 0, (cluster.replicas[request.service]?[Int32(i)] ?? 0) >= request.maxPerNode { return .maxPerNode(request.maxPerNode) }
        if cluster.freeCPU[i] < request.resources.milliCPU { return .insufficientCPU }
        if cluster.freeMemory[i] < request.resources.memoryBytes { return .insufficientMemory }
        return nil
    }

    /// The filters that do not change as this request's replicas are
    /// placed (state, constraints, ports, replicas per node so far), once per node.
    static func staticFeasibility(_ request: PlacementRequest, _ cluster: Cluster) -> [Bool] {
        var feasible: [Bool]
        if request.constraints.isEmpty && request.ports.isEmpty {
            feasible = cluster.ready
        } else {
            feasible = cluster.nodes.map { node in
                node.availability == .ready && request.constraints.allSatisfy { $0.matches(node) }
                    && !request.ports.contains { node.usedPorts.contains($0) }
            }
        }
        if request.maxPerNode > 0 {
            for (index, count) in cluster.replicas[request.service] ?? [:] where count >= request.maxPerNode { feasible[Int(index)] = false }
        }
        return feasible
    }

    /// How full the node would be with the replica: the sum of its CPU and
    /// memory fractions (kube-scheduler's MostAllocated), 2 less the free
    /// fractions left.
    @inline(__always)
    static func binpackScore(_ request: PlacementRequest, _ cluster: Cluster, _ i: Int) -> Double {
        2 - Double(cluster.freeCPU[i] - request.resources.milliCPU) * cluster.inverseCPU[i]
            - Double(cluster.freeMemory[i] - request.resources.memoryBytes) * cluster.inverseMemory[i]
    }

    /// What the scores other than binpack read, kept current as one
    /// request's replicas are placed: the service's replicas on each node,
    /// on each value of the spread label, and the nodes to avoid.
    struct Scoring {
        /// Replicas of the service per node (empty when nothing reads it).
        var onNode: [Int32]
        let labels: (ids: [Int32], count: Int)?
        var perValue: [Int32]
        let avoided: [Bool]?
        let spread: Bool

        init(_ request: PlacementRequest, _ cluster: inout Cluster, avoid: Set<String>) {
            spread = request.strategy == .spread
            labels = request.spreadLabel.map { cluster.labelIDs($0) }
            onNode = spread || request.maxPerNode > 0 || labels != nil ? cluster.counts(of: request.service) : []
            perValue = []
            if let labels {
                perValue = [Int32](repeating: 0, count: labels.count)
                for (i, count) in onNode.enumerated() where count > 0 { perValue[Int(labels.ids[i])] += count }
            }
            avoided = avoid.isEmpty ? nil : cluster.nodes.map { avoid.contains($0.id) }
        }

        mutating func add(at index: Int) {
            guard !onNode.isEmpty else { return }
            onNode[index] += 1
            if let labels { perValue[Int(labels.ids[index])] += 1 }
        }

        /// Lower is better: a node to avoid last, then the label value with
        /// the fewest of the service's replicas, then the node with the fewest.
        @inline(__always)
        func key(_ i: Int) -> Int64 {
            var key: Int64 = 0
            if let avoided, avoided[i] { key = 1 << 42 }
            if let labels { key |= Int64(perValue[Int(labels.ids[i])]) << 21 }
            if spread { key |= Int64(onNode[i]) }
            return key
        }
    }

    /// The best feasible node for one more replica, nil when none fits:
    /// the lowest `Scoring.key`, the highest binpack score among equals.
    static func best(_ request: PlacementRequest, in cluster: Cluster, feasible: [Bool], scoring: Scoring) -> Int? {
        let cpu = request.resources.milliCPU
        let memory = request.resources.memoryBytes
        var bestIndex = -1
        var bestKey = Int64.max
        var bestScore = -Double.infinity
        for i in cluster.freeCPU.indices where feasible[i] && cluster.freeCPU[i] >= cpu && cluster.freeMemory[i] >= memory {
            let key = scoring.key(i)
            guard key <= bestKey else { continue }
            let score = binpackScore(request, cluster, i)
            if key < bestKey || score > bestScore {
                bestKey = key
                bestScore = score
                bestIndex = i
            }
        }
        return bestIndex >= 0 ? bestIndex : nil
    }
}
