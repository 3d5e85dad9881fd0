// Placements per second, and how close the placements come to the lower
// bound on nodes (total requests / node capacity), for 150,000 replicas onto
// 5,000 nodes: with the pure scheduler (BerthScheduler: binpack alone, the
// default spread of each service over nodes with binpack second, and a
// spread over zones), then through the controller (services created through its ServiceManager, each checked to
// fit and stored; then one reconcile pass that places every replica and
// commits the placements), on SQLite (one transaction) and on etcd (one
// member on loopback, /usr/bin/etcd; transactions of at most 128
// operations, each fenced as a leader's are), side by side. The
// references are published figures: kube-scheduler's scalability threshold
// (270 pods/s) and Nomad's C1M (3,750 containers/s on average).
//
//   swift run -c release scheduler-bench [NODES] [REPLICAS]
import BerthController
import BerthEtcd
import BerthModel
import BerthScheduler
import BerthTransport
import Foundation
import Logging

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
        SchedulerNode(id: "node-\(i)", labels: ["zone": zones[i % zones.count]], allocatable: ResourceRequest(milliCPU: nodeCPU, memoryBytes: nodeMemory))
    }
}

/// Services of 1–19 replicas (10 on average) with requests drawn from
/// typical sizes, the same every run.
func workload(strategy: PlacementStrategy, spreadLabel: LabelKey? = nil) -> [(PlacementRequest, Int)] {
    var generator = SplitMix(state: 20261129)
    var jobs: [(PlacementRequest, Int)] = []
    var total = 0
    while total < replicaTotal {
        let count = min(Int.random(in: 1...19, using: &generator), replicaTotal - total)
        let request = PlacementRequest(
            service: "svc-\(jobs.count)",
            resources: ResourceRequest(
                milliCPU: [100, 250, 500, 1000, 2000].randomElement(using: &generator)!,
                memoryBytes: [128, 256, 512, 1024, 2048, 4096].randomElement(using: &generator)! << 20),
            strategy: strategy, spreadLabel: spreadLabel)
        jobs.append((request, count))
        total += count
    }
    return jobs
}

func run(_ name: String, strategy: PlacementStrategy, spreadLabel: LabelKey? = nil) throws {
    let jobs = workload(strategy: strategy, spreadLabel: spreadLabel)
    var cluster = Cluster(nodes: nodes())
    let clock = ContinuousClock()
    let started = clock.now
    var placed = 0
    for (request, count) in jobs {
        placed += try Scheduler.place(request, count: count, on: &cluster).count
    }
    let elapsed = seconds(clock.now - started)
    let bound = lowerBound(jobs)
    let rate = Double(placed) / elapsed
    print("| \(name) | \(placed) | \(String(format: "%.2f", elapsed)) | \(Int(rate)) | \(String(format: "%.0f", rate / 270))× | \(String(format: "%.1f", rate / 3_750))× | \(cluster.nodesInUse) | \(Int(bound)) | \(String(format: "%.2f", (Double(cluster.nodesInUse) / bound - 1) * 100))% |")
}

print("\(replicaTotal) replicas onto \(nodeCount) nodes (32 CPUs, 128 GiB each); \(ProcessInfo.processInfo.activeProcessorCount) CPUs")
print()
print("| strategy | placed | seconds | placements/s | vs kube-scheduler 270/s | vs Nomad C1M 3,750/s | nodes used | lower bound | over the bound |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
try run("binpack alone", strategy: .binpack)
try run("each service spread over nodes, binpack second (the default)", strategy: .spread)
try run("spread over 5 zones, then over nodes", strategy: .spread, spreadLabel: .node("zone"))
print()
print("Through the controller: services created by 16 callers at a time (each checked to fit, then stored), then one reconcile pass placing every replica into the store")
print()
print("| store | step | count | seconds | per second | vs kube-scheduler 270/s | vs Nomad C1M 3,750/s | nodes used | lower bound | over the bound |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
try await throughController(.sqlite)
if FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd") {
    try await throughController(.etcd)
} else {
    print("| etcd | (not run: /usr/bin/etcd is missing; apt-get install etcd-server) | | | | | | | | |")
}

/// Nodes the requests need at the least: their total over one node's capacity, on the scarcer resource.
func lowerBound(_ jobs: [(PlacementRequest, Int)]) -> Double {
    let cpu = jobs.reduce(0) { $0 + Double($1.0.resources.milliCPU) * Double($1.1) }
    let memory = jobs.reduce(0) { $0 + Double($1.0.resources.memoryBytes) * Double($1.1) }
    return max(cpu / Double(nodeCPU), memory / Double(nodeMemory)).rounded(.up)
}

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

/// The workload through the controller and its store, placed as services
/// are by default (spread over nodes, binpack second).
enum BenchStore: String { case sqlite, etcd }

/// One etcd member on loopback in a scratch directory, for as long as `body` runs.
func withEtcd<T>(_ directory: URL, _ body: (String) async throws -> T) async throws -> T {
    let port = 20_000 + Int(getpid() % 20_000)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/etcd")
    let log = directory.appendingPathComponent("etcd.log")
    FileManager.default.createFile(atPath: log.path, contents: nil)
    let handle = try FileHandle(forWritingTo: log)
    process.standardError = handle
    process.standardOutput = handle
    process.arguments = [
        "--data-dir", directory.appendingPathComponent("etcd").path, "--listen-client-urls", "http://127.0.0.1:\(port)",
        "--advertise-client-urls", "http://127.0.0.1:\(port)", "--listen-peer-urls", "http://127.0.0.1:\(port + 1)",
        "--initial-advertise-peer-urls", "http://127.0.0.1:\(port + 1)", "--initial-cluster", "default=http://127.0.0.1:\(port + 1)",
        "--logger", "zap", "--log-outputs", "stderr",
    ]
    try process.run()
    defer {
        process.terminate()
        process.waitUntilExit()
    }
    let deadline = ContinuousClock.now + .seconds(30)
    while !((try? String(contentsOf: log, encoding: .utf8))?.contains("serving client traffic") ?? false) {
        guard process.isRunning, ContinuousClock.now < deadline else { throw BerthError(.unavailable, "etcd did not start; see \(log.path)") }
        try await Task.sleep(for: .milliseconds(50))
    }
    return try await body("127.0.0.1:\(port)")
}

func throughController(_ kind: BenchStore) async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-controller-bench-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    var logger = Logger(label: "bench")
    logger.logLevel = .error
    switch kind {
    case .sqlite:
        try await throughController(kind, store: try SQLiteControllerStore(path: directory.appendingPathComponent("controller.db").path), logger: logger)
    case .etcd:
        try await withEtcd(directory) { endpoint in
            let client = EtcdClient(endpoints: [try TransportAddress(parsing: endpoint)], tls: nil, logger: logger)
            defer { client.close() }
            // Fenced as a leader's writes are: a key this run made, at its create revision.
            let key = "/berth/election/bench"
            _ = try await client.put(key, Array("bench".utf8))
            let created = try await client.range(key).values.first?.createRevision ?? 0
            try await throughController(kind, store: EtcdControllerStore(client: client, fence: .created(key, at: created)), logger: logger)
        }
    }
}

func throughController(_ kind: BenchStore, store: any ControllerStore, logger: Logger) async throws {
    let clock = ContinuousClock()
    let writer = StoreWriter(store: store)
    let contents = try await store.load()
    let registry = NodeRegistry(contents: contents, writer: writer, grace: .seconds(3600), heartbeatInterval: .seconds(60), logger: logger)
    let capacity = NodeCapacity(cpus: Int(nodeCPU / 1000), memoryBytes: nodeMemory)
    // Agents register at once, as they do when a controller starts.
    try await withThrowingTaskGroup(of: Void.self) { group in
        for (i, node) in nodes().enumerated() {
            group.addTask {
                _ = try await registry.register(
                    id: String(format: "%032x", i), hostname: node.id, address: "10.\(i / 65536).\(i / 256 % 256).\(i % 256):7440",
                    labels: node.labels, capacity: capacity, allocatable: capacity, agentVersion: "bench")
            }
        }
        try await group.waitForAll()
    }
    let clusterNodes = await registry.list()
    let services = ServiceManager(contents: contents, writer: writer, logger: logger)
    let jobs = workload(strategy: .spread)
    let specs = jobs.map { request, count in
        var container = ContainerSpec(image: "busybox")
        container.resources.cpus = CPUQuantity(nanoCPUs: request.resources.milliCPU * 1_000_000)
        container.resources.memory = ByteSize(bytes: request.resources.memoryBytes)
        return ServiceSpec(name: request.service, replicas: count, container: container)
    }

    let createStart = clock.now
    // 16 operators at a time, each waiting for its service to be stored.
    try await withThrowingTaskGroup(of: Void.self) { group in
        for (index, spec) in specs.enumerated() {
            if index >= 16 { try await group.next() }
            group.addTask { _ = try await services.create(spec, nodes: clusterNodes, dryRun: false) }
        }
        try await group.waitForAll()
    }
    let createSeconds = seconds(clock.now - createStart)
    let passStart = clock.now
    _ = await services.plan(nodes: clusterNodes)
    let passSeconds = seconds(clock.now - passStart)

    let stored = try await store.load().replicas
    let total = jobs.reduce(0) { $0 + $1.1 }
    precondition(stored.count == total, "every replica placed and stored")
    let bound = lowerBound(jobs)
    let nodesUsed = Set(stored.map(\.nodeID)).count
    let rate = Double(stored.count) / passSeconds
    print("| \(kind) | service create (fit check, stored) | \(specs.count) | \(String(format: "%.2f", createSeconds)) | \(Int(Double(specs.count) / createSeconds)) | | | | | |")
    print("| \(kind) | reconcile pass (placement, stored) | \(stored.count) | \(String(format: "%.2f", passSeconds)) | \(Int(rate)) | \(String(format: "%.0f", rate / 270))× | \(String(format: "%.1f", rate / 3_750))× | \(nodesUsed) | \(Int(bound)) | \(String(format: "%.2f", (Double(nodesUsed) / bound - 1) * 100))% |")
}
