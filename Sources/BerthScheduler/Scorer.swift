/// One preference among the nodes that fit, in order: a later scorer
/// decides only between nodes the earlier ones rank equal.
///
/// `Scheduler.place` and `Scheduler.explain` rank nodes by the same list,
/// `scorers(for:avoiding:)`. A new preference is a case here and a place in
/// that list.
public enum Scorer: Sendable, Hashable {
    /// Nodes where the replica's slot failed before, last.
    case avoidFailed
    /// The value of the spread label (`--placement-pref spread=…`) with the
    /// fewest of the service's replicas first.
    case spreadOverLabel
    /// The node with the fewest of the service's replicas first (the
    /// spread strategy).
    case spreadOverNodes
    /// The node that would be fullest first: the sum of its CPU and memory
    /// fractions with the replica (kube-scheduler's MostAllocated).
    case binpack

    /// The scorers for `request`, in order.
    public static func scorers(for request: PlacementRequest, avoiding avoid: Set<String> = []) -> [Scorer] {
        var scorers: [Scorer] = []
        if !avoid.isEmpty { scorers.append(.avoidFailed) }
        if request.spreadLabel != nil { scorers.append(.spreadOverLabel) }
        if request.strategy == .spread { scorers.append(.spreadOverNodes) }
        scorers.append(.binpack)
        return scorers
    }
}

/// A node's rank under a list of scorers, kept current as one request's
/// replicas are placed. The counting scorers (all but binpack, which comes
/// last) each take a 21-bit field of one integer key, the first scorer the
/// highest bits, so that comparing keys compares them in the list's order
/// in the inner loop; binpack decides between equal keys.
struct Ranking {
    /// Replicas of the service per node (empty when nothing reads it).
    var onNode: [Int32]
    let labels: (ids: [Int32], count: Int)?
    var perValue: [Int32]
    let avoided: [Bool]?
    /// Where each counting scorer's field starts in the key; -1 when the
    /// scorer is not in the list.
    private let avoidShift: Int64
    private let labelShift: Int64
    private let nodeShift: Int64

    static let fieldBits: Int64 = 21

    init(_ scorers: [Scorer], _ request: PlacementRequest, _ cluster: inout Cluster, avoid: Set<String>) {
        let counting = scorers.filter { $0 != .binpack }
        func shift(_ scorer: Scorer) -> Int64 {
            guard let position = counting.firstIndex(of: scorer) else { return -1 }
            return Int64(counting.count - 1 - position) * Self.fieldBits
        }
        avoidShift = shift(.avoidFailed)
        labelShift = shift(.spreadOverLabel)
        nodeShift = shift(.spreadOverNodes)
        labels = labelShift >= 0 ? request.spreadLabel.map { cluster.labelIDs($0) } : nil
        onNode = nodeShift >= 0 || labels != nil ? cluster.counts(of: request.service) : []
        perValue = []
        if let labels {
            perValue = [Int32](repeating: 0, count: labels.count)
            for (i, count) in onNode.enumerated() where count > 0 { perValue[Int(labels.ids[i])] += count }
        }
        avoided = avoidShift >= 0 ? cluster.nodes.map { avoid.contains($0.id) } : nil
    }

    /// One more replica on the node at `index`.
    mutating func add(at index: Int) {
        guard !onNode.isEmpty else { return }
        onNode[index] += 1
        if let labels { perValue[Int(labels.ids[index])] += 1 }
    }

    /// The counting scorers' rank of node `i`: lower is better.
    @inline(__always)
    func key(_ i: Int) -> Int64 {
        // Masking shifts: the shifts are known to be in range, and the
        // checking kind costs a branch each in the inner loop.
        var key: Int64 = 0
        if let avoided, avoided[i] { key |= 1 &<< avoidShift }
        if let labels { key |= Int64(perValue[Int(labels.ids[i])]) &<< labelShift }
        if nodeShift >= 0 { key |= Int64(onNode[i]) &<< nodeShift }
        return key
    }

    /// Binpack's score of node `i` for one more replica: higher is better.
    @inline(__always)
    static func binpack(_ request: PlacementRequest, _ cluster: Cluster, _ i: Int) -> Double {
        2 - Double(cluster.freeCPU[i] - request.resources.milliCPU) * cluster.inverseCPU[i]
            - Double(cluster.freeMemory[i] - request.resources.memoryBytes) * cluster.inverseMemory[i]
    }

    /// Whether node `a` ranks before node `b`.
    func before(_ a: (key: Int64, score: Double), _ b: (key: Int64, score: Double)) -> Bool {
        a.key != b.key ? a.key < b.key : a.score > b.score
    }
}
