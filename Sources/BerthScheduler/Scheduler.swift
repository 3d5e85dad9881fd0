import BerthModel

/// Where replicas go: the nodes that pass every feasibility check
/// (`FeasibilityCheck`), ranked by the scorers in order (`Scorer`), the
/// first one chosen. Pure: no I/O, no clock.
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
        let checks = FeasibilityCheck.checks(for: request)
        var fits = checks.fits(request, cluster)
        var ranking = Ranking(Scorer.scorers(for: request, avoiding: avoid), request, &cluster, avoid: avoid)
        for placed in 0..<count {
            guard let index = best(request, in: cluster, fits: fits, ranking: ranking) else {
                let verdicts = explain(request, on: cluster)
                for index in chosen.reversed() { cluster.remove(request, at: index) }
                throw BerthError(
                    .resourceExhausted,
                    "cannot place \(count - placed) of \(count) replicas of \(request.name): \(summary(verdicts))")
            }
            cluster.add(request, at: index)
            ranking.add(at: index)
            // Only the chosen node changed: it alone is checked again.
            fits[index] = checks.rejection(request, cluster, index) == nil
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
        return FeasibilityCheck.checks(for: request).rejection(request, cluster, index)
    }

    /// Every node's verdict for the next replica, in the order `place`
    /// ranks them: those that fit first, the one it would choose first of
    /// all (what `service create --dry-run` shows).
    public static func explain(_ request: PlacementRequest, on cluster: Cluster) -> [NodeVerdict] {
        var cluster = cluster
        let checks = FeasibilityCheck.checks(for: request)
        let ranking = Ranking(Scorer.scorers(for: request), request, &cluster, avoid: [])
        let best = best(request, in: cluster, fits: checks.fits(request, cluster), ranking: ranking)
        let ranked = cluster.nodes.indices.map { i in
            let score = Ranking.binpack(request, cluster, i)
            return (
                verdict: NodeVerdict(
                    node: cluster.nodes[i].id, rejection: checks.rejection(request, cluster, i), score: score,
                    replicas: Int(cluster.replicas[request.service]?[Int32(i)] ?? 0), chosen: i == best),
                rank: (key: ranking.key(i), score: score))
        }
        return ranked.sorted { a, b in
            if (a.verdict.rejection == nil) != (b.verdict.rejection == nil) { return a.verdict.rejection == nil }
            if a.verdict.chosen != b.verdict.chosen { return a.verdict.chosen }
            return ranking.before(a.rank, b.rank)
        }.map(\.verdict)
    }

    /// "insufficient memory on 3 of 3 nodes; …", the most common reason first.
    public static func summary(_ verdicts: [NodeVerdict]) -> String {
        var counts: [String: Int] = [:]
        for verdict in verdicts { if let r = verdict.rejection { counts[r.description, default: 0] += 1 } }
        guard !counts.isEmpty else { return verdicts.isEmpty ? "the cluster has no nodes" : "no node fits" }
        return counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
            .map { "\($0.key) on \($0.value) of \(verdicts.count) nodes" }.joined(separator: "; ")
    }

    /// The best node that fits for one more replica, nil when none does:
    /// the lowest key, the highest binpack score among equals.
    static func best(_ request: PlacementRequest, in cluster: Cluster, fits: [Bool], ranking: Ranking) -> Int? {
        var bestIndex = -1
        var bestKey = Int64.max
        var bestScore = -Double.infinity
        for i in fits.indices where fits[i] {
            let key = ranking.key(i)
            guard key <= bestKey else { continue }
            let score = Ranking.binpack(request, cluster, i)
            if key < bestKey || score > bestScore {
                bestKey = key
                bestScore = score
                bestIndex = i
            }
        }
        return bestIndex >= 0 ? bestIndex : nil
    }
}
