public import BerthModel
public import Foundation

/// What the controller asks of one node's agent, in the model's terms. The
/// reconciler decides from what these return and never sees the wire;
/// `GRPCAgentClient` speaks gRPC to a real agent, tests use a fake.
///
/// Every call takes a deadline: the call ends with `AgentCallError.timedOut`
/// when it passes, so a slow agent or call holds up nothing else.
public protocol AgentClient: Sendable {
    /// The containers of this cluster on the node (every state).
    func containers(cluster: String, deadline: Duration) async throws(AgentCallError) -> [Container]
    /// Creates a container and starts it.
    ///
    /// - Throws: `.imageNotFound` when the agent lacks the image (pull it,
    ///   then try again), `.nameInUse` when a container has its name.
    func run(_ spec: ContainerSpec, deadline: Duration) async throws(AgentCallError) -> Container
    /// Tells the agent, whole, what it must know of the overlay networks
    /// its replicas are on (it changes what differs).
    func setOverlays(_ states: [OverlayState], deadline: Duration) async throws(AgentCallError)
    /// Pulls an image to the node.
    func pull(image: String, deadline: Duration) async throws(AgentCallError)
    /// Starts a made container.
    func start(container: String, deadline: Duration) async throws(AgentCallError)
    /// Stops a container (its stop signal, then SIGKILL after `stopTimeout`
    /// seconds) and removes it; a container already gone is not an error.
    func remove(container: String, stopTimeout: Int, deadline: Duration) async throws(AgentCallError)
    /// A container's log lines, in order; with `follow`, until it ends or the caller stops.
    func logs(container: String, follow: Bool, tail: Int?, since: Date?) -> AsyncThrowingStream<LogLine, any Error>
    /// Lets go of the connection.
    func close()
}

/// One line of a container's output.
public struct LogLine: Sendable, Hashable {
    /// Which of the process's outputs the line came from.
    public enum Stream: String, Sendable, Hashable { case stdout, stderr }
    public var stream: Stream
    /// When the agent's shim read it.
    public var time: Date
    /// The line, with its newline when it had one.
    public var bytes: [UInt8]

    public init(stream: Stream, time: Date, bytes: [UInt8]) {
        self.stream = stream
        self.time = time
        self.bytes = bytes
    }
}

/// Why a call to an agent failed, as the reconciler tells failures apart.
public enum AgentCallError: Error, Sendable, Hashable, CustomStringConvertible {
    /// No connection: the agent is down, refuses, or its certificate is not the node's.
    case unreachable(String)
    /// The call's deadline passed.
    case timedOut(String)
    /// The agent lacks the image.
    case imageNotFound(String)
    /// A container already has the name.
    case nameInUse(String)
    /// No such container.
    case noSuchContainer(String)
    /// The agent refused the request, with its reason.
    case refused(BerthError)
    /// The call was cancelled (the controller is stopping, the node went away).
    case cancelled

    public var description: String {
        switch self {
        case .unreachable(let why): return "agent unreachable: \(why)"
        case .timedOut(let what): return "\(what): no answer within its deadline"
        case .imageNotFound(let image): return "no such image: \(image)"
        case .nameInUse(let name): return "a container named \(name) exists already"
        case .noSuchContainer(let id): return "no such container: \(id)"
        case .refused(let error): return error.message
        case .cancelled: return "cancelled"
        }
    }

    /// A short name for metrics: unreachable, timed_out, image_not_found, …
    public var kind: String {
        switch self {
        case .unreachable: return "unreachable"
        case .timedOut: return "timed_out"
        case .imageNotFound: return "image_not_found"
        case .nameInUse: return "name_in_use"
        case .noSuchContainer: return "no_such_container"
        case .refused: return "refused"
        case .cancelled: return "cancelled"
        }
    }
}

/// Makes the client for a node, once per address: one connection per node.
public protocol AgentClientFactory: Sendable {
    func client(for node: ClusterNode) -> any AgentClient
}
