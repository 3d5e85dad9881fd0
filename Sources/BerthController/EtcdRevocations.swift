public import BerthEtcd
import BerthModel
public import BerthTransport
import Foundation
public import Logging

/// Revoked certificates in etcd, `PREFIX revoked/SERIAL` (the line
/// `berth-controller ca revoke` prints), so that every controller of the
/// cluster refuses them, whichever host the revocation was made on. Each
/// controller follows them into its `RevocationList` (with its `--revoked`
/// file's), and hands them to its agents with every heartbeat.
public struct EtcdRevocations: Sendable {
    let client: EtcdClient
    let prefix: String
    let logger: Logger

    var directory: String { "\(prefix)revoked/" }

    public init(client: EtcdClient, prefix: String = "/berth/", logger: Logger) {
        self.client = client
        self.prefix = prefix
        self.logger = logger
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

    /// The serials revoked now.
    public func serials() async throws -> (serials: Set<String>, revision: Int64) {
        let listed = try await client.range(directory, prefix: true)
        return (Set(listed.values.map { String($0.key.dropFirst(directory.count)) }), listed.revision)
    }

    /// Keeps `list`'s handed serials equal to those in etcd, until cancelled:
    /// lists them, then follows a watch; lists again when the watch's
    /// history is compacted away or the store could not be reached.
    public func follow(into list: RevocationList) async {
        let directory = self.directory
        while !Task.isCancelled {
            do {
                let (current, revision) = try await serials()
                list.hand(current)
                let known = Locked(current)
                try await client.watch(directory, prefix: true, from: revision + 1) { events, _ in
                    let serials = known.withLock { serials -> Set<String> in
                        for event in events {
                            let serial = String(event.key.dropFirst(directory.count))
                            if case .put = event { serials.insert(serial) } else { serials.remove(serial) }
                        }
                        return serials
                    }
                    list.hand(serials)
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("cannot follow the revoked certificates in the store; reading them again", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }
}
