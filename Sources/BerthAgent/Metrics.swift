import BerthCgroups
import BerthLinux
import BerthModel
import Foundation
public import GRPCCore
import Prometheus

/// The agent's own counters: RPCs by method and code with their durations,
/// and watches cut off behind the event log's retention.
public final class AgentMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    /// Seconds: 100 µs … 10 s (streams that last longer land in +Inf).
    static let rpcBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .seconds(2.5), .seconds(10),
    ]

    public init() {
        // Present from the first scrape, so that rate() has a start.
        _ = watchesBehind
        _ = probeDelay
        _ = probeDuration
        _ = probes(passed: true)
        _ = probes(passed: false)
    }

    func watchGapped() { watchesBehind.increment() }

    var watchesBehind: Counter {
        registry.makeCounter(
            descriptor: .init(
                namespace: "berth", metricName: "event_watches_behind", unitName: "total",
                helpText: "Event watches ended with FAILED_PRECONDITION because they asked for revisions older than the log keeps."))
    }

    func rpcFinished(method: String, code: String, after duration: Duration) {
        registry.makeCounter(
            descriptor: .init(
                namespace: "berth", metricName: "rpc_requests", unitName: "total",
                helpText: "gRPC calls the agent finished, by method and status code."),
            labels: [("method", method), ("code", code)]
        ).increment()
        registry.makeDurationHistogram(
            descriptor: .init(
                namespace: "berth", metricName: "rpc_duration", unitName: "seconds",
                helpText: "Time from a call's arrival to its last message, by method."),
            labels: [("method", method)], buckets: Self.rpcBuckets
        ).record(duration)
    }

    /// Seconds: 100 µs … 60 s, for health probes and their lateness.
    static let probeBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30),
        .seconds(60),
    ]

    private var probeDelay: DurationHistogram {
        registry.makeDurationHistogram(
            descriptor: .init(
                namespace: "berth", metricName: "health_probe_delay", unitName: "seconds",
                helpText: "Time from a health probe's due time to its start."),
            buckets: Self.probeBuckets)
    }

    private var probeDuration: DurationHistogram {
        registry.makeDurationHistogram(
            descriptor: .init(
                namespace: "berth", metricName: "health_probe_duration", unitName: "seconds",
                helpText: "Time a health probe took, from its start to its exit and output read."),
            buckets: Self.probeBuckets)
    }

    private func probes(passed: Bool) -> Counter {
        registry.makeCounter(
            descriptor: .init(namespace: "berth", metricName: "health_probes", unitName: "total", helpText: "Health probes run, by result."),
            labels: [("result", passed ? "success" : "failure")])
    }

    /// A health probe began, `late` after it was due.
    func probeStarted(late: Duration) { probeDelay.record(max(late, .zero)) }

    /// A health probe ended after `duration`.
    func probeFinished(after duration: Duration, passed: Bool) {
        probeDuration.record(duration)
        probes(passed: passed).increment()
    }

    /// The registry's series in the text format.
    public var text: String { registry.emitToString() }

    /// Counts and times every call, streaming ones until their last message.
    public var interceptor: any ServerInterceptor { RPCMetricsInterceptor(metrics: self) }
}

struct RPCMetricsInterceptor: ServerInterceptor {
    let metrics: AgentMetrics

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let start = ContinuousClock.now
        let method = context.descriptor.fullyQualifiedMethod
        let metrics = self.metrics
        @Sendable func finish(_ error: (any Error)?) {
            metrics.rpcFinished(method: method, code: Self.codeName(error), after: ContinuousClock.now - start)
        }
        var response: StreamingServerResponse<Output>
        do {
            response = try await next(request, context)
        } catch {
            finish(error)
            throw error
        }
        switch response.accepted {
        case .success(var contents):
            let producer = contents.producer
            contents.producer = { writer in
                do {
                    let trailers = try await producer(writer)
                    finish(nil)
                    return trailers
                } catch {
                    finish(error)
                    throw error
                }
            }
            response.accepted = .success(contents)
        case .failure(let error):
            finish(error)
        }
        return response
    }

    /// gRPC's canonical status names: OK, NOT_FOUND, …
    static let names = [
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED",
    ]

    static func codeName(_ error: (any Error)?) -> String {
        guard let error else { return "OK" }
        let code: RPCError.Code =
            switch error {
            case let error as RPCError: error.code
            case let error as any RPCErrorConvertible: error.rpcErrorCode
            case is CancellationError: .cancelled
            default: .unknown
            }
        return names.indices.contains(code.rawValue) ? names[code.rawValue] : "UNKNOWN"
    }
}

/// `/metrics`: every active container's figures under cAdvisor's names and
/// labels (`id` is the cgroup path, `name`, `image`), the agent's own
/// `berth_*` series, in the Prometheus text format (0.0.4).
struct MetricsEndpoint: Sendable {
    let supervisor: ContainerSupervisor
    let stats: StatsReader
    let database: AgentDatabase
    let metrics: AgentMetrics
    let cgroupParent: String

    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    func render() async -> [UInt8] {
        let all = await supervisor.list(all: true)
        let shims = supervisor.shimPIDs
        let reader = stats
        let samples = all.filter { $0.status.state.isActive }.map { reader.sample($0, hostCPU: false) }
        var text = PrometheusText()
        Self.containerFamilies(samples, into: &text, cgroupParent: cgroupParent)
        agentFamilies(containers: all, shims: shims, into: &text)
        metrics.registry.emit(into: &text.bytes)
        return text.bytes
    }

    /// cAdvisor's families, each with one series per container.
    static func containerFamilies(_ samples: [ContainerSample], into text: inout PrometheusText, cgroupParent: String) {
        let labels = samples.map { s in
            [("id", "/\(cgroupParent)/\(s.container.id.rawValue)"), ("name", s.container.name), ("image", s.container.spec.image)]
        }
        // Each container's label set, escaped once for all its series.
        let blocks = labels.map(PrometheusText.labelBlock)
        func family(_ name: String, _ type: String, _ help: String, _ value: (ContainerSample) -> Double?) {
            var wroteHeader = false
            for (i, sample) in samples.enumerated() {
                guard let v = value(sample) else { continue }
                if !wroteHeader {
                    text.header(name, type, help)
                    wroteHeader = true
                }
                text.sample(name, block: blocks[i], v)
            }
        }
        func seconds(_ nanos: UInt64) -> Double { Double(nanos) / 1e9 }
        family("container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed in seconds.") { seconds($0.cgroup.cpuUsageNanos) }
        family("container_cpu_user_seconds_total", "counter", "Cumulative user cpu time consumed in seconds.") { seconds($0.cgroup.cpuUserNanos) }
        family("container_cpu_system_seconds_total", "counter", "Cumulative system cpu time consumed in seconds.") {
            seconds($0.cgroup.cpuSystemNanos)
        }
        family("container_cpu_cfs_periods_total", "counter", "Number of elapsed enforcement period intervals.") { Double($0.cgroup.cpuPeriods) }
        family("container_cpu_cfs_throttled_periods_total", "counter", "Number of throttled period intervals.") {
            Double($0.cgroup.cpuThrottledPeriods)
        }
        family("container_cpu_cfs_throttled_seconds_total", "counter", "Total time duration the container has been throttled.") {
            seconds($0.cgroup.cpuThrottledNanos)
        }
        family("container_memory_usage_bytes", "gauge", "Current memory usage in bytes, including all memory regardless of when it was accessed.") {
            Double($0.cgroup.memoryUsage)
        }
        family("container_memory_working_set_bytes", "gauge", "Current working set in bytes: usage minus inactive file cache.") {
            Double($0.cgroup.memoryWorkingSet)
        }
        family("container_memory_rss", "gauge", "Size of RSS (anonymous memory) in bytes.") { Double($0.cgroup.memoryRSS) }
        family("container_memory_cache", "gauge", "Number of bytes of page cache memory.") { Double($0.cgroup.memoryCache) }
        family("container_memory_swap", "gauge", "Container swap usage in bytes.") { Double($0.cgroup.memorySwap) }
        family("container_oom_events_total", "counter", "Count of out of memory kills in the container's cgroup.") { Double($0.cgroup.oomKills) }
        family("container_spec_memory_limit_bytes", "gauge", "Memory limit for the container (0: none).") { Double($0.cgroup.memoryLimit) }
        family("container_spec_cpu_period", "gauge", "CPU period of the container (CFS, microseconds).") { s in
            s.container.spec.resources.cpus == nil ? nil : 100_000
        }
        family("container_spec_cpu_quota", "gauge", "CPU quota of the container (CFS, microseconds per period).") { s in
            s.container.spec.resources.cpus.map { Double($0.nanoCPUs) / 1e9 * 100_000 }
        }
        family("container_spec_cpu_shares", "gauge", "CPU share of the container.") { s in
            Double(s.container.spec.resources.cpuShares ?? 1024)
        }
        family("container_processes", "gauge", "Number of processes running inside the container.") { Double($0.processes) }
        family("container_threads", "gauge", "Number of threads running inside the container.") { Double($0.cgroup.pidsCurrent) }
        family("container_threads_max", "gauge", "Maximum number of threads allowed inside the container, infinity if value is zero.") {
            Double($0.cgroup.pidsLimit)
        }
        family("container_fs_reads_bytes_total", "counter", "Cumulative count of bytes read.") { Double($0.cgroup.ioReadBytes) }
        family("container_fs_writes_bytes_total", "counter", "Cumulative count of bytes written.") { Double($0.cgroup.ioWriteBytes) }
        family("container_start_time_seconds", "gauge", "Start time of the container since unix epoch in seconds.") { s in
            s.container.status.startedAt.map { $0.timeIntervalSince1970 }
        }
        let checked = samples.indices.filter { samples[$0].container.status.health != nil }
        if !checked.isEmpty {
            let name = "berth_container_health_status"
            text.header(name, "gauge", "1 for the container's health status (starting, healthy, unhealthy), 0 for the others.")
            for i in checked {
                let status = samples[i].container.status.health!.status
                for each in HealthStatus.allCases { text.sample(name, labels[i] + [("status", each.rawValue)], each == status ? 1 : 0) }
            }
            family("berth_container_health_failing_streak", "gauge", "Failed health probes in a row.") { s in
                s.container.status.health.map { Double($0.failingStreak) }
            }
            family("berth_container_health_probe_duration_seconds", "gauge", "How long the container's last health probe took.") { s in
                s.container.status.health?.log.last.map { $0.end.timeIntervalSince($0.start) }
            }
        }
        let networkFamilies: [(String, String, (InterfaceCounters) -> UInt64)] = [
            ("container_network_receive_bytes_total", "Cumulative count of bytes received.", \.rxBytes),
            ("container_network_receive_packets_total", "Cumulative count of packets received.", \.rxPackets),
            ("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.", \.txBytes),
            ("container_network_transmit_packets_total", "Cumulative count of packets transmitted.", \.txPackets),
        ]
        for (name, help, value) in networkFamilies where samples.contains(where: { !$0.networks.isEmpty }) {
            text.header(name, "counter", help)
            for (i, sample) in samples.enumerated() {
                for interface in sample.networks {
                    text.sample(name, labels[i] + [("interface", interface.name)], Double(value(interface)))
                }
            }
        }
    }

    /// The agent's state, read at scrape time.
    func agentFamilies(containers: [Container], shims: [Int32], into text: inout PrometheusText) {
        text.header("berth_containers", "gauge", "Containers on this agent, by state.")
        for state in ContainerState.allCases {
            text.sample("berth_containers", [("state", state.rawValue)], Double(containers.filter { $0.status.state == state }.count))
        }
        text.header("berth_shims_alive", "gauge", "Container shims whose process is alive.")
        text.sample("berth_shims_alive", [], Double(shims.filter { Processes.isAlive($0) }.count))
        if let bounds = try? database.eventBounds() {
            text.header("berth_events_written_total", "counter", "Events appended to the event log (the latest revision).")
            text.sample("berth_events_written_total", [], Double(bounds.latest))
            text.header("berth_events_compacted_total", "counter", "Events removed from the log by its retention.")
            text.sample("berth_events_compacted_total", [], Double(bounds.oldest.map { $0 - 1 } ?? bounds.latest))
        }
        text.header("berth_agent_resident_memory_bytes", "gauge", "Resident memory of the agent process.")
        text.sample("berth_agent_resident_memory_bytes", [], Double(Self.residentBytes()))
        text.header("berth_build_info", "gauge", "The agent's version, as a label.")
        text.sample("berth_build_info", [("version", BuildInfo.version)], 1)
    }

    /// Resident pages of this process (the second field of /proc/self/statm).
    static func residentBytes() -> Int {
        guard let statm = try? FileIO.read("/proc/self/statm", limit: 256) else { return 0 }
        let fields = statm.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * SystemInfo.pageSize
    }
}

/// Prometheus text exposition format 0.0.4: `# HELP`, `# TYPE`, then
/// `name{label="value",…} value` lines; label values escape \, " and newline.
struct PrometheusText {
    var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(64 << 10) }

    mutating func header(_ name: String, _ type: String, _ help: String) {
        bytes += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n".utf8
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
        sample(name, block: Self.labelBlock(labels), value)
    }

    /// `name{…} value` with a label block made by `labelBlock`.
    mutating func sample(_ name: String, block: [UInt8], _ value: Double) {
        bytes += name.utf8
        bytes += block
        bytes.append(UInt8(ascii: " "))
        if value == value.rounded(), abs(value) < 1e15 {
            bytes += String(Int64(value)).utf8
        } else {
            bytes += "\(value)".utf8
        }
        bytes.append(UInt8(ascii: "\n"))
    }

    /// `{key="value",…}` with \, " and newline escaped; empty for no labels.
    static func labelBlock(_ labels: [(String, String)]) -> [UInt8] {
        guard !labels.isEmpty else { return [] }
        var bytes: [UInt8] = [UInt8(ascii: "{")]
        for (i, (key, labelValue)) in labels.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            bytes += key.utf8
            bytes += "=\"".utf8
            for byte in labelValue.utf8 {
                switch byte {
                case UInt8(ascii: "\\"): bytes += "\\\\".utf8
                case UInt8(ascii: "\""): bytes += "\\\"".utf8
                case UInt8(ascii: "\n"): bytes += "\\n".utf8
                default: bytes.append(byte)
                }
            }
            bytes.append(UInt8(ascii: "\""))
        }
        bytes.append(UInt8(ascii: "}"))
        return bytes
    }
}
