import BerthModel
import Testing

@testable import BerthScheduler

@Suite("the scheduler: filters, scores, reasons")
struct SchedulerTests {
    static let gib: Int64 = 1 << 30

    static func nodes(_ count: Int, cpus: Int64 = 4, memoryGiB: Int64 = 8, zones: [String] = ["a"]) -> [SchedulerNode] {
        (0..<count).map { i in
            SchedulerNode(
                id: "n\(i)", labels: ["zone": zones[i % zones.count]],
                allocatable: ResourceRequest(milliCPU: cpus * 1000, memoryBytes: memoryGiB * gib))
        }
    }

    static func request(_ service: String = "web", cpu: Int64 = 500, memoryGiB: Int64 = 1, constraints: [String] = [], ports: [HostPort] = [],
                        strategy: PlacementStrategy = .spread, spread: String? = nil, maxPerNode: Int = 0) throws -> PlacementRequest {
        PlacementRequest(
            service: service, resources: ResourceRequest(milliCPU: cpu, memoryBytes: memoryGiB * gib),
            constraints: try constraints.map(Constraint.init(parsing:)), ports: ports, strategy: strategy,
            spreadLabel: try spread.map { try PlacementRequest.spreadLabel(parsingPreference: $0) }, maxPerNode: maxPerNode)
    }

    @Test("by default a service's replicas spread over nodes, even without requests; binpack decides among equals")
    func spreadByDefault() throws {
        var cluster = Cluster(nodes: Self.nodes(3))
        let placed = try Scheduler.place(try Self.request(cpu: 0, memoryGiB: 0), count: 6, on: &cluster)
        #expect(placed.sorted() == ["n0", "n0", "n1", "n1", "n2", "n2"], "six replicas with no resources, two per node: \(placed)")
        // Another service's replicas make a node fuller: among nodes with as
        // many of this service's replicas, the fuller one is chosen.
        var nodes = Self.nodes(3)
        nodes[2].allocated = ResourceRequest(milliCPU: 2000, memoryBytes: 2 * Self.gib)
        cluster = Cluster(nodes: nodes)
        #expect(try Scheduler.place(try Self.request(), count: 1, on: &cluster) == ["n2"])
        #expect(try Scheduler.place(try Self.request(), count: 2, on: &cluster).sorted() == ["n0", "n1"])
    }

    @Test("binpack alone fills one node before the next")
    func binpack() throws {
        var cluster = Cluster(nodes: Self.nodes(3))
        let placed = try Scheduler.place(try Self.request(strategy: .binpack), count: 8, on: &cluster)
        #expect(placed == Array(repeating: "n0", count: 8), "4 CPUs, 8 GiB: eight replicas of 0.5 CPU and 1 GiB fit one node")
        #expect(try Scheduler.place(try Self.request(strategy: .binpack), count: 1, on: &cluster) == ["n1"])
        #expect(cluster.nodesInUse == 2)
    }

    @Test("a spread preference evens replicas over a label's values, then over the nodes within each")
    func spread() throws {
        var cluster = Cluster(nodes: Self.nodes(6, zones: ["a", "b", "c"]))
        let placed = try Scheduler.place(try Self.request(spread: "spread=node.labels.zone"), count: 6, on: &cluster)
        let zones = placed.map { id in cluster.nodes.first { $0.id == id }!.labels["zone"]! }
        #expect(zones.sorted() == ["a", "a", "b", "b", "c", "c"])
        #expect(Set(placed).count == 6, "within a zone, over its nodes: \(placed)")
        #expect(try PlacementRequest.spreadLabel(parsingPreference: "spread=node.labels.zone") == .node("zone"))
        #expect(try PlacementRequest.spreadLabel(parsingPreference: "spread=engine.labels.zone") == .engine("zone"))
        #expect(throws: BerthError.self) { try PlacementRequest.spreadLabel(parsingPreference: "spread=zone") }
    }

    @Test("--replicas-max-per-node is a filter; nodes to avoid are used last")
    func maxPerNodeAndAvoid() throws {
        var cluster = Cluster(nodes: Self.nodes(2))
        let request = try Self.request(strategy: .binpack, maxPerNode: 2)
        #expect(try Scheduler.place(request, count: 4, on: &cluster).sorted() == ["n0", "n0", "n1", "n1"])
        do {
            _ = try Scheduler.place(request, count: 1, on: &cluster)
            Issue.record("a fifth replica has no node")
        } catch let error as BerthError {
            #expect(error.message.contains("it has 2 of the service's replicas already (--replicas-max-per-node) on 2 of 2 nodes"), "\(error.message)")
        }
        cluster = Cluster(nodes: Self.nodes(3))
        #expect(try Scheduler.place(try Self.request(strategy: .binpack), count: 2, on: &cluster, avoid: ["n0"]) == ["n1", "n1"])
        var one = Cluster(nodes: Self.nodes(1))
        #expect(try Scheduler.place(try Self.request(), count: 1, on: &one, avoid: ["n0"]) == ["n0"], "the only node still serves")
    }

    @Test("constraints, node state and host ports filter nodes; each host port once per node")
    func filters() throws {
        var nodes = Self.nodes(4, zones: ["a", "b"])
        nodes[0].availability = .down
        nodes[3].availability = .draining
        var cluster = Cluster(nodes: nodes)
        #expect(try Scheduler.place(try Self.request(constraints: ["node.labels.zone==a"]), count: 2, on: &cluster) == ["n2", "n2"])
        #expect(try Scheduler.place(try Self.request(constraints: ["node.labels.zone!=a"]), count: 1, on: &cluster) == ["n1"])
        #expect(try Scheduler.place(try Self.request(constraints: ["node.id==n1"]), count: 1, on: &cluster) == ["n1"])
        // Operators' labels are node.labels; the agent's own are engine.labels.
        var labelled = Self.nodes(2)
        labelled[0].labels = [:]
        labelled[0].engineLabels = ["zone": "a"]
        let both = Cluster(nodes: labelled)
        #expect(Scheduler.explain(try Self.request(constraints: ["node.labels.zone==a"]), on: both).filter { $0.rejection == nil }.map(\.node) == ["n1"])
        #expect(Scheduler.explain(try Self.request(constraints: ["engine.labels.zone==a"]), on: both).filter { $0.rejection == nil }.map(\.node) == ["n0"])
        // node.id takes the 12 digits node ls prints.
        let long = Cluster(nodes: [SchedulerNode(id: "0123456789abcdef0123456789abcdef", allocatable: ResourceRequest(milliCPU: 1000, memoryBytes: Self.gib))])
        #expect(Scheduler.explain(try Self.request(cpu: 0, memoryGiB: 0, constraints: ["node.id==0123456789ab"]), on: long).first?.rejection == nil)
        #expect(Scheduler.explain(try Self.request(cpu: 0, memoryGiB: 0, constraints: ["node.id==0123"]), on: long).first?.rejection != nil, "too short to name a node")
        let web = try Self.request("api", ports: [HostPort(8080)])
        #expect(Set(try Scheduler.place(web, count: 2, on: &cluster)) == ["n1", "n2"])
        let before = cluster.nodes
        #expect(throws: BerthError.self) { try Scheduler.place(web, count: 1, on: &cluster) }
        #expect(cluster.nodes == before, "nothing placed")
    }

    @Test("a count that cannot fit is refused whole, with the reasons per node count")
    func refusal() throws {
        var cluster = Cluster(nodes: Self.nodes(3))
        let before = cluster.nodes
        do {
            _ = try Scheduler.place(try Self.request(cpu: 500, memoryGiB: 6), count: 4, on: &cluster)
            Issue.record("4 replicas of 6 GiB do not fit 3 nodes of 8 GiB")
        } catch let error as BerthError {
            #expect(error.code == .resourceExhausted)
            #expect(error.message == "cannot place 1 of 4 replicas of web: insufficient memory on 3 of 3 nodes", "\(error.message)")
        }
        #expect(cluster.nodes == before && cluster.replicas(of: "web").isEmpty, "nothing half-placed")
        var mixed = Self.nodes(3)
        mixed[0].availability = .down
        let verdicts = Scheduler.explain(try Self.request(cpu: 5000), on: Cluster(nodes: mixed))
        #expect(Scheduler.summary(verdicts) == "insufficient cpu on 2 of 3 nodes; node is down on 1 of 3 nodes")
    }

    @Test("explain: every node's verdict, the chosen one first")
    func explain() throws {
        var nodes = Self.nodes(3, zones: ["a", "b", "a"])
        nodes[2].allocated = ResourceRequest(milliCPU: 3000, memoryBytes: 4 * Self.gib)
        let verdicts = Scheduler.explain(try Self.request(constraints: ["node.labels.zone==a"], strategy: .binpack), on: Cluster(nodes: nodes))
        #expect(verdicts.map(\.node) == ["n2", "n0", "n1"])
        #expect(verdicts[0].chosen && verdicts[0].rejection == nil)
        #expect(verdicts[2].rejection?.description == "constraint node.labels.zone==a is not met")
    }

    @Test("place and explain walk the same checks and scorers: explain's first node is place's choice, on random clusters")
    func placeAndExplainAgree() throws {
        var generator = SplitMix(seed: 7)
        for round in 0..<300 {
            var nodes = Self.nodes(Int.random(in: 1...12, using: &generator), zones: ["a", "b", "c"])
            for i in nodes.indices {
                nodes[i].allocated = ResourceRequest(
                    milliCPU: Int64.random(in: 0...4000, using: &generator), memoryBytes: Int64.random(in: 0...8, using: &generator) * Self.gib)
                if Int.random(in: 0..<6, using: &generator) == 0 { nodes[i].availability = .draining }
                if Int.random(in: 0..<4, using: &generator) == 0 { nodes[i].usedPorts = [HostPort(8080)] }
            }
            var cluster = Cluster(nodes: nodes)
            // Replicas of the service already placed, for the spreads to count.
            for _ in 0..<Int.random(in: 0...6, using: &generator) {
                _ = try? Scheduler.place(try Self.request(cpu: 0, memoryGiB: 0), count: 1, on: &cluster)
            }
            let request = try Self.request(
                cpu: Int64.random(in: 0...2000, using: &generator), memoryGiB: Int64.random(in: 0...3, using: &generator),
                constraints: Bool.random(using: &generator) ? ["node.labels.zone!=c"] : [],
                ports: Bool.random(using: &generator) ? [HostPort(8080)] : [],
                strategy: Bool.random(using: &generator) ? .spread : .binpack,
                spread: Bool.random(using: &generator) ? "spread=node.labels.zone" : nil,
                maxPerNode: Int.random(in: 0...2, using: &generator))
            let verdicts = Scheduler.explain(request, on: cluster)
            let placed = try? Scheduler.place(request, count: 1, on: &cluster)
            #expect(placed?.first == verdicts.first(where: { $0.rejection == nil })?.node, "round \(round): \(verdicts)")
            #expect(verdicts.filter(\.chosen).map(\.node) == (placed ?? []), "round \(round)")
            for verdict in verdicts {
                #expect(verdict.rejection == Scheduler.rejection(request, onNode: verdict.node, in: cluster) || placed?.first == verdict.node)
            }
        }
    }

    @Test("a node is rejected for the first check it fails, the cheapest first")
    func rejectionOrder() throws {
        var nodes = Self.nodes(1)
        nodes[0].availability = .draining
        nodes[0].usedPorts = [HostPort(80)]
        nodes[0].allocated = ResourceRequest(milliCPU: 4000, memoryBytes: 8 * Self.gib)
        let request = try Self.request(constraints: ["node.labels.zone==b"], ports: [HostPort(80)])
        #expect(FeasibilityCheck.checks(for: request) == FeasibilityCheck.ordered.filter { $0 != .maxPerNode })
        #expect(FeasibilityCheck.checks(for: try Self.request()) == [.ready, .cpu, .memory])
        var expected: [Rejection] = [.notReady(.draining), .insufficientCPU, .insufficientMemory, .portInUse(HostPort(80))]
        expected.append(.constraint(try Constraint(parsing: "node.labels.zone==b")))
        for rejection in expected {
            #expect(Scheduler.rejection(request, onNode: "n0", in: Cluster(nodes: nodes)) == rejection)
            switch rejection {
            case .notReady: nodes[0].availability = .ready
            case .insufficientCPU: nodes[0].allocated.milliCPU = 0
            case .insufficientMemory: nodes[0].allocated.memoryBytes = 0
            case .portInUse: nodes[0].usedPorts = []
            default: nodes[0].labels["zone"] = "b"
            }
        }
        #expect(Scheduler.rejection(request, onNode: "n0", in: Cluster(nodes: nodes)) == nil)
    }

    @Test("constraints parse docker's spelling; anything else is a clear error")
    func constraints() throws {
        #expect(try Constraint(parsing: "node.labels.zone==a").description == "node.labels.zone==a")
        #expect(try Constraint(parsing: "node.hostname != h1").description == "node.hostname!=h1")
        #expect(try Constraint(parsing: "engine.labels.disk==ssd").description == "engine.labels.disk==ssd")
        for bad in ["zone==a", "node.labels.==a", "node.labels.zone=a", "node.labels.zone==", "node.ip==1.2.3.4", "engine.labels.==x"] {
            #expect(throws: BerthError.self, "\(bad)") { try Constraint(parsing: bad) }
        }
    }

    /// Places 500 services of 1–10 replicas of varied sizes on 200 nodes;
    /// the nodes used against the lower bound (total requests over one node).
    static func packing(_ strategy: PlacementStrategy) throws -> (used: Int, bound: Double) {
        var generator = SplitMix(seed: 7)
        var cluster = Cluster(nodes: Self.nodes(200, cpus: 32, memoryGiB: 128))
        var cpu: Int64 = 0
        var memory: Int64 = 0
        for service in 0..<500 {
            let request = PlacementRequest(
                service: "s\(service)",
                resources: ResourceRequest(milliCPU: [250, 500, 1000, 2000].randomElement(using: &generator)!,
                                       memoryBytes: [256, 512, 1024, 4096].randomElement(using: &generator)! << 20),
                strategy: strategy)
            let count = Int.random(in: 1...10, using: &generator)
            _ = try Scheduler.place(request, count: count, on: &cluster)
            cpu += request.resources.milliCPU * Int64(count)
            memory += request.resources.memoryBytes * Int64(count)
        }
        return (cluster.nodesInUse, max(Double(cpu) / 32_000, Double(memory) / Double(128 * Self.gib)).rounded(.up))
    }

    @Test("quality: binpack packs varied requests within 5% of the lower bound; with each service spread over nodes first, within 10%")
    func quality() throws {
        let binpack = try Self.packing(.binpack)
        #expect(Double(binpack.used) <= binpack.bound * 1.05, "\(binpack.used) nodes against a bound of \(binpack.bound)")
        let spread = try Self.packing(.spread)
        #expect(Double(spread.used) <= spread.bound * 1.10, "\(spread.used) nodes against a bound of \(spread.bound)")
    }
}

/// A seeded generator, so that the quality and random-cluster tests are the same every run.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

