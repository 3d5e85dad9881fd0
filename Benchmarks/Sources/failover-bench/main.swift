// Failover of the controllers on etcd: the time from kill -9 of the leader
// to the first placement made by the next one, over TRIALS trials (20 by
// default), each on a fresh 3-member etcd cluster (loopback) with three
// berth-controller processes (--leader-lease 2) and one hollow node this
// program registers and keeps heartbeating (placements need a ready node;
// no agent runs, so nothing is started, only placed).
//
// In a trial: service web has one replica; the leader is killed; at once
// web is scaled to 2 through whichever controller takes it (berth's way:
// redirects followed), and the replicas are read every 10 ms until slot 2
// has a node. The lease is the floor: a new leader cannot be elected before
// the old one's lease expires.
//
//   BERTH_BIN=../.build/debug swift run -c release failover-bench [TRIALS]
import BerthAPI
import BerthTransport
import Foundation
import GRPCCore
import Logging

let trials = CommandLine.arguments.dropFirst().compactMap { Int($0) }.first ?? 20
let bin = ProcessInfo.processInfo.environment["BERTH_BIN"] ?? "../.build/debug"
let lease = 2

func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

func start(_ executable: String, _ arguments: [String], log: URL) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    FileManager.default.createFile(atPath: log.path, contents: nil)
    let handle = try FileHandle(forWritingTo: log)
    process.standardOutput = handle
    process.standardError = handle
    try process.run()
    return process
}

func waitFor(_ log: URL, _ text: String, _ process: Process) async throws {
    let deadline = ContinuousClock.now + .seconds(30)
    while !((try? String(contentsOf: log, encoding: .utf8))?.contains(text) ?? false) {
        guard process.isRunning, ContinuousClock.now < deadline else { throw BenchError("\(log.lastPathComponent): no \"\(text)\"") }
        try await Task.sleep(for: .milliseconds(20))
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

/// Runs `body` with a client of the controller at `address`, a call at most `timeout` long.
func call<R: Sendable>(_ address: String, timeout: Duration = .seconds(2), _ body: @Sendable (GRPCClient<NGHTTP2ClientTransport>, CallOptions) async throws -> R)
    async throws -> R
{
    var logger = Logger(label: "bench")
    logger.logLevel = .critical
    let transport = NGHTTP2ClientTransport(config: .init(address: try TransportAddress(parsing: address), connectTimeout: .seconds(1)), logger: logger)
    var options = CallOptions.defaults
    options.timeout = timeout
    return try await withGRPCClient(transport: transport) { client in try await body(client, options) }
}

/// Asks each controller in turn, following a redirect, until one takes `body`.
func onLeader<R: Sendable>(_ controllers: [String], _ body: @escaping @Sendable (GRPCClient<NGHTTP2ClientTransport>, CallOptions) async throws -> R)
    async throws -> R
{
    var queue = controllers
    var lastError: (any Error)?
    while !queue.isEmpty {
        let address = queue.removeFirst()
        do {
            return try await call(address, body)
        } catch let error as RPCError {
            lastError = error
            if let leader = error.metadata[stringValues: "berth-redirect"].first(where: { _ in true }) { queue.insert(leader, at: 0) }
        } catch {
            lastError = error
        }
    }
    throw lastError ?? BenchError("no controller")
}

let nodeID = String(repeating: "ab", count: 16)

/// The hollow node: registers, then heartbeats every 200 ms with whichever controller leads.
func hollowNode(_ controllers: [String]) async {
    while !Task.isCancelled {
        _ = try? await onLeader(controllers) { client, options in
            let nodes = Berth_Controller_V1_Nodes.Client(wrapping: client)
            let reply = try await nodes.heartbeat(.with { $0.id = nodeID }, options: options)
            if !reply.known {
                _ = try await nodes.register(
                    .with {
                        $0.id = nodeID
                        $0.hostname = "hollow"
                        $0.address = "127.0.0.1:9"
                        $0.capacity = .with {
                            $0.milliCpu = 64_000
                            $0.memoryBytes = 256 << 30
                        }
                        $0.allocatable = $0.capacity
                        $0.agentVersion = "bench"
                    }, options: options)
            }
        }
        try? await Task.sleep(for: .milliseconds(200))
    }
}

func trial(_ number: Int) async throws -> Double {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-failover-bench-\(getpid())-\(number)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    var processes: [Process] = []
    defer {
        for process in processes where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }
    let ports = (0..<3).map { _ in (client: freePort(), peer: freePort()) }
    let cluster = ports.enumerated().map { "m\($0.offset)=http://127.0.0.1:\($0.element.peer)" }.joined(separator: ",")
    for (i, port) in ports.enumerated() {
        let log = directory.appendingPathComponent("etcd\(i).log")
        processes.append(
            try start(
                "/usr/bin/etcd",
                [
                    "--name", "m\(i)", "--data-dir", directory.appendingPathComponent("etcd\(i)").path,
                    "--listen-client-urls", "http://127.0.0.1:\(port.client)", "--advertise-client-urls", "http://127.0.0.1:\(port.client)",
                    "--listen-peer-urls", "http://127.0.0.1:\(port.peer)", "--initial-advertise-peer-urls", "http://127.0.0.1:\(port.peer)",
                    "--initial-cluster", cluster, "--initial-cluster-token", "bench-\(getpid())-\(number)", "--initial-cluster-state", "new",
                    "--heartbeat-interval", "100", "--election-timeout", "1000", "--logger", "zap", "--log-outputs", "stderr",
                ], log: log))
    }
    for i in 0..<3 { try await waitFor(directory.appendingPathComponent("etcd\(i).log"), "serving client traffic", processes[i]) }
    let store = "etcd://" + ports.map { "127.0.0.1:\($0.client)" }.joined(separator: ",")
    var controllers: [String] = []
    for i in 0..<3 {
        let address = "127.0.0.1:\(freePort())"
        controllers.append(address)
        let log = directory.appendingPathComponent("controller\(i).log")
        processes.append(
            try start(
                "\(bin)/berth-controller",
                [
                    "--listen", address, "--data", directory.appendingPathComponent("controller\(i)").path, "--store", store,
                    "--leader-lease", String(lease), "--node-grace", "30",
                ], log: log))
        try await waitFor(log, "listening", processes.last!)
    }
    let node = Task { await hollowNode(controllers) }
    defer { node.cancel() }

    let list = try await onLeader(controllers) { client, options in
        try await Berth_Controller_V1_Controllers.Client(wrapping: client).list(.init(), options: options)
    }
    guard let leader = list.controllers.first(where: \.leader), let index = controllers.firstIndex(of: leader.address) else {
        throw BenchError("no leader")
    }
    let create = Process()
    create.executableURL = URL(fileURLWithPath: "\(bin)/berth")
    create.arguments = ["service", "create", "-d", "--name", "web", "--replicas", "1", "-m", "8m", "busybox", "sleep", "1"]
    create.environment = ["BERTH_CONTROLLER": controllers.joined(separator: ","), "PATH": "/usr/bin:/bin"]
    create.standardOutput = FileHandle.nullDevice
    try create.run()
    create.waitUntilExit()
    guard create.terminationStatus == 0 else { throw BenchError("service create failed") }
    // The first replica placed: the node is known to the leader.
    while try await onLeader(controllers, { client, options in
        try await Berth_Controller_V1_Services.Client(wrapping: client).listReplicas(.with { $0.service = "web" }, options: options).replicas
    }).allSatisfy({ $0.nodeID.isEmpty }) {
        try await Task.sleep(for: .milliseconds(10))
    }

    let process = processes[3 + index]
    let killed = ContinuousClock.now
    kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
    let others = controllers.filter { $0 != leader.address }
    while (try? await onLeader(others, { client, options in
        try await Berth_Controller_V1_Services.Client(wrapping: client).scale(.with {
            $0.service = "web"
            $0.replicas = 2
        }, options: options)
    })) == nil {
        try await Task.sleep(for: .milliseconds(10))
    }
    while true {
        let replicas = try? await onLeader(others) { client, options in
            try await Berth_Controller_V1_Services.Client(wrapping: client).listReplicas(.with { $0.service = "web" }, options: options).replicas
        }
        if let replicas, replicas.contains(where: { $0.slot == 2 && !$0.nodeID.isEmpty }) { break }
        try await Task.sleep(for: .milliseconds(10))
    }
    return seconds(ContinuousClock.now - killed)
}

var results: [Double] = []
print("failover: kill -9 of the leading controller → the first placement by the next one; 3 etcd members, 3 controllers, --leader-lease \(lease)")
for number in 1...trials {
    let took = try await trial(number)
    results.append(took)
    print(String(format: "trial %2d: %.3f s", number, took))
}
let sorted = results.sorted()
let median = sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
print()
print("| trials | lease | median | best | worst | median over the lease |")
print("|---:|---:|---:|---:|---:|---:|")
print(String(format: "| %d | %d s | %.3f s | %.3f s | %.3f s | %.3f s |", trials, lease, median, sorted.first ?? 0, sorted.last ?? 0, median - Double(lease)))
