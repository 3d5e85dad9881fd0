import FoundationEssentials

/// A value written in JSON as the text it parses from.
public protocol TextCodable: Codable, CustomStringConvertible {
    init(parsing text: String) throws
}

extension TextCodable {
    public init(from decoder: any Decoder) throws {
        try self.init(parsing: decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// An IPv4 address.
public struct IPv4Address: Sendable, Hashable, Comparable, TextCodable {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    /// - Throws: `BerthError.invalidArgument` for anything but a dotted quad.
    public init(parsing text: String) throws {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { throw BerthError.invalid("\"\(text)\" is not an IPv4 address") }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCII), let octet = UInt8(part), !(part.count > 1 && part.first == "0") else {
                throw BerthError.invalid("\"\(text)\" is not an IPv4 address")
            }
            value = value << 8 | UInt32(octet)
        }
        self.value = value
    }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
    }

    public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.value < b.value }

    /// The MAC of an interface with this address, docker's scheme: 02:42
    /// and the address's four bytes, so that an address always has the same MAC.
    public var macAddress: String {
        macBytes.map { b in let s = String(b, radix: 16); return s.count == 1 ? "0" + s : s }.joined(separator: ":")
    }

    /// The same MAC as six bytes.
    public var macBytes: [UInt8] {
        [0x02, 0x42] + [value >> 24, value >> 16, value >> 8, value].map { UInt8($0 & 0xff) }
    }
}

/// An IPv4 subnet, `10.89.3.0/24`: its network address and prefix length.
public struct IPv4Subnet: Sendable, Hashable, TextCodable {
    public var network: IPv4Address
    public var prefix: Int

    /// - Throws: `BerthError.invalidArgument` for a malformed CIDR, a prefix
    ///   outside 8…30, or host bits set (naming the subnet meant).
    public init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let prefix = Int(parts[1]), parts[1].allSatisfy(\.isNumber) else {
            throw BerthError.invalid("subnet \"\(text)\": expected an IPv4 CIDR such as 10.89.3.0/24")
        }
        guard (8...30).contains(prefix) else {
            throw BerthError.invalid("subnet \"\(text)\": the prefix length must be between 8 and 30")
        }
        let address = try IPv4Address(parsing: String(parts[0]))
        let subnet = IPv4Subnet(network: address, prefix: prefix)
        guard subnet.network.value & subnet.mask == address.value else {
            throw BerthError.invalid(
                "subnet \"\(text)\": host bits are set; the subnet is \(IPv4Address(address.value & subnet.mask))/\(prefix)")
        }
        self = subnet
    }

    public init(network: IPv4Address, prefix: Int) {
        self.network = network
        self.prefix = prefix
    }

    public var mask: UInt32 { prefix == 0 ? 0 : UInt32.max << (32 - prefix) }
    public var broadcast: IPv4Address { IPv4Address(network.value | ~mask) }
    /// The first address a host may have.
    public var firstHost: IPv4Address { IPv4Address(network.value + 1) }
    public var lastHost: IPv4Address { IPv4Address(broadcast.value - 1) }

    public func contains(_ address: IPv4Address) -> Bool { address.value & mask == network.value }

    public func overlaps(_ other: IPv4Subnet) -> Bool {
        let shorter = min(prefix, other.prefix)
        let m: UInt32 = shorter == 0 ? 0 : UInt32.max << (32 - shorter)
        return network.value & m == other.network.value & m
    }

    public var description: String { "\(network)/\(prefix)" }
}

/// A bridge network on one host.
public struct Network: Codable, Sendable, Hashable, Identifiable {
    /// 64 hex digits.
    public var id: String
    public var name: String
    public var driver: String
    public var subnet: IPv4Subnet
    public var gateway: IPv4Address
    /// The host's bridge device.
    public var bridge: String
    /// No route out of the network.
    public var `internal`: Bool
    public var labels: [String: String]
    public var createdAt: Date
    /// An overlay network's VXLAN identifier (driver `overlay`, made by the
    /// controller); nil for a bridge network.
    public var vni: Int?

    public init(
        id: String, name: String, subnet: IPv4Subnet, gateway: IPv4Address, bridge: String, internal: Bool,
        labels: [String: String] = [:], createdAt: Date
    ) {
        self.id = id
        self.name = name
        self.driver = "bridge"
        self.subnet = subnet
        self.gateway = gateway
        self.bridge = bridge
        self.internal = `internal`
        self.labels = labels
        self.createdAt = createdAt
    }

    /// Names `--network` takes that are not user networks.
    public static let reservedNames: Set<String> = ["bridge", "host", "none", "default"]

    /// Throws unless `name` can name a user network.
    public static func validate(name: String) throws {
        guard ObjectName.isValid(name, minimumLength: 1) else {
            throw BerthError.invalid("network name \"\(name)\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        }
        guard !reservedNames.contains(name) else {
            throw BerthError.invalid("network name \"\(name)\" is reserved (bridge, host, none)")
        }
    }
}

/// A container's place on one network: its interface there and its address
/// (allocated at create or connect, kept until the container is removed or
/// disconnected, so that it never changes across restarts).
public struct ContainerEndpoint: Codable, Sendable, Hashable {
    public var networkID: String
    public var networkName: String
    /// The interface inside the container: eth0, eth1, …
    public var interface: String
    public var address: IPv4Address
    public var subnet: IPv4Subnet
    public var gateway: IPv4Address
    /// Other names the container has on this network (`--network-alias`).
    public var aliases: [String]

    public init(
        networkID: String, networkName: String, interface: String, address: IPv4Address, subnet: IPv4Subnet, gateway: IPv4Address,
        aliases: [String] = []
    ) {
        self.networkID = networkID
        self.networkName = networkName
        self.interface = interface
        self.address = address
        self.subnet = subnet
        self.gateway = gateway
        self.aliases = aliases
    }
}
