import ArgumentParser
import BerthAPI
import BerthLinux
import BerthModel
import BerthTransport
import FoundationEssentials
import GRPCCore
import SwiftProtobuf

/// `berth service …`: replicated containers across the cluster, through the controller.
struct ServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service", abstract: "Manage services (through the controller).",
        subcommands: [
            ServiceCreate.self, ServiceList.self, ServiceInspect.self, ServicePs.self, ServiceLogs.self, ServiceScale.self, ServiceUpdate.self,
            ServiceRollback.self, ServiceRemove.self,
        ])
}

/// Runs `body` with the controller's Services client.
func withServices<R: Sendable>(
    _ options: ControllerOptions, _ body: @Sendable (Berth_Controller_V1_Services.Client<NGHTTP2ClientTransport>) async throws -> R
) async throws -> R {
    try await options.withController { grpc in try await body(Berth_Controller_V1_Services.Client(wrapping: grpc)) }
}

/// "3/6 running", with what a job has completed and what waits.
func replicaSummary(_ s: Berth_Controller_V1_Service) -> String {
    let mode = ServiceMode(proto: s.spec.mode)
    var text = mode.isJob ? "\(s.completed)/\(s.desired) completed" : "\(s.running)/\(s.desired)"
    var notes: [String] = []
    if mode.isJob && s.running > 0 { notes.append("\(s.running) running") }
    if s.pending > 0 { notes.append("\(s.pending) pending") }
    if !notes.isEmpty { text += " (\(notes.joined(separator: ", ")))" }
    return text
}

/// Waits until a service has converged, showing progress; stops as soon
/// as the controller says it has stalled (replicas keep failing or fit no
/// node, an update paused or rolled back) with its reason, and gives up
/// after `timeout`.
func converge(_ options: ControllerOptions, service: String, timeout: Duration = .seconds(120)) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    var shown = ""
    while true {
        let s = try await withServices(options) { try await $0.inspect(.with { $0.service = service }).service }
        let mode = ServiceMode(proto: s.spec.mode)
        var line = "\(s.spec.name): " + (mode.isJob ? replicaSummary(s) : "\(s.running)/\(s.desired) running")
        if s.hasUpdateStatus, let state = UpdateStatus.State(proto: s.updateStatus.state), state.isActive {
            line += ", \(s.updated)/\(s.desired) updated (\(state.rawValue))"
        }
        if !s.progressMessage.isEmpty && s.progress != .converged { line += " (\(s.progressMessage))" }
        if line != shown {
            Console.error(line)
            shown = line
        }
        switch s.progress {
        case .converged:
            return
        case .stalled:
            throw BerthError(
                .failedPrecondition,
                "\(s.spec.name) did not converge: \(s.progressMessage.isEmpty ? "its replicas keep failing" : s.progressMessage) (\(s.running)/\(s.desired) running; berth service ps \(s.spec.name) shows each replica)")
        default:
            break
        }
        if clock.now > deadline {
            throw BerthError(
                .deadlineExceeded,
                "\(s.spec.name) did not converge within \(timeout): \(s.progressMessage.isEmpty ? "replicas are still starting" : s.progressMessage)")
        }
        try await Task.sleep(for: .milliseconds(250))
    }
}

/// The flags of a service's own (beside its container's): where its
/// replicas go and how updates roll over them.
struct ServiceSettingsFlags: ParsableArguments {
    @Option(help: "Number of replicas (for a replicated job: completions).") var replicas: Int?
    @Option(help: "Replicated jobs: how many run at once (all of them by default).") var maxConcurrent: Int?
    @Option(help: "At most this many replicas on one node (0: no limit).") var replicasMaxPerNode: Int?
    @Option(help: "Replicas an update replaces at a time.") var updateParallelism: Int?
    @Option(help: "Wait between update batches (e.g. 10s).") var updateDelay: String?
    @Option(help: "How long a new replica must keep running before the next batch (default 5s).") var updateMonitor: String?
    @Option(help: "stop-first (the default) or start-first: the new replica runs before the old one stops.") var updateOrder: String?
    @Option(help: "When new replicas fail: pause (the default), continue, or rollback.") var updateFailureAction: String?
    @Option(help: "The share of replicas that may fail during an update before its failure action (0 to 1).") var updateMaxFailureRatio: Double?
    @Option(help: "Agents cut off from the controller this long stop the replicas themselves (e.g. 30s; 0 or none: they keep running).")
    var stopAfterDisconnect: String?

    /// Sets what was given.
    ///
    /// - Throws: `BerthError.invalidArgument` for a value that does not parse.
    func apply(to spec: inout ServiceSpec) throws {
        if let replicas { spec.replicas = replicas }
        if let maxConcurrent { spec.maxConcurrent = maxConcurrent == 0 ? nil : maxConcurrent }
        if let replicasMaxPerNode { spec.maxReplicasPerNode = replicasMaxPerNode }
        if let updateParallelism { spec.update.parallelism = updateParallelism }
        if let updateDelay { spec.update.delay = try DurationText.seconds(parsing: updateDelay, for: "--update-delay") }
        if let updateMonitor { spec.update.monitor = try DurationText.seconds(parsing: updateMonitor, for: "--update-monitor") }
        if let updateOrder { spec.update.order = try UpdatePolicy.Order(parsing: updateOrder) }
        if let updateFailureAction { spec.update.failureAction = try UpdatePolicy.FailureAction(parsing: updateFailureAction) }
        if let updateMaxFailureRatio { spec.update.maxFailureRatio = updateMaxFailureRatio }
        if let stopAfterDisconnect {
            let seconds = stopAfterDisconnect == "none" ? 0 : try DurationText.seconds(parsing: stopAfterDisconnect, for: "--stop-after-disconnect")
            spec.stopAfterDisconnect = seconds > 0 ? seconds : nil
        }
    }
}

struct ServiceCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a service.")
    @OptionGroup var options: ControllerOptions
    @Option(help: "replicated (the default), global (one replica per node), replicated-job or global-job (run to completion).")
    var mode = "replicated"
    @Option(
        help:
            "A placement constraint: node.labels.KEY==VALUE (an operator's label), engine.labels.KEY==VALUE (the agent's own), != of either, node.id==ID, node.hostname==NAME (repeatable)."
    )
    var constraint: [String] = []
    @Option(help: "A placement preference: spread=node.labels.KEY (or engine.labels.KEY), before the spread over nodes.") var placementPref: [String] = []
    @OptionGroup var settings: ServiceSettingsFlags
    @Flag(help: "Show where the replicas would go, and why each node would or would not take one; create nothing.") var dryRun = false
    @Flag(name: .shortAndLong, help: "Return at once instead of waiting for the replicas to run.") var detach = false
    @Option(help: "How the service's name resolves on its overlay network: vip (one virtual IP, the default) or dnsrr (its replicas' addresses).")
    var endpointMode = "vip"
    @OptionGroup var container: ContainerFlags
    @Argument(help: "The image.") var image: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments.") var command: [String] = []

    func run() async throws {
        guard let name = container.name else { throw BerthError.invalid("a service needs --name") }
        let mode = try ServiceMode(parsing: self.mode)
        // --network names an overlay network (made on the controller), as
        // docker's does; --publish published=…,target=… is a service port.
        var flags = container
        let networks = flags.network.filter { !Network.reservedNames.contains($0) }
        if !networks.isEmpty { flags.network.removeAll { !Network.reservedNames.contains($0) } }
        let publish = try flags.publish.filter { $0.contains("=") }.map { try ServicePort(parsing: $0) }
        flags.publish.removeAll { $0.contains("=") }
        var spec = ServiceSpec(
            name: name, mode: mode,
            container: try flags.spec(
                image: image, command: command, environment: ProcessInfo.processInfo.environment, defaultRestart: mode.isJob ? "no" : "always"),
            constraints: constraint, placementPreferences: placementPref, networks: networks, endpointMode: try EndpointMode(parsing: endpointMode),
            publish: publish)
        try settings.apply(to: &spec)
        try spec.validate()
        let dryRun = self.dryRun
        let request = spec.proto
        let reply = try await withServices(options) { try await $0.create(.with { $0.spec = request; $0.dryRun = dryRun }) }
        if dryRun {
            let rows = reply.verdicts.map { v -> [String] in
                [String(v.nodeID.prefix(12)), v.hostname, v.rejection.isEmpty ? (v.chosen ? "yes, next" : "yes") : "no", "\(v.replicas)",
                 v.rejection.isEmpty ? Human.significant(v.score, digits: 3) : "", v.rejection]
            }
            Console.print(Table(rows: [["NODE ID", "HOSTNAME", "FITS", "REPLICAS", "SCORE", "REASON"]] + rows).text)
            let hostnames = Dictionary(reply.verdicts.map { ($0.nodeID, $0.hostname) }, uniquingKeysWith: { a, _ in a })
            var counts: [String: Int] = [:]
            for node in reply.placements { counts[node, default: 0] += 1 }
            let summary = counts.sorted { (hostnames[$0.key] ?? $0.key) < (hostnames[$1.key] ?? $1.key) }
                .map { "\(hostnames[$0.key] ?? "") (\($0.key.prefix(12))) ×\($0.value)" }.joined(separator: ", ")
            Console.print("\(spec.name): \(reply.placements.count) replicas would be placed\(summary.isEmpty ? "" : ": " + summary)")
            if !reply.unplaced.isEmpty { throw BerthError(.resourceExhausted, reply.unplaced) }
            return
        }
        Console.print(reply.service.id)
        if !detach { try await converge(options, service: reply.service.id) }
    }
}

/// A service as `inspect` shows it.
struct ServiceView: Encodable {
    var id: String
    var name: String
    var mode: String
    var version: Int64
    var revision: Int64
    var replicas: Int32
    var desired: Int32
    var running: Int32
    var updated: Int32
    var pending: Int32
    var completed: Int32
    var progress: String
    var progressMessage: String
    var image: String
    var command: [String]
    var env: [String]
    var memoryBytes: Int64?
    var cpus: Double?
    var ports: [String]
    var restart: String
    var constraints: [String]
    var placementPreferences: [String]
    var updateParallelism: Int32
    var message: String
    var updateStatus: UpdateStatus?
    var spec: ServiceSpec
    var previousVersion: Int64?
    var previousSpec: ServiceSpec?
    var createdAt: Date
    var updatedAt: Date
    /// Its virtual IP on each overlay network, by network ID.
    var virtualIPs: [String: String]?

    init(_ s: Berth_Controller_V1_Service) throws {
        let spec = try ServiceSpec(proto: s.spec)
        let container = spec.container
        id = s.id
        name = s.spec.name
        mode = spec.mode.rawValue
        version = s.version
        revision = s.revision
        replicas = s.spec.replicas
        desired = s.desired
        running = s.running
        updated = s.updated
        pending = s.pending
        completed = s.completed
        progress = s.progress == .converged ? "converged" : s.progress == .stalled ? "stalled" : "progressing"
        progressMessage = s.progressMessage
        image = container.image
        command = container.command
        env = container.env
        memoryBytes = container.resources.memory?.bytes
        cpus = container.resources.cpus.map { Double($0.nanoCPUs) / 1e9 }
        ports = container.ports.map(\.description)
        restart = container.restartPolicy.description
        constraints = spec.constraints
        placementPreferences = spec.placementPreferences
        updateParallelism = Int32(spec.update.parallelism)
        message = s.message
        if s.hasUpdateStatus, let state = UpdateStatus.State(proto: s.updateStatus.state) {
            updateStatus = UpdateStatus(
                state: state, startedAt: s.updateStatus.startedAt.date,
                completedAt: s.updateStatus.hasCompletedAt ? s.updateStatus.completedAt.date : nil, message: s.updateStatus.message,
                failed: s.updateStatus.failed)
        }
        self.spec = spec
        if s.hasPreviousSpec {
            previousVersion = s.previousVersion
            previousSpec = try ServiceSpec(proto: s.previousSpec)
        }
        createdAt = s.createdAt.date
        updatedAt = s.updatedAt.date
        virtualIPs = s.virtualIps.isEmpty ? nil : s.virtualIps
    }
}

struct ServiceList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List services.", aliases: ["list"])
    @OptionGroup var options: ControllerOptions
    @Flag(name: .shortAndLong, help: "Only display service IDs.") var quiet = false
    @Option(help: "Output format: json, or table (the default).") var format: String?

    func run() async throws {
        let format = try OutputFormat(format)
        let reply = try await withServices(options) { try await $0.list(.init()) }
        Console.stale(reply.stale)
        let services = reply.services
        if quiet {
            services.forEach { Console.print($0.id) }
            return
        }
        switch format {
        case .json: try Console.json(services.map(ServiceView.init))
        case .human:
            let rows = try services.map { s -> [String] in
                let view = try ServiceView(s)
                var state = ""
                if let update = view.updateStatus, update.state != .completed { state = update.state.rawValue }
                return [String(s.id.prefix(12)), s.spec.name, view.mode, replicaSummary(s), view.image, view.ports.joined(separator: ", "), state]
            }
            Console.print(Table(rows: [["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS", "UPDATE"]] + rows).text)
        }
    }
}

struct ServiceInspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show services in detail (JSON).")
    @OptionGroup var options: ControllerOptions
    @Argument var services: [String]

    func run() async throws {
        var views: [ServiceView] = []
        try await EachName.run(services) { name in
            let reply = try await withServices(options) { try await $0.inspect(.with { $0.service = name }) }
            Console.stale(reply.stale)
            views.append(try ServiceView(reply.service))
        }
        try Console.json(views)
    }
}

struct ServicePs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps", abstract: "List the replicas of services: where each runs, its state, and with -a each slot's history.")
    @OptionGroup var options: ControllerOptions
    @Flag(name: .shortAndLong, help: "Also show replicas being shut down and each slot's last tries.") var all = false
    @Flag(name: .shortAndLong, help: "Only display replica IDs.") var quiet = false
    @Option(help: "Output format: json, or table (the default).") var format: String?
    @Argument(help: "Services (every service when none is given).") var services: [String] = []

    struct View: Encodable {
        var id, service, name, node, nodeID, desiredState, state, message: String
        var slot: Int32
        var version: Int64
        var exitCode: Int32?
        var restartCount: Int32
        var attempt: Int32
        var removed: Bool
        var notBefore: Date?
        var updatedAt: Date
        /// Its address on each overlay network, by network ID.
        var addresses: [String: String]?
    }

    func run() async throws {
        let format = try OutputFormat(format)
        let all = self.all
        var replicas: [Berth_Controller_V1_Replica] = []
        for service in services.isEmpty ? [""] : services {
            let reply = try await withServices(options) { try await $0.listReplicas(.with { $0.service = service; $0.all = all }) }
            Console.stale(reply.stale)
            replicas += reply.replicas
        }
        if quiet {
            replicas.forEach { Console.print($0.id) }
            return
        }
        switch format {
        case .json:
            try Console.json(replicas.map {
                View(id: $0.id, service: $0.serviceName, name: $0.containerName, node: $0.nodeHostname, nodeID: $0.nodeID,
                     desiredState: $0.desiredState, state: $0.state, message: $0.message, slot: $0.slot, version: $0.version,
                     exitCode: $0.hasExitCode ? $0.exitCode : nil, restartCount: $0.restartCount, attempt: $0.attempt, removed: $0.removed,
                     notBefore: $0.hasNotBefore ? $0.notBefore.date : nil, updatedAt: $0.updatedAt.date, addresses: $0.addresses.isEmpty ? nil : $0.addresses)
            })
        case .human:
            var previous = ""
            let rows = replicas.map { r -> [String] in
                let code = r.hasExitCode ? " (\(r.exitCode))" : ""
                let slot = r.slot > 0 ? "\(r.serviceName).\(r.slot)" : "\(r.serviceName).\(r.nodeHostname.isEmpty ? String(r.nodeID.prefix(12)) : r.nodeHostname)"
                // A slot's earlier replicas under its current one, as swarm shows them.
                let name = slot == previous ? " \\_ \(slot)" : slot
                previous = slot
                var current = "\(r.state.capitalized)\(code) \(Human.ago(r.updatedAt.date))"
                if r.state == "pending", r.hasNotBefore, r.notBefore.date > Date() {
                    current = "Pending, starts in \(Human.duration(r.notBefore.date.timeIntervalSinceNow))"
                }
                return [String(r.id.prefix(12)), name, r.nodeHostname, r.nodeID.isEmpty ? "" : String(r.nodeID.prefix(12)), r.desiredState.capitalized,
                        current, Human.truncate(r.message, 70)]
            }
            Console.print(Table(rows: [["ID", "NAME", "NODE", "NODE ID", "DESIRED STATE", "CURRENT STATE", "MESSAGE"]] + rows).text)
        }
    }
}

struct ServiceLogs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs", abstract: "Show the output of a service's replicas (or of one replica), each line with the replica it came from.")
    @OptionGroup var options: ControllerOptions
    @Flag(name: .shortAndLong, help: "Follow the output.") var follow = false
    @Flag(name: .shortAndLong, help: "Show timestamps.") var timestamps = false
    @Flag(help: "Leave out the replica prefix.") var noPrefix = false
    @Option(name: [.customShort("n"), .long], help: "Number of lines from the end of each replica's log.") var tail: String?
    @Option(help: "Only lines since a time (RFC 3339, or a duration like 10m).") var since: String?
    @Argument(help: "A service (name or ID), or one replica (ID or container name).") var service: String

    func run() async throws {
        let tailCount: UInt32? = try tail.flatMap { t in
            if t == "all" { return nil }
            guard let n = UInt32(t) else { throw BerthError.invalid("--tail \"\(t)\": expected a number or all") }
            return n
        }
        let sinceDate = try since.map { try TimeText.date(parsing: $0, for: "--since", now: Date()) }
        let request = Berth_Controller_V1_ServiceLogsRequest.with {
            $0.service = service
            $0.follow = follow
            if let tailCount { $0.tail = tailCount }
            if let sinceDate { $0.since = Google_Protobuf_Timestamp(date: sinceDate) }
        }
        let (timestamps, noPrefix) = (self.timestamps, self.noPrefix)
        try await withServices(options) { client in
            var options = CallOptions.defaults
            options.timeout = nil
            try await client.logs(request, options: options) { response in
                for try await line in response.messages {
                    var bytes: [UInt8] = []
                    if !noPrefix { bytes += "\(line.replicaName)@\(line.nodeHostname.isEmpty ? String(line.nodeID.prefix(12)) : line.nodeHostname) | ".utf8 }
                    if timestamps { bytes += (RFC3339.format(line.time.date) + " ").utf8 }
                    bytes += line.line
                    if bytes.last != UInt8(ascii: "\n") { bytes.append(UInt8(ascii: "\n")) }
                    Console.write(line.stream == .stderr ? Descriptor.standardError : Descriptor.standardOutput, bytes)
                }
            }
        }
    }
}

struct ServiceScale: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "scale", abstract: "Change services' replica counts (SERVICE=N ...).")
    @OptionGroup var options: ControllerOptions
    @Flag(name: .shortAndLong, help: "Return at once instead of waiting for the replicas to run.") var detach = false
    @Argument var targets: [String]

    func run() async throws {
        var parsed: [(String, Int32)] = []
        for target in targets {
            let parts = target.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let count = Int32(parts[1]), count >= 0 else {
                throw BerthError.invalid("\"\(target)\": expected SERVICE=REPLICAS")
            }
            parsed.append((String(parts[0]), count))
        }
        try await EachName.run(parsed.map(\.0)) { name in
            let count = parsed.first { $0.0 == name }?.1 ?? 0
            let service = try await withServices(options) { try await $0.scale(.with { $0.service = name; $0.replicas = count }).service }
            Console.print("\(service.spec.name) scaled to \(count)")
            if !detach { try await converge(options, service: service.id) }
        }
    }
}

/// What `service update` changes in a container, with docker's `--*-add`
/// and `--*-rm` spelling for lists.
struct ContainerUpdateFlags: ParsableArguments {
    @Option(help: "A new image.") var image: String?
    @Option(help: "New command arguments, as one string split as a shell splits words (quotes keep words together).") var args: String?
    @Option(help: "A new entrypoint (empty: the image's).") var entrypoint: String?
    @Option(help: "Add or replace an environment variable (KEY=VALUE).") var envAdd: [String] = []
    @Option(help: "Remove an environment variable (KEY).") var envRm: [String] = []
    @Option(help: "Add or replace a container label (KEY=VALUE).") var labelAdd: [String] = []
    @Option(help: "Remove a container label (KEY).") var labelRm: [String] = []
    @Option(help: "Publish a port: [IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp].") var publishAdd: [String] = []
    @Option(help: "Stop publishing a port: CONTAINER_PORT[/tcp|/udp], or HOST_PORT:CONTAINER_PORT.") var publishRm: [String] = []
    @Option(help: "Add a mount: type=volume|bind|tmpfs,source=…,target=…[,readonly].") var mountAdd: [String] = []
    @Option(help: "Add a volume: NAME:/path[:ro], /path, or /host:/path[:ro].") var volumeAdd: [String] = []
    @Option(help: "Remove the mount at a container path.") var mountRm: [String] = []
    @Option(help: "A new restart policy: no, on-failure[:N], always, unless-stopped.") var restart: String?
    @Option(name: [.customShort("u"), .long], help: "Username or UID (name|uid[:group|gid]); empty: the image's.") var user: String?
    @Option(name: [.customShort("w"), .long], help: "Working directory; empty: the image's.") var workdir: String?
    @Option(help: "Container host name; empty: its ID.") var hostname: String?
    @Option(help: "The network: bridge, a user-defined network, none or host.") var network: String?
    @Option(help: "Add a name on the network.") var networkAliasAdd: [String] = []
    @Option(help: "Remove a name on the network.") var networkAliasRm: [String] = []
    @Option(help: "Signal to stop the container.") var stopSignal: String?
    @Option(help: "Seconds to wait for the stop signal before SIGKILL.") var stopTimeout: Int?
    @Flag(inversion: .prefixedNo, help: "Mount the root filesystem read only.") var readOnly: Bool?
    @Flag(inversion: .prefixedNo, help: "Run an init that forwards signals and reaps processes.") var `init`: Bool?
    @Option(help: "Add a Linux capability.") var capAdd: [String] = []
    @Option(help: "Drop a Linux capability.") var capDrop: [String] = []
    @Option(help: "Add a security option (seccomp=…, no-new-privileges).") var securityOptAdd: [String] = []
    @Option(help: "Remove a security option.") var securityOptRm: [String] = []
    @Option(help: "Add or replace a process limit, NAME=SOFT[:HARD].") var ulimitAdd: [String] = []
    @Option(help: "Remove a process limit (NAME).") var ulimitRm: [String] = []
    @Option(help: "Log rotation: max-size=SIZE, max-file=N (replaces the current options).") var logOpt: [String] = []
    @OptionGroup var limits: ResourceFlags
    @OptionGroup var health: HealthFlags

    /// Applies every flag given to `container`.
    ///
    /// - Throws: `BerthError.invalidArgument` for a value that does not parse.
    func apply(to container: inout ContainerSpec, environment: [String: String]) throws {
        if let image { container.image = image }
        if let args { container.command = try ShellWords.split(args) }
        if let entrypoint { container.entrypoint = entrypoint.isEmpty ? nil : try ShellWords.split(entrypoint, for: "--entrypoint") }
        for entry in EnvironmentFlag.resolve(envAdd, from: environment) {
            let key = entry.split(separator: "=", maxSplits: 1).first.map(String.init) ?? entry
            container.env.removeAll { $0 == key || $0.hasPrefix(key + "=") }
            container.env.append(entry)
        }
        for key in envRm { container.env.removeAll { $0 == key || $0.hasPrefix(key + "=") } }
        container.labels.merge(KeyValues.labels(labelAdd)) { _, new in new }
        for key in labelRm { container.labels[key] = nil }
        for text in publishRm {
            let (hostPort, rest): (UInt16?, Substring) = {
                let parts = text.split(separator: ":")
                return parts.count == 2 ? (UInt16(parts[0]), parts[1]) : (nil, Substring(text))
            }()
            let pieces = rest.split(separator: "/")
            guard let port = pieces.first.flatMap({ UInt16($0) }) else { throw BerthError.invalid("--publish-rm \(text): expected CONTAINER_PORT[/PROTOCOL]") }
            let transport = pieces.count > 1 ? String(pieces[1]) : nil
            container.ports.removeAll {
                $0.containerPort == port && (transport == nil || $0.transport.rawValue == transport) && (hostPort == nil || $0.hostPort == hostPort)
            }
        }
        for text in publishAdd {
            let port = try PortMapping(parsing: text)
            container.ports.removeAll { $0.hostPort == port.hostPort && $0.transport == port.transport }
            container.ports.append(port)
        }
        for target in mountRm { container.mounts.removeAll { $0.target == target } }
        for mount in try mountAdd.map({ try Mount(parsingMount: $0) }) + volumeAdd.map({ try Mount(parsingVolume: $0) }) {
            container.mounts.removeAll { $0.target == mount.target }
            container.mounts.append(mount)
        }
        if let restart { container.restartPolicy = try RestartPolicy(parsing: restart) }
        if let user { container.user = user.isEmpty ? nil : user }
        if let workdir { container.workingDir = workdir.isEmpty ? nil : workdir }
        if let hostname { container.hostname = hostname.isEmpty ? nil : hostname }
        if let network { container.network = network }
        for alias in networkAliasRm { container.networkAliases.removeAll { $0 == alias } }
        container.networkAliases += networkAliasAdd.filter { !container.networkAliases.contains($0) }
        if let stopSignal { container.stopSignal = try Signal(parsing: stopSignal) }
        if let stopTimeout { container.stopTimeout = stopTimeout }
        if let readOnly { container.readOnlyRootfs = readOnly }
        if let `init` { container.initProcess = `init` }
        for cap in capAdd {
            container.capDrop.removeAll { $0.lowercased() == cap.lowercased() }
            if !container.capAdd.contains(cap) { container.capAdd.append(cap) }
        }
        for cap in capDrop {
            container.capAdd.removeAll { $0.lowercased() == cap.lowercased() }
            if !container.capDrop.contains(cap) { container.capDrop.append(cap) }
        }
        for option in securityOptRm { container.securityOpts.removeAll { $0 == option } }
        container.securityOpts += securityOptAdd.filter { !container.securityOpts.contains($0) }
        for name in ulimitRm { container.ulimits.removeAll { $0.name == name } }
        for limit in try ulimitAdd.map({ try Ulimit(parsing: $0) }) {
            container.ulimits.removeAll { $0.name == limit.name }
            container.ulimits.append(limit)
        }
        if !logOpt.isEmpty { container.log = try LogConfig(parsingOptions: logOpt) }
        if let given = try health.check() {
            if given.isDisabled {
                container.healthcheck = given
            } else {
                // Each flag changes its field, as docker's service update does.
                var check = container.healthcheck.flatMap { $0.isDisabled ? nil : $0 } ?? HealthCheck()
                if !given.test.isEmpty { check.test = given.test }
                if let v = given.interval { check.interval = v }
                if let v = given.timeout { check.timeout = v }
                if let v = given.startPeriod { check.startPeriod = v }
                if let v = given.startInterval { check.startInterval = v }
                if let v = given.retries { check.retries = v }
                container.healthcheck = check
            }
        }
        if let action = health.healthOnFailure { container.healthOnFailure = try HealthFailureAction(parsing: action) }
        try limits.apply(to: &container.resources)
    }
}

struct ServiceUpdate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update",
        abstract: "Change a service: everything create sets. Its replicas are replaced --update-parallelism at a time, each batch once the last has run for --update-monitor.")
    @OptionGroup var options: ControllerOptions
    @OptionGroup var container: ContainerUpdateFlags
    @Option(help: "Add a placement constraint.") var constraintAdd: [String] = []
    @Option(help: "Remove a placement constraint.") var constraintRm: [String] = []
    @Option(help: "Add a placement preference (spread=node.labels.KEY).") var placementPrefAdd: [String] = []
    @Option(help: "Remove a placement preference.") var placementPrefRm: [String] = []
    @Option(help: "Put the replicas on another overlay network.") var networkAdd: [String] = []
    @Option(help: "Take the replicas off an overlay network (name or ID).") var networkRm: [String] = []
    @OptionGroup var settings: ServiceSettingsFlags
    @Flag(help: "Replace the replicas even if nothing changed (resumes a paused update).") var force = false
    @Flag(name: .shortAndLong, help: "Return at once instead of waiting for the update.") var detach = false
    @Argument var service: String

    func run() async throws {
        let name = service
        let current = try await withServices(options) { try await $0.inspect(.with { $0.service = name }).service }
        var spec = try ServiceSpec(proto: current.spec)
        // published=…,target=… is a service port (as create takes it); the rest are the container's.
        var flags = container
        let portsAdded = try flags.publishAdd.filter { $0.contains("=") }.map { try ServicePort(parsing: $0) }
        flags.publishAdd.removeAll { $0.contains("=") }
        for text in flags.publishRm {
            let published = text.split(separator: ",").first { $0.hasPrefix("published=") }.map { String($0.dropFirst("published=".count)) } ?? text
            spec.publish.removeAll { String($0.published) == published || "\($0.published)/\($0.transport.rawValue)" == published }
        }
        flags.publishRm.removeAll { $0.contains("=") }
        spec.publish += portsAdded
        try flags.apply(to: &spec.container, environment: ProcessInfo.processInfo.environment)
        if !networkAdd.isEmpty || !networkRm.isEmpty {
            let known = try await withControllerNetworks(options) { try await $0.list(.init()).networks }
            func id(_ reference: String) -> String { known.first { $0.name == reference || $0.id.hasPrefix(reference) }?.id ?? reference }
            let removed = Set(networkRm.map(id))
            spec.networks.removeAll { removed.contains($0) }
            spec.networks += networkAdd.map(id).filter { !spec.networks.contains($0) }
        }
        spec.constraints.removeAll { constraintRm.contains($0) }
        spec.constraints += constraintAdd.filter { !spec.constraints.contains($0) }
        spec.placementPreferences.removeAll { placementPrefRm.contains($0) }
        spec.placementPreferences += placementPrefAdd.filter { !spec.placementPreferences.contains($0) }
        try settings.apply(to: &spec)
        try spec.validate()
        let (force, revision, newSpec) = (self.force, current.revision, spec.proto)
        let updated = try await withServices(options) {
            try await $0.update(.with { $0.service = name; $0.spec = newSpec; $0.expectedVersion = revision; $0.force = force }).service
        }
        Console.print(updated.spec.name)
        if !detach { try await converge(options, service: updated.id) }
    }
}

/// Runs `body` with the controller's Networks service.
func withControllerNetworks<R: Sendable>(
    _ options: ControllerOptions, _ body: @escaping @Sendable (Berth_Controller_V1_Networks.Client<NGHTTP2ClientTransport>) async throws -> R
) async throws -> R {
    try await options.withController { try await body(.init(wrapping: $0)) }
}

struct ServiceRollback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollback", abstract: "Restore a service's spec from before its last update, batch by batch.")
    @OptionGroup var options: ControllerOptions
    @Flag(name: .shortAndLong, help: "Return at once instead of waiting for the rollback.") var detach = false
    @Argument var service: String

    func run() async throws {
        let name = service
        let service = try await withServices(options) { try await $0.rollback(.with { $0.service = name }).service }
        Console.print(service.spec.name)
        if !detach { try await converge(options, service: service.id) }
    }
}

struct ServiceRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove services and their replicas.", aliases: ["remove"])
    @OptionGroup var options: ControllerOptions
    @Argument var services: [String]

    func run() async throws {
        try await EachName.run(services) { name in
            _ = try await withServices(options) { try await $0.remove(.with { $0.service = name }) }
            Console.print(name)
        }
    }
}
