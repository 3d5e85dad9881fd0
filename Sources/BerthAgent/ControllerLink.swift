import BerthAPI
import BerthModel
import BerthTransport
import Foundation
import GRPCCore
import Logging
import Synchronization
import SwiftProtobuf

/// Keeps the controller informed of this agent: registers, then sends a
/// heartbeat every interval the controller asks for; after any failure, or
/// a controller that no longer knows the node, registers again. With
/// several controllers it talks to the leader: a controller that does not
/// lead names the one that does, and an unreachable one is passed over for
/// the next in the list. Cut off
/// from the controller (unreachable, or refusing this node) for longer than
/// a replica's `--stop-after-disconnect`, it stops that replica itself, as
/// Nomad's clients do: the controller has replaced it elsewhere by then.
struct ControllerLink: Sendable {
    let controllers: [TransportAddress]
    let tls: MutualTLS?
    /// Where the controller reaches this agent's API (HOST:PORT).
    let advertise: String
    let node: NodeDirectory
    let version: String
    let logger: Logger
    /// The controller's replicas on this node, and a way to stop one.
    let replicas: @Sendable () async -> [Container]
    let stop: @Sendable (Container) async -> Void
    let clock: any Clock<Duration>
    /// Where the revoked serials the controller hands over go.
    let revoked: RevocationList

    init(
        controllers: [TransportAddress], tls: MutualTLS?, advertise: String, node: NodeDirectory, version: String, logger: Logger,
        revoked: RevocationList = RevocationList(), replicas: @escaping @Sendable () async -> [Container], stop: @escaping @Sendable (Container) async -> Void,
        clock: any Clock<Duration> = ContinuousClock()
    ) {
        self.controllers = controllers
        self.tls = tls
        self.advertise = advertise
        self.node = node
        self.version = version
        self.logger = logger
        self.replicas = replicas
        self.stop = stop
        self.clock = clock
        self.revoked = revoked
    }

    /// When the controller last answered this node (the agent's start until it first does).
    final class Contact: Sendable {
        private let last: Mutex<ContinuousClock.Instant>
        init(_ now: ContinuousClock.Instant) { last = Mutex(now) }
        func heard(at now: ContinuousClock.Instant) { last.withLock { $0 = now } }
        func silence(at now: ContinuousClock.Instant) -> Duration { now - last.withLock { $0 } }
    }

    func run() async {
        let contact = Contact(.now)
        await withDiscardingTaskGroup { group in
            group.addTask { await watchDisconnection(contact) }
            group.addTask { await keepInTouch(contact) }
        }
    }

    /// The replicas to stop after `silence` without the controller: those
    /// with a `--stop-after-disconnect` no longer than it that still run.
    static func toStop(_ containers: [Container], after silence: Duration) -> [Container] {
        containers.filter { container in
            guard container.status.state.isActive, let text = container.spec.labels[ReplicaLabel.stopAfterDisconnect],
                let seconds = try? DurationText.seconds(parsing: text, for: ReplicaLabel.stopAfterDisconnect)
            else { return false }
            return silence >= .milliseconds(Int64(seconds * 1000))
        }
    }

    private func watchDisconnection(_ contact: Contact) async {
        while !Task.isCancelled {
            try? await clock.sleep(for: .milliseconds(250))
            let silence = contact.silence(at: .now)
            guard silence >= .seconds(1) else { continue }
            for container in Self.toStop(await replicas(), after: silence) {
                logger.warning(
                    "no controller for longer than the replica's stop-after-disconnect; stopping it",
                    metadata: ["container": "\(container.name)", "silence": "\(silence)"])
                await stop(container)
            }
        }
    }

    private func keepInTouch(_ contact: Contact) async {
        var reported = false
        var next = 0
        var redirected: TransportAddress?
        var redirects = 0
        while !Task.isCancelled {
            let controller: TransportAddress
            if let redirected {
                controller = redirected
            } else {
                controller = controllers[next % controllers.count]
                next += 1
            }
            redirected = nil
            do {
                var quiet = logger
                quiet.logLevel = .critical
                let config = tls?.clientConfig(controller, connectTimeout: .seconds(5)) ?? .init(address: controller, connectTimeout: .seconds(5))
                let transport = NGHTTP2ClientTransport(config: config, logger: quiet)
                try await withGRPCClient(transport: transport) { client in
                    let nodes = Berth_Controller_V1_Nodes.Client(wrapping: client)
                    let info = node.info()
                    // A controller that takes the connection but does not answer
                    // (frozen, partitioned) is passed over for the next.
                    var options = CallOptions.defaults
                    options.timeout = .seconds(3)
                    let reply = try await nodes.register(.with {
                        $0.id = node.id
                        $0.hostname = info.hostname
                        $0.address = advertise
                        $0.labels = info.labels
                        $0.capacity = info.capacity.clusterProto
                        $0.allocatable = info.allocatable.clusterProto
                        $0.agentVersion = version
                    }, options: options)
                    contact.heard(at: .now)
                    revoked.hand(Set(reply.revokedSerials))
                    logger.info("registered with the controller", metadata: ["controller": "\(controller)"])
                    reported = false
                    redirects = 0
                    let interval = Duration.milliseconds(max(100, Int64(reply.heartbeatIntervalMs)))
                    options.timeout = max(.seconds(1), interval * 2)
                    while !Task.isCancelled {
                        try await clock.sleep(for: interval)
                        let beat = try await nodes.heartbeat(.with { $0.id = node.id }, options: options)
                        guard beat.known else {
                            logger.warning("the controller no longer knows this node; registering again")
                            return
                        }
                        contact.heard(at: .now)
                        revoked.hand(Set(beat.revokedSerials))
                    }
                }
            } catch {
                if Task.isCancelled { return }
                if let rpc = error as? RPCError, let leader = rpc.metadata[stringValues: "berth-redirect"].first(where: { _ in true }),
                    let address = try? TransportAddress(parsing: leader)
                {
                    logger.info("this controller does not lead; following the leader", metadata: ["controller": "\(controller)", "leader": "\(leader)"])
                    redirected = address
                    redirects += 1
                    // Controllers that send each other's callers back and forth (an election under way): a pause.
                    if redirects % 4 == 0 { try? await clock.sleep(for: ClusterNode.retryInterval) }
                    continue
                }
                if !reported {
                    if let rpc = error as? RPCError, rpc.code == .permissionDenied {
                        logger.error("the controller refuses this node; retrying every second", metadata: ["controller": "\(controller)", "error": "\(rpc.message)"])
                    } else {
                        logger.warning("the controller is unreachable; retrying every second", metadata: ["controller": "\(controller)", "error": "\(error)"])
                    }
                    reported = true
                }
                // The next controller at once; a pause after each round of them.
                if redirected == nil && next % controllers.count == 0 { try? await clock.sleep(for: ClusterNode.retryInterval) }
            }
        }
    }
}
