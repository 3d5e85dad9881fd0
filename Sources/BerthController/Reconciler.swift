import BerthAPI
import BerthModel
public import BerthTransport
import GRPCCore
public import Logging
import SwiftProtobuf

/// Brings one agent to what the records say: makes and starts the replicas
/// placed on its node, removes the containers of replicas being shut down
/// (and any container of this cluster that no record claims), and reports
/// what it found. The containers are known by their labels; a replica's
/// container name is fixed, so a controller killed between its decision
/// and the agent's answer never makes a second container for one replica.
public struct AgentDriver: Sendable {
    public let clusterID: String
    /// How to reach an agent (TLS is set up here).
    public let connection: @Sendable (TransportAddress) -> NGHTTP2ClientTransport.Config
    public let logger: Logger

    public init(clusterID: String, connection: @escaping @Sendable (TransportAddress) -> NGHTTP2ClientTransport.Config, logger: Logger) {
        self.clusterID = clusterID
        self.connection = connection
        self.logger = logger
    }

    /// - Throws: when the agent cannot be reached or listed; nothing is observed then.
    public func drive(_ work: NodeWork) async throws -> [ReplicaObservation] {
        let address = try TransportAddress(parsing: work.node.address)
        var quiet = logger
        quiet.logLevel = .critical
        let transport = NGHTTP2ClientTransport(config: connection(address), logger: quiet)
        return try await withGRPCClient(transport: transport) { grpc in
            let containers = Berth_Agent_V1_Containers.Client(wrapping: grpc)
            let images = Berth_Agent_V1_Images.Client(wrapping: grpc)
            return try await reconcile(work, containers: containers, images: images)
        }
    }

    private func reconcile(
        _ work: NodeWork, containers: Berth_Agent_V1_Containers.Client<NGHTTP2ClientTransport>,
        images: Berth_Agent_V1_Images.Client<NGHTTP2ClientTransport>
    ) async throws -> [ReplicaObservation] {
        let clusterLabel = "\(ReplicaLabel.cluster)=\(clusterID)"
        let found = try await containers.list(.with {
            $0.all = true
            $0.filters = [.with { $0.key = "label"; $0.values = [clusterLabel] }]
        }).containers
        let records = Dictionary(uniqueKeysWithValues: work.replicas.map { ($0.id, $0) })
        var observations: [ReplicaObservation] = []
        var present: Set<String> = []

        for container in found {
            let replicaID = container.spec.labels[ReplicaLabel.replica] ?? ""
            guard let replica = records[replicaID], replica.desiredState == .running, replica.nodeID == work.node.id,
                container.name == replica.containerName
            else {
                // Shut down, replaced, or claimed by no record: it goes.
                do {
                    _ = try await containers.remove(.with { $0.container = container.id; $0.force = true })
                    logger.info("replica container removed", metadata: ["node": "\(work.node.hostname)", "container": "\(container.name)"])
                    if records[replicaID] != nil { observations.append(.gone(id: replicaID)) }
                } catch {
                    logger.warning("cannot remove a replica's container", metadata: ["container": "\(container.name)", "error": "\(error)"])
                }
                continue
            }
            present.insert(replicaID)
            let status = container.status
            switch status.state {
            case .running, .paused:
                observations.append(.state(id: replicaID, .running, message: "", exitCode: nil))
            case .created where replica.state != .failed:
                // Made, but its start did not happen or failed: start it.
                observations.append(await start(container.id, replica, containers))
            case .exited, .dead, .created:
                let code = status.hasExitCode ? Int(status.exitCode) : nil
                let why = status.error.isEmpty ? status.reason : status.error
                observations.append(.state(id: replicaID, status.state == .exited ? .exited : .failed, message: why, exitCode: code))
            default:
                break
            }
        }

        for replica in work.replicas where !present.contains(replica.id) {
            switch replica.desiredState {
            case .shutdown:
                observations.append(.gone(id: replica.id))
            case .running where replica.state != .failed:
                guard let service = work.services[replica.serviceID] else { continue }
                observations.append(await create(replica, service, containers: containers, images: images))
            case .running:
                break
            }
        }
        return observations
    }

    /// Makes and starts a replica's container; pulls its image once when the agent lacks it.
    private func create(
        _ replica: Replica, _ service: ClusterService, containers: Berth_Agent_V1_Containers.Client<NGHTTP2ClientTransport>,
        images: Berth_Agent_V1_Images.Client<NGHTTP2ClientTransport>
    ) async -> ReplicaObservation {
        var spec = service.spec.container
        spec.name = replica.containerName
        spec.labels[ReplicaLabel.cluster] = clusterID
        spec.labels[ReplicaLabel.service] = service.spec.name
        spec.labels[ReplicaLabel.replica] = replica.id
        let request = Berth_Agent_V1_CreateContainerRequest.with {
            $0.spec = spec.proto
            $0.start = true
        }
        do {
            do {
                _ = try await containers.create(request)
            } catch let error as RPCError where BerthError(error).code == .notFound && BerthError(error).message.hasPrefix("no such image: ") {
                logger.info("pulling a replica's image", metadata: ["image": "\(spec.image)", "error": "\(error.message)"])
                try await images.pull(.with { $0.reference = spec.image }) { response in
                    for try await _ in response.messages {}
                }
                _ = try await containers.create(request)
            }
            logger.info("replica started", metadata: ["container": "\(replica.containerName)"])
            return .state(id: replica.id, .running, message: "", exitCode: nil)
        } catch let error as RPCError where BerthError(error).code == .alreadyExists {
            // Made by an earlier pass whose answer was lost; the next list shows it.
            return .state(id: replica.id, replica.state, message: replica.message, exitCode: replica.exitCode)
        } catch {
            let message = Self.message(error)
            logger.warning("a replica could not be started", metadata: ["container": "\(replica.containerName)", "error": "\(message)"])
            return .state(id: replica.id, .failed, message: message, exitCode: nil)
        }
    }

    private func start(_ id: String, _ replica: Replica, _ containers: Berth_Agent_V1_Containers.Client<NGHTTP2ClientTransport>) async -> ReplicaObservation {
        do {
            _ = try await containers.start(.with { $0.container = id })
            return .state(id: replica.id, .running, message: "", exitCode: nil)
        } catch {
            return .state(id: replica.id, .failed, message: Self.message(error), exitCode: nil)
        }
    }

    static func message(_ error: any Error) -> String {
        if let rpc = error as? RPCError { return BerthError(rpc).message }
        return "\(error)"
    }
}

/// Runs reconcile passes: one a second, and one at once after any change an
/// operator makes or a node going down.
public struct Reconciler: Sendable {
    let services: ServiceManager
    let registry: NodeRegistry
    let driver: AgentDriver
    let logger: Logger
    /// Agents driven at once.
    let concurrency = 32

    public init(services: ServiceManager, registry: NodeRegistry, driver: AgentDriver, logger: Logger) {
        self.services = services
        self.registry = registry
        self.driver = driver
        self.logger = logger
    }

    /// One pass: decide, store, then bring every ready agent along.
    public func pass() async {
        let work = await services.plan(nodes: registry.list())
        let observations = await withTaskGroup(of: [ReplicaObservation].self) { group in
            var pending = work[...]
            var all: [ReplicaObservation] = []
            func next() {
                guard let item = pending.popFirst() else { return }
                group.addTask {
                    do {
                        return try await driver.drive(item)
                    } catch {
                        logger.debug("agent not reached this pass", metadata: ["node": "\(item.node.hostname)", "error": "\(error)"])
                        return []
                    }
                }
            }
            for _ in 0..<concurrency { next() }
            for await result in group {
                all += result
                next()
            }
            return all
        }
        await services.observe(observations)
    }

    /// Passes until cancelled; `wakeups` brings the next one forward.
    public func run(wakeups: AsyncStream<Void>, interval: Duration = .seconds(1)) async {
        await withTaskGroup(of: Void.self) { group in
            let (ticks, tick) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
            group.addTask {
                for await _ in wakeups { tick.yield() }
            }
            group.addTask {
                while !Task.isCancelled {
                    tick.yield()
                    try? await Task.sleep(for: interval)
                }
                tick.finish()
            }
            for await _ in ticks {
                if Task.isCancelled { break }
                await pass()
            }
            group.cancelAll()
        }
    }
}
