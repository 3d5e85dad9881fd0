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

    /// Issues a certificate for `name`, good for both ends of a connection
    /// (server and client), naming `name`, `dnsNames` and `ipAddresses`,
    /// with `role` as its OU (what its holder may call).
    ///
    /// - Parameters:
    ///   - notBefore: when it starts to be valid (now, less five minutes of clock skew, by default).
    /// - Throws: `BerthError.invalidArgument` for an address that is not IPv4
    ///   or IPv6, `notFound` for a CA directory without a CA.
    public static func issue(
        caDirectory: String, name: String, role: PeerRole, dnsNames: [String] = [], ipAddresses: [String] = [], outputDirectory: String,
        validFor days: Int = 365, notBefore: Date? = nil
    ) throws {
        guard !name.isEmpty, days >= 1 || notBefore != nil else { throw BerthError.invalid("a certificate needs a name and at least one day") }
        let (caCertificate, caKey) = try load(caDirectory)
        var names: [GeneralName] = [.dnsName(name)] + dnsNames.filter { $0 != name }.map { .dnsName($0) }
        for address in ipAddresses {
            guard let bytes = addressBytes(address) else { throw BerthError.invalid("--ip \(address): expected an IPv4 or IPv6 address") }
            names.append(.ipAddress(ASN1OctetString(contentBytes: bytes[...])))
        }
        let key = P256.Signing.PrivateKey()
        let start = notBefore ?? Date() - 300
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: start, notValidAfter: start + Double(days) * 86400 + (notBefore == nil ? 300 : 0),
            issuer: caCertificate.subject,
            subject: try DistinguishedName {
                OrganizationalUnitName(role.rawValue)
                CommonName(name)
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
        try write(try certificate.serializeAsPEM().pemString, to: "\(outputDirectory)/cert.pem", mode: 0o644)
        try write(key.pemRepresentation, to: "\(outputDirectory)/key.pem", mode: 0o600)
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
