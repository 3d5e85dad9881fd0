import BerthAPI
import BerthModel
import BerthTransport
import GRPCCore
import Logging
import SwiftProtobuf

/// Keeps the controller informed of this agent: registers, then sends a
/// heartbeat every interval the controller asks for; after any failure, or
/// a controller that no longer knows the node, registers again.
struct ControllerLink: Sendable {
    let controller: TransportAddress
    let tls: MutualTLS?
    /// Where the controller reaches this agent's API (HOST:PORT).
    let advertise: String
    let node: NodeDirectory
    let version: String
    let logger: Logger

    func run() async {
        var reported = false
        while !Task.isCancelled {
            do {
                var quiet = logger
                quiet.logLevel = .critical
                let config = tls?.clientConfig(controller, connectTimeout: .seconds(5)) ?? .init(address: controller, connectTimeout: .seconds(5))
                let transport = NGHTTP2ClientTransport(config: config, logger: quiet)
                try await withGRPCClient(transport: transport) { client in
                    let nodes = Berth_Controller_V1_Nodes.Client(wrapping: client)
                    let info = node.info()
                    let reply = try await nodes.register(.with {
                        $0.id = node.id
                        $0.hostname = info.hostname
                        $0.address = advertise
                        $0.labels = info.labels
                        $0.capacity = info.capacity.clusterProto
                        $0.allocatable = info.allocatable.clusterProto
                        $0.agentVersion = version
                    })
                    logger.info("registered with the controller", metadata: ["controller": "\(controller)"])
                    reported = false
                    let interval = Duration.milliseconds(max(100, Int64(reply.heartbeatIntervalMs)))
                    while !Task.isCancelled {
                        try await Task.sleep(for: interval)
                        guard try await nodes.heartbeat(.with { $0.id = node.id }).known else {
                            logger.warning("the controller no longer knows this node; registering again")
                            return
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                if !reported {
                    logger.warning("the controller is unreachable; retrying every second", metadata: ["controller": "\(controller)", "error": "\(error)"])
                    reported = true
                }
                try? await Task.sleep(for: ClusterNode.retryInterval)
            }
        }
    }
}
