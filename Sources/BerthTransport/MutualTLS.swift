public import NIOCore
import NIOSSL

/// Mutual TLS with a cluster's CA, from a directory laid out as docker's
/// `DOCKER_CERT_PATH`: `ca.pem` (the CA that every peer must be signed by),
/// `cert.pem` and `key.pem` (this side's certificate and key).
///
/// A server made with it refuses any client that does not present a
/// certificate signed by the CA (and unexpired); a client refuses a server
/// whose certificate is not signed by the CA or does not name the address
/// it connected to. Both speak HTTP/2 only (ALPN "h2").
public struct MutualTLS: Sendable {
    public let directory: String
    private let server: NIOSSLContext
    private let client: NIOSSLContext

    /// - Throws: `TransportError.tls` naming the file that is missing or unreadable.
    public init(directory: String) throws {
        self.directory = directory
        func load<T>(_ file: String, _ body: (String) throws -> T) throws -> T {
            let path = "\(directory)/\(file)"
            do {
                return try body(path)
            } catch {
                throw TransportError.tls("\(path): cannot be read as PEM (\(error))")
            }
        }
        let ca = try load("ca.pem") { try NIOSSLCertificate.fromPEMFile($0) }
        let chain = try load("cert.pem") { try NIOSSLCertificate.fromPEMFile($0) }
        let key = try load("key.pem") { try NIOSSLPrivateKey(file: $0, format: .pem) }
        guard !ca.isEmpty, !chain.isEmpty else { throw TransportError.tls("\(directory): ca.pem and cert.pem must each hold a certificate") }

        var serverConfiguration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        serverConfiguration.trustRoots = .certificates(ca)
        // Clients are known by their certificate alone (they have no address to check).
        serverConfiguration.certificateVerification = .noHostnameVerification
        serverConfiguration.minimumTLSVersion = .tlsv12
        serverConfiguration.applicationProtocols = ["h2"]

        var clientConfiguration = TLSConfiguration.makeClientConfiguration()
        clientConfiguration.certificateChain = chain.map { .certificate($0) }
        clientConfiguration.privateKey = .privateKey(key)
        clientConfiguration.trustRoots = .certificates(ca)
        clientConfiguration.certificateVerification = .fullVerification
        clientConfiguration.minimumTLSVersion = .tlsv12
        clientConfiguration.applicationProtocols = ["h2"]
        do {
            server = try NIOSSLContext(configuration: serverConfiguration)
            client = try NIOSSLContext(configuration: clientConfiguration)
        } catch {
            throw TransportError.tls("\(directory): the certificate and key do not make a TLS context (\(error))")
        }
    }

    /// For `NGHTTP2ServerTransport.Config.connectionInitializer`.
    public var serverInitializer: @Sendable (any Channel) -> EventLoopFuture<Void> {
        let context = server
        return { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
            }
        }
    }

    /// For `NGHTTP2ClientTransport.Config.connectionInitializer`: the server's
    /// certificate must name `host` (a DNS name, or the IP address connected to).
    public func clientInitializer(host: String) -> @Sendable (any Channel) -> EventLoopFuture<Bool> {
        let context = client
        // SNI and name checks take a DNS name; an address literal is checked against the peer's IP.
        let isAddress = host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." }
        let serverHostname: String? = isAddress ? nil : host
        return { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: serverHostname))
                return true
            }
        }
    }

    /// A client configuration for `address`, with this TLS on TCP.
    public func clientConfig(_ address: TransportAddress, connectTimeout: Duration = .seconds(10)) -> NGHTTP2ClientTransport.Config {
        var config = NGHTTP2ClientTransport.Config(address: address, connectTimeout: connectTimeout)
        if case .tcp(let host, _) = address { config.connectionInitializer = clientInitializer(host: host) }
        return config
    }
}
