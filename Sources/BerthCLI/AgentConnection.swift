import BerthAPI
import BerthModel
import BerthTransport
import FoundationEssentials
import GRPCCore
import Logging
import Synchronization

/// How the CLI reaches an agent (`-H`, then `BERTH_HOST`, then the default
/// socket) or the controller (`--controller`, then `BERTH_CONTROLLER`, then
/// 127.0.0.1:7450).
struct AgentConnection {
    static let defaultHost = "unix:///run/berth/agent.sock"
    /// How the message of an error begins when no connection was made (the call was not sent).
    static let notConnected = "cannot connect to"

    let address: TransportAddress
    let hostText: String
    /// "agent" or "controller", for messages.
    let component: String
    /// Mutual TLS for TCP (`--tls-dir`, then `BERTH_CERT_PATH`).
    let tls: MutualTLS?

    /// - Throws: `BerthError.invalidArgument` for an address that does not parse.
    init(host: String?, tlsDir: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        try self.init(host, variable: "BERTH_HOST", default: Self.defaultHost, component: "agent", tlsDir: tlsDir, environment: environment)
    }

    /// The controller's address (HOST:PORT means TCP, as everywhere).
    static func controller(_ address: String?, tlsDir: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> AgentConnection {
        try AgentConnection(
            address, variable: "BERTH_CONTROLLER", default: "tcp://127.0.0.1:7450", component: "controller", tlsDir: tlsDir, environment: environment)
    }

    private init(
        _ given: String?, variable: String, default fallback: String, component: String, tlsDir: String?, environment: [String: String]
    ) throws {
        let text = given ?? environment[variable].flatMap { $0.isEmpty ? nil : $0 } ?? fallback
        do {
            self.address = try TransportAddress(parsing: text)
        } catch {
            throw BerthError.invalid("\(component) address \"\(text)\": expected unix:///PATH or tcp://HOST:PORT")
        }
        self.hostText = text
        self.component = component
        let directory = tlsDir ?? environment["BERTH_CERT_PATH"].flatMap { $0.isEmpty ? nil : $0 }
        if case .tcp = address, let directory {
            do {
                tls = try MutualTLS(directory: directory)
            } catch {
                throw BerthError.invalid("TLS: \(error)")
            }
        } else {
            tls = nil
        }
    }

    /// The transport for this connection, with the CLI's settings.
    private func makeTransport() -> NGHTTP2ClientTransport {
        var logger = Logger(label: "berth.cli")
        logger.logLevel = .critical
        let config = tls?.clientConfig(address, connectTimeout: .seconds(5)) ?? .init(address: address, connectTimeout: .seconds(5))
        return NGHTTP2ClientTransport(config: config, logger: logger)
    }

    /// A connection to the local agent begun while the command line is
    /// parsed (on another thread): taken by the first `withClient` to the
    /// same address, dropped at exit otherwise.
    private static let early = Mutex<(address: TransportAddress, transport: NGHTTP2ClientTransport)?>(nil)

    /// Begins connecting to the agent a command will talk to, when that is
    /// a local socket (`-H` before the command, `BERTH_HOST`, or the
    /// default), so that connecting overlaps parsing.
    static func connectEarly(host: String?) {
        guard let connection = try? AgentConnection(host: host), case .unix = connection.address else { return }
        let transport = connection.makeTransport()
        early.withLock { $0 = (connection.address, transport) }
        Task.detached { transport.warmUp() }
    }

    /// Runs `body` with a connected client; maps transport and RPC failures
    /// to `BerthError`s a person can act on.
    func withClient<R: Sendable>(_ body: @Sendable (GRPCClient<NGHTTP2ClientTransport>) async throws -> R) async throws -> R {
        let early = tls == nil ? Self.early.withLock { slot -> NGHTTP2ClientTransport? in
            guard let taken = slot, taken.address == address else { return nil }
            slot = nil
            return taken.transport
        } : nil
        let transport = early ?? makeTransport()
        do {
            return try await withGRPCClient(transport: transport) { client in try await body(client) }
        } catch let error as RPCError where error.code == .unavailable && error.metadata[stringValues: "berth-error-code"].first(where: { _ in true }) == nil {
            if error.message == NGHTTP2ServerTransport.shutdownMessage || error.message == NGHTTP2ClientTransport.closedDuringCallMessage {
                // The call had begun: the other side stopped (or died) under it.
                let why = error.message == NGHTTP2ServerTransport.shutdownMessage ? "it is shutting down" : "the connection closed during the call"
                throw BerthError(.unavailable, "the Berth \(component) at \(address) went away (\(why))")
            }
            if let failure = error.cause as? ConnectFailure {
                throw BerthError(
                    .unavailable,
                    "\(Self.notConnected) the Berth \(component) at \(address) (\(failure.reason)). Is berth-\(component) running, and may you use its socket?")
            }
            var hint = ""
            if case .tcp = address {
                hint = tls.map {
                    "\(error.cause.map { " (\($0))" } ?? ""). The TLS handshake may have failed: is \($0.directory)/ca.pem the cluster's CA, and is its certificate unexpired?"
                } ?? ". If it takes mutual TLS only, give --tls-dir or BERTH_CERT_PATH."
            }
            throw BerthError(.unavailable, "the Berth \(component) at \(address) is unavailable: \(error.message)\(hint)")
        } catch let error as RPCError {
            throw BerthError(error)
        }
    }
}
