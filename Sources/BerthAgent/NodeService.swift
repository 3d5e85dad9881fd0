import BerthAPI
public import BerthModel
public import GRPCCore
import Foundation
import SwiftProtobuf

/// `berth.agent.v1.Node`: the agent's build, its host, and live host usage.
public struct NodeService: Berth_Agent_V1_Node.SimpleServiceProtocol {
    private let node: NodeDirectory
    private let counts: @Sendable () async -> (ContainerCounts, Int)

    /// - Parameter counts: containers by state and the number of images, now.
    public init(node: NodeDirectory, counts: @escaping @Sendable () async -> (ContainerCounts, Int) = { (ContainerCounts(), 0) }) {
        self.node = node
        self.counts = counts
    }

    public func version(
        request: Berth_Agent_V1_GetVersionRequest, context: ServerContext
    ) async throws -> Berth_Agent_V1_GetVersionResponse {
        .with { $0.version = node.versionInfo.proto }
    }

    public func info(
        request: Berth_Agent_V1_GetNodeInfoRequest, context: ServerContext
    ) async throws -> Berth_Agent_V1_GetNodeInfoResponse {
        let (containers, images) = await counts()
        return .with { $0.info = node.info(containers: containers, images: images).proto }
    }

    public func watchUsage(
        request: Berth_Agent_V1_WatchNodeUsageRequest, response: RPCWriter<Berth_Agent_V1_WatchNodeUsageResponse>,
        context: ServerContext
    ) async throws {
        let intervalMS = request.intervalMs == 0 ? 1000 : request.intervalMs
        guard intervalMS >= 100 else {
            throw BerthError.invalid("interval \(request.intervalMs) ms: the shortest interval is 100 ms")
        }
        let interval = Duration.milliseconds(Int64(intervalMS))
        var previous = node.probe.cpuTicks
        var sequence: UInt64 = 0
        while request.count == 0 || sequence < UInt64(request.count) {
            if await Cancellation.sleep(for: interval, unless: context.cancellation) {
                throw BerthError(.cancelled, "the call was cancelled")
            }
            let now = node.probe.cpuTicks
            var cpus = 0.0
            if let previous, let now, now.total > previous.total {
                let busy = Double(now.busy &- previous.busy)
                let total = Double(now.total - previous.total)
                cpus = busy / total * Double(node.probe.cpus)
            }
            previous = now
            let memory = node.probe.memory
            sequence += 1
            try await response.write(
                .with {
                    $0.timeUnixNano = Int64(Date().timeIntervalSince1970 * 1e9)
                    $0.cpuUsageCpus = cpus
                    $0.memoryTotalBytes = memory.total
                    $0.memoryAvailableBytes = memory.available
                    $0.loadAverage1M = node.probe.loadAverage1m
                    $0.sequence = sequence
                })
        }
    }
}

/// Helpers for handlers that wait.
enum Cancellation {
    /// Sleeps for `duration`; returns true early if the RPC is cancelled
    /// (client reset, deadline, shutdown) or the task is.
    static func sleep(for duration: Duration, unless handle: ServerContext.RPCCancellationHandle) async -> Bool {
        if handle.isCancelled { return true }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                (try? await Task.sleep(for: duration)) == nil
            }
            group.addTask {
                (try? await handle.cancelled) != nil
            }
            let first = await group.next() ?? true
            group.cancelAll()
            return first || handle.isCancelled
        }
    }
}
