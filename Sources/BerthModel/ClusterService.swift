import FoundationEssentials

/// How a service's replicas are counted (docker's `--mode`).
public enum ServiceMode: String, Codable, Sendable, Hashable, CaseIterable {
    /// `replicas` copies, kept running.
    case replicated
    /// One copy on every node that satisfies the constraints, kept running.
    case global
    /// Runs until `replicas` copies have completed (exited 0), at most
    /// `maxConcurrent` at once; a completed copy is not restarted.
    case replicatedJob = "replicated-job"
    /// One copy on every node that satisfies the constraints, run to completion once.
    case globalJob = "global-job"

    /// - Throws: `BerthError.invalidArgument` naming the modes there are.
    public init(parsing text: String) throws {
        guard let mode = ServiceMode(rawValue: text) else {
            throw BerthError.invalid("--mode \"\(text)\": expected replicated, global, replicated-job or global-job")
        }
        self = mode
    }

    /// Whether a copy that exits 0 is done.
    public var isJob: Bool { self == .replicatedJob || self == .globalJob }
    /// Whether there is one copy per eligible node.
    public var isGlobal: Bool { self == .global || self == .globalJob }
}

/// How an update replaces a service's replicas, and what it does when new
/// ones fail (docker's `--update-*` flags).
public struct UpdatePolicy: Codable, Sendable, Hashable {
    public enum Order: String, Codable, Sendable, Hashable {
        /// The old replica is stopped before its replacement starts.
        case stopFirst = "stop-first"
        /// The replacement starts, and runs, before the old replica is stopped.
        case startFirst = "start-first"

        /// - Throws: `BerthError.invalidArgument`.
        public init(parsing text: String) throws {
            guard let order = Order(rawValue: text) else { throw BerthError.invalid("--update-order \"\(text)\": expected stop-first or start-first") }
            self = order
        }
    }

    public enum FailureAction: String, Codable, Sendable, Hashable {
        /// The update stops; new replicas keep the previous version.
        case pause
        /// The update goes on; failed replicas are replaced as any are.
        case `continue`
        /// The previous spec is restored, batch by batch.
        case rollback

        /// - Throws: `BerthError.invalidArgument`.
        public init(parsing text: String) throws {
            guard let action = FailureAction(rawValue: text) else {
                throw BerthError.invalid("--update-failure-action \"\(text)\": expected pause, continue or rollback")
            }
            self = action
        }
    }

    /// Replicas replaced at a time.
    public var parallelism: Int
    /// Seconds between one batch being done and the next one starting.
    public var delay: Double
    /// Seconds a new replica must keep running to count as updated; a
    /// failure within it is the update's failure.
    public var monitor: Double
    public var order: Order
    public var failureAction: FailureAction
    /// The share of the service's replicas that may fail during an update
    /// before `failureAction` (0: the first failure).
    public var maxFailureRatio: Double

    public init(
        parallelism: Int = 1, delay: Double = 0, monitor: Double = 5, order: Order = .stopFirst, failureAction: FailureAction = .pause,
        maxFailureRatio: Double = 0
    ) {
        self.parallelism = parallelism
        self.delay = delay
        self.monitor = monitor
        self.order = order
        self.failureAction = failureAction
        self.maxFailureRatio = maxFailureRatio
    }

    /// - Throws: `BerthError.invalidArgument` for a value out of range.
    public func validate() throws {
        guard parallelism >= 1 else { throw BerthError.invalid("--update-parallelism \(parallelism): at least 1") }
        guard delay >= 0, delay <= 86400 else { throw BerthError.invalid("--update-delay: between 0s and 24h") }
        guard monitor >= 0, monitor <= 86400 else { throw BerthError.invalid("--update-monitor: between 0s and 24h") }
        guard (0...1).contains(maxFailureRatio) else {
            throw BerthError.invalid("--update-max-failure-ratio \(maxFailureRatio): expected a number from 0 to 1")
        }
    }

    private enum CodingKeys: String, CodingKey { case parallelism, delay, monitor, order, failureAction, maxFailureRatio }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            parallelism: try c.decodeIfPresent(Int.self, forKey: .parallelism) ?? 1, delay: try c.decodeIfPresent(Double.self, forKey: .delay) ?? 0,
            monitor: try c.decodeIfPresent(Double.self, forKey: .monitor) ?? 5, order: try c.decodeIfPresent(Order.self, forKey: .order) ?? .stopFirst,
            failureAction: try c.decodeIfPresent(FailureAction.self, forKey: .failureAction) ?? .pause,
            maxFailureRatio: try c.decodeIfPresent(Double.self, forKey: .maxFailureRatio) ?? 0)
    }
}

/// What an operator asks of a service: a container, how many replicas of
/// it and in which mode, where they may run, how an update rolls over them.
public struct ServiceSpec: Codable, Sendable, Hashable {
    /// The service's name; replicas' containers are named `NAME.SLOT.REPLICA`.
    public var name: String
    public var mode: ServiceMode
    /// Replicated: how many run. Replicated job: how many must complete.
    /// Global modes: unused (one per eligible node).
    public var replicas: Int
    /// Replicated jobs: how many run at once (nil: `replicas`).
    public var maxConcurrent: Int?
    /// Each replica's container (its name is the controller's to choose).
    public var container: ContainerSpec
    /// `node.labels.KEY==VALUE` (labels set by operators), `engine.labels.KEY==VALUE`
    /// (the agent's own), `!=` of either, `node.id==…`, `node.hostname==…`.
    public var constraints: [String]
    /// `spread=node.labels.KEY` (or `engine.labels.KEY`), applied before the
    /// spread over nodes that every service has.
    public var placementPreferences: [String]
    /// At most this many replicas of the service on one node (0: no limit).
    public var maxReplicasPerNode: Int
    public var update: UpdatePolicy
    /// Seconds after which an agent cut off from its controller stops the
    /// replicas itself (Nomad's `stop_after_client_disconnect`); nil: they keep running.
    public var stopAfterDisconnect: Double?
    /// Overlay networks the replicas are on (`--network`), by name or ID
    /// as given; the controller keeps IDs. Replicas on none use each
    /// node's default network (`container.network`).
    public var networks: [String]
    /// How the service's name resolves on its networks (`--endpoint-mode`).
    public var endpointMode: EndpointMode
    /// Ports published for the service (`--publish`).
    public var publish: [ServicePort]

    public init(
        name: String, mode: ServiceMode = .replicated, replicas: Int = 1, maxConcurrent: Int? = nil, container: ContainerSpec,
        constraints: [String] = [], placementPreferences: [String] = [], maxReplicasPerNode: Int = 0, update: UpdatePolicy = UpdatePolicy(),
        stopAfterDisconnect: Double? = nil, networks: [String] = [], endpointMode: EndpointMode = .vip, publish: [ServicePort] = []
    ) {
        self.networks = networks
        self.endpointMode = endpointMode
        self.publish = publish
        self.name = name
        self.mode = mode
        self.replicas = replicas
        self.maxConcurrent = maxConcurrent
        self.container = container
        self.constraints = constraints
        self.placementPreferences = placementPreferences
        self.maxReplicasPerNode = maxReplicasPerNode
        self.update = update
        self.stopAfterDisconnect = stopAfterDisconnect
    }

    /// The most replicas a service may ask for.
    public static let maximumReplicas = 100_000

    /// Replicated jobs: how many replicas run at once.
    public var parallelism: Int { max(1, min(maxConcurrent ?? replicas, replicas)) }

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
        if let maxConcurrent {
            guard mode == .replicatedJob else { throw BerthError.invalid("--max-concurrent: only for --mode replicated-job") }
            guard maxConcurrent >= 1 else { throw BerthError.invalid("--max-concurrent \(maxConcurrent): at least 1") }
        }
        guard maxReplicasPerNode >= 0 else { throw BerthError.invalid("--replicas-max-per-node \(maxReplicasPerNode): 0 (no limit) or more") }
        if mode.isGlobal && maxReplicasPerNode > 0 {
            throw BerthError.invalid("--replicas-max-per-node: a global service has one replica per node already")
        }
        try update.validate()
        if let stopAfterDisconnect {
            guard stopAfterDisconnect > 0, stopAfterDisconnect <= 7 * 86400 else {
                throw BerthError.invalid("--stop-after-disconnect: between 1s and 168h")
            }
        }
        guard !container.image.isEmpty else { throw BerthError.invalid("a service needs an image") }
        if container.autoRemove { throw BerthError.invalid("--rm: a service's replicas are removed by the controller") }
        if container.ipv4Address != nil { throw BerthError.invalid("--ip: replicas cannot share one fixed address") }
        if container.tty || container.openStdin { throw BerthError.invalid("-t and -i: a replica has no terminal to attach") }
        if container.publishAll { throw BerthError.invalid("-P: publish a service's ports explicitly with -p") }
        for port in container.ports where port.hostPort == 0 {
            throw BerthError.invalid("-p \(port): give the host port; replicas on one node would otherwise differ in it")
        }
        if Set(networks).count != networks.count { throw BerthError.invalid("--network: a network is given twice") }
        if !networks.isEmpty && container.network != "bridge" && container.network != networks[0] {
            throw BerthError.invalid("--network \(networks[0]): a replica on an overlay is on no other network (\(container.network))")
        }
        for port in publish {
            if port.mode == .ingress && networks.isEmpty {
                throw BerthError.invalid("--publish \(port.published): mode=ingress reaches replicas over an overlay network; give the service --network (or use mode=host)")
            }
            if publish.filter({ $0.published == port.published && $0.transport == port.transport }).count > 1 {
                throw BerthError.invalid("--publish: port \(port.published)/\(port.transport.rawValue) is published twice")
            }
        }
        if !publish.isEmpty && !container.ports.isEmpty { throw BerthError.invalid("--publish and -p: use one of them") }
    }

    private enum CodingKeys: String, CodingKey {
        case name, mode, replicas, maxConcurrent, container, constraints, placementPreferences, maxReplicasPerNode, update, stopAfterDisconnect
        case networks, endpointMode, publish
        /// Records from before update policies had more than a parallelism.
        case updateParallelism
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        var update = try c.decodeIfPresent(UpdatePolicy.self, forKey: .update) ?? UpdatePolicy()
        if let legacy = try c.decodeIfPresent(Int.self, forKey: .updateParallelism) { update.parallelism = legacy }
        self.init(
            name: try c.decode(String.self, forKey: .name), mode: try c.decodeIfPresent(ServiceMode.self, forKey: .mode) ?? .replicated,
            replicas: try c.decode(Int.self, forKey: .replicas), maxConcurrent: try c.decodeIfPresent(Int.self, forKey: .maxConcurrent),
            container: try c.decode(ContainerSpec.self, forKey: .container),
            constraints: try c.decodeIfPresent([String].self, forKey: .constraints) ?? [],
            placementPreferences: try c.decodeIfPresent([String].self, forKey: .placementPreferences) ?? [],
            maxReplicasPerNode: try c.decodeIfPresent(Int.self, forKey: .maxReplicasPerNode) ?? 0, update: update,
            stopAfterDisconnect: try c.decodeIfPresent(Double.self, forKey: .stopAfterDisconnect),
            networks: try c.decodeIfPresent([String].self, forKey: .networks) ?? [],
            endpointMode: try c.decodeIfPresent(EndpointMode.self, forKey: .endpointMode) ?? .vip,
            publish: try c.decodeIfPresent([ServicePort].self, forKey: .publish) ?? [])
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(mode, forKey: .mode)
        try c.encode(replicas, forKey: .replicas)
        try c.encodeIfPresent(maxConcurrent, forKey: .maxConcurrent)
        try c.encode(container, forKey: .container)
        try c.encode(constraints, forKey: .constraints)
        try c.encode(placementPreferences, forKey: .placementPreferences)
        try c.encode(maxReplicasPerNode, forKey: .maxReplicasPerNode)
        try c.encode(update, forKey: .update)
        try c.encodeIfPresent(stopAfterDisconnect, forKey: .stopAfterDisconnect)
        if !networks.isEmpty { try c.encode(networks, forKey: .networks) }
        if endpointMode != .vip { try c.encode(endpointMode, forKey: .endpointMode) }
        if !publish.isEmpty { try c.encode(publish, forKey: .publish) }
    }
}

/// Where a service's update is (docker's UpdateStatus).
public struct UpdateStatus: Codable, Sendable, Hashable {
    public enum State: String, Codable, Sendable, Hashable {
        /// Replicas are being replaced by the new version.
        case updating
        /// Replacing stopped after failures; new replicas keep the previous version.
        case paused
        case completed
        /// The previous spec is being restored.
        case rollingBack = "rolling-back"
        /// Restoring stopped after failures.
        case rollbackPaused = "rollback-paused"
        case rolledBack = "rolled-back"

        /// Whether replicas are still being replaced.
        public var isActive: Bool { self == .updating || self == .rollingBack }
    }

    public var state: State
    public var startedAt: Date
    public var completedAt: Date?
    /// Why it paused or rolled back.
    public var message: String
    /// Whether new replicas failed it (a pause, or a rollback of its own);
    /// a rollback an operator asked for is no failure.
    public var failed: Bool

    public init(state: State, startedAt: Date, completedAt: Date? = nil, message: String = "", failed: Bool = false) {
        self.state = state
        self.startedAt = startedAt
        self.completedAt = completedAt
        self.message = message
        self.failed = failed
    }

    private enum CodingKeys: String, CodingKey { case state, startedAt, completedAt, message, failed }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            state: try c.decode(State.self, forKey: .state), startedAt: try c.decode(Date.self, forKey: .startedAt),
            completedAt: try c.decodeIfPresent(Date.self, forKey: .completedAt), message: try c.decodeIfPresent(String.self, forKey: .message) ?? "",
            failed: try c.decodeIfPresent(Bool.self, forKey: .failed) ?? false)
    }
}

/// A spec a service had before, with its version: what a rollback restores.
public struct VersionedSpec: Codable, Sendable, Hashable {
    public var version: Int
    public var spec: ServiceSpec

    public init(version: Int, spec: ServiceSpec) {
        self.version = version
        self.spec = spec
    }
}

/// A service as the controller keeps it.
public struct ClusterService: Codable, Sendable, Hashable, Identifiable {
    public var id: String
    public var spec: ServiceSpec
    /// The version of `spec`; replicas of another version are rolled over.
    /// Raised by every update; a rollback returns to the previous version's number.
    public var version: Int
    /// Raised by every change an operator makes (an update, a scale, a
    /// rollback): what `expected_version` is checked against.
    public var revision: Int
    public var createdAt: Date
    public var updatedAt: Date
    /// Why replicas wait (no node fits, an update is paused), empty when none do.
    public var message: String
    /// The spec before the last update (what `service rollback` restores).
    public var previous: VersionedSpec?
    /// The last update, nil before the first.
    public var update: UpdateStatus?
    /// Its virtual IP on each overlay network it is on (mode vip), by network ID.
    public var virtualIPs: [String: IPv4Address]

    public init(
        id: String, spec: ServiceSpec, version: Int = 1, revision: Int = 1, createdAt: Date, updatedAt: Date, message: String = "",
        previous: VersionedSpec? = nil, update: UpdateStatus? = nil, virtualIPs: [String: IPv4Address] = [:]
    ) {
        self.virtualIPs = virtualIPs
        self.id = id
        self.spec = spec
        self.version = version
        self.revision = revision
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.message = message
        self.previous = previous
        self.update = update
    }

    /// The version and spec new replicas get: the previous ones while a
    /// forward update is paused, so that a paused update places nothing
    /// new on the version that failed.
    public var placing: VersionedSpec {
        if update?.state == .paused, let previous { return previous }
        return VersionedSpec(version: version, spec: spec)
    }

    private enum CodingKeys: String, CodingKey { case id, spec, version, revision, createdAt, updatedAt, message, previous, update, virtualIPs }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let version = try c.decode(Int.self, forKey: .version)
        self.init(
            id: try c.decode(String.self, forKey: .id), spec: try c.decode(ServiceSpec.self, forKey: .spec), version: version,
            revision: try c.decodeIfPresent(Int.self, forKey: .revision) ?? version, createdAt: try c.decode(Date.self, forKey: .createdAt),
            updatedAt: try c.decode(Date.self, forKey: .updatedAt), message: try c.decodeIfPresent(String.self, forKey: .message) ?? "",
            previous: try c.decodeIfPresent(VersionedSpec.self, forKey: .previous), update: try c.decodeIfPresent(UpdateStatus.self, forKey: .update),
            virtualIPs: try c.decodeIfPresent([String: IPv4Address].self, forKey: .virtualIPs) ?? [:])
    }
}

/// One placement of a service's container on a node: docker swarm's task,
/// Nomad's allocation. A replica never moves; a replacement is a new replica
/// in the same slot. Replicas that ended are kept a while as the slot's history.
public struct Replica: Codable, Sendable, Hashable, Identifiable {
    public enum DesiredState: String, Codable, Sendable, Hashable {
        case running
        /// To be stopped and removed.
        case shutdown
    }

    public enum State: String, Codable, Sendable, Hashable {
        /// Not made yet: waiting for a node (no node fits, or a backoff after
        /// failures), or placed and not yet made by its agent.
        case pending
        /// Its container was made but is not running (being started, or restarting).
        case created
        /// Its container runs, but its health check has not passed yet (or
        /// its agent is restarting it for failing): not counted as running.
        case starting
        /// Its container runs (and is healthy, when it has a health check).
        case running
        /// Its container ended and its restart policy brings it back no more.
        case exited
        /// It could not be made or started, or it kept failing.
        case failed
        /// Its node went down; it was replaced elsewhere.
        case orphaned
        /// A job's replica that exited 0: done, not restarted.
        case complete
        /// Stopped and removed by the controller (replaced, scaled down, removed).
        case shutdown
    }

    public var id: String
    public var serviceID: String
    public var serviceName: String
    /// 1…replicas (0 for global services, whose replicas are known by node);
    /// a slot keeps its number through replacements.
    public var slot: Int
    /// The service version whose spec the replica runs.
    public var version: Int
    /// Its node; empty while it waits for one.
    public var nodeID: String
    public var desiredState: DesiredState
    public var state: State
    /// The agent's last error, why the replica waits, or why it is being shut down.
    public var message: String
    public var exitCode: Int?
    public var createdAt: Date
    public var updatedAt: Date
    /// Not placed before this time (a backoff after its slot's failures).
    public var notBefore: Date?
    /// When the controller first saw it running in its current run.
    public var runningSince: Date?
    /// Restarts its agent made under the container's restart policy.
    public var restartCount: Int
    /// `restartCount` when it was last seen running steadily: restarts
    /// beyond it are a crash loop.
    public var steadyRestarts: Int
    /// Failures of its slot in a row before it (0 for a fresh slot); its
    /// own failure makes the next replica wait longer.
    public var attempt: Int
    /// Its container is gone: the record is history.
    public var removed: Bool
    /// Its container's address on each overlay network, by network ID:
    /// given when it is placed, free again once the record is history.
    public var addresses: [String: IPv4Address]

    public init(
        id: String, serviceID: String, serviceName: String, slot: Int, version: Int, nodeID: String, desiredState: DesiredState = .running,
        state: State = .pending, message: String = "", exitCode: Int? = nil, createdAt: Date, updatedAt: Date, notBefore: Date? = nil,
        runningSince: Date? = nil, restartCount: Int = 0, steadyRestarts: Int = 0, attempt: Int = 0, removed: Bool = false,
        addresses: [String: IPv4Address] = [:]
    ) {
        self.addresses = addresses
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
        self.notBefore = notBefore
        self.runningSince = runningSince
        self.restartCount = restartCount
        self.steadyRestarts = steadyRestarts
        self.attempt = attempt
        self.removed = removed
    }

    /// The container's name on its node: `SERVICE.SLOT.ID12`, or for a
    /// global service's replica `SERVICE.NODE12.ID12`.
    public var containerName: String {
        slot > 0 ? "\(serviceName).\(slot).\(id.prefix(12))" : "\(serviceName).\(nodeID.prefix(12)).\(id.prefix(12))"
    }

    /// Whether it has a node.
    public var isAssigned: Bool { !nodeID.isEmpty }

    /// Whether it is meant to run and has not finished (a job's complete
    /// replica has; so has one that failed or exited, until it is replaced).
    public var isLive: Bool { desiredState == .running && state != .complete }

    private enum CodingKeys: String, CodingKey {
        case id, serviceID, serviceName, slot, version, nodeID, desiredState, state, message, exitCode, createdAt, updatedAt, notBefore,
            runningSince, restartCount, steadyRestarts, attempt, removed, addresses
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            id: try c.decode(String.self, forKey: .id), serviceID: try c.decode(String.self, forKey: .serviceID),
            serviceName: try c.decode(String.self, forKey: .serviceName), slot: try c.decode(Int.self, forKey: .slot),
            version: try c.decode(Int.self, forKey: .version), nodeID: try c.decode(String.self, forKey: .nodeID),
            desiredState: try c.decode(DesiredState.self, forKey: .desiredState), state: try c.decode(State.self, forKey: .state),
            message: try c.decodeIfPresent(String.self, forKey: .message) ?? "", exitCode: try c.decodeIfPresent(Int.self, forKey: .exitCode),
            createdAt: try c.decode(Date.self, forKey: .createdAt), updatedAt: try c.decode(Date.self, forKey: .updatedAt),
            notBefore: try c.decodeIfPresent(Date.self, forKey: .notBefore), runningSince: try c.decodeIfPresent(Date.self, forKey: .runningSince),
            restartCount: try c.decodeIfPresent(Int.self, forKey: .restartCount) ?? 0,
            steadyRestarts: try c.decodeIfPresent(Int.self, forKey: .steadyRestarts) ?? 0, attempt: try c.decodeIfPresent(Int.self, forKey: .attempt) ?? 0,
            removed: try c.decodeIfPresent(Bool.self, forKey: .removed) ?? false,
            addresses: try c.decodeIfPresent([String: IPv4Address].self, forKey: .addresses) ?? [:])
    }
}

/// The labels by which the controller knows its containers on an agent.
public enum ReplicaLabel {
    /// The cluster's ID: containers of another controller are never touched.
    public static let cluster = "berth.cluster"
    public static let service = "berth.service"
    public static let replica = "berth.replica"
    /// Seconds without the controller after which the agent stops the
    /// container itself (`--stop-after-disconnect`).
    public static let stopAfterDisconnect = "berth.stop-after-disconnect"
}
