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
