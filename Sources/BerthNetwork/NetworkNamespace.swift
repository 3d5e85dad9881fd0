public import BerthModel
import BerthLinux

/// A container's network namespace, kept as a file (a bind mount of the
/// namespace) from before its process starts until after it ends: the agent
/// configures the namespace before the process joins it, and can attach
/// more networks to it while the container runs.
public enum NetworkNamespace {
    /// A new namespace bound at `path`, its loopback up.
    ///
    /// - Throws: `BerthError.internal` naming the step that failed.
    public static func create(at path: String) throws {
        do { try NetworkNamespaceFile.create(at: path) } catch {
            throw BerthError(.internal, "create network namespace \(path): \(error)")
        }
    }

    /// Gives `interface` (already in the namespace) `mac` (when given; the
    /// interface must be down), its address, and brings it up; with
    /// `gateway`, a default route through it.
    public static func configure(at path: String, interface: String, mac: [UInt8]? = nil, address: IPv4Address, prefix: Int, gateway: IPv4Address?) throws {
        do {
            try NetworkNamespaceFile.configure(at: path, interface: interface, mac: mac, address: address.value, prefix: prefix, gateway: gateway?.value ?? 0)
        } catch {
            throw BerthError(.internal, "configure \(interface) in \(path): \(error)")
        }
    }

    /// Moves a namespace file: binds its namespace at `path` (which must not
    /// exist) and removes `from`.
    public static func move(from: String, to path: String) throws {
        try NetworkNamespaceFile.move(from: from, to: path)
    }

    /// Unbinds and deletes the file; the namespace ends with its last user.
    public static func remove(at path: String) throws {
        try NetworkNamespaceFile.remove(at: path)
    }
}

/// Addresses for containers on a network: the lowest free host address of
/// its subnet, as docker hands them out.
public enum AddressAllocator {
    /// - Parameters:
    ///   - taken: addresses other containers have on the network.
    ///   - requested: a fixed address (`--ip`), checked instead of chosen.
    /// - Throws: `BerthError.invalidArgument` for a requested address outside
    ///   the subnet, the gateway, or one taken; `resourceExhausted` when the
    ///   subnet is full.
    public static func allocate(on network: Network, taken: Set<IPv4Address>, requested: IPv4Address? = nil) throws -> IPv4Address {
        let subnet = network.subnet
        if let requested {
            guard subnet.contains(requested), requested != subnet.network, requested != subnet.broadcast else {
                throw BerthError.invalid("address \(requested) is not a host address of network \(network.name) (\(subnet))")
            }
            guard requested != network.gateway else {
                throw BerthError.invalid("address \(requested) is network \(network.name)'s gateway")
            }
            guard !taken.contains(requested) else {
                throw BerthError(.alreadyExists, "address \(requested) is already in use on network \(network.name)")
            }
            return requested
        }
        var candidate = subnet.firstHost.value
        while candidate <= subnet.lastHost.value {
            let address = IPv4Address(candidate)
            if address != network.gateway && !taken.contains(address) { return address }
            candidate += 1
        }
        throw BerthError(.resourceExhausted, "network \(network.name) (\(subnet)) has no free address left")
    }
}
