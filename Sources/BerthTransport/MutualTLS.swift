public import GRPCCore
public import NIOCore
import NIOSSL
import SwiftASN1

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

    /// The role in the certificate the peer on `pipeline`'s connection
    /// presented; nil when the connection has no TLS.
    static func peerRole(_ pipeline: ChannelPipeline.SynchronousOperations) -> String? {
        guard let handler = try? pipeline.handler(type: NIOSSLServerHandler.self) else { return nil }
        return PeerRole.of(handler.peerCertificate) ?? ""
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

/// What a certificate lets its holder do, kept in its subject's OU (as
/// docker swarm keeps a node's role): agents take calls from the
/// controller and operators only; the controller takes registrations and
/// heartbeats from nodes, and everything else from operators (and itself).
public enum PeerRole: String, Sendable, Hashable, CaseIterable {
    case node
    case controller
    case `operator`

    /// The request metadata key under which a server's transport passes
    /// the role of a TLS peer's certificate to the handlers. Set by the
    /// transport only; a client's own header of that name is dropped.
    public static let metadataKey = "berth-peer-role"

    /// The OU of a TLS peer's certificate, "" for a certificate without one;
    /// nil without a certificate.
    static func of(_ certificate: NIOSSLCertificate?) -> String? {
        guard let certificate else { return nil }
        guard let der = try? certificate.toDERBytes() else { return "" }
        return organizationalUnit(der: der) ?? ""
    }

    /// The first OU of a DER certificate's subject (RFC 5280: Certificate →
    /// tbsCertificate → [version], serialNumber, signature, issuer,
    /// validity, subject), nil when it has none or does not parse.
    static func organizationalUnit(der: [UInt8]) -> String? {
        guard let root = try? DER.parse(der), case .constructed(let certificate) = root.content,
            let tbs = certificate.first(where: { _ in true }), case .constructed(let fields) = tbs.content
        else { return nil }
        var items = Array(fields)
        if items.first?.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific) { items.removeFirst() }
        guard items.count > 4, case .constructed(let names) = items[4].content else { return nil }
        let organizationalUnitName: ASN1ObjectIdentifier = [2, 5, 4, 11]
        for name in names {
            guard case .constructed(let attributes) = name.content else { continue }
            for attribute in attributes {
                guard case .constructed(let pair) = attribute.content else { continue }
                let parts = Array(pair)
                guard parts.count == 2, (try? ASN1ObjectIdentifier(derEncoded: parts[0])) == organizationalUnitName,
                    case .primitive(let bytes) = parts[1].content
                else { continue }
                return String(decoding: bytes, as: UTF8.self)
            }
        }
        return nil
    }
}

/// Refuses a call whose TLS peer's certificate has a role the method does
/// not take (PERMISSION_DENIED). Calls without a TLS peer (the unix socket,
/// loopback TCP without TLS) are local and pass.
public struct PeerRoleInterceptor: ServerInterceptor {
    let allowed: @Sendable (MethodDescriptor) -> Set<PeerRole>

    public init(allowed: @escaping @Sendable (MethodDescriptor) -> Set<PeerRole>) {
        self.allowed = allowed
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        if let text = request.metadata[stringValues: PeerRole.metadataKey].first(where: { _ in true }) {
            let permitted = allowed(context.descriptor)
            guard let role = PeerRole(rawValue: text), permitted.contains(role) else {
                let who = text.isEmpty ? "a certificate without a role (OU)" : "a \(text) certificate"
                throw RPCError(
                    code: .permissionDenied,
                    message: "\(who) may not call \(context.descriptor.method); this takes \(permitted.map(\.rawValue).sorted().joined(separator: " or "))")
            }
        }
        return try await next(request, context)
    }
}
