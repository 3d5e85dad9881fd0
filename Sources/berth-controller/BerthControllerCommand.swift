import ArgumentParser
import BerthController
import BerthModel
import BerthTransport
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// `berth-controller`: keeps the cluster's nodes and services.
@main
struct BerthControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "berth-controller", abstract: "Keep track of the cluster's agents and serve the controller's gRPC API.")

    @Option(help: "Listen on TCP HOST:PORT (loopback only until mutual TLS is configured).")
    var listen = "127.0.0.1:7450"

    @Option(help: "Directory for persistent state.")
    var data = "/var/lib/berth-controller"

    @Option(help: "Seconds without a heartbeat after which a node is down.")
    var nodeGrace: Double = 10

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("--log-level \(logLevel): expected trace, debug, info, notice, warning, error or critical")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "berth.controller")
        var configuration = ControllerConfiguration()
        configuration.dataDir = data
        configuration.nodeGrace = .milliseconds(Int64(nodeGrace * 1000))
        do {
            configuration.listen = try TransportAddress(parsing: listen)
            let controller = try Controller(configuration: configuration, logger: logger)
            let group = ServiceGroup(
                configuration: .init(
                    services: [.init(service: controller, successTerminationBehavior: .gracefullyShutdownGroup)],
                    gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        } catch let error as BerthError {
            FileHandle.standardError.write(Data("berth-controller: \(error)\n".utf8))
            throw ExitCode(1)
        } catch let error as TransportError {
            FileHandle.standardError.write(Data("berth-controller: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
