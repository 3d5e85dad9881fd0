import BerthModel
import Foundation
import Prometheus

/// The controller's `/metrics` (Prometheus text format, on its listener and
/// behind the same TLS): nodes by state, services by mode, replicas by
/// state, pending replicas, placements and failures, how long a planning
/// pass takes, and each node's agent calls with their latency and errors.
public final class ControllerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()

    /// Seconds: 1 ms … 60 s (an image pull may take longer: +Inf).
    static let callBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]
    static let passBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
    ]

    /// The series this renders, for the dashboard's check.
    public static let names = [
        "berth_controller_nodes", "berth_controller_services", "berth_controller_replicas", "berth_controller_replicas_pending",
        "berth_controller_placements_total", "berth_controller_replica_failures_total", "berth_controller_reconcile_duration_seconds",
        "berth_controller_agent_call_duration_seconds", "berth_controller_agent_call_errors_total", "berth_controller_leader",
        "berth_controller_updates",
    ]

    /// Counters that start at zero, so that rate() has a start.
    public init() {
        // Present from the first scrape, so that rate() has a start.
        _ = placements
        _ = failures
    }

    var placements: Counter {
        registry.makeCounter(
            descriptor: .init(
                namespace: "berth", subsystem: "controller", metricName: "placements", unitName: "total",
                helpText: "Replicas the scheduler placed on a node."))
    }

    var failures: Counter {
        registry.makeCounter(
            descriptor: .init(
                namespace: "berth", subsystem: "controller", metricName: "replica_failures", unitName: "total",
                helpText: "Replicas that failed: could not be made or started, exited for good, or kept restarting."))
    }

    func placed(_ count: Int) { if count > 0 { placements.increment(by: Int64(count)) } }
    func failed(_ count: Int) { if count > 0 { failures.increment(by: Int64(count)) } }

    func planned(after duration: Duration) {
        registry.makeDurationHistogram(
            descriptor: .init(
                namespace: "berth", subsystem: "controller", metricName: "reconcile_duration", unitName: "seconds",
                helpText: "Time a planning pass takes: decisions for every service, and their commit to the store."),
            buckets: Self.passBuckets
        ).record(duration)
    }

    func agentCall(node: String, call: String, duration: Duration, error: AgentCallError?) {
        registry.makeDurationHistogram(
            descriptor: .init(
                namespace: "berth", subsystem: "controller", metricName: "agent_call_duration", unitName: "seconds",
                helpText: "Time the controller's calls to each node's agent take, by node and call."),
            labels: [("node", node), ("call", call)], buckets: Self.callBuckets
        ).record(duration)
        if let error {
            registry.makeCounter(
                descriptor: .init(
                    namespace: "berth", subsystem: "controller", metricName: "agent_call_errors", unitName: "total",
                    helpText: "The controller's calls to agents that failed, by node, call and error."),
                labels: [("node", node), ("call", call), ("error", error.kind)]
            ).increment()
        }
    }

    /// What a scrape reads from the records.
    public struct Snapshot: Sendable {
        /// Every node, in every state.
        public var nodes: [ClusterNode]
        /// Every service.
        public var services: [ClusterService]
        /// Every replica record, history included.
        public var replicas: [Replica]
    }

    /// Every family, in the text format.
    func render(_ snapshot: Snapshot) -> String {
        var text = ""
        func family(_ name: String, _ type: String, _ help: String, _ samples: [([(String, String)], Double)]) {
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (labels, value) in samples {
                let block = labels.isEmpty ? "" : "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
                text += "\(name)\(block) \(value == value.rounded() ? String(Int64(value)) : String(value))\n"
            }
        }
        var nodes: [String: Int] = ["ready": 0, "down": 0, "drain": 0]
        for node in snapshot.nodes {
            nodes[node.state == .down ? "down" : node.availability == .drain ? "drain" : "ready", default: 0] += 1
        }
        family(
            "berth_controller_nodes", "gauge", "Nodes by state: ready, down (no heartbeat within the grace period), drain (ready, taking no work).",
            nodes.sorted { $0.key < $1.key }.map { ([("state", $0.key)], Double($0.value)) })
        var modes = Dictionary(uniqueKeysWithValues: ServiceMode.allCases.map { ($0.rawValue, 0) })
        for service in snapshot.services { modes[service.spec.mode.rawValue, default: 0] += 1 }
        family("berth_controller_services", "gauge", "Services by mode.", modes.sorted { $0.key < $1.key }.map { ([("mode", $0.key)], Double($0.value)) })
        var updates: [String: Int] = [:]
        for service in snapshot.services { if let state = service.update?.state { updates[state.rawValue, default: 0] += 1 } }
        family(
            "berth_controller_updates", "gauge", "Services by the state of their last update (updating, paused, completed, rolling-back, …).",
            updates.sorted { $0.key < $1.key }.map { ([("state", $0.key)], Double($0.value)) })
        var states: [String: Int] = [:]
        var pending = 0
        for replica in snapshot.replicas where replica.desiredState == .running {
            states[replica.state.rawValue, default: 0] += 1
            if replica.state == .pending { pending += 1 }
        }
        for state in ["pending", "created", "starting", "running", "exited", "failed", "complete"] where states[state] == nil { states[state] = 0 }
        family(
            "berth_controller_replicas", "gauge", "Replicas meant to run, by their state.",
            states.sorted { $0.key < $1.key }.map { ([("state", $0.key)], Double($0.value)) })
        family("berth_controller_replicas_pending", "gauge", "Replicas waiting for a node or for a backoff to pass.", [([], Double(pending))])
        family("berth_controller_leader", "gauge", "1 when this controller leads (a lone controller always does).", [([], 1)])
        return text + registry.emitToString()
    }

    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }
}
