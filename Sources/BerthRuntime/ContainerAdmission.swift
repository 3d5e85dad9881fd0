import BerthLinux
public import BerthModel

/// What admission needs to know of the host, read before it decides.
public protocol AdmissionHost: Sendable {
    /// Whether a bind mount's source exists.
    func pathExists(_ path: String) -> Bool
    /// The text of a seccomp profile file.
    func readProfile(_ path: String) throws -> String
    /// Checks that the `--device` paths are devices this host has.
    func checkDevices(_ devices: [DeviceMapping]) throws
    /// The capabilities the host lets the agent give (its bounding set).
    var grantableCapabilities: UInt64 { get }
}

extension AdmissionHost {
    public var grantableCapabilities: UInt64 { ~0 }
}

/// The host as it is.
public struct LiveAdmissionHost: AdmissionHost {
    public init() {}
    public func pathExists(_ path: String) -> Bool { FileIO.exists(path) }
    public func readProfile(_ path: String) throws -> String { try SeccompProfile.read(path: path) }
    public func checkDevices(_ devices: [DeviceMapping]) throws { _ = try HostDevices.resolve(devices) }
    /// The agent's own bounding set (`CapBnd` in /proc/self/status): a
    /// capability outside it cannot be given to a container.
    public var grantableCapabilities: UInt64 {
        let status = (try? FileIO.read("/proc/self/status")) ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("CapBnd:") {
            return UInt64(String(line.dropFirst(7).filter { !$0.isWhitespace }), radix: 16) ?? ~0
        }
        return ~0
    }
}

/// A container spec as admitted: the spec to record (its name, its network,
/// the image's labels and volumes merged in) and what its process is.
public struct Admission: Sendable, Hashable {
    public var spec: ContainerSpec
    public var process: AdmittedProcess
}

/// Decides whether a container may be made, and what it is, from the spec,
/// the image and facts of the host read beforehand. Pure: the same input,
/// the same answer; nothing is made here.
public enum ContainerAdmission {
    /// The checks that need no image: limits against the host, the name.
    ///
    /// - Parameters:
    ///   - names: names of the containers there are.
    /// - Returns: the spec with its network spelled as recorded (`bridge`
    ///   for the default).
    /// - Throws: `BerthError` naming what is wrong.
    public static func check(_ requested: ContainerSpec, capacity: NodeCapacity, names: Set<String>) throws -> ContainerSpec {
        var spec = requested
        try spec.validate(on: capacity)
        if let name = spec.name, names.contains(name) {
            throw BerthError(.alreadyExists, "container name \"\(name)\" is already in use; remove that container or choose another name")
        }
        if spec.network == "default" || spec.network.isEmpty { spec.network = "bridge" }
        return spec
    }

    /// Admits a checked spec on an image.
    ///
    /// - Parameters:
    ///   - onNetwork: the container gets an endpoint on a network of the agent's.
    ///   - users: the image's /etc/passwd and /etc/group.
    /// - Throws: `BerthError.invalidArgument` naming what cannot be honoured.
    public static func admit(_ checked: ContainerSpec, image: Image, onNetwork: Bool, users: UserDatabase, host: some AdmissionHost) throws -> Admission {
        var spec = checked
        if !onNetwork && !spec.networkAliases.isEmpty {
            throw BerthError.invalid("--network-alias needs a user-defined network")
        }
        for entry in spec.extraHosts ?? [] {
            let host = try ExtraHost(parsing: entry)
            if host.address == ExtraHost.hostGateway && !onNetwork {
                throw BerthError.invalid("--add-host \(entry): host-gateway is the gateway of the container's network, and it is on none")
            }
        }
        for mount in spec.mounts where mount.kind == .bind {
            guard host.pathExists(mount.source) else {
                throw BerthError.invalid("bind source path does not exist: \(mount.source)")
            }
        }
        // The image's labels, under the container's own, as docker merges them.
        spec.labels = image.config.labels.merging(spec.labels) { _, own in own }
        // The image's VOLUME paths that no mount covers get anonymous volumes.
        let targets = Set(spec.mounts.map(\.target))
        for path in image.config.volumes where !targets.contains(path) && path.hasPrefix("/") {
            spec.mounts.append(Mount(kind: .volume, target: path))
        }
        let grantable = host.grantableCapabilities
        // A capability asked for by name that the host does not grant is
        // refused by name; docker's defaults (and ALL) are what the host grants of them.
        for name in spec.capAdd where name.uppercased() != "ALL" {
            if let bit = Capabilities.bit(name), grantable & (1 << UInt64(bit)) == 0 {
                throw BerthError.invalid("--cap-add \(name): the host does not grant this capability (it is not in the agent's bounding set)")
            }
        }
        let capabilities = try Capabilities.resolve(add: spec.capAdd, drop: spec.capDrop) & grantable
        let seccomp = try SecurityOptions.seccomp(spec.securityOpts, readProfile: host.readProfile)
        try host.checkDevices(spec.devices)
        let user = try users.resolve(spec.user ?? image.config.user)
        let command = try RuntimePlanner.command(spec: spec, image: image.config)
        return Admission(spec: spec, process: AdmittedProcess(command: command, user: user, capabilities: capabilities, seccomp: seccomp))
    }

    /// The process of a container recorded before admissions were kept.
    public static func process(of container: Container, image: Image, users: UserDatabase, host: some AdmissionHost) throws -> AdmittedProcess {
        let spec = container.spec
        return AdmittedProcess(
            command: try RuntimePlanner.command(spec: spec, image: image.config), user: try users.resolve(spec.user ?? image.config.user),
            capabilities: try Capabilities.resolve(add: spec.capAdd, drop: spec.capDrop) & host.grantableCapabilities,
            seccomp: try SecurityOptions.seccomp(spec.securityOpts, readProfile: host.readProfile))
    }
}
