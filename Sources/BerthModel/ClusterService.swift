import FoundationEssentials

/// What an operator asks of a service: a container, how many replicas of
/// it, where they may run and how an update rolls over them.
public struct ServiceSpec: Codable, Sendable, Hashable {
    /// The service's name; replicas' containers are named `NAME.SLOT.REPLICA`.
    public var name: String
    public var replicas: Int
    /// Each replica's container (its name is the controller's to choose).
    public var container: ContainerSpec
    /// `node.labels.KEY==VALUE`, `node.labels.KEY!=VALUE`, `node.id==…`, `node.hostname==…`.
    public var constraints: [String]
    /// `spread=node.labels.KEY`; none means binpack.
    public var placementPreferences: [String]
    /// How many replicas an update replaces at a time.
    public var updateParallelism: Int

    public init(
        name: String, replicas: Int = 1, container: ContainerSpec, constraints: [String] = [], placementPreferences: [String] = [],
        updateParallelism: Int = 1
    ) {
        self.name = name
        self.replicas = replicas
        self.container = container
        self.constraints = constraints
        self.placementPreferences = placementPreferences
        self.updateParallelism = updateParallelism
    }

    /// The most replicas a service may ask for.
    public static let maximumReplicas = 100_000

    /// - Throws: `BerthError.invalidArgument` for a bad name, a replica count
    ///   out of range, a parallelism under 1, or container settings a
    ///   replica cannot have (`--rm`, a fixed `--ip`, a terminal).
    public func validate() throws {
        guard ObjectName.isValid(name, minimumLength: 1), !name.contains(".") else {
            throw BerthError.invalid("service name \"\(name)\": use letters, digits, '_' and '-' (no dots), starting with a letter or digit")
        }
        guard name.count <= 63 else { throw BerthError.invalid("service name \"\(name)\": at most 63 characters") }
        guard (0...Self.maximumReplicas).contains(replicas) else {
            throw BerthError.invalid("--replicas \(replicas): expected 0 to \(Self.maximumReplicas)")
        }
        guard updateParallelism >= 1 else { throw BerthError.invalid("--update-parallelism \(updateParallelism): at least 1") }
        guard !container.image.isEmpty else { throw BerthError.invalid("a service needs an image") }
        if container.autoRemove { throw BerthError.invalid("--rm: a service's replicas are removed by the controller") }
        if container.ipv4Address != nil { throw BerthError.invalid("--ip: replicas cannot share one fixed address") }
        if container.tty || container.openStdin { throw BerthError.invalid("-t and -i: a replica has no terminal to attach") }
        if container.publishAll { throw BerthError.invalid("-P: publish a service's ports explicitly with -p") }
        for port in container.ports where port.hostPort == 0 {
            throw BerthError.invalid("-p \(port): give the host port; replicas on one node would otherwise differ in it")
        }
    }
}

/// A service as the controller keeps it.
public struct ClusterService: Codable, Sendable, Hashable, Identifiable {
    public var id: String
    public var spec: ServiceSpec
    /// Raised by every update; replicas of an older version are rolled over.
    public var version: Int
    public var createdAt: Date
    public var updatedAt: Date
    /// Why replicas wait (no node fits, an update is paused), empty when none do.
    public var message: String

    public init(id: String, spec: ServiceSpec, version: Int = 1, createdAt: Date, updatedAt: Date, message: String = "") {
        self.id = id
        self.spec = spec
        self.version = version
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.message = message
    }
}

/// One placement of a service's container on a node: docker swarm's task,
/// Nomad's allocation. A replica never moves; a replacement is a new replica
/// in the same slot.
public struct Replica: Codable, Sendable, Hashable, Identifiable {
    public enum DesiredState: String, Codable, Sendable, Hashable {
        case running
        /// To be stopped and removed.
        case shutdown
    }

    public enum State: String, Codable, Sendable, Hashable {
        /// Placed; the agent has not made it yet.
        case pending
        case running
        /// Its container ended and its restart policy brings it back no more.
        case exited
        /// The agent could not create or start it.
        case failed
        /// Its node went down; it was replaced elsewhere.
        case orphaned
        /// Its container was made but is not running (being started, or restarting).
        case created
    }

    public var id: String
    public var serviceID: String
    public var serviceName: String
    /// 1…replicas; a slot keeps its number through replacements.
    public var slot: Int
    /// The service version whose spec the replica runs.
    public var version: Int
    public var nodeID: String
    public var desiredState: DesiredState
    public var state: State
    /// The agent's last error, or why the replica is being shut down.
    public var message: String
    public var exitCode: Int?
    public var createdAt: Date
    public var updatedAt: Date

    public init(
        id: String, serviceID: String, serviceName: String, slot: Int, version: Int, nodeID: String, desiredState: DesiredState = .running,
        state: State = .pending, message: String = "", exitCode: Int? = nil, createdAt: Date, updatedAt: Date
    ) {
        self.id = id
        self.serviceID = serviceID
        self.serviceName = serviceName
        self.slot = slot
        self.version = version
        self.nodeID = nodeID
        self.desiredState = desiredState
        self.state = state
        self.message = message
        self.exitCode = exitCode
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }

    /// The container's name on its node: `SERVICE.SLOT.ID12`.
    public var containerName: String { "\(serviceName).\(slot).\(id.prefix(12))" }
}

/// The labels by which the controller knows its containers on an agent.
public enum ReplicaLabel {
    /// The cluster's ID: containers of another controller are never touched.
    public static let cluster = "berth.cluster"
    public static let service = "berth.service"
    public static let replica = "berth.replica"
}
