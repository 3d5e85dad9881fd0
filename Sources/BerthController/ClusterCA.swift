import BerthLinux
import BerthModel
public import BerthTransport
import Crypto
import Foundation
import SwiftASN1
import X509

/// The cluster's certificate authority: a P-256 key and a self-signed CA
/// certificate (`ca.pem`, `ca-key.pem`), and the certificates it issues to
/// agents, the controller and operators (`ca.pem`, `cert.pem`, `key.pem`,
/// as docker's `DOCKER_CERT_PATH` has them). Every TCP peer of the cluster
/// must present one.
public enum ClusterCA {
    /// Makes a new CA in `directory`.
    ///
    /// - Throws: `BerthError.alreadyExists` when the directory already holds
    ///   a CA (it is never overwritten), `internal` when files cannot be written.
    public static func initialize(directory: String, commonName: String = "Berth cluster CA", validFor days: Int = 3650) throws {
        let keyPath = "\(directory)/ca-key.pem"
        for path in [keyPath, "\(directory)/ca.pem"] where FileManager.default.fileExists(atPath: path) {
            throw BerthError(.alreadyExists, "\(path) exists; a cluster CA is never overwritten (remove it by hand to start over)")
        }
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName(commonName) }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now - 300, notValidAfter: now + Double(days) * 86400, issuer: name, subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(key))
        try Directories.create(directory, mode: 0o700)
        try write(key.pemRepresentation, to: keyPath, mode: 0o600)
        try write(try certificate.serializeAsPEM().pemString, to: "\(directory)/ca.pem", mode: 0o644)
    }

    /// What a certificate says of its holder.
    public struct Issued: Sendable, Hashable {
        /// The name it was issued for (a node's hostname, an operator's name).
        public var name: String
        /// A node certificate's node ID (its CN), nil for other roles.
        public var nodeID: String?
        /// What its holder may call.
        public var role: PeerRole
        /// Its serial number, lowercase hex (what `ca revoke` takes).
        public var serial: String
    }

    /// Issues a certificate for `name`, good for both ends of a connection
    /// (server and client), naming `name`, `dnsNames` and `ipAddresses`,
    /// with `role` as its OU (what its holder may call). A node's
    /// certificate has its node ID as its CN, as swarm's do: the controller
    /// lets it register and heartbeat as that node only.
    ///
    /// - Parameters:
    ///   - nodeID: a node certificate's node ID (32 hex digits; the agent
    ///     takes it at its first start), a new one when nil.
    ///   - notBefore: when it starts to be valid (now, less five minutes of clock skew, by default).
    /// - Throws: `BerthError.invalidArgument` for an address that is not IPv4
    ///   or IPv6 or a malformed node ID, `notFound` for a CA directory without a CA.
    @discardableResult
    public static func issue(
        caDirectory: String, name: String, role: PeerRole, nodeID: String? = nil, dnsNames: [String] = [], ipAddresses: [String] = [],
        outputDirectory: String, validFor days: Int = 365, notBefore: Date? = nil
    ) throws -> Issued {
        guard !name.isEmpty, days >= 1 || notBefore != nil else { throw BerthError.invalid("a certificate needs a name and at least one day") }
        if let nodeID {
            guard role == .node else { throw BerthError.invalid("--node-id: only a node certificate (--role node) names a node") }
            guard nodeID.count == 32, nodeID.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
                throw BerthError.invalid("--node-id \"\(nodeID)\": expected 32 lowercase hex digits (an agent's <root>/node-id)")
            }
        }
        let commonName = role == .node ? nodeID ?? RandomHex.make(32) : name
        let (caCertificate, caKey) = try load(caDirectory)
        var names: [GeneralName] = [.dnsName(name)] + dnsNames.filter { $0 != name }.map { .dnsName($0) }
        for address in ipAddresses {
            guard let bytes = addressBytes(address) else { throw BerthError.invalid("--ip \(address): expected an IPv4 or IPv6 address") }
            names.append(.ipAddress(ASN1OctetString(contentBytes: bytes[...])))
        }
        let key = P256.Signing.PrivateKey()
        let start = notBefore ?? Date() - 300
        let serial = Certificate.SerialNumber()
        let certificate = try Certificate(
            version: .v3, serialNumber: serial, publicKey: .init(key.publicKey),
            notValidBefore: start, notValidAfter: start + Double(days) * 86400 + (notBefore == nil ? 300 : 0),
            issuer: caCertificate.subject,
            subject: try DistinguishedName {
                OrganizationalUnitName(role.rawValue)
                CommonName(commonName)
            },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames(names)
            },
            issuerPrivateKey: .init(caKey))
        try Directories.create(outputDirectory, mode: 0o700)
        try write(try caCertificate.serializeAsPEM().pemString, to: "\(outputDirectory)/ca.pem", mode: 0o644)
        // The key before the certificate: a process that reads the pair
        // between the two writes finds them unmatched and keeps the old pair.
        try write(key.pemRepresentation, to: "\(outputDirectory)/key.pem", mode: 0o600)
        try write(try certificate.serializeAsPEM().pemString, to: "\(outputDirectory)/cert.pem", mode: 0o644)
        return Issued(name: name, nodeID: role == .node ? commonName : nil, role: role, serial: PeerIdentity.hex(serial.bytes))
    }

    /// The file of revoked serials in a CA directory.
    public static func revocationFile(_ caDirectory: String) -> String { "\(caDirectory)/revoked" }

    /// What `directory`'s `cert.pem` says of its holder.
    ///
    /// - Throws: `BerthError.notFound` when there is no certificate to read.
    public static func inspect(certificateDirectory directory: String) throws -> (Issued, dnsNames: [String], ipAddresses: [String]) {
        let certificate: Certificate
        do {
            certificate = try Certificate(pemEncoded: String(contentsOfFile: "\(directory)/cert.pem", encoding: .utf8))
        } catch {
            throw BerthError(.notFound, "no certificate to read in \(directory)/cert.pem: \(error)")
        }
        var commonName = ""
        var unit = ""
        for name in certificate.subject {
            for attribute in name {
                if attribute.type == .RDNAttributeType.commonName { commonName = "\(attribute.value)" }
                if attribute.type == .RDNAttributeType.organizationalUnitName { unit = "\(attribute.value)" }
            }
        }
        var dnsNames: [String] = []
        var ipAddresses: [String] = []
        for name in (try? certificate.extensions.subjectAlternativeNames) ?? SubjectAlternativeNames() {
            switch name {
            case .dnsName(let dns): dnsNames.append(dns)
            case .ipAddress(let bytes): ipAddresses.append(addressText(Array(bytes.bytes)))
            default: break
            }
        }
        let role = PeerRole(rawValue: unit) ?? .node
        let issued = Issued(
            name: role == .node ? (dnsNames.first ?? commonName) : commonName, nodeID: role == .node ? commonName : nil, role: role,
            serial: PeerIdentity.hex(certificate.serialNumber.bytes))
        return (issued, dnsNames, ipAddresses)
    }

    /// Adds the serials of certificates to the CA's revocation list
    /// (`<ca>/revoked`), which the controller checks at every handshake
    /// and call; a serial already there is not added twice.
    ///
    /// - Parameter certificates: certificate directories (their cert.pem),
    ///   or serial numbers in hex.
    /// - Returns: the serials revoked, with what they were.
    /// - Throws: `BerthError.invalidArgument` for something that is neither.
    @discardableResult
    public static func revoke(caDirectory: String, _ certificates: [String], revocationFile: String? = nil) throws -> [String] {
        let file = revocationFile ?? Self.revocationFile(caDirectory)
        var text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? "# Revoked certificates: a serial number (hex) a line; berth-controller reads this at every handshake.\n"
        let revoked = try revocations(caDirectory: caDirectory, certificates, known: RevocationList.parse(text))
        if !text.hasSuffix("\n") { text += "\n" }
        text += revoked.map { $0 + "\n" }.joined()
        try write(text, to: file, mode: 0o644)
        return revoked
    }

    /// The revocation lines of `certificates` (`SERIAL ROLE HOLDER (NAME)
    /// revoked TIME`), those in `known` left out: what `revoke` adds to a
    /// file, or `berth-controller ca revoke --store` to etcd.
    ///
    /// - Throws: `BerthError.invalidArgument` for something that is neither
    ///   a certificate directory nor a serial, `notFound` without a CA.
    public static func revocations(caDirectory: String, _ certificates: [String], known: Set<String> = []) throws -> [String] {
        _ = try load(caDirectory)
        var revoked: [String] = []
        let stamp = ISO8601DateFormatter().string(from: Date())
        for given in certificates {
            let line: String
            if FileManager.default.fileExists(atPath: "\(given)/cert.pem") {
                let (issued, _, _) = try inspect(certificateDirectory: given)
                line = "\(issued.serial) \(issued.role.rawValue) \(issued.nodeID ?? issued.name) (\(issued.name)) revoked \(stamp)"
            } else {
                let digits = given.lowercased().drop { $0 == "0" }
                guard !digits.isEmpty, digits.allSatisfy(\.isHexDigit) else {
                    throw BerthError.invalid("\"\(given)\": expected a certificate directory (with cert.pem) or a serial number in hex")
                }
                line = "\(digits) revoked \(stamp)"
            }
            let serial = String(line.prefix { $0 != " " })
            if known.contains(serial) || revoked.contains(where: { $0.hasPrefix(serial + " ") }) { continue }
            revoked.append(line)
        }
        return revoked
    }

    /// Replaces the certificate in `directory` with a new one for the same
    /// holder (name, role, node ID, addresses) with a new key, and revokes
    /// the old one. Daemons read their files again when they change: the
    /// new certificate serves from their next connection, without a restart.
    ///
    /// - Returns: the new certificate's identity.
    /// - Throws: `BerthError.notFound` without a certificate or CA to read.
    /// - Parameter revokeOld: whether to revoke the old one in the file
    ///   (false: the caller revokes `old`, in etcd).
    @discardableResult
    public static func rotate(
        caDirectory: String, certificateDirectory directory: String, validFor days: Int = 365, revocationFile: String? = nil, revokeOld: Bool = true
    ) throws -> (issued: Issued, old: Issued) {
        let (old, dnsNames, ipAddresses) = try inspect(certificateDirectory: directory)
        let issued = try issue(
            caDirectory: caDirectory, name: old.name, role: old.role, nodeID: old.nodeID, dnsNames: dnsNames.filter { $0 != old.name },
            ipAddresses: ipAddresses, outputDirectory: directory, validFor: days)
        if revokeOld { try revoke(caDirectory: caDirectory, [old.serial], revocationFile: revocationFile) }
        return (issued, old)
    }

    /// An address in text, from its bytes in network order.
    static func addressText(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        var storage = in6_addr()
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        withUnsafeMutableBytes(of: &storage) { raw in for (i, byte) in bytes.prefix(16).enumerated() { raw[i] = byte } }
        guard inet_ntop(AF_INET6, &storage, &buffer, socklen_t(buffer.count)) != nil else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func load(_ directory: String) throws -> (Certificate, P256.Signing.PrivateKey) {
        do {
            let certificate = try Certificate(pemEncoded: String(contentsOfFile: "\(directory)/ca.pem", encoding: .utf8))
            let key = try P256.Signing.PrivateKey(pemRepresentation: String(contentsOfFile: "\(directory)/ca-key.pem", encoding: .utf8))
            return (certificate, key)
        } catch {
            throw BerthError(.notFound, "no cluster CA in \(directory) (make one with berth-controller ca init): \(error)")
        }
    }

    /// An address's bytes in network order, nil when it is not one.
    static func addressBytes(_ text: String) -> [UInt8]? {
        if let v4 = try? IPv4Address(parsing: text) { return withUnsafeBytes(of: v4.value.bigEndian) { Array($0) } }
        var storage = in6_addr()
        guard text.contains(":"), inet_pton(AF_INET6, text, &storage) == 1 else { return nil }
        return withUnsafeBytes(of: storage) { Array($0) }
    }

    private static func write(_ text: String, to path: String, mode: mode_t) throws {
        do {
            try AtomicFile.write(Array(text.utf8), to: path, mode: mode)
        } catch {
            throw BerthError(.internal, "cannot write \(path): \(error)")
        }
    }
}
