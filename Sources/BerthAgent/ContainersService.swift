import BerthAPI
import BerthCgroups
import BerthModel
public import GRPCCore
import Foundation
import SwiftProtobuf

/// `berth.agent.v1.Containers`: a thin adapter from the wire to the supervisor.
public struct ContainersService: Berth_Agent_V1_Containers.SimpleServiceProtocol {
    let supervisor: ContainerSupervisor
    let environment: RuntimeEnvironment

    public init(supervisor: ContainerSupervisor, environment: RuntimeEnvironment) {
        self.supervisor = supervisor
        self.environment = environment
    }

    public func create(request: Berth_Agent_V1_CreateContainerRequest, context: ServerContext) async throws -> Berth_Agent_V1_CreateContainerResponse {
        let (container, warnings) = try await supervisor.create(try ContainerSpec(proto: request.spec))
        guard request.start else {
            return .with {
                $0.id = container.id.rawValue
                $0.warnings = warnings
            }
        }
        do {
            let (started, startWarnings) = try await supervisor.start(container.id.rawValue)
            return .with {
                $0.id = container.id.rawValue
                $0.warnings = warnings + startWarnings
                $0.container = started.proto
            }
        } catch {
            // The container exists: say so, with why it did not start.
            let current = (try? await supervisor.inspect(container.id.rawValue)) ?? container
            return .with {
                $0.id = container.id.rawValue
                $0.warnings = warnings
                $0.container = current.proto
                $0.startError = (error as? BerthError)?.message ?? "\(error)"
            }
        }
    }

    public func start(request: Berth_Agent_V1_StartContainerRequest, context: ServerContext) async throws -> Berth_Agent_V1_StartContainerResponse {
        let (container, warnings) = try await supervisor.start(request.container)
        return .with {
            $0.container = container.proto
            $0.warnings = warnings
        }
    }

    public func stop(request: Berth_Agent_V1_StopContainerRequest, context: ServerContext) async throws -> Berth_Agent_V1_StopContainerResponse {
        let container = try await supervisor.stop(request.container, timeout: request.hasTimeoutSeconds ? Int(request.timeoutSeconds) : nil)
        return .with { $0.container = container.proto }
    }

    public func kill(request: Berth_Agent_V1_KillContainerRequest, context: ServerContext) async throws -> Berth_Agent_V1_KillContainerResponse {
        let signal = request.signal.isEmpty ? Signal.kill : try Signal(parsing: request.signal)
        try await supervisor.kill(request.container, signal: signal)
        return .init()
    }

    public func pause(request: Berth_Agent_V1_PauseContainerRequest, context: ServerContext) async throws -> Berth_Agent_V1_PauseContainerResponse {
        try await supervisor.pause(request.container)
        return .init()
    }

    public func resume(request: Berth_Agent_V1_ResumeContainerRequest, context: ServerContext) async throws -> Berth_Agent_V1_ResumeContainerResponse {
        try await supervisor.resume(request.container)
        return .init()
    }

    public func remove(request: Berth_Agent_V1_RemoveContainerRequest, context: ServerContext) async throws -> Berth_Agent_V1_RemoveContainerResponse {
        try await supervisor.remove(request.container, force: request.force)
        return .init()
    }

    public func wait(request: Berth_Agent_V1_WaitContainerRequest, context: ServerContext) async throws -> Berth_Agent_V1_WaitContainerResponse {
        let container = try await supervisor.wait(request.container)
        return .with {
            $0.exitCode = container.status.exitCode ?? 0
            $0.signal = container.status.signal?.name ?? ""
            $0.reason = container.status.reason?.rawValue ?? ""
            $0.error = container.status.error ?? ""
        }
    }

    public func inspect(request: Berth_Agent_V1_InspectContainerRequest, context: ServerContext) async throws -> Berth_Agent_V1_InspectContainerResponse {
        let container = try await supervisor.inspect(request.container)
        return .with { $0.container = container.proto }
    }

    public func list(request: Berth_Agent_V1_ListContainersRequest, context: ServerContext) async throws -> Berth_Agent_V1_ListContainersResponse {
        var containers = await supervisor.list(all: request.all)
        for filter in request.filters {
            containers = try containers.filter { c in
                switch filter.key {
                case "name": return filter.values.contains { c.name.contains($0) }
                case "id": return filter.values.contains { c.id.rawValue.hasPrefix($0) }
                case "status": return filter.values.contains(c.status.state.rawValue)
                case "label":
                    return filter.values.contains { v in
                        let kv = v.split(separator: "=", maxSplits: 1).map(String.init)
                        return kv.count == 2 ? c.spec.labels[kv[0]] == kv[1] : c.spec.labels[kv[0]] != nil
                    }
                default: throw BerthError.invalid("filter \"\(filter.key)\": supported filters are name, id, status and label")
                }
            }
        }
        return .with { $0.containers = containers.map(\.proto) }
    }

    public func update(request: Berth_Agent_V1_UpdateContainerRequest, context: ServerContext) async throws -> Berth_Agent_V1_UpdateContainerResponse {
        let policy = request.restartPolicy.isEmpty ? nil : try RestartPolicy(parsing: request.restartPolicy)
        let container = try await supervisor.update(request.container, resources: try Resources(proto: request.resources), restartPolicy: policy)
        return .with { $0.container = container.proto }
    }

    public func exec(
        request: RPCAsyncSequence<Berth_Agent_V1_ExecRequest, any Error>, response: RPCWriter<Berth_Agent_V1_ExecResponse>,
        context: ServerContext
    ) async throws {
        throw RPCError(code: .unimplemented, message: "berth.agent.v1.Containers/Exec is not implemented by this agent yet")
    }

    public func logs(
        request: Berth_Agent_V1_ContainerLogsRequest, response: RPCWriter<Berth_Agent_V1_ContainerLogsResponse>, context: ServerContext
    ) async throws {
        let container = try await supervisor.inspect(request.container)
        let reader = ContainerLogReader(path: environment.logFile(container.id))
        let supervisor = self.supervisor
        let id = container.id
        try await untilRPCCancelled {
            try await Self.streamLogs(reader: reader, request: request, supervisor: supervisor, id: id, response: response)
        }
    }

    private static func streamLogs(
        reader: ContainerLogReader, request: Berth_Agent_V1_ContainerLogsRequest, supervisor: ContainerSupervisor, id: ContainerID,
        response: RPCWriter<Berth_Agent_V1_ContainerLogsResponse>
    ) async throws {
        try await reader.stream(
            tail: request.hasTail ? Int(request.tail) : nil, since: request.hasSince ? request.since.date : nil,
            until: request.hasUntil ? request.until.date : nil, follow: request.follow,
            isRunning: { (try? await supervisor.inspect(id.rawValue).status.state.isActive) ?? false },
            waitForChange: { await supervisor.waitForStop(id, timeout: .milliseconds(50)) }
        ) { lines in
            try await response.write(
                contentsOf: lines.map { line in
                    .with {
                        $0.stream = line.stream == .stdout ? .stdout : .stderr
                        $0.time = Google_Protobuf_Timestamp(date: line.time)
                        $0.line = Data(line.text + (line.complete ? [UInt8(ascii: "\n")] : []))
                    }
                })
        }
    }

    public func stats(
        request: Berth_Agent_V1_ContainerStatsRequest, response: RPCWriter<Berth_Agent_V1_ContainerStatsResponse>, context: ServerContext
    ) async throws {
        let container = try await supervisor.inspect(request.container)
        let reader = supervisor.statsReader
        guard request.stream else {
            try await response.write(reader.sample(container).proto)
            return
        }
        let interval = Duration.milliseconds(request.intervalMs == 0 ? 1000 : max(100, Int(request.intervalMs)))
        let supervisor = self.supervisor
        let id = container.id.rawValue
        try await untilRPCCancelled {
            while true {
                // The stream ends when the container is removed.
                guard let current = try? await supervisor.inspect(id) else { return }
                try await response.write(reader.sample(current).proto)
                try await Task.sleep(for: interval)
            }
        }
    }
}

extension ContainerSample {
    var proto: Berth_Agent_V1_ContainerStatsResponse {
        .with {
            $0.id = container.id.rawValue
            $0.name = container.name
            $0.time = Google_Protobuf_Timestamp(date: time)
            $0.cpu = .with {
                $0.usageNanos = cgroup.cpuUsageNanos
                $0.userNanos = cgroup.cpuUserNanos
                $0.systemNanos = cgroup.cpuSystemNanos
                $0.periods = cgroup.cpuPeriods
                $0.throttledPeriods = cgroup.cpuThrottledPeriods
                $0.throttledNanos = cgroup.cpuThrottledNanos
                $0.onlineCpus = UInt32(onlineCPUs)
                $0.systemUsageNanos = hostCPUNanos
            }
            $0.memory = .with {
                $0.usageBytes = cgroup.memoryUsage
                $0.workingSetBytes = cgroup.memoryWorkingSet
                $0.rssBytes = cgroup.memoryRSS
                $0.cacheBytes = cgroup.memoryCache
                $0.limitBytes = cgroup.memoryLimit
                $0.oomEvents = cgroup.oomEvents
                $0.oomKills = cgroup.oomKills
                $0.swapBytes = cgroup.memorySwap
            }
            $0.pids = .with {
                $0.current = cgroup.pidsCurrent
                $0.limit = cgroup.pidsLimit
            }
            $0.networks = networks.map { n in
                .with {
                    $0.interface = n.name
                    $0.rxBytes = n.rxBytes
                    $0.rxPackets = n.rxPackets
                    $0.txBytes = n.txBytes
                    $0.txPackets = n.txPackets
                }
            }
            $0.blockIo = .with {
                $0.readBytes = cgroup.ioReadBytes
                $0.writeBytes = cgroup.ioWriteBytes
            }
        }
    }
}
