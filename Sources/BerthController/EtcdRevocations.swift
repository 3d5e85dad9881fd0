public import BerthEtcd
import BerthModel
public import BerthTransport
import Foundation

/// Revoked certificates in etcd, `PREFIX revoked/SERIAL` (the line
/// `berth-controller ca revoke` prints), so that every controller of the
/// cluster refuses them, whichever host the revocation was made on. Each
/// controller follows them into its `RevocationList` (with its `--revoked`
/// file's), and hands them to its agents with every heartbeat.
public struct EtcdRevocations: Sendable {
    let client: EtcdClient
    let prefix: String

    var directory: String { "\(prefix)revoked/" }

    public init(client: EtcdClient, prefix: String = "/berth/") {
        self.client = client
        self.prefix = prefix
    }

    /// Stores the revocation `lines` (as `ClusterCA.revocations` makes
    /// them); a serial already revoked keeps its first line.
    ///
    /// - Returns: the lines stored now.
    /// - Throws: `BerthError.unavailable` when the store has no quorum.
    public func add(_ lines: [String]) async throws -> [String] {
        var added: [String] = []
        for line in lines {
            let key = directory + String(line.prefix { $0 != " " })
            if try await client.txn(if: [.absent(key)], then: [.put(key, Array(line.utf8))]).succeeded { added.append(line) }
        }
        return added
    }

    /// Keeps `list`'s handed serials equal to those in etcd, until cancelled:
    /// lists them, then follows a watch (listing again when its history was
    /// compacted away).
    public func follow(into list: RevocationList) async {
        let directory = self.directory
        let known = Locked<Set<String>>([])
        await client.follow(
            directory, what: "the revoked certificates",
            listed: { values, _ in
                list.hand(known.withLock { serials in
                    serials = Set(values.map { String($0.key.dropFirst(directory.count)) })
                    return serials
                })
            },
            changed: { events in
                list.hand(known.withLock { serials in
                    for event in events {
                        let serial = String(event.key.dropFirst(directory.count))
                        if case .put = event { serials.insert(serial) } else { serials.remove(serial) }
                    }
                    return serials
                })
            })
    }
}
