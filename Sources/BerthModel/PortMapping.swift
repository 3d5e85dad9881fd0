/// A transport protocol for a published port.
public enum PortProtocol: String, Codable, Sendable, Hashable, CaseIterable {
    case tcp
    case udp
}

/// A container port published on the host, from `-p [ip:]host:container[/proto]`.
public struct PortMapping: Codable, Sendable, Hashable, CustomStringConvertible {
    /// The host address to bind; nil means every address of the host.
    public var hostIP: String?
    /// The host port; 0 means "choose a free port".
    public var hostPort: UInt16
    /// The port inside the container.
    public var containerPort: UInt16
    /// TCP or UDP.
    public var transport: PortProtocol

    public init(hostIP: String? = nil, hostPort: UInt16, containerPort: UInt16, transport: PortProtocol = .tcp) {
        self.hostIP = hostIP
        self.hostPort = hostPort
        self.containerPort = containerPort
        self.transport = transport
    }

    /// Parses docker's `-p` syntax: `80`, `8080:80`, `127.0.0.1:8080:80`,
    /// `127.0.0.1::80`, `[::1]:8080:80`, each with an optional `/tcp` or `/udp`.
    ///
    /// - Throws: `BerthError.invalidArgument` naming what is wrong.
    public init(parsing text: String) throws {
        let expected = "expected [ip:]hostPort:containerPort[/tcp|/udp]"
        var rest = Substring(text.trimmingSpaces())
        var proto = PortProtocol.tcp
        if let slash = rest.lastIndex(of: "/") {
            let name = rest[rest.index(after: slash)...].lowercased()
            guard let p = PortProtocol(rawValue: name) else {
                throw BerthError.invalid("published port \"\(text)\": unknown protocol \"\(name)\"; \(expected)")
            }
            proto = p
            rest = rest[..<slash]
        }
        var hostIP: String?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]"),
                rest.index(after: close) < rest.endIndex, rest[rest.index(after: close)] == ":"
            else { throw BerthError.invalid("published port \"\(text)\": \(expected)") }
            hostIP = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(close, offsetBy: 2)...]
        }
        let parts = rest.split(separator: ":", omittingEmptySubsequences: false)
        func port(_ s: Substring, _ role: String, allowZero: Bool) throws -> UInt16 {
            guard let n = UInt16(s), allowZero || n > 0 else {
                throw BerthError.invalid("published port \"\(text)\": \(role) port \"\(s)\" must be a number from 1 to 65535")
            }
            return n
        }
        switch parts.count {
        case 1:
            self.init(hostIP: hostIP, hostPort: 0, containerPort: try port(parts[0], "container", allowZero: false), transport: proto)
        case 2:
            let host = parts[0].isEmpty ? 0 : try port(parts[0], "host", allowZero: false)
            self.init(hostIP: hostIP, hostPort: host, containerPort: try port(parts[1], "container", allowZero: false), transport: proto)
        case 3 where hostIP == nil:
            guard IPAddressText.isValid(parts[0]) else {
                throw BerthError.invalid("published port \"\(text)\": \"\(parts[0])\" is not an IP address")
            }
            let host = parts[1].isEmpty ? 0 : try port(parts[1], "host", allowZero: false)
            self.init(
                hostIP: String(parts[0]), hostPort: host,
                containerPort: try port(parts[2], "container", allowZero: false), transport: proto)
        default:
            throw BerthError.invalid("published port \"\(text)\": \(expected)")
        }
        if let ip = self.hostIP, !IPAddressText.isValid(Substring(ip)) {
            throw BerthError.invalid("published port \"\(text)\": \"\(ip)\" is not an IP address")
        }
    }

    public var description: String {
        var text = ""
        if let hostIP { text += hostIP.contains(":") ? "[\(hostIP)]:" : "\(hostIP):" }
        if hostPort != 0 || hostIP != nil { text += hostPort == 0 ? ":" : "\(hostPort):" }
        if text.hasSuffix("::") { text.removeLast() }
        return text + "\(containerPort)/\(transport.rawValue)"
    }
}

/// Syntax checks for IP address literals, without the C library.
enum IPAddressText {
    static func isValid<S: StringProtocol>(_ s: S) -> Bool { isIPv4(s) || isIPv6(s) }

    static func isIPv4<S: StringProtocol>(_ s: S) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4
            && parts.allSatisfy { p in
                !p.isEmpty && p.count <= 3 && p.allSatisfy(\.isASCII) && (UInt8(p).map { _ in true } ?? false)
                    && !(p.count > 1 && p.first == "0")
            }
    }

    static func isIPv6<S: StringProtocol>(_ s: S) -> Bool {
        guard s.contains(":"), s.count <= 45 else { return false }
        let doubleColons = s.components(separatedByString: "::")
        guard doubleColons <= 1 else { return false }
        var groups = s.split(separator: ":", omittingEmptySubsequences: true)
        var limit = 8
        if let last = groups.last, last.contains(".") {
            guard isIPv4(last) else { return false }
            groups.removeLast()
            limit = 6
        }
        guard groups.allSatisfy({ g in g.count <= 4 && g.allSatisfy(\.isHexDigit) }) else { return false }
        return doubleColons == 1 ? groups.count < limit : groups.count == limit
    }
}

extension StringProtocol {
    /// How many times `separator` occurs, without overlaps.
    func components(separatedByString separator: String) -> Int {
        var count = 0
        var index = startIndex
        while let range = self[index...].firstRange(of: separator) {
            count += 1
            index = range.upperBound
        }
        return count
    }
}
