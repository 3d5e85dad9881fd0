import BerthEtcd
import BerthModel
import Foundation
import Synchronization

/// Agents' heartbeats in the store, so that a node's liveness does not
/// depend on which controller its agent reaches: every controller records
/// the heartbeats it is sent, and the leader follows the records.
public protocol HeartbeatRecords: Sendable {
    /// Records a heartbeat of node `id`, received by `controller`, if the
    /// store knows the node; in one step with that check.
    ///
    /// - Returns: false when the store has no such node (its agent then
    ///   registers again, which only the leader takes).
    /// - Throws: `BerthError.permissionDenied` for a removed node,
    ///   `unavailable` when the store cannot take it.
    func record(_ id: String, by controller: String) async throws -> Bool
    /// Records a heartbeat of node `id` in the background, for a leader
    /// that has it in memory already and answers its agent at once: a
    /// store that is slow (an election among its members) must not hold
    /// heartbeats up. A node's heartbeats that queue up are recorded once.
    func recordLater(_ id: String, by controller: String)
    /// A heartbeat sent to a controller that does not lead: answered at
    /// once (and recorded in the background) for a node whose last
    /// recording succeeded; the first of a node's heartbeats, and the first
    /// after a recording failed, wait for the store. A follower cut off from
    /// the store thus answers one heartbeat more at most, then refuses, and
    /// the agent turns to another controller.
    ///
    /// - Returns and throws: as `record`.
    func take(_ id: String, by controller: String) async throws -> Bool
    /// When each node's last recorded heartbeat came.
    ///
    /// - Parameter serializable: without a quorum, from the member asked.
    func lastHeard(serializable: Bool) async throws -> [String: Date]
    /// Calls `heard` with the nodes heard from after `revision`, in the
    /// store's order, until cancelled. When the history from there has been
    /// compacted away, the records are listed again, those written since
    /// handed over, and the watch resumes from the listing's revision.
    func follow(after revision: Int64, heard: @escaping @Sendable ([String]) async -> Void) async
}

/// A heartbeat as recorded: when, and which controller it reached.
struct HeartbeatRecord: Codable, Sendable {
    var at: Date
    var by: String
}

/// Heartbeats in etcd, `PREFIX heartbeats/NODE-ID`. They are facts
/// reported, not decisions: any controller writes them, unfenced, but only
/// for a node the store holds.
final class EtcdHeartbeats: HeartbeatRecords {
    let client: EtcdClient
    let prefix: String
    /// Heartbeats to record in the background, and whether a task records them.
    private let later = Mutex<(pending: [String: String], recording: Bool)>(([:], false))
    /// Nodes whose last recording succeeded.
    private let recorded = Mutex<Set<String>>([])

    init(client: EtcdClient, prefix: String) {
        self.client = client
        self.prefix = prefix
    }

    var directory: String { "\(prefix)heartbeats/" }

    func record(_ id: String, by controller: String) async throws -> Bool {
        let value = Array(try BerthJSON.encoder(pretty: false).encode(HeartbeatRecord(at: Date(), by: controller)))
        let result: EtcdTxnResult
        do {
            result = try await client.txn(
                if: [.present("\(prefix)nodes/\(id)")], then: [.put(directory + id, value)], else: [.get("\(prefix)removed-nodes/\(id)")])
        } catch {
            recorded.withLock { _ = $0.remove(id) }
            throw error
        }
        recorded.withLock { set in
            if result.succeeded { set.insert(id) } else { set.remove(id) }
        }
        if result.succeeded { return true }
        if result.ranges.first?.isEmpty == false { throw NodeRegistry.removedRefusal(id) }
        return false
    }

    func take(_ id: String, by controller: String) async throws -> Bool {
        if recorded.withLock({ $0.contains(id) }) {
            recordLater(id, by: controller)
            return true
        }
        return try await record(id, by: controller)
    }

    func recordLater(_ id: String, by controller: String) {
        let start = later.withLock { state -> Bool in
            state.pending[id] = controller
            if state.recording { return false }
            state.recording = true
            return true
        }
        guard start else { return }
        Task {
            while true {
                let batch = later.withLock { state -> [String: String] in
                    defer { state.pending = [:] }
                    if state.pending.isEmpty { state.recording = false }
                    return state.pending
                }
                if batch.isEmpty { return }
                for (id, controller) in batch { _ = try? await record(id, by: controller) }
            }
        }
    }

    func lastHeard(serializable: Bool) async throws -> [String: Date] {
        let decoder = BerthJSON.decoder()
        var heard: [String: Date] = [:]
        for value in try await client.range(directory, prefix: true, serializable: serializable).values {
            guard let record = try? decoder.decode(HeartbeatRecord.self, from: Data(value.value)) else { continue }
            heard[String(value.key.dropFirst(directory.count))] = record.at
        }
        return heard
    }

    func follow(after revision: Int64, heard: @escaping @Sendable ([String]) async -> Void) async {
        let directory = self.directory
        let id = { @Sendable (value: EtcdKeyValue) in String(value.key.dropFirst(directory.count)) }
        await client.follow(
            directory, after: revision, what: "the heartbeats",
            listed: { values, since in
                let ids = values.filter { $0.modRevision >= since }.map(id)
                if !ids.isEmpty { await heard(ids) }
            },
            changed: { events in
                let ids = events.compactMap { event -> String? in
                    guard case .put(let value) = event else { return nil }
                    return id(value)
                }
                if !ids.isEmpty { await heard(ids) }
            })
    }
}
