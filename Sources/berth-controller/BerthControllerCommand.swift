import ArgumentParser
import BerthController
import BerthEtcd
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
        commandName: "berth-controller", abstract: "Schedule services over the cluster's agents, and keep them running.",
        subcommands: [Serve.self, CACommand.self], defaultSubcommand: Serve.self)
}

/// Prints a domain or transport error as one line and exits 1.
func reportingErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as BerthError {
        FileHandle.standardError.write(Data("berth-controller: \(error)\n".utf8))
        throw ExitCode(1)
    } catch let error as TransportError {
        FileHandle.standardError.write(Data("berth-controller: \(error)\n".utf8))
        throw ExitCode(1)
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve", abstract: "Serve the controller's gRPC API (the default).")

    @Option(help: "Listen on TCP HOST:PORT (loopback only without --tls-dir).")
    var listen = "127.0.0.1:7450"

    @Option(help: "Mutual TLS: a directory with ca.pem, cert.pem and key.pem (berth-controller ca issue). Clients and agents must then present a certificate from the same CA.")
    var tlsDir: String?

    @Option(help: "Revoked certificates: a file of serial numbers, one a line (berth-controller ca revoke writes CA_DIR/revoked); read again when it changes, checked at every handshake and call. Default: TLS_DIR/revoked.")
    var revoked: String?

    @Option(help: "Directory for persistent state (one controller at a time: it is locked while the controller runs).")
    var data = "/var/lib/berth-controller"

    @Option(help: "Seconds without a heartbeat after which a node is down.")
    var nodeGrace: Double = 10

    @Option(help: "Where the cluster's records are kept: sqlite (DATA/controller.db, one controller) or etcd://HOST:PORT[,HOST:PORT...] (several controllers, one leader).")
    var store = "sqlite"

    @Option(help: "etcd's client certificates: a directory with ca.pem, cert.pem and key.pem for the connections to etcd.")
    var storeTlsDir: String?

    @Option(help: "The HOST:PORT other controllers' callers are sent to when this one leads (default: the --listen address).")
    var advertise: String?

    @Option(help: "With etcd: seconds a leader that stops renewing its lease keeps leading; another is elected after it.")
    var leaderLease: Int = 5

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
        configuration.advertise = advertise
        configuration.leaderLease = .seconds(leaderLease)
        try await reportingErrors {
            if store == "sqlite" {
                guard storeTlsDir == nil else { throw BerthError.invalid("--store-tls-dir is for an etcd store") }
                configuration.store = .sqlite
            } else if store.hasPrefix("etcd://") {
                configuration.store = .etcd(endpoints: try EtcdClient.endpoints(parsing: store), tlsDirectory: storeTlsDir)
            } else {
                throw BerthError.invalid("--store \(store): expected sqlite or etcd://HOST:PORT[,HOST:PORT...]")
            }
            configuration.listen = try TransportAddress(parsing: listen)
            configuration.tls = try tlsDir.map { try MutualTLS(directory: $0) }
            configuration.revocationFile = revoked
            let controller = try Controller(configuration: configuration, logger: logger)
            let group = ServiceGroup(
                configuration: .init(
                    services: [.init(service: controller, successTerminationBehavior: .gracefullyShutdownGroup)],
                    gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        }
    }
}

struct CACommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca", abstract: "The cluster's certificate authority: every TCP peer presents a certificate it issued.",
        subcommands: [CAInit.self, CAIssue.self, CARevoke.self, CARotate.self])
}

struct CAInit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Make the cluster CA (ca.pem, ca-key.pem); never overwrites one.")
    @Option(help: "Where the CA is kept.") var dir = "/etc/berth/ca"
    @Option(help: "Days the CA is valid.") var days = 3650

    func run() async throws {
        try await reportingErrors {
            try ClusterCA.initialize(directory: dir, validFor: days)
            print("\(dir)/ca.pem")
        }
    }
}

struct CAIssue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "issue",
        abstract: "Issue a certificate for an agent, the controller or an operator: OUT/ca.pem, cert.pem, key.pem (docker's cert directory layout).")
    @Option(help: "The certificate's name (a node's hostname, or an operator's name).") var node: String
    @Option(help: "What the holder may do: node (an agent: registers and heartbeats as its node only), controller (calls agents), operator (berth: calls the controller and agents).")
    var role = "node"
    @Option(help: "A node certificate's node ID (an existing agent's ROOT/node-id); a new one when left out, which the agent takes at its first start.")
    var nodeId: String?
    @Option(help: "An IP address the holder is reached at (repeatable).") var ip: [String] = []
    @Option(help: "Another DNS name the holder is reached at (repeatable).") var dns: [String] = []
    @Option(help: "Where the CA is kept.") var caDir = "/etc/berth/ca"
    @Option(help: "Where to write the certificate (default: /etc/berth/certs/NAME).") var out: String?
    @Option(help: "Days the certificate is valid.") var days = 365

    func run() async throws {
        try await reportingErrors {
            let out = self.out ?? "/etc/berth/certs/\(node)"
            guard let role = PeerRole(rawValue: role) else { throw BerthError.invalid("--role \(role): expected node, controller or operator") }
            let issued = try ClusterCA.issue(
                caDirectory: caDir, name: node, role: role, nodeID: nodeId, dnsNames: dns, ipAddresses: ip, outputDirectory: out, validFor: days)
            print(out)
            if let id = issued.nodeID { FileHandle.standardError.write(Data("node ID \(id), serial \(issued.serial)\n".utf8)) }
        }
    }
}

struct CARevoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "Revoke certificates: their serials go into CA_DIR/revoked, which the controller checks at every handshake and call.")
    @Option(help: "Where the CA is kept.") var caDir = "/etc/berth/ca"
    @Option(help: "The revocation file to write (default: CA_DIR/revoked; point the controller's --revoked at it).") var file: String?
    @OptionGroup var store: RevocationStore
    @Argument(help: "Certificate directories (their cert.pem) or serial numbers (hex).") var certificates: [String]

    func run() async throws {
        try await reportingErrors {
            guard !certificates.isEmpty else { throw BerthError.invalid("give the certificate directories or serial numbers to revoke") }
            if let revocations = try store.revocations() {
                defer { revocations.close() }
                for line in try await revocations.add(try ClusterCA.revocations(caDirectory: caDir, certificates)) { print(line) }
            } else {
                for line in try ClusterCA.revoke(caDirectory: caDir, certificates, revocationFile: file) { print(line) }
            }
        }
    }
}

/// `--store etcd://…`: revocations go to the controllers' etcd, where every
/// controller of the cluster follows them, instead of a file.
struct RevocationStore: ParsableArguments {
    @Option(name: .customLong("store"), help: "Revoke in the controllers' etcd (etcd://HOST:PORT[,HOST:PORT...]) instead of the file: every controller refuses the certificate at once.")
    var url: String?
    @Option(name: .customLong("store-tls-dir"), help: "etcd's client certificates (ca.pem, cert.pem, key.pem).") var tlsDir: String?

    /// The store's revocations and its client, nil without --store.
    func revocations() throws -> Connected? {
        guard let url else {
            guard tlsDir == nil else { throw BerthError.invalid("--store-tls-dir is for --store etcd://…") }
            return nil
        }
        guard url.hasPrefix("etcd://") else { throw BerthError.invalid("--store \(url): expected etcd://HOST:PORT[,HOST:PORT...]") }
        var logger = Logger(label: "berth.controller")
        logger.logLevel = .critical
        let client = EtcdClient(
            endpoints: try EtcdClient.endpoints(parsing: url), tls: try tlsDir.map { try MutualTLS(directory: $0) }, logger: logger)
        return Connected(client: client, revocations: EtcdRevocations(client: client))
    }

    struct Connected {
        let client: EtcdClient
        let revocations: EtcdRevocations
        func add(_ lines: [String]) async throws -> [String] { try await revocations.add(lines) }
        func close() { client.close() }
    }
}

struct CARotate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate",
        abstract: "Replace a certificate with a new one (new key, same holder, node ID and addresses) and revoke the old one; daemons take the new files at their next connection.")
    @Option(help: "Where the CA is kept.") var caDir = "/etc/berth/ca"
    @Option(help: "The revocation file to write (default: CA_DIR/revoked).") var file: String?
    @OptionGroup var store: RevocationStore
    @Option(help: "Days the new certificate is valid.") var days = 365
    @Argument(help: "The certificate directory to renew (with ca.pem, cert.pem, key.pem).") var directory: String

    func run() async throws {
        try await reportingErrors {
            let revocations = try store.revocations()
            defer { revocations?.close() }
            let (issued, old) = try ClusterCA.rotate(
                caDirectory: caDir, certificateDirectory: directory, validFor: days, revocationFile: file, revokeOld: revocations == nil)
            if let revocations { _ = try await revocations.add(try ClusterCA.revocations(caDirectory: caDir, [old.serial])) }
            print(directory)
            FileHandle.standardError.write(Data("\(issued.role.rawValue) \(issued.nodeID ?? issued.name): new serial \(issued.serial)\n".utf8))
        }
    }
}
