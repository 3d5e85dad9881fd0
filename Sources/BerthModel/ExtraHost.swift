/// An entry `--add-host` adds to a container's /etc/hosts: `NAME:ADDRESS`
/// (or `NAME=ADDRESS`), the address an IPv4 or IPv6 address, or
/// `host-gateway` for the gateway of the container's network (the host).
public struct ExtraHost: Sendable, Hashable, CustomStringConvertible {
    public static let hostGateway = "host-gateway"

    public var name: String
    public var address: String

    /// - Throws: `BerthError.invalidArgument` in docker's words for a
    ///   malformed entry.
    public init(parsing text: String) throws {
        let separator = text.firstIndex(where: { $0 == ":" || $0 == "=" })
        guard let separator, separator != text.startIndex else {
            throw BerthError.invalid("invalid argument \"\(text)\" for \"--add-host\" flag: bad format for add-host: \"\(text)\"")
        }
        name = String(text[..<separator])
        address = String(text[text.index(after: separator)...])
        guard !name.contains(where: { $0.isWhitespace }) else {
            throw BerthError.invalid("invalid argument \"\(text)\" for \"--add-host\" flag: bad format for add-host: \"\(text)\"")
        }
        guard address == Self.hostGateway || (try? IPv4Address(parsing: address)) != nil || Self.isIPv6(address) else {
            throw BerthError.invalid("invalid argument \"\(text)\" for \"--add-host\" flag: invalid IP address in add-host: \"\(address)\"")
        }
    }

    /// `NAME:ADDRESS`, as docker keeps it (`HostConfig.ExtraHosts`).
    public var description: String { "\(name):\(address)" }

    /// An IPv6 address: hexadecimal groups with colons, `::` at most once,
    /// an IPv4 tail allowed.
    static func isIPv6(_ text: String) -> Bool {
        guard text.contains(":"), text.components(separatedByString: "::") <= 1 else { return false }
        let groups = text.split(separator: ":", omittingEmptySubsequences: true)
        guard groups.count <= 8 else { return false }
        for (i, group) in groups.enumerated() {
            if i == groups.count - 1, group.contains("."), (try? IPv4Address(parsing: String(group))) != nil { continue }
            guard (1...4).contains(group.count), group.allSatisfy(\.isHexDigit) else { return false }
        }
        return true
    }
}
