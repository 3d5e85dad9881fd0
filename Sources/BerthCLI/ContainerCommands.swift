import ArgumentParser
import BerthAPI
import BerthLinux
import BerthModel
import BerthTemplate
import Dispatch
import FoundationEssentials
import GRPCCore
import SwiftProtobuf
import BerthTransport



/// `berth run`: create, start, and (unless -d) stream the output and exit
/// with the container's exit code.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Create and run a new container from an image.")

    @OptionGroup var agent: AgentOptions
    @OptionGroup var flags: ContainerFlags
    @Flag(name: [.customShort("d"), .long], help: "Run in the background and print the container ID.") var detach = false
    @Argument(help: "The image.", completion: NameCompletion.images) var image: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments.") var command: [String] = []

    func run() async throws {
        var spec = try flags.spec(image: image, command: command, environment: ProcessInfo.processInfo.environment)
        let detach = self.detach
        // Attached, the agent removes the container once its output is
        // sent (the Run call); detached, once it exits.
        let remove = spec.autoRemove && !detach
        if remove { spec.autoRemove = false }
        let request = spec
        let code: Int32 = try await agent.connection().withClient { grpc in
            let containers = Berth_Agent_V1_Containers.Client(wrapping: grpc)
            guard !detach else {
                let created = try await PullCommand.creating(image, policy: flags.pull, platform: flags.platform, agent: agent) {
                    try await containers.create(.with {
                        $0.spec = request.proto
                        $0.start = true
                    })
                }
                created.warnings.forEach { Console.error("WARNING: \($0)") }
                if !created.startError.isEmpty { return Self.failedStart(created) }
                Console.print(created.id)
                return 0
            }
            var options = CallOptions.defaults
            options.timeout = nil
            // Created, started, its output and its exit in one call.
            return try await PullCommand.creating(image, policy: flags.pull, platform: flags.platform, agent: agent) {
                try await containers.run(.with { $0.spec = request.proto; $0.remove = remove }, options: options) { response in
                    var forwarding: SignalForwarder?
                    defer { forwarding?.cancel() }
                    var code: Int32 = 0
                    for try await message in response.messages {
                        switch message.event {
                        case .started(let started):
                            started.warnings.forEach { Console.error("WARNING: \($0)") }
                            if !started.startError.isEmpty { return Self.failedStart(started) }
                            forwarding = SignalForwarder(containers: containers, id: started.id)
                        case .output(let line):
                            Console.write(line.stream == .stderr ? Descriptor.standardError : Descriptor.standardOutput, Array(line.line))
                        case .exited(let exited):
                            code = exited.exitCode
                        case nil:
                            break
                        }
                    }
                    // The call is complete (and the container removed, with
                    // --rm): exit now, as the container did, without waiting
                    // for the connection to close in order.
                    Processes.exit(code)
                }
            }
        }
        if code != 0 { throw ExitCode(code) }
    }

    /// Says why a container did not start; like docker, a command that
    /// cannot be started exits 127 (not found) or 126, any other failure 125.
    static func failedStart(_ created: Berth_Agent_V1_CreateContainerResponse) -> Int32 {
        Console.error("berth: \(created.startError)")
        let status = created.container.status
        return status.reason == "StartFailed" && status.hasExitCode ? status.exitCode : 125
    }
}

/// Forwards Ctrl-C and SIGTERM to the container while `run` is attached.
final class SignalForwarder {
    private let sources: [any DispatchSourceSignal]

    init(containers: Berth_Agent_V1_Containers.Client<some ClientTransport>, id: String) {
        var sources: [any DispatchSourceSignal] = []
        for signal in [Signal.interrupt, Signal.terminate] {
            let (number, name) = (signal.number, signal.name)
            Signals.ignore(number)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                Task { _ = try? await containers.kill(.with { $0.container = id; $0.signal = name }) }
            }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    func cancel() { sources.forEach { $0.cancel() } }
}

struct CreateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a new container.")
    @OptionGroup var agent: AgentOptions
    @OptionGroup var flags: ContainerFlags
    @Argument(completion: NameCompletion.images) var image: String
    @Argument(parsing: .captureForPassthrough) var command: [String] = []

    func run() async throws {
        let spec = try flags.spec(image: image, command: command, environment: ProcessInfo.processInfo.environment)
        let created = try await agent.connection().withClient { grpc in
            try await PullCommand.creating(image, policy: flags.pull, platform: flags.platform, agent: agent) {
                try await Berth_Agent_V1_Containers.Client(wrapping: grpc).create(.with { $0.spec = spec.proto })
            }
        }
        created.warnings.forEach { Console.error("WARNING: \($0)") }
        Console.print(created.id)
    }
}

/// Runs one call per named container, printing the name on success, as docker does.
/// Runs a command's work for each name it was given, as docker does: an
/// error is printed and the next name is tried; the command fails at the
/// end if any did. `tolerate` lets some errors pass silently (`rm -f`).
enum EachName {
    static func run(_ names: [String], tolerate: (BerthError) -> Bool = { _ in false }, _ body: (String) async throws -> Void) async throws {
        var failed = false
        for name in names {
            do {
                try await body(name)
            } catch let error as BerthError {
                if tolerate(error) { continue }
                Console.error("berth: \(error)")
                failed = true
            }
        }
        if failed { throw ExitCode(1) }
    }
}

struct EachContainer {
    static func run(_ agent: AgentOptions, _ names: [String], _ call: @escaping @Sendable (Berth_Agent_V1_Containers.Client<NGHTTP2ClientTransport>, String) async throws -> Void) async throws {
        try await EachName.run(names) { name in
            try await agent.connection().withClient { grpc in
                try await call(Berth_Agent_V1_Containers.Client(wrapping: grpc), name)
            }
            Console.print(name)
        }
    }
}

struct StartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "start", abstract: "Start stopped containers.")
    @OptionGroup var agent: AgentOptions
    @Argument(completion: NameCompletion.containers) var containers: [String]
    func run() async throws {
        try await EachContainer.run(agent, containers) { c, name in
            let r = try await c.start(.with { $0.container = name })
            r.warnings.forEach { Console.error("WARNING: \($0)") }
        }
    }
}

struct StopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stop", abstract: "Stop running containers (the stop signal, then SIGKILL).")
    @OptionGroup var agent: AgentOptions
    @Option(name: [.customShort("t"), .long], help: "Seconds to wait before killing.") var time: Int32?
    @Argument(completion: NameCompletion.containers) var containers: [String]
    func run() async throws {
        let time = self.time
        try await EachContainer.run(agent, containers) { c, name in try await Self.stop(c, name, time: time) }
    }

    /// Stops one container: its stop signal, then SIGKILL after `time` seconds (its own stop timeout without).
    static func stop(_ c: Berth_Agent_V1_Containers.Client<NGHTTP2ClientTransport>, _ name: String, time: Int32?) async throws {
        _ = try await c.stop(.with {
            $0.container = name
            if let time { $0.timeoutSeconds = time }
        })
    }
}

struct KillCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kill", abstract: "Send a signal to containers (SIGKILL by default).")
    @OptionGroup var agent: AgentOptions
    @Option(name: [.customShort("s"), .long], help: "Signal to send.") var signal = "KILL"
    @Argument(completion: NameCompletion.containers) var containers: [String]
    func run() async throws {
        _ = try Signal(parsing: signal)
        let signal = self.signal
        try await EachContainer.run(agent, containers) { c, name in
            _ = try await c.kill(.with {
                $0.container = name
                $0.signal = signal
            })
        }
    }
}

struct PauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pause", abstract: "Freeze every process of containers.")
    @OptionGroup var agent: AgentOptions
    @Argument(completion: NameCompletion.containers) var containers: [String]
    func run() async throws {
        try await EachContainer.run(agent, containers) { c, name in _ = try await c.pause(.with { $0.container = name }) }
    }
}

struct UnpauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unpause", abstract: "Thaw paused containers.")
    @OptionGroup var agent: AgentOptions
    @Argument(completion: NameCompletion.containers) var containers: [String]
    func run() async throws {
        try await EachContainer.run(agent, containers) { c, name in _ = try await c.resume(.with { $0.container = name }) }
    }
}

struct RemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove containers.")
    @OptionGroup var agent: AgentOptions
    @Flag(name: .shortAndLong, help: "Kill a running container first.") var force = false
    @Flag(name: .shortAndLong, help: "Remove anonymous volumes too.") var volumes = false
    @Argument(completion: NameCompletion.containers) var containers: [String]
    func run() async throws {
        let (force, volumes) = (self.force, self.volumes)
        try await EachContainer.run(agent, containers) { c, name in
            _ = try await c.remove(.with {
                $0.container = name
                $0.force = force
                $0.removeVolumes = volumes
            })
        }
    }
}

struct WaitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "wait", abstract: "Block until containers stop, then print their exit codes.")
    @OptionGroup var agent: AgentOptions
    @Argument(completion: NameCompletion.containers) var containers: [String]
    func run() async throws {
        for name in containers {
            let r = try await agent.connection().withClient { grpc in
                try await Berth_Agent_V1_Containers.Client(wrapping: grpc).wait(.with { $0.container = name })
            }
            Console.print(String(r.exitCode))
        }
    }
}

struct InspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Show containers, images, networks or volumes in detail (docker's JSON).")
    @OptionGroup var agent: AgentOptions
    @Option(
        name: .shortAndLong,
        help: "A Go template ('{{.State.Status}}'), json (one line), or record (Berth's own record of each container, with everything the agent keeps).")
    var format: String?
    @Option(help: "Only objects of this kind: container, image, network or volume.") var type: String?
    @Argument(completion: NameCompletion.containers) var names: [String]

    func run() async throws {
        let kinds = try Inspected.kinds(type)
        if format == "record" {
            guard kinds == [.container] || type == nil else { throw BerthError.invalid("--format record: only containers have records") }
            var records: [Container] = []
            defer { try? Console.json(records) }
            try await EachName.run(names) { name in
                records.append(try await agent.connection().withClient { try await Inspected.record(name, $0) })
            }
            return
        }
        try await Inspected.each(names, format: format) { name in
            try await agent.connection().withClient { try await Inspected.any(name, kinds: kinds, $0) }
        }
    }
}

/// What `inspect` finds by a name, in docker's shapes.
enum Inspected {
    enum Kind: String, CaseIterable {
        case container, image, network, volume
    }

    /// The kinds `--type` names (all, in docker's order, without it).
    static func kinds(_ type: String?) throws -> [Kind] {
        guard let type else { return Kind.allCases }
        guard let kind = Kind(rawValue: type) else {
            throw BerthError.invalid("--type \"\(type)\": expected container, image, network or volume")
        }
        return [kind]
    }

    /// Finds each name with `find` and prints what was found as `docker
    /// inspect` does; a name not found is reported and the others printed.
    ///
    /// - Throws: `ExitCode(1)` when a name was not found.
    static func each(_ names: [String], format: String?, _ find: (String) async throws -> TemplateValue) async throws {
        var found: [TemplateValue] = []
        var failed = false
        for name in names {
            do {
                found.append(try await find(name))
            } catch let error as BerthError {
                Console.error("berth: \(error)")
                failed = true
            }
        }
        let shown = try Templating.checked { try DockerFormat.inspect(found, format: format) }
        Console.write(Descriptor.standardOutput, Array(shown.output.utf8))
        shown.errors.forEach { Console.error("berth: \($0)") }
        if failed || !shown.errors.isEmpty { throw ExitCode(1) }
    }

    /// The first object of `kinds` that `name` names.
    ///
    /// - Throws: `BerthError.notFound` ("no such object") when none does.
    static func any(_ name: String, kinds: [Kind], _ grpc: GRPCClient<NGHTTP2ClientTransport>) async throws -> TemplateValue {
        for kind in kinds {
            do {
                switch kind {
                case .container: return try await container(name, grpc)
                case .image: return try await image(name, grpc)
                case .network: return try await network(name, grpc)
                case .volume: return try await volume(name, grpc)
                }
            } catch {
                // Inside the connection its errors are still gRPC's.
                let code = (error as? RPCError).map { BerthError($0).code } ?? (error as? BerthError)?.code
                guard code == .notFound, kinds.count > 1 else { throw error }
            }
        }
        throw BerthError.notFound("object", name)
    }

    static func record(_ name: String, _ grpc: GRPCClient<NGHTTP2ClientTransport>) async throws -> Container {
        try Container(proto: try await Berth_Agent_V1_Containers.Client(wrapping: grpc).inspect(.with { $0.container = name }).container)
    }

    /// A container, its Config filled from its image (when the image is
    /// still there) and its volumes' mountpoints.
    static func container(_ name: String, _ grpc: GRPCClient<NGHTTP2ClientTransport>) async throws -> TemplateValue {
        let c = try await record(name, grpc)
        let image = try? Image(proto: try await Berth_Agent_V1_Images.Client(wrapping: grpc).inspect(.with { $0.image = c.imageID }).image)
        var paths: [String: String] = [:]
        for mount in c.spec.mounts where mount.kind == .volume {
            let volume = try? await Berth_Agent_V1_Volumes.Client(wrapping: grpc).inspect(.with { $0.name = mount.source }).volume
            if let volume { paths[mount.source] = volume.mountpoint }
        }
        return DockerShape.container(c, image: image?.config, volumePaths: paths)
    }

    static func image(_ name: String, _ grpc: GRPCClient<NGHTTP2ClientTransport>) async throws -> TemplateValue {
        DockerShape.image(try Image(proto: try await Berth_Agent_V1_Images.Client(wrapping: grpc).inspect(.with { $0.image = name }).image))
    }

    static func network(_ name: String, _ grpc: GRPCClient<NGHTTP2ClientTransport>) async throws -> TemplateValue {
        DockerShape.network(NetworkView(try await Berth_Agent_V1_Networks.Client(wrapping: grpc).inspect(.with { $0.network = name }).network))
    }

    static func volume(_ name: String, _ grpc: GRPCClient<NGHTTP2ClientTransport>) async throws -> TemplateValue {
        DockerShape.volume(VolumeView(try await Berth_Agent_V1_Volumes.Client(wrapping: grpc).inspect(.with { $0.name = name }).volume))
    }
}

/// `berth port CONTAINER [PRIVATE_PORT[/PROTO]]`: where its ports are published.
struct PortCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "port", abstract: "List a container's published ports.")
    @OptionGroup var agent: AgentOptions
    @Argument(completion: NameCompletion.containers) var container: String
    @Argument(help: "Only this container port: PORT[/tcp|/udp].") var privatePort: String?

    func run() async throws {
        let name = container
        let found = try await agent.connection().withClient { grpc in
            try Container(proto: try await Berth_Agent_V1_Containers.Client(wrapping: grpc).inspect(.with { $0.container = name }).container)
        }
        var ports = found.publishedPorts
        if let privatePort {
            let parts = privatePort.split(separator: "/")
            guard let number = parts.first.flatMap({ UInt16($0) }), parts.count <= 2 else {
                throw BerthError.invalid("\"\(privatePort)\": expected PORT or PORT/PROTO")
            }
            let transport = parts.count == 2 ? PortProtocol(rawValue: String(parts[1])) : .tcp
            guard let transport else { throw BerthError.invalid("\"\(privatePort)\": the protocol is tcp or udp") }
            ports = ports.filter { $0.containerPort == number && $0.transport == transport }
            guard !ports.isEmpty else {
                throw BerthError.notFound("published port", "\(number)/\(transport.rawValue) of \(found.name)")
            }
            ports.forEach { Console.print("\($0.hostIP?.description ?? "0.0.0.0"):\($0.hostPort)") }
            return
        }
        ports.forEach { Console.print($0.description) }
    }
}

struct PsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ps", abstract: "List containers.")
    @OptionGroup var agent: AgentOptions
    @Flag(name: .shortAndLong, help: "Show all containers (default shows just running).") var all = false
    @Flag(name: .shortAndLong, help: "Only display container IDs.") var quiet = false
    @Flag(help: "Don't truncate output.") var noTrunc = false
    @Option(name: .shortAndLong, help: "Filter (name=, id=, status=, label=, health=, ancestor=IMAGE).") var filter: [String] = []
    @Option(name: [.customShort("n"), .long], help: "Show the n last created containers (all states).") var last: Int?
    @Flag(name: [.customShort("l"), .long], help: "Show the latest created container (all states).") var latest = false
    @Option(help: "A Go template ('table {{.ID}}\\t{{.Names}}'), json (one object per line), or table (the default).") var format: String?

    func run() async throws {
        let all = self.all || last != nil || latest
        // ancestor= is matched here, on the image each container was made from.
        let ancestors = filter.filter { $0.hasPrefix("ancestor=") }.map { String($0.dropFirst(9)) }
        let filters = try KeyValues.filters(filter.filter { !$0.hasPrefix("ancestor=") })
        let found = try await agent.connection().withClient { grpc in
            try await Berth_Agent_V1_Containers.Client(wrapping: grpc).list(.with {
                $0.all = all
                $0.filters = filters
            }).containers.map(Container.init(proto:))
        }
        var containers = ancestors.isEmpty ? found : found.filter { c in ancestors.contains { Self.descends(c, from: $0) } }
        if let count = latest ? 1 : last {
            containers = Array(containers.sorted { $0.status.createdAt > $1.status.createdAt }.prefix(max(0, count)))
        }
        if quiet {
            containers.forEach { Console.print(noTrunc ? $0.id.rawValue : $0.id.short) }
            return
        }
        try DockerRows.containers(containers, truncate: !noTrunc).print(format)
    }

    /// docker's `ancestor=`: the image as the container names it (`busybox`
    /// matches `busybox:latest`), or its ID or a prefix of it.
    static func descends(_ c: Container, from ancestor: String) -> Bool {
        let named = { (text: String) in (try? ImageReference(parsing: text))?.familiar ?? text }
        if named(c.spec.image) == named(ancestor) { return true }
        let id = c.imageID.hasPrefix("sha256:") ? String(c.imageID.dropFirst(7)) : c.imageID
        let wanted = ancestor.hasPrefix("sha256:") ? String(ancestor.dropFirst(7)) : ancestor
        return wanted.count >= 4 && id.hasPrefix(wanted)
    }
}

struct UpdateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "update", abstract: "Change limits of containers, live.")
    @OptionGroup var agent: AgentOptions
    @OptionGroup var limits: ResourceFlags
    @Option var restart: String?
    @Argument(completion: NameCompletion.containers) var containers: [String]

    func run() async throws {
        let resources = try limits.resources()
        if let restart { _ = try RestartPolicy(parsing: restart) }
        let restart = self.restart
        try await EachContainer.run(agent, containers) { c, name in
            _ = try await c.update(.with {
                $0.container = name
                $0.resources = resources.proto
                if let restart { $0.restartPolicy = restart }
            })
        }
    }
}

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Show a container's output.")
    @OptionGroup var agent: AgentOptions
    @Flag(name: .shortAndLong, help: "Follow the output.") var follow = false
    @Flag(name: .shortAndLong, help: "Show timestamps.") var timestamps = false
    @Option(name: [.customShort("n"), .long], help: "Number of lines from the end.") var tail: String?
    @Option(help: "Only lines since a time (RFC 3339, a date, Unix seconds, or a duration before now like 10m).") var since: String?
    @Option(help: "Only lines before a time (RFC 3339, a date, Unix seconds, or a duration before now like 10m).") var until: String?
    @Argument(completion: NameCompletion.containers) var container: String

    func run() async throws {
        let tailCount: UInt32? = try tail.flatMap { t in
            if t == "all" { return nil }
            guard let n = UInt32(t) else { throw BerthError.invalid("--tail \"\(t)\": expected a number or all") }
            return n
        }
        let sinceDate = try since.map { try TimeText.date(parsing: $0, for: "--since", now: Date()) }
        let untilDate = try until.map { try TimeText.date(parsing: $0, for: "--until", now: Date()) }
        let (container, follow, timestamps) = (self.container, self.follow, self.timestamps)
        try await agent.connection().withClient { grpc in
            try await Self.stream(
                containers: Berth_Agent_V1_Containers.Client(wrapping: grpc), id: container, follow: follow, tail: tailCount,
                timestamps: timestamps, since: sinceDate, until: untilDate)
        }
    }

    static func stream(
        containers: Berth_Agent_V1_Containers.Client<some ClientTransport>, id: String, follow: Bool, tail: UInt32?, timestamps: Bool, since: Date?,
        until: Date? = nil
    ) async throws {
        let request = Berth_Agent_V1_ContainerLogsRequest.with {
            $0.container = id
            $0.follow = follow
            if let tail { $0.tail = tail }
            if let since { $0.since = Google_Protobuf_Timestamp(date: since) }
            if let until { $0.until = Google_Protobuf_Timestamp(date: until) }
        }
        var options = CallOptions.defaults
        options.timeout = nil
        try await containers.logs(request, options: options) { response in
            for try await line in response.messages {
                if !line.notice.isEmpty {
                    Console.write(Descriptor.standardError, Array("berth: \(line.notice)\n".utf8))
                    continue
                }
                var data = line.line
                if timestamps { data = Data((RFC3339.format(line.time.date) + " ").utf8) + data }
                Console.write(line.stream == .stderr ? Descriptor.standardError : Descriptor.standardOutput, Array(data))
            }
        }
    }
}
