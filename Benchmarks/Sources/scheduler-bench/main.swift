// Placements per second of BerthScheduler, and how close binpack comes to
// the lower bound on nodes (total requests / node capacity), for 150,000
// replicas onto 5,000 nodes. The references are published figures:
// kube-scheduler's scalability threshold (270 pods/s) and Nomad's C1M
// (3,750 containers/s on average).
//
//   swift run -c release scheduler-bench [NODES] [REPLICAS]
import BerthModel
import BerthScheduler
import Foundation

struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let nodeCount = arguments.first ?? 5_000
let replicaTotal = arguments.dropFirst().first ?? 150_000
let nodeCPU: Int64 = 32_000
let nodeMemory: Int64 = 128 << 30
let zones = ["a", "b", "c", "d", "e"]

func nodes() -> [SchedulerNode] {
    (0..<nodeCount).map { i in
        SchedulerNode(id: "node-\(i)", labels: ["zone": zones[i % zones.count]], allocatable: Resources2D(milliCPU: nodeCPU, memoryBytes: nodeMemory))
    }
}

/// Services of 1–19 replicas (10 on average) with requests drawn from
/// typical sizes, the same every run.
func workload(strategy: PlacementStrategy) -> [(PlacementRequest, Int)] {
    var generator = SplitMix(state: 20261129)
    var jobs: [(PlacementRequest, Int)] = []
    var total = 0
    while total < replicaTotal {
        let count = min(Int.random(in: 1...19, using: &generator), replicaTotal - total)
        let request = PlacementRequest(
            service: "svc-\(jobs.count)",
            resources: Resources2D(
                milliCPU: [100, 250, 500, 1000, 2000].randomElement(using: &generator)!,
                memoryBytes: [128, 256, 512, 1024, 2048, 4096].randomElement(using: &generator)! << 20),
            strategy: strategy)
        jobs.append((request, count))
        total += count
    }
    return jobs
}

func run(_ name: String, strategy: PlacementStrategy) throws {
    let jobs = workload(strategy: strategy)
    var cluster = Cluster(nodes: nodes())
    let clock = ContinuousClock()
    let started = clock.now
    var placed = 0
    for (request, count) in jobs {
        placed += try Scheduler.place(request, count: count, on: &cluster).count
    }
    let elapsed = clock.now - started
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let cpu = jobs.reduce(0) { $0 + Double($1.0.resources.milliCPU) * Double($1.1) }
    let memory = jobs.reduce(0) { $0 + Double($1.0.resources.memoryBytes) * Double($1.1) }
    let bound = max(cpu / Double(nodeCPU), memory / Double(nodeMemory)).rounded(.up)
    let rate = Double(placed) / seconds
    print("| \(name) | \(placed) | \(String(format: "%.2f", seconds)) | \(Int(rate)) | \(String(format: "%.0f", rate / 270))× | \(String(format: "%.1f", rate / 3_750))× | \(cluster.nodesInUse) | \(Int(bound)) | \(String(format: "%.2f", (Double(cluster.nodesInUse) / bound - 1) * 100))% |")
}

print("\(replicaTotal) replicas onto \(nodeCount) nodes (32 CPUs, 128 GiB each); \(ProcessInfo.processInfo.activeProcessorCount) CPUs")
print()
print("| strategy | placed | seconds | placements/s | vs kube-scheduler 270/s | vs Nomad C1M 3,750/s | nodes used | lower bound | over the bound |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
try run("binpack", strategy: .binpack)
try run("spread over 5 zones", strategy: .spread(label: "zone"))
