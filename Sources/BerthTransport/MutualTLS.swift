import FoundationEssentials
public import GRPCCore
public import NIOCore
import NIOSSL
import NIOTLS
import SwiftASN1
import Synchronization

/// Mutual TLS with a cluster's CA, from a directory laid out as docker's
/// `DOCKER_CERT_PATH`: `ca.pem` (the CA that every peer must be signed by),
/// `cert.pem` and `key.pem` (this side's certificate and key).
///
/// A server made with it refuses any client that does not present a
/// certificate signed by the CA (and unexpired); a client refuses a server
/// whose certificate is not signed by the CA or does not name the address
/// it connected to. Both speak HTTP/2 only (ALPN "h2").
///
/// The files are read again when they change (a rotated certificate, a new
/// CA bundle), for the connections made after; a change that does not load
/// leaves the last good ones in use.
public struct MutualTLS: Sendable {
    public let directory: String
    /// Refuses a peer after the handshake: a reason, or nil to admit it
    /// (a revoked certificate). Checked on both sides of every connection.
    public var admit: (@Sendable (PeerIdentity) -> String?)?
    private let contexts: ContextCache

    /// - Throws: `TransportError.tls` naming the file that is missing or unreadable.
    public init(directory: String) throws {
        self.directory = directory
        contexts = ContextCache(directory: directory, loaded: try Self.load(directory))
    }

    /// The identity in this side's own certificate.
    public var identity: PeerIdentity { contexts.current().identity }

    /// The contexts made from the files of a directory, and the identity of its certificate.
    struct Loaded: Sendable {
        var server: NIOSSLContext
        var client: NIOSSLContext
        var identity: PeerIdentity
        var stamp: [String]
    }

    /// Each file's inode, size and modification time: what tells that it
    /// changed (files are replaced by a rename, so a new one has a new inode).
    static func stamp(_ directory: String) -> [String] {
        ["ca.pem", "cert.pem", "key.pem"].map { file in
            let attributes = try? FileManager.default.attributesOfItem(atPath: "\(directory)/\(file)")
            return "\(attributes?[.systemFileNumber] ?? "-") \(attributes?[.size] ?? "-") \(attributes?[.modificationDate] ?? "-")"
        }
    }

    final class ContextCache: Sendable {
        let directory: String
        let state: Mutex<Loaded>

        init(directory: String, loaded: Loaded) {
            self.directory = directory
            state = Mutex(loaded)
        }

        /// The contexts of the files as they are now (loaded again when they changed).
        func current() -> Loaded {
            let stamp = MutualTLS.stamp(directory)
            let loaded = state.withLock { $0 }
            guard stamp != loaded.stamp, let fresh = try? MutualTLS.load(directory) else { return loaded }
            state.withLock { $0 = fresh }
            return fresh
        }
    }

    static func load(_ directory: String) throws -> Loaded {
        let stamp = Self.stamp(directory)
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
        let identity = chain.first.map { PeerIdentity(certificate: $0) } ?? PeerIdentity(role: "", name: "", serial: "")
        do {
            return Loaded(
                server: try NIOSSLContext(configuration: serverConfiguration), client: try NIOSSLContext(configuration: clientConfiguration),
                identity: identity, stamp: stamp)
        } catch {
            throw TransportError.tls("\(directory): the certificate and key do not make a TLS context (\(error))")
        }
    }

    /// The identity in the certificate the peer on `pipeline`'s connection
    /// presented; nil when the connection has no TLS.
    static func peerIdentity(_ pipeline: ChannelPipeline.SynchronousOperations) -> PeerIdentity? {
        guard let handler = try? pipeline.handler(type: NIOSSLServerHandler.self) else { return nil }
        return handler.peerCertificate.map { PeerIdentity(certificate: $0) } ?? PeerIdentity(role: "", name: "", serial: "")
    }

    /// For `NGHTTP2ServerTransport.Config.connectionInitializer`.
    public var serverInitializer: @Sendable (any Channel) -> EventLoopFuture<Void> {
        let (cache, admit) = (contexts, self.admit)
        return { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: cache.current().server))
                if let admit { try channel.pipeline.syncOperations.addHandler(PeerCheckHandler(check: admit)) }
            }
        }
    }

    /// For `NGHTTP2ClientTransport.Config.connectionInitializer`: the server's
    /// certificate must name `host` (a DNS name, or the IP address connected
    /// to), and, given `peerName`, have it as its CN (a node's ID).
    public func clientInitializer(host: String, peerName: String? = nil) -> @Sendable (any Channel) -> EventLoopFuture<Bool> {
        let cache = contexts
        // SNI and name checks take a DNS name; an address literal is checked against the peer's IP.
        let isAddress = host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." }
        let serverHostname: String? = isAddress ? nil : host
        let admit = self.admit
        var check: (@Sendable (PeerIdentity) -> String?)?
        if peerName != nil || admit != nil {
            check = { (peer: PeerIdentity) -> String? in
                if let peerName, peer.name != peerName {
                    return "the agent at \(host) presents the certificate of \"\(peer.name)\", not of node \(peerName)"
                }
                return admit?(peer)
            }
        }
        let finalCheck = check
        return { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: cache.current().client, serverHostname: serverHostname))
                if let check = finalCheck { try channel.pipeline.syncOperations.addHandler(PeerCheckHandler(check: check)) }
                return true
            }
        }
    }

    /// A client configuration for `address`, with this TLS on TCP; given
    /// `peerName`, the server's certificate must have it as its CN.
    public func clientConfig(_ address: TransportAddress, connectTimeout: Duration = .seconds(10), peerName: String? = nil)
        -> NGHTTP2ClientTransport.Config
    {
        var config = NGHTTP2ClientTransport.Config(address: address, connectTimeout: connectTimeout)
        if case .tcp(let host, _) = address { config.connectionInitializer = clientInitializer(host: host, peerName: peerName) }
        return config
    }
}

/// Who is at the other end of a mutual TLS connection, from its certificate.
public struct PeerIdentity: Sendable, Hashable, CustomStringConvertible {
    /// The certificate's OU: node, controller or operator ("" without one).
    public var role: String
    /// The certificate's CN: a node's ID, or the name it was issued for.
    public var name: String
    /// The certificate's serial number, lowercase hex without leading zeros.
    public var serial: String

    public init(role: String, name: String, serial: String) {
        self.role = role
        self.name = name
        self.serial = serial
    }

    init(certificate: NIOSSLCertificate) {
        let der = (try? certificate.toDERBytes()) ?? []
        role = PeerRole.subjectAttribute(der: der, oid: [2, 5, 4, 11]) ?? ""
        name = PeerRole.subjectAttribute(der: der, oid: [2, 5, 4, 3]) ?? ""
        serial = Self.hex(certificate.serialNumber)
    }

    /// Serial number bytes as lowercase hex, without leading zeros ("0" for none).
    public static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef")
        var text = ""
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0xf)])
        }
        let trimmed = text.drop { $0 == "0" }
        return trimmed.isEmpty ? "0" : String(trimmed)
    }

    public var description: String { "\(role.isEmpty ? "certificate" : role) \(name) (serial \(serial))" }

    /// The request metadata keys under which a server's transport passes a
    /// TLS peer's CN and serial to the handlers (beside `PeerRole.metadataKey`).
    public static let nameKey = "berth-peer-name"
    public static let serialKey = "berth-peer-serial"

    /// The peer of a request, from the metadata the transport set; nil
    /// without TLS (the unix socket, loopback TCP).
    public init?(metadata: Metadata) {
        guard let role = metadata[stringValues: PeerRole.metadataKey].first(where: { _ in true }) else { return nil }
        self.init(
            role: role, name: metadata[stringValues: Self.nameKey].first(where: { _ in true }) ?? "",
            serial: metadata[stringValues: Self.serialKey].first(where: { _ in true }) ?? "")
    }
}

/// Closes a connection whose peer `check` refuses, once the handshake is done.
final class PeerCheckHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let check: @Sendable (PeerIdentity) -> String?

    init(check: @escaping @Sendable (PeerIdentity) -> String?) {
        self.check = check
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted = tls {
            let certificate = (try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self))?.peerCertificate
            let peer = certificate.map { PeerIdentity(certificate: $0) } ?? PeerIdentity(role: "", name: "", serial: "")
            if let reason = check(peer) {
                context.fireErrorCaught(TransportError.tls(reason))
                context.close(promise: nil)
                return
            }
        }
        context.fireUserInboundEventTriggered(event)
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
    /// transport only; a client's own header of that name is dropped (as
    /// are those of `PeerIdentity.nameKey` and `serialKey`).
    public static let metadataKey = "berth-peer-role"

    /// The first value of attribute `oid` in a DER certificate's subject
    /// (RFC 5280: Certificate → tbsCertificate → [version], serialNumber,
    /// signature, issuer, validity, subject), nil when it has none or does
    /// not parse. OU is 2.5.4.11, CN 2.5.4.3.
    static func subjectAttribute(der: [UInt8], oid: ASN1ObjectIdentifier) -> String? {
        guard let root = try? DER.parse(der), case .constructed(let certificate) = root.content,
            let tbs = certificate.first(where: { _ in true }), case .constructed(let fields) = tbs.content
        else { return nil }
        var items = Array(fields)
        if items.first?.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific) { items.removeFirst() }
        guard items.count > 4, case .constructed(let names) = items[4].content else { return nil }
        for name in names {
            guard case .constructed(let attributes) = name.content else { continue }
            for attribute in attributes {
                guard case .constructed(let pair) = attribute.content else { continue }
                let parts = Array(pair)
                guard parts.count == 2, (try? ASN1ObjectIdentifier(derEncoded: parts[0])) == oid,
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
