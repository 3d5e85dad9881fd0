import ArgumentParser
import BerthAPI
import BerthLinux
import BerthModel
import BerthTemplate
import FoundationEssentials
import GRPCCore
import SwiftProtobuf
import Synchronization

/// `berth stats`: docker's columns, from the agent's streamed samples. CPU %
/// is the container's share of the host's CPU time between two samples, so
/// even `--no-stream` waits for a second sample (one interval).
struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats", abstract: "Show containers' resource use (all running containers by default).")

    @OptionGroup var agent: AgentOptions
    @Flag(name: .shortAndLong, help: "Show all containers (default shows just running).") var all = false
    @Flag(help: "Print one sample and exit.") var noStream = false
    @Flag(help: "Don't truncate output.") var noTrunc = false
    @Option(
        help: "A Go template ('table {{.Name}}\\t{{.CPUPerc}}'), json (Berth's figures in numbers, one object per container and sample), or table (the default)."
    ) var format: String?
    @Argument(completion: NameCompletion.containers) var containers: [String] = []

    static let interval = 1000

    func run() async throws {
        try Templating.checked { try DockerFormat.validate(format) }
        let output = format
        let (names, all, noStream, noTrunc) = (containers, all, noStream, noTrunc)
        var unlimited = CallOptions.defaults
        unlimited.timeout = nil
        let options = unlimited
        try await agent.connection().withClient { grpc in
            let client = Berth_Agent_V1_Containers.Client(wrapping: grpc)
            let hostMemory = try await Berth_Agent_V1_Node.Client(wrapping: grpc).info(.init()).info.capacity.memoryBytes
            let targets =
                names.isEmpty
                ? try await client.list(.with { $0.all = all }).containers.map(\.id)
                : names
            let board = StatsBoard(order: targets)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for target in targets {
                    group.addTask {
                        let request = Berth_Agent_V1_ContainerStatsRequest.with {
                            $0.container = target
                            $0.stream = true
                            $0.intervalMs = UInt32(Self.interval)
                        }
                        try await client.stats(request, options: options) { response in
                            var seen = 0
                            for try await sample in response.messages {
                                board.record(target, sample)
                                seen += 1
                                if noStream && seen == 2 { return }
                            }
                        }
                    }
                }
                if noStream {
                    try await group.waitForAll()
                    Self.show(board.rows(hostMemory: UInt64(hostMemory)), output: output, noTrunc: noTrunc, clear: false)
                    return
                }
                group.addTask {
                    // The first sample has no CPU % yet; the table starts with the second.
                    try await Task.sleep(for: .milliseconds(Self.interval + 100))
                    while !Task.isCancelled {
                        Self.show(board.rows(hostMemory: UInt64(hostMemory)), output: output, noTrunc: noTrunc, clear: Descriptor.standardOutput.isTerminal)
                        try await Task.sleep(for: .milliseconds(Self.interval))
                    }
                }
                // Shown until interrupted, or until a stream fails (the agent
                // went away): its error ends the command.
                while try await group.next() != nil {}
            }
        }
    }

    static func show(_ rows: [StatsRow], output: String?, noTrunc: Bool, clear: Bool) {
        if output == "json" {
            for row in rows { Console.print((try? BerthJSON.string(row, pretty: false)) ?? "{}") }
            return
        }
        if clear { Console.write(Descriptor.standardOutput, Array("\u{1b}[2J\u{1b}[H".utf8)) }
        // A template that fails on a row says so once per refresh.
        do { try DockerRows.stats(rows, truncate: !noTrunc).print(output) } catch { Console.error("berth: \(error)") }
    }
}

/// One line of `berth stats`, as the table shows it and `--format json` writes it.
struct StatsRow: Codable, Sendable {
    var id: String
    var name: String
    var cpuPercent: Double
    /// Usage minus inactive file cache, as docker shows it.
    var memoryUsage: UInt64
    /// The container's limit, or the host's memory when it has none.
    var memoryLimit: UInt64
    var memoryPercent: Double
    var netRx: UInt64
    var netTx: UInt64
    var blockRead: UInt64
    var blockWrite: UInt64
    var pids: UInt64

    /// docker's formulas: CPU % = Δcontainer / Δhost × online CPUs × 100.
    init(_ sample: Berth_Agent_V1_ContainerStatsResponse, previous: Berth_Agent_V1_ContainerStatsResponse?, hostMemory: UInt64) {
        id = sample.id
        name = sample.name
        cpuPercent = 0
        if let previous, sample.cpu.systemUsageNanos > previous.cpu.systemUsageNanos,
            sample.cpu.usageNanos >= previous.cpu.usageNanos
        {
            let container = Double(sample.cpu.usageNanos - previous.cpu.usageNanos)
            let host = Double(sample.cpu.systemUsageNanos - previous.cpu.systemUsageNanos)
            cpuPercent = container / host * Double(max(1, sample.cpu.onlineCpus)) * 100
        }
        memoryUsage = sample.memory.workingSetBytes
        memoryLimit = sample.memory.limitBytes == 0 ? hostMemory : min(sample.memory.limitBytes, hostMemory)
        memoryPercent = memoryLimit == 0 ? 0 : Double(memoryUsage) / Double(memoryLimit) * 100
        netRx = sample.networks.reduce(0) { $0 + $1.rxBytes }
        netTx = sample.networks.reduce(0) { $0 + $1.txBytes }
        blockRead = sample.blockIo.readBytes
        blockWrite = sample.blockIo.writeBytes
        pids = sample.pids.current
    }
}

/// The latest two samples of each container, for the CPU % between them.
final class StatsBoard: Sendable {
    private let order: [String]
    private let samples = Mutex<[String: (previous: Berth_Agent_V1_ContainerStatsResponse?, latest: Berth_Agent_V1_ContainerStatsResponse)]>([:])

    init(order: [String]) { self.order = order }

    func record(_ target: String, _ sample: Berth_Agent_V1_ContainerStatsResponse) {
        samples.withLock { $0[target] = ($0[target]?.latest, sample) }
    }

    func rows(hostMemory: UInt64) -> [StatsRow] {
        samples.withLock { samples in
            order.compactMap { target in
                samples[target].map { StatsRow($0.latest, previous: $0.previous, hostMemory: hostMemory) }
            }
        }
    }
}
