import BerthAPI
public import BerthModel
public import BerthTransport
public import Foundation
import GRPCCore
public import Logging
import SwiftProtobuf

/// `AgentClient` over gRPC: one connection to one node's agent, made when
/// the node is first driven and kept (re-established on demand) until the
/// node goes away. Over mutual TLS the agent must present the certificate
/// of the node it is meant to be (its CN is the node ID).
public final class GRPCAgentClient: AgentClient {
    private let grpc: GRPCClient<NGHTTP2ClientTransport>
    private let runner: Task<Void, Never>
    private let address: String
    private let clock = ContinuousClock()

    /// - Parameter nodeID: with TLS, the CN the agent's certificate must have.
    public init(address: TransportAddress, tls: MutualTLS?, nodeID: String?, logger: Logger) {
        var quiet = logger
        quiet.logLevel = .critical
        let config = tls?.clientConfig(address, connectTimeout: .seconds(3), peerName: nodeID) ?? .init(address: address, connectTimeout: .seconds(3))
        let grpc = GRPCClient(transport: NGHTTP2ClientTransport(config: config, logger: quiet))
        self.grpc = grpc
        self.address = "\(address)"
        runner = Task { try? await grpc.runConnections() }
    }

    deinit { runner.cancel() }

    /// Closes the connection once the calls under way end.
    public func close() {
        grpc.beginGracefulShutdown()
    }

    private var containersClient: Berth_Agent_V1_Containers.Client<NGHTTP2ClientTransport> { .init(wrapping: grpc) }
    private var imagesClient: Berth_Agent_V1_Images.Client<NGHTTP2ClientTransport> { .init(wrapping: grpc) }
    private var networksClient: Berth_Agent_V1_Networks.Client<NGHTTP2ClientTransport> { .init(wrapping: grpc) }

    private static func options(_ deadline: Duration) -> CallOptions {
        var options = CallOptions.defaults
        options.timeout = deadline
        return options
    }

    /// A call's failure in the reconciler's terms.
    private static func mapped(_ error: any Error, _ what: String) -> AgentCallError {
        if let error = error as? AgentCallError { return error }
        if error is CancellationError { return .cancelled }
        guard let rpc = error as? RPCError else { return .unreachable("\(error)") }
        let domain = BerthError(rpc)
        switch rpc.code {
        case .unavailable where rpc.metadata[stringValues: "berth-error-code"].first(where: { _ in true }) == nil:
            return .unreachable(rpc.cause.map { "\(rpc.message) (\($0))" } ?? rpc.message)
        case .deadlineExceeded: return .timedOut(what)
        case .cancelled: return .cancelled
        case .alreadyExists: return .nameInUse(domain.message)
        default: return .refused(domain)
        }
    }

    /// Runs a call within `deadline` (on the wire as well: the agent stops too).
    private func call<T: Sendable>(_ what: String, _ deadline: Duration, _ body: @escaping @Sendable (CallOptions) async throws -> T)
        async throws(AgentCallError) -> T
    {
        try await withDeadline(deadline, clock: clock, what) { () async throws(AgentCallError) -> T in
            do {
                return try await body(Self.options(deadline))
            } catch {
                throw Self.mapped(error, what)
            }
        }
    }

    public func containers(cluster: String, deadline: Duration) async throws(AgentCallError) -> [Container] {
        let client = containersClient
        let listed = try await call("list", deadline) { options in
            try await client.list(
                .with {
                    $0.all = true
                    $0.filters = [.with { $0.key = "label"; $0.values = ["\(ReplicaLabel.cluster)=\(cluster)"] }]
                }, options: options
            ).containers
        }
        do {
            return try listed.map { try Container(proto: $0) }
        } catch {
            throw .refused(BerthError(.internal, "the agent at \(address) listed a container the controller cannot read: \(error)"))
        }
    }

    public func setOverlays(_ states: [OverlayState], deadline: Duration) async throws(AgentCallError) {
        let client = networksClient
        let request = Berth_Agent_V1_SetOverlaysRequest.with { $0.networks = states.map(\.proto) }
        _ = try await call("set overlays", deadline) { options in try await client.setOverlays(request, options: options) }
    }

    public func run(_ spec: ContainerSpec, deadline: Duration) async throws(AgentCallError) -> Container {
        let (containers, images) = (containersClient, imagesClient)
        let request = Berth_Agent_V1_CreateContainerRequest.with {
            $0.spec = spec.proto
            $0.start = true
        }
        let response: Berth_Agent_V1_CreateContainerResponse
        do {
            response = try await call("run", deadline) { options in try await containers.create(request, options: options) }
        } catch .refused(let error) where error.code == .notFound {
            // Not found: the image, or something else the spec names. The
            // agent's image list tells which, not the words of the error.
            let present: Bool = try await call("inspect image", .seconds(10)) { options in
                do {
                    _ = try await images.inspect(.with { $0.image = spec.image }, options: options)
                    return true
                } catch let rpc as RPCError where rpc.code == .notFound {
                    return false
                }
            }
            throw present ? .refused(error) : .imageNotFound(spec.image)
        }
        if !response.startError.isEmpty {
            throw .refused(BerthError(.failedPrecondition, response.startError))
        }
        do {
            return try Container(proto: response.container)
        } catch {
            throw .refused(BerthError(.internal, "the agent at \(address) answered with a container the controller cannot read: \(error)"))
        }
    }

    public func pull(image: String, deadline: Duration) async throws(AgentCallError) {
        let images = imagesClient
        try await call("pull", deadline) { options in
            try await images.pull(.with { $0.reference = image }, options: options) { response in
                for try await _ in response.messages {}
            }
        }
    }

    public func start(container: String, deadline: Duration) async throws(AgentCallError) {
        let containers = containersClient
        _ = try await call("start", deadline) { options in try await containers.start(.with { $0.container = container }, options: options) }
    }

    public func remove(container: String, stopTimeout: Int, deadline: Duration) async throws(AgentCallError) {
        let containers = containersClient
        do {
            _ = try await call("stop", deadline) { options in
                try await containers.stop(
                    .with {
                        $0.container = container
                        $0.timeoutSeconds = Int32(clamping: stopTimeout)
                    }, options: options)
            }
        } catch .refused(let error) where error.code == .notFound {
            throw .noSuchContainer(container)
        } catch .refused {
            // Not running: nothing to stop.
        }
        do {
            _ = try await call("remove", deadline) { options in
                try await containers.remove(.with { $0.container = container; $0.force = true }, options: options)
            }
        } catch .refused(let error) where error.code == .notFound {
            throw .noSuchContainer(container)
        }
    }

    public func logs(container: String, follow: Bool, tail: Int?, since: Date?) -> AsyncThrowingStream<LogLine, any Error> {
        let containers = containersClient
        let request = Berth_Agent_V1_ContainerLogsRequest.with {
            $0.container = container
            $0.follow = follow
            if let tail { $0.tail = UInt32(clamping: tail) }
            if let since { $0.since = Google_Protobuf_Timestamp(date: since) }
        }
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    var options = CallOptions.defaults
                    options.timeout = nil
                    try await containers.logs(request, options: options) { response in
                        for try await line in response.messages {
                            continuation.yield(LogLine(stream: line.stream == .stderr ? .stderr : .stdout, time: line.time.date, bytes: Array(line.line)))
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: Self.mapped(error, "logs"))
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

/// One `GRPCAgentClient` per node, made for the node's address (with TLS,
/// checking that the agent there is that node).
public struct GRPCAgentClients: AgentClientFactory {
    let tls: MutualTLS?
    let logger: Logger

    /// - Parameter tls: the controller's own certificate, and the CA agents must be from.
    public init(tls: MutualTLS?, logger: Logger) {
        self.tls = tls
        self.logger = logger
    }

    /// A client on a connection of its own to `node`'s agent.
    public func client(for node: ClusterNode) -> any AgentClient {
        guard let address = try? TransportAddress(parsing: node.address) else { return UnreachableAgent(why: "address \"\(node.address)\" does not parse") }
        return GRPCAgentClient(address: address, tls: tls, nodeID: tls == nil ? nil : node.id, logger: logger)
    }
}

/// The client of a node whose address cannot be used: every call fails.
struct UnreachableAgent: AgentClient {
    let why: String
    func containers(cluster: String, deadline: Duration) async throws(AgentCallError) -> [Container] { throw .unreachable(why) }
    func run(_ spec: ContainerSpec, deadline: Duration) async throws(AgentCallError) -> Container { throw .unreachable(why) }
    func pull(image: String, deadline: Duration) async throws(AgentCallError) { throw .unreachable(why) }
    func setOverlays(_ states: [OverlayState], deadline: Duration) async throws(AgentCallError) { throw .unreachable(why) }
    func start(container: String, deadline: Duration) async throws(AgentCallError) { throw .unreachable(why) }
    func remove(container: String, stopTimeout: Int, deadline: Duration) async throws(AgentCallError) { throw .unreachable(why) }
    func logs(container: String, follow: Bool, tail: Int?, since: Date?) -> AsyncThrowingStream<LogLine, any Error> {
        AsyncThrowingStream { $0.finish(throwing: AgentCallError.unreachable(why)) }
    }
    func close() {}
}
