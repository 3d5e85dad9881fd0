import BerthAPI
import BerthCgroups
import BerthLinux
import BerthModel
public import BerthRuntime
import BerthShimProtocol
import BerthTransport
public import GRPCCore
import Foundation
import SwiftProtobuf

/// `berth.agent.v1.Containers`: a thin adapter from the wire to the supervisor.
public struct ContainersService: Berth_Agent_V1_Containers.SimpleServiceProtocol {
    let supervisor: ContainerSupervisor
    let runtime: any ContainerRuntime
    let environment: RuntimeEnvironment
    let stats: StatsReader

    public init(supervisor: ContainerSupervisor, runtime: any ContainerRuntime, environment: RuntimeEnvironment, stats: StatsReader) {
        self.supervisor = supervisor
        self.runtime = runtime
        self.environment = environment
        self.stats = stats
    }

    public func create(request: Berth_Agent_V1_CreateContainerRequest, context: ServerContext) async throws -> Berth_Agent_V1_CreateContainerResponse {
        let (container, warnings) = try await supervisor.create(try ContainerSpec(proto: request.spec))
        guard request.start else {
            return .with {
                $0.id = container.id.rawValue
                $0.warnings = warnings
            }
        }
        return await start(container, warnings: warnings)
    }

    /// Starts a container just created; a failure to start is in the answer.
    private func start(_ container: Container, warnings: [String], attaching: Bool = false) async -> Berth_Agent_V1_CreateContainerResponse {
        do {
            let (started, startWarnings) = try await supervisor.start(container.id.rawValue, attaching: attaching)
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
        try await supervisor.remove(request.container, force: request.force, volumes: request.removeVolumes)
        return .init()
    }

    public func wait(request: Berth_Agent_V1_WaitContainerRequest, context: ServerContext) async throws -> Berth_Agent_V1_WaitContainerResponse {
        try await supervisor.wait(request.container).exitProto
    }

    public func run(
        request: Berth_Agent_V1_RunContainerRequest, response: RPCWriter<Berth_Agent_V1_RunContainerResponse>, context: ServerContext
    ) async throws {
        var spec = try ContainerSpec(proto: request.spec)
        try ContainerSpec.checkAutoRemove(request.remove, restartPolicy: spec.restartPolicy)
        // Removed here, once the output is sent, not at the exit.
        spec.autoRemove = false
        let (created, warnings) = try await supervisor.create(spec)
        let id = created.id
        let supervisor = self.supervisor
        let remove = request.remove
        let runtime = self.runtime
        do {
            try await untilRPCCancelled {
                // The shim holds the output until this call attaches or
                // releases it: nothing is read before the caller can have it.
                let started = await start(created, warnings: warnings, attaching: true)
                guard started.startError.isEmpty else {
                    try await response.write(.with { $0.started = started })
                    if remove { try await supervisor.remove(id.rawValue, force: true, volumes: true) }
                    return
                }
                // The output from its shim, as it is read: every byte,
                // whatever the log's rotation does; a slow caller slows the
                // container. Attached before the caller is told of the start.
                try await runtime.followOutput(id, attached: { try await response.write(.with { $0.started = started }) }) { chunk in
                    try await response.write(
                        .with {
                            $0.output = .with { o in
                                switch chunk {
                                case .stdout(let bytes):
                                    o.stream = .stdout
                                    o.line = Data(bytes)
                                case .stderr(let bytes):
                                    o.stream = .stderr
                                    o.line = Data(bytes)
                                }
                            }
                        })
                }
                let exited = try await supervisor.wait(id.rawValue)
                try await response.write(.with { $0.exited = exited.exitProto })
                if remove { try await supervisor.remove(id.rawValue, force: true, volumes: true) }
            }
        } catch {
            // The caller went away (or the stream broke): the container's
            // output goes to its log from now on, and --rm still holds.
            await runtime.release(id)
            if remove { await supervisor.removeWhenExited(id) }
            throw error
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
                case "health":
                    for value in filter.values where value != "none" && HealthStatus(rawValue: value) == nil {
                        throw BerthError.invalid("filter health=\(value): expected starting, healthy, unhealthy or none")
                    }
                    return filter.values.contains(c.status.health?.status.rawValue ?? "none")
                case "label":
                    return filter.values.contains { c.spec.labels.matches(labelFilter: $0) }
                default: throw BerthError.invalid("filter \"\(filter.key)\": supported filters are name, id, status, health and label")
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

    public func top(request: Berth_Agent_V1_TopContainerRequest, context: ServerContext) async throws -> Berth_Agent_V1_TopContainerResponse {
        let table = try await stats.top(try await supervisor.inspect(request.container), options: request.psArgs)
        return .with {
            $0.titles = table.titles
            $0.processes = table.processes.map { row in .with { $0.fields = row } }
        }
    }

    public func exec(
        request: RPCAsyncSequence<Berth_Agent_V1_ExecRequest, any Error>, response: RPCWriter<Berth_Agent_V1_ExecResponse>,
        context: ServerContext
    ) async throws {
        let requests = RequestIterator(request.makeAsyncIterator())
        guard let first = try await requests.next(), case .start(let start)? = first.request else {
            throw BerthError.invalid("the first message of an exec must be its start (ExecSpec)")
        }
        let spec = ExecRequestSpec(
            command: start.command, env: start.env, workingDir: start.hasWorkingDir ? start.workingDir : nil,
            user: start.hasUser ? start.user : nil, tty: start.tty, attachStdin: start.attachStdin,
            rows: UInt16(clamping: start.ttyRows), columns: UInt16(clamping: start.ttyColumns))
        for entry in spec.env where !entry.contains("=") || entry.hasPrefix("=") {
            throw BerthError.invalid("environment entry \"\(entry)\": expected KEY=VALUE")
        }
        let (container, targetPID) = try await supervisor.execTarget(start.container)
        let process = try await runtime.exec(container.id, mainPID: targetPID, spec)
        let command = spec.command.joined(separator: " ")
        await supervisor.recordExec(.execStart, container, ["execID": process.id, "command": command])
        let supervisor = self.supervisor
        /// The process's end, in the event log; its exit code.
        func ended() async -> Int32 {
            let code = await process.exitCode()
            await supervisor.recordExec(.execDie, container, ["execID": process.id, "command": command, "exitCode": String(code)])
            return code
        }
        do {
            try await untilRPCCancelled {
                try await withTaskCancellationHandler {
                    try await Self.relay(process, requests: requests, response: response)
                } onCancel: {
                    process.kill()
                }
            }
        } catch {
            // The client went away, or the stream broke: the process ends with it.
            process.kill()
            _ = await ended()
            throw error
        }
        let code = await ended()
        try await response.write(.with { $0.exitCode = code })
    }

    /// Client messages to the process (stdin, its end, terminal size), the
    /// process's output to the client, until the process has ended.
    private static func relay(
        _ process: ExecProcess, requests: RequestIterator<Berth_Agent_V1_ExecRequest>, response: RPCWriter<Berth_Agent_V1_ExecResponse>
    ) async throws {
        try await response.write(.with { $0.execID = process.id })
        let output = process.output()
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                while let message = try await requests.next() {
                    switch message.request {
                    case .stdin(let bytes): try await process.write([UInt8](bytes))
                    case .closeStdin: process.closeInput()
                    case .resize(let size): process.resize(rows: UInt16(clamping: size.rows), columns: UInt16(clamping: size.columns))
                    case .start, nil: throw BerthError.invalid("an exec is started once, by its first message")
                    }
                }
                // The client has nothing more to send: the process's stdin ends.
                process.closeInput()
                return false
            }
            group.addTask {
                for await chunk in output {
                    switch chunk {
                    case .stdout(let bytes): try await response.write(.with { $0.stdout = Data(bytes) })
                    case .stderr(let bytes): try await response.write(.with { $0.stderr = Data(bytes) })
                    case .exit: return true
                    }
                }
                // The output ended without the exit: the relay was cancelled.
                throw CancellationError()
            }
            // Done when the process has ended and its output is sent; a bad
            // client message ends the exec at once.
            while let outputDone = try await group.next() {
                if outputDone {
                    group.cancelAll()
                    return
                }
            }
        }
    }

    public func logs(
        request: Berth_Agent_V1_ContainerLogsRequest, response: RPCWriter<Berth_Agent_V1_ContainerLogsResponse>, context: ServerContext
    ) async throws {
        let container = try await supervisor.inspect(request.container)
        let reader = ContainerLogReader(path: environment.logFile(container.id))
        let supervisor = self.supervisor
        let id = container.id
        try await untilRPCCancelled {
            try await Self.streamLogs(reader: reader, request: request, supervisor: supervisor, id: id) { try await response.write(contentsOf: $0) }
        }
    }

    private static func streamLogs(
        reader: ContainerLogReader, request: Berth_Agent_V1_ContainerLogsRequest, supervisor: ContainerSupervisor, id: ContainerID,
        write: ([Berth_Agent_V1_ContainerLogsResponse]) async throws -> Void
    ) async throws {
        try await reader.stream(
            tail: request.hasTail ? Int(request.tail) : nil, since: request.hasSince ? request.since.date : nil,
            until: request.hasUntil ? request.until.date : nil, follow: request.follow,
            isRunning: { (try? await supervisor.inspect(id.rawValue).status.state.isActive) ?? false },
            waitForChange: { await supervisor.waitForStop(id, timeout: .milliseconds(50)) },
            notice: { notice in
                switch notice {
                case .filesLost(let count):
                    try await write([
                        .with {
                            $0.notice = "\(count) rotated log file\(count == 1 ? " was" : "s were") removed before this reader got to \(count == 1 ? "it" : "them"); the lines in \(count == 1 ? "it" : "them") are missing here"
                        }
                    ])
                }
            }
        ) { lines in
            try await write(
                lines.map { line in
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
        let reader = stats
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

/// A client stream's iterator, handed from the handler (which reads the
/// first message) to the one task that reads the rest: never used by two
/// tasks at once.
final class RequestIterator<Message: Sendable>: @unchecked Sendable {
    private var iterator: RPCAsyncSequence<Message, any Error>.AsyncIterator

    init(_ iterator: RPCAsyncSequence<Message, any Error>.AsyncIterator) { self.iterator = iterator }

    func next() async throws -> Message? { try await iterator.next() }
}

