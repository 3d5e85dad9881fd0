public import BerthModel
public import Foundation

/// A service's output through the controller: every replica's log from its
/// node's agent, each line with the replica it came from. Without follow,
/// the lines come in time order; with it, as they come.
public struct ServiceLogs: Sendable {
    /// One line and where it came from.
    public struct Line: Sendable {
        public var replica: Replica
        public var hostname: String
        public var line: LogLine
    }

    let services: ServiceManager
    let registry: NodeRegistry
    /// The client of a ready node; nil for a node that is not.
    let client: @Sendable (ClusterNode) -> (any AgentClient)?

    public init(services: ServiceManager, registry: NodeRegistry, client: @escaping @Sendable (ClusterNode) -> (any AgentClient)?) {
        self.services = services
        self.registry = registry
        self.client = client
    }

    /// The lines of a service's replicas (those with a container on a
    /// ready node), or of one replica.
    ///
    /// - Parameter reference: a service's name, ID or ID prefix, or a
    ///   replica's ID, ID prefix or container name.
    /// - Throws: `BerthError.notFound` when it names neither, `unavailable`
    ///   when no replica's node can be reached.
    public func lines(of reference: String, follow: Bool, tail: Int?, since: Date?) async throws -> AsyncThrowingStream<Line, any Error> {
        let replicas: [Replica]
        if let service = try? await services.get(reference) {
            replicas = try await services.replicaList(service: service.id, all: true).filter { $0.isAssigned && !$0.removed && $0.state != .pending }
        } else {
            replicas = [try await services.replica(reference)]
        }
        let nodes = Dictionary(await registry.list().map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var sources: [(Replica, String, any AgentClient)] = []
        for replica in replicas {
            guard let node = nodes[replica.nodeID], node.state == .ready, let client = client(node) else { continue }
            sources.append((replica, node.hostname, client))
        }
        if sources.isEmpty && !replicas.isEmpty {
            throw BerthError(.unavailable, "no node of \(reference)'s replicas is reachable now")
        }
        let all = sources
        return AsyncThrowingStream { continuation in
            let task = Task {
                await withTaskGroup(of: [Line].self) { group in
                    for (replica, hostname, client) in all {
                        group.addTask {
                            var kept: [Line] = []
                            do {
                                for try await line in client.logs(container: replica.containerName, follow: follow, tail: tail, since: since) {
                                    let item = Line(replica: replica, hostname: hostname, line: line)
                                    if follow { continuation.yield(item) } else { kept.append(item) }
                                }
                            } catch {
                                // A replica removed meanwhile, or a node gone: the others go on.
                            }
                            return kept
                        }
                    }
                    var everything: [Line] = []
                    for await lines in group { everything += lines }
                    for line in everything.sorted(by: { $0.line.time < $1.line.time }) { continuation.yield(line) }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
