import BerthEtcd
import BerthModel
import BerthTransport
import Foundation
import Logging

/// Controllers on one etcd cluster elect one leader: each campaigns with a
/// key under `/berth/election/` on a lease of its own, and the key with
/// the lowest create revision leads (etcd's own election recipe). The
/// leader's writes carry its key's create revision as their condition, so
/// that a controller that lost its lease (paused, partitioned, slow) can
/// write nothing even while it still believes it leads.
final class EtcdCandidacy: Candidacy {
    let client: EtcdClient
    let election: LeaderElection
    let prefix: String
    let address: String
    let logger: Logger
    let heartbeatRecords: EtcdHeartbeats

    /// - Parameters:
    ///   - address: what followers tell callers to use instead of them.
    ///   - lease: how long a leader that stops renewing keeps leading.
    /// - Throws: `TransportError.tls` for an unreadable `tlsDirectory`.
    init(endpoints: [TransportAddress], tlsDirectory: String?, address: String, lease: Duration, prefix: String = "/berth/", logger: Logger) throws {
        let tls = try tlsDirectory.map { try MutualTLS(directory: $0) }
        client = EtcdClient(endpoints: endpoints, tls: tls, logger: logger)
        self.prefix = prefix
        self.address = address
        self.logger = logger
        heartbeatRecords = EtcdHeartbeats(client: client, prefix: prefix)
        election = LeaderElection(
            client: client, prefix: "\(prefix)election/", ttl: max(2, lease.components.seconds), value: address, logger: logger)
    }

    func campaign() async throws -> Mandate {
        try await removeStaleKeys()
        let leadership = try await election.campaign()
        let store = EtcdControllerStore(client: client, prefix: prefix, fence: election.fence(for: leadership))
        let election = self.election
        return Mandate(
            store: store, number: leadership.createRevision,
            lost: { await election.lost(leadership) },
            resign: { await election.resign() })
    }

    /// An election key with this controller's own address is a previous run's
    /// (two controllers cannot listen on one address, and this one listens
    /// before it campaigns): it is removed, so that a restarted controller
    /// does not wait out its predecessor's lease. Each removal holds only
    /// while the key still has that address.
    private func removeStaleKeys() async throws {
        let mine = Array(address.utf8)
        for key in try await client.range(election.prefix, prefix: true).values where key.value == mine {
            let removed = try await client.txn(if: [.value(key.key, is: mine)], then: [.delete(key.key)])
            if removed.succeeded {
                logger.info("removed the election key a previous run of this controller left", metadata: ["key": "\(key.key)"])
            }
        }
    }

    // The candidates are read without a quorum (serializable): what callers
    // are told must come at once, also while the store has none, and may
    // then be stale.

    func leader() async -> String? {
        try? await election.leader(serializable: true)?.value
    }

    func candidates() async throws -> [Candidate] {
        let healthy = await client.status().contains { $0.error == nil && $0.leaderID != 0 }
        guard healthy else { throw BerthError(.unavailable, "the store has no quorum") }
        return try await election.candidates(serializable: true).map { Candidate(address: $0.value, term: $0.createRevision) }
    }

    var heartbeats: (any HeartbeatRecords)? { heartbeatRecords }

    func followRevocations(into list: RevocationList) async {
        await EtcdRevocations(client: client, prefix: prefix).follow(into: list)
    }

    func read() async throws -> StoreRead {
        let store = EtcdControllerStore(client: client, prefix: prefix, fence: nil)
        var read: StoreRead
        do {
            read = StoreRead(contents: try await store.load())
        } catch let error as BerthError where error.code == .unavailable {
            read = StoreRead(
                contents: try await store.load(serializable: true),
                stale: "\(error.message); this is what a member of the store held last, and may be stale")
        }
        // Heartbeats are recorded by whichever controller an agent reaches.
        if let heard = try? await heartbeatRecords.lastHeard(serializable: read.stale != nil) {
            for index in read.contents.nodes.indices {
                let node = read.contents.nodes[index]
                if let at = heard[node.id], at > node.lastHeartbeat { read.contents.nodes[index].lastHeartbeat = at }
            }
        }
        return read
    }

    func storeMembers() async -> [StoreMemberHealth] {
        await client.status().map { member in
            StoreMemberHealth(endpoint: member.endpoint.hostAndPort, error: member.error, leader: member.isLeader, raftTerm: member.raftTerm)
        }
    }
}
