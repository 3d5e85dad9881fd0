import CBerthNetlink
import Glibc

/// Network namespaces kept as files (a bind mount of the namespace), made
/// and configured on a short-lived thread of their own: the caller's
/// namespace never changes.
public enum NetworkNamespaceFile {
    /// A step of making or configuring a namespace failed.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        /// The step: `create netns`, `set address`…
        public var stage: String
        public var errno: Errno
        public var description: String { "\(stage): \(errno)" }
    }

    /// A new namespace bound at `path` (which must not exist), its loopback up.
    public static func create(at path: String) throws(Failure) {
        try call { berth_netns_create(path, $0, $1) }
    }

    /// In the namespace at `path`: `interface` gets `mac` (unless nil; it
    /// must be down then), the address/prefix (host byte order) and goes
    /// up; with a nonzero gateway, a default route through it.
    public static func configure(at path: String, interface: String, mac: [UInt8]?, address: UInt32, prefix: Int, gateway: UInt32) throws(Failure) {
        try call { stage, size in
            guard let mac else { return berth_netns_configure(path, interface, nil, address, Int32(prefix), gateway, stage, size) }
            return berth_netns_configure(path, interface, mac, address, Int32(prefix), gateway, stage, size)
        }
    }

    /// Binds the namespace of the file `from` at `to` (which must not exist), then removes `from`.
    public static func move(from: String, to path: String) throws {
        guard berth_netns_move(from, path) == 0 else { throw SystemError.last("move network namespace \(from) to", path: path) }
    }

    /// Unbinds and deletes the file; one already gone is no error.
    public static func remove(at path: String) throws {
        guard berth_netns_remove(path) == 0 else { throw SystemError.last("remove network namespace", path: path) }
    }

    private static func call(_ body: (UnsafeMutablePointer<CChar>, Int) -> Int32) throws(Failure) {
        var stage = [CChar](repeating: 0, count: Int(BERTH_NETLINK_STAGE_MAX))
        let result = stage.withUnsafeMutableBufferPointer { body($0.baseAddress!, $0.count) }
        guard result == 0 else {
            let saved = Errno.current
            throw Failure(stage: stage.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }, errno: saved)
        }
    }
}

/// Interfaces, through rtnetlink.
public enum Links {
    /// A veth pair: `host` in `bridge`, up if `up`; its peer named `peer`,
    /// with `mac`, moved into the namespace at `netns`.
    /// - Throws: `SystemError` (`.exists`: `host` exists; ENODEV: no such bridge).
    public static func createVeth(host: String, bridge: String, peer: String, mac: [UInt8], netns: String, up: Bool, mtu: Int = 0) throws {
        guard berth_veth_create(host, bridge, peer, mac, netns, up ? 1 : 0, UInt32(clamping: mtu)) == 0 else { throw SystemError.last("rtnetlink") }
    }

    /// Renames the interface `name` (which must be down) and sets it up, in one request.
    public static func renameUp(_ name: String, to newName: String) throws {
        guard berth_link_rename_up(name, newName) == 0 else { throw SystemError.last("rtnetlink") }
    }
}

/// A socket bound to an IPv4 address and port, never listening: it holds
/// the port so that no other program can take it.
public final class BoundSocket: Sendable {
    private let fd: Int32
    /// The port bound (the one the kernel chose for 0).
    public let port: UInt16

    /// - Parameter address: host byte order; 0 for every address.
    /// - Throws: `SystemError` (`.addressInUse`, `.addressNotAvailable`…).
    public init(address: UInt32, port: UInt16, udp: Bool) throws {
        let fd = socket(AF_INET, Int32(udp ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError.last("socket") }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = address.bigEndian
        let bound = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            let error = SystemError.last("bind")
            close(fd)
            throw error
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        self.fd = fd
        self.port = UInt16(bigEndian: actual.sin_port)
    }

    deinit { close(fd) }
}
