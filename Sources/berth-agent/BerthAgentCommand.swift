import ArgumentParser
import BerthAgent
import BerthModel
import BerthTransport
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// `berth-agent`: runs containers on this host and answers Berth's API.
@main
struct BerthAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "berth-agent",
        abstract: "Run containers on this host and serve Berth's gRPC API.",
        version: BuildInfo.version)

    @Option(help: "The local control socket (mode 0600).")
    var socket = "/run/berth/agent.sock"

    @Option(help: "Also listen on TCP HOST:PORT (loopback only without --tls-dir).")
    var listen: String?

    @Option(help: "Mutual TLS: a directory with ca.pem, cert.pem and key.pem (berth-controller ca issue). TCP clients must then present a certificate from the same CA; the controller is called with this one.")
    var tlsDir: String?

    @Option(help: "Also serve /metrics and /healthz, plain HTTP only, on HOST:PORT (for a Prometheus server elsewhere).")
    var metricsListen: String?

    @Option(help: "Directory for persistent state.")
    var root = "/var/lib/berth"

    @Option(help: "Directory for runtime state (sockets, mounts).")
    var state = "/run/berth"

    @Option(name: .customLong("label"), help: "A node label KEY=VALUE (repeatable).")
    var labels: [String] = []

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    @Option(help: "The berth-shim executable (default: beside berth-agent).")
    var shim: String?

    @Option(name: .customLong("init-path"), help: "The berth-init executable, PID 1 of containers run with --init (default: beside berth-agent).")
    var initPath: String?

    @Option(help: "Berth's subtree in each cgroup hierarchy.")
    var cgroupParent = "berth"

    @Option(help: "How many events the event log keeps; a watch from an older revision is refused.")
    var eventRetention = 100_000

    @Option(help: "Rotate a container's log when it would grow past this size (containers may set their own with --log-opt).")
    var logMaxSize = "10m"

    @Option(help: "Log files kept per container, the live one included.")
    var logMaxFile = 3

    @Option(name: .customLong("insecure-registry"), help: "A registry (HOST[:PORT]) that may be pulled from over plain HTTP; registries on loopback always may. Repeatable.")
    var insecureRegistries: [String] = []

    @Option(help: "The default network's bridge: \"none\" gives containers on --network bridge loopback only.")
    var bridge: String?

    @Option(name: .customLong("bridge-subnet"), help: "The default network's subnet when it is made (CIDR); by default a free /24 of 10.89.0.0/16.")
    var bridgeSubnet: String?

    @Option(name: .customLong("dns"), help: "A resolver (IP or IP:PORT) the embedded DNS forwards other names to; by default the host's. Repeatable.")
    var dnsServers: [String] = []

    @Option(help: "Register with the controller at HOST:PORT and send it heartbeats; several controllers as HOST:PORT,HOST:PORT,... (the agent talks to their leader).")
    var controller: String?

    @Option(help: "The HOST:PORT the controller reaches this agent at (default: the --listen address).")
    var advertise: String?

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("--log-level \(logLevel): expected trace, debug, info, notice, warning, error or critical")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "berth.agent")

        var configuration = AgentConfiguration()
        configuration.socketPath = socket
        configuration.rootDir = root
        configuration.stateDir = state
        configuration.shimExecutable = shim
        configuration.initExecutable = initPath
        configuration.cgroupParent = cgroupParent
        configuration.eventRetention = eventRetention
        configuration.insecureRegistries = Set(insecureRegistries)
        switch bridge {
        case nil: configuration.defaultBridge = .subnet(bridgeSubnet)
        case "none"?: configuration.defaultBridge = .none
        case let other?: throw BerthError.invalid("--bridge \(other): only \"none\" is supported (the default network's bridge is made by the agent)")
        }
        configuration.dnsServers = dnsServers
        do {
            configuration.listen = try listen.map { try TransportAddress(parsing: $0) }
            configuration.metricsListen = try metricsListen.map { try TransportAddress(parsing: $0) }
            configuration.controllers = try (controller ?? "").split(separator: ",").map { try TransportAddress(parsing: String($0)) }
            configuration.advertise = advertise
            configuration.tls = try tlsDir.map { try MutualTLS(directory: $0) }
            configuration.log = LogConfig(maxSize: try ByteSize(parsing: logMaxSize, for: "--log-max-size"), maxFiles: logMaxFile)
            for label in labels {
                let parts = label.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, !parts[0].isEmpty else {
                    throw BerthError.invalid("--label \"\(label)\": expected KEY=VALUE")
                }
                configuration.labels[String(parts[0])] = String(parts[1])
            }
            let agent = try Agent(configuration: configuration, logger: logger)
            let group = ServiceGroup(
                configuration: .init(
                    services: [.init(service: agent, successTerminationBehavior: .gracefullyShutdownGroup)],
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger))
            try await group.run()
        } catch let error as BerthError {
            FileHandle.standardError.write(Data("berth-agent: \(error)\n".utf8))
            throw ExitCode(1)
        } catch let error as TransportError {
            FileHandle.standardError.write(Data("berth-agent: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}


