import ArgumentParser
import BerthAPI
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
            ServiceCreate.self, ServiceList.self, ServiceInspect.self, ServicePs.self, ServiceScale.self, ServiceUpdate.self, ServiceRemove.self,
        ])
}

/// Runs `body` with the controller's Services client.
func withServices<R: Sendable>(
    _ options: ControllerOptions, _ body: @Sendable (Berth_Controller_V1_Services.Client<NGHTTP2ClientTransport>) async throws -> R
) async throws -> R {
    try await options.connection().withClient { grpc in try await body(Berth_Controller_V1_Services.Client(wrapping: grpc)) }
}

/// Waits until a service's current version runs all its replicas, showing
/// progress; gives up with the controller's reason after `timeout`.
func converge(_ options: ControllerOptions, service: String, timeout: Duration = .seconds(120)) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    var shown = ""
    while true {
        let s = try await withServices(options) { try await $0.inspect(.with { $0.service = service }).service }
        let line = "\(s.spec.name): \(s.running)/\(s.spec.replicas) running" + (s.message.isEmpty ? "" : " (\(s.message))")
        if line != shown {
            Console.error(line)
            shown = line
        }
        if s.running == s.spec.replicas { return }
        if clock.now > deadline {
            throw BerthError(.deadlineExceeded, "\(s.spec.name) did not converge within \(timeout): \(s.message.isEmpty ? "replicas are still starting" : s.message)")
        }
        try await Task.sleep(for: .milliseconds(250))
    }
}

struct ServiceCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a service.")
    @OptionGroup var options: ControllerOptions
    @Option(help: "Number of replicas.") var replicas = 1
    @Option(help: "A placement constraint: node.labels.KEY==VALUE, node.labels.KEY!=VALUE, node.id==ID, node.hostname==NAME (repeatable).")
    var constraint: [String] = []
    @Option(help: "A placement preference: spread=node.labels.KEY.") var placementPref: [String] = []
    @Option(help: "Replicas an update replaces at a time.") var updateParallelism = 1
    @Flag(help: "Show where the replicas would go, and why each node would or would not take one; create nothing.") var dryRun = false
    @Flag(name: .shortAndLong, help: "Return at once instead of waiting for the replicas to run.") var detach = false
    @OptionGroup var container: ContainerFlags
    @Argument(help: "The image.") var image: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments.") var command: [String] = []

    func run() async throws {
        guard let name = container.name else { throw BerthError.invalid("a service needs --name") }
        let spec = ServiceSpec(
            name: name, replicas: replicas,
            container: try container.spec(image: image, command: command, environment: ProcessInfo.processInfo.environment, defaultRestart: "always"),
            constraints: constraint, placementPreferences: placementPref, updateParallelism: updateParallelism)
        try spec.validate()
        let dryRun = self.dryRun
        let reply = try await withServices(options) { try await $0.create(.with { $0.spec = spec.proto; $0.dryRun = dryRun }) }
        if dryRun {
            let rows = reply.verdicts.map { v -> [String] in
                [String(v.nodeID.prefix(12)), v.hostname, v.rejection.isEmpty ? (v.chosen ? "yes, next" : "yes") : "no",
                 v.rejection.isEmpty ? Human.significant(v.score, digits: 3) : "", v.rejection]
            }
            Console.print(Table(rows: [["NODE", "HOSTNAME", "FITS", "SCORE", "REASON"]] + rows).text)
            let hostnames = Dictionary(reply.verdicts.map { ($0.nodeID, $0.hostname) }, uniquingKeysWith: { a, _ in a })
            var counts: [String: Int] = [:]
            for node in reply.placements { counts[hostnames[node] ?? node, default: 0] += 1 }
            let summary = counts.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")
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
    var version: Int64
    var replicas: Int32
    var running: Int32
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
    var createdAt: Date
    var updatedAt: Date

    init(_ s: Berth_Controller_V1_Service) throws {
        let container = try ContainerSpec(proto: s.spec.container)
        id = s.id
        name = s.spec.name
        version = s.version
        replicas = s.spec.replicas
        running = s.running
        image = container.image
        command = container.command
        env = container.env
        memoryBytes = container.resources.memory?.bytes
        cpus = container.resources.cpus.map { Double($0.nanoCPUs) / 1e9 }
        ports = container.ports.map(\.description)
        restart = container.restartPolicy.description
        constraints = s.spec.constraints
        placementPreferences = s.spec.placementPreferences
        updateParallelism = s.spec.updateParallelism
        message = s.message
        createdAt = s.createdAt.date
        updatedAt = s.updatedAt.date
    }
}

struct ServiceList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List services.", aliases: ["list"])
    @OptionGroup var options: ControllerOptions
    @Flag(name: .shortAndLong, help: "Only display service IDs.") var quiet = false
    @Option(help: "Output format: json, or table (the default).") var format: String?

    func run() async throws {
        let format = try OutputFormat(format)
        let services = try await withServices(options) { try await $0.list(.init()).services }
        if quiet {
            services.forEach { Console.print($0.id) }
            return
        }
        switch format {
        case .json: try Console.json(services.map(ServiceView.init))
        case .human:
            let rows = try services.map { s -> [String] in
                let view = try ServiceView(s)
                return [String(s.id.prefix(12)), s.spec.name, "replicated", "\(s.running)/\(s.spec.replicas)", view.image,
                        view.ports.joined(separator: ", ")]
            }
            Console.print(Table(rows: [["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]] + rows).text)
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
            let service = try await withServices(options) { try await $0.inspect(.with { $0.service = name }).service }
            views.append(try ServiceView(service))
        }
        try Console.json(views)
    }
}

struct ServicePs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ps", abstract: "List the replicas of services: where each runs, and its state.")
    @OptionGroup var options: ControllerOptions
    @Flag(name: .shortAndLong, help: "Also show replicas being shut down.") var all = false
    @Flag(name: .shortAndLong, help: "Only display replica IDs.") var quiet = false
    @Option(help: "Output format: json, or table (the default).") var format: String?
    @Argument(help: "Services (every service when none is given).") var services: [String] = []

    struct View: Encodable {
        var id, service, name, node, nodeID, desiredState, state, message: String
        var slot: Int32
        var version: Int64
        var exitCode: Int32?
        var updatedAt: Date
    }

    func run() async throws {
        let format = try OutputFormat(format)
        let all = self.all
        var replicas: [Berth_Controller_V1_Replica] = []
        for service in services.isEmpty ? [""] : services {
            replicas += try await withServices(options) { try await $0.listReplicas(.with { $0.service = service; $0.all = all }).replicas }
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
                     exitCode: $0.hasExitCode ? $0.exitCode : nil, updatedAt: $0.updatedAt.date)
            })
        case .human:
            let rows = replicas.map { r -> [String] in
                let code = r.hasExitCode ? " (\(r.exitCode))" : ""
                return [String(r.id.prefix(12)), "\(r.serviceName).\(r.slot)", r.nodeHostname.isEmpty ? String(r.nodeID.prefix(12)) : r.nodeHostname,
                        r.desiredState.capitalized, "\(r.state.capitalized)\(code) \(Human.ago(r.updatedAt.date))", Human.truncate(r.message, 60)]
            }
            Console.print(Table(rows: [["ID", "NAME", "NODE", "DESIRED STATE", "CURRENT STATE", "MESSAGE"]] + rows).text)
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
            let count = parsed.first { $0.0 == name }!.1
            let service = try await withServices(options) { try await $0.scale(.with { $0.service = name; $0.replicas = count }).service }
            Console.print("\(service.spec.name) scaled to \(count)")
            if !detach { try await converge(options, service: service.id) }
        }
    }
}

struct ServiceUpdate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update", abstract: "Change a service; its replicas are replaced, --update-parallelism at a time.")
    @OptionGroup var options: ControllerOptions
    @Option(help: "A new image.") var image: String?
    @Option(help: "A new replica count.") var replicas: Int?
    @Option(help: "Add or replace an environment variable (KEY=VALUE).") var envAdd: [String] = []
    @Option(help: "Remove an environment variable (KEY).") var envRm: [String] = []
    @Option(name: [.customShort("m"), .long], help: "A new memory limit (and request).") var memory: String?
    @Option(help: "A new CPU limit (and request).") var cpus: String?
    @Option(help: "Add a placement constraint.") var constraintAdd: [String] = []
    @Option(help: "Remove a placement constraint.") var constraintRm: [String] = []
    @Option(help: "Replicas replaced at a time.") var updateParallelism: Int?
    @Option(help: "New command arguments, as one shell-like string split on spaces.") var args: String?
    @Flag(help: "Replace the replicas even if nothing changed.") var force = false
    @Flag(name: .shortAndLong, help: "Return at once instead of waiting for the update.") var detach = false
    @Argument var service: String

    func run() async throws {
        let name = service
        let current = try await withServices(options) { try await $0.inspect(.with { $0.service = name }).service }
        var spec = try ServiceSpec(proto: current.spec)
        if let image { spec.container.image = image }
        if let replicas { spec.replicas = replicas }
        for entry in envAdd {
            let key = entry.split(separator: "=", maxSplits: 1).first.map(String.init) ?? entry
            spec.container.env.removeAll { $0 == key || $0.hasPrefix(key + "=") }
            spec.container.env.append(entry)
        }
        for key in envRm { spec.container.env.removeAll { $0 == key || $0.hasPrefix(key + "=") } }
        if let memory { spec.container.resources.memory = try ByteSize(parsing: memory, for: "memory limit") }
        if let cpus { spec.container.resources.cpus = try CPUQuantity(parsing: cpus) }
        spec.constraints.removeAll { constraintRm.contains($0) }
        spec.constraints += constraintAdd.filter { !spec.constraints.contains($0) }
        if let updateParallelism { spec.updateParallelism = updateParallelism }
        if let args { spec.container.command = args.split(separator: " ").map(String.init) }
        try spec.validate()
        let (force, version, newSpec) = (self.force, current.version, spec.proto)
        let updated = try await withServices(options) {
            try await $0.update(.with { $0.service = name; $0.spec = newSpec; $0.expectedVersion = version; $0.force = force }).service
        }
        Console.print(updated.spec.name)
        if !detach { try await converge(options, service: updated.id) }
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
