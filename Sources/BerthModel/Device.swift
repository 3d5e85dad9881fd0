/// What a container may do with a device node: create it (mknod), read
/// it, write it. Spelled as docker and the cgroup v1 device controller spell
/// it: any of `r`, `w`, `m`.
public struct DeviceAccess: OptionSet, Codable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let mknod = DeviceAccess(rawValue: 1)
    public static let read = DeviceAccess(rawValue: 2)
    public static let write = DeviceAccess(rawValue: 4)
    public static let all: DeviceAccess = [.read, .write, .mknod]

    /// Parses `rwm` and any subset of it, in any order.
    ///
    /// - Throws: `BerthError.invalidArgument` for anything else.
    public init(parsing text: String) throws {
        var access: DeviceAccess = []
        for ch in text {
            switch ch {
            case "r": access.insert(.read)
            case "w": access.insert(.write)
            case "m": access.insert(.mknod)
            default: throw BerthError.invalid("device permissions \"\(text)\": expected any of r, w and m (as rwm)")
            }
        }
        guard !access.isEmpty else { throw BerthError.invalid("device permissions \"\(text)\": expected any of r, w and m (as rwm)") }
        self = access
    }

    public var description: String {
        (contains(.read) ? "r" : "") + (contains(.write) ? "w" : "") + (contains(.mknod) ? "m" : "")
    }

    /// In JSON as people write it: `"rwm"`.
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        self = try DeviceAccess(parsing: text)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// One allow rule of the device controller: a kind of device (`a` for any),
/// a major and a minor number (nil for any), and the access it grants.
/// Access is denied unless a rule allows it, on cgroup v1 (the `devices`
/// controller) and v2 (a BPF program Berth builds from the same rules).
public struct DeviceRule: Codable, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Codable, Sendable, Hashable {
        case all = "a"
        case character = "c"
        case block = "b"
    }

    public var kind: Kind
    public var major: UInt32?
    public var minor: UInt32?
    public var access: DeviceAccess

    public init(_ kind: Kind, major: UInt32?, minor: UInt32?, access: DeviceAccess) {
        self.kind = kind
        self.major = major
        self.minor = minor
        self.access = access
    }

    /// The v1 controller's spelling: `c 1:3 rwm`, `b *:* m`.
    public var description: String {
        "\(kind.rawValue) \(major.map { String($0) } ?? "*"):\(minor.map { String($0) } ?? "*") \(access)"
    }

    /// Docker's defaults: any node may be created (mknod, so that images
    /// that ship device nodes unpack), none used unless listed; the
    /// standard nodes, ttys and ptys are read and written.
    public static let defaults: [DeviceRule] = [
        DeviceRule(.character, major: nil, minor: nil, access: .mknod),
        DeviceRule(.block, major: nil, minor: nil, access: .mknod),
        DeviceRule(.character, major: 1, minor: 3, access: .all),  // null
        DeviceRule(.character, major: 1, minor: 5, access: .all),  // zero
        DeviceRule(.character, major: 1, minor: 7, access: .all),  // full
        DeviceRule(.character, major: 1, minor: 8, access: .all),  // random
        DeviceRule(.character, major: 1, minor: 9, access: .all),  // urandom
        DeviceRule(.character, major: 5, minor: 0, access: .all),  // tty
        DeviceRule(.character, major: 5, minor: 1, access: .all),  // console
        DeviceRule(.character, major: 5, minor: 2, access: .all),  // ptmx
        DeviceRule(.character, major: 136, minor: nil, access: .all),  // pts/*
        DeviceRule(.character, major: 10, minor: 200, access: .all),  // net/tun
    ]

    /// Whether this rule lets `access` to a device of `kind` (`.character`
    /// or `.block`) and numbers through.
    public func allows(_ kind: Kind, major: UInt32, minor: UInt32, _ access: DeviceAccess) -> Bool {
        (self.kind == .all || self.kind == kind) && (self.major == nil || self.major == major)
            && (self.minor == nil || self.minor == minor) && self.access.isSuperset(of: access)
    }
}

/// `--device HOST[:CONTAINER][:PERMISSIONS]`: a device node of the host made
/// in the container, and a rule that lets the container use it.
public struct DeviceMapping: Codable, Sendable, Hashable {
    /// The host's node (or a directory of nodes, each mapped below `containerPath`).
    public var hostPath: String
    public var containerPath: String
    public var access: DeviceAccess

    public init(hostPath: String, containerPath: String? = nil, access: DeviceAccess = .all) {
        self.hostPath = hostPath
        self.containerPath = containerPath ?? hostPath
        self.access = access
    }

    /// Parses docker's spelling: `/dev/sdc`, `/dev/sdc:/dev/xvdc`,
    /// `/dev/sdc:rw`, `/dev/sdc:/dev/xvdc:rwm`.
    ///
    /// - Throws: `BerthError.invalidArgument` naming what is wrong.
    public init(parsing text: String) throws {
        let fields = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        let expected = "expected HOST[:CONTAINER][:PERMISSIONS], such as /dev/sdc:/dev/xvdc:rwm"
        var access = DeviceAccess.all
        var container: String?
        switch fields.count {
        case 1: break
        case 2:
            if fields[1].hasPrefix("/") {
                container = fields[1]
            } else {
                access = try DeviceAccess(parsing: fields[1])
            }
        case 3:
            container = fields[1]
            access = try DeviceAccess(parsing: fields[2])
        default:
            throw BerthError.invalid("device \"\(text)\": \(expected)")
        }
        guard fields[0].hasPrefix("/") else { throw BerthError.invalid("device \"\(text)\": the host path must be absolute; \(expected)") }
        if let container {
            guard container.hasPrefix("/") else {
                throw BerthError.invalid("device \"\(text)\": the container path must be absolute; \(expected)")
            }
            guard !container.split(separator: "/").contains("..") else {
                throw BerthError.invalid("device \"\(text)\": the container path may not contain \"..\"")
            }
        }
        self.init(hostPath: fields[0], containerPath: container, access: access)
    }

    /// docker's spelling back: `HOST:CONTAINER:PERMISSIONS`.
    public var description: String { "\(hostPath):\(containerPath):\(access)" }
}
