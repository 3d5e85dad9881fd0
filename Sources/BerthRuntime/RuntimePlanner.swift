public import BerthCgroups
public import BerthModel
public import BerthShimProtocol
import Foundation

/// Everything that is decided outside the planner: where the container's
/// files live, its cgroup, and the compiled seccomp program.
public struct RuntimePaths: Sendable {
    /// `<root>/containers/<id>`: upper, work, hostname, hosts, resolv.conf.
    public var containerDir: String
    /// `<state>/containers/<id>`: the shim's bundle (config, sockets, state).
    public var bundleDir: String
    public var lowerDirs: [String]
    public var cgroup: CgroupPlacement
    public var oomCounterFile: String
    /// The compiled BPF program, or nil for `seccomp=unconfined`.
    public var seccompProgram: String?
    public var logFile: String
    public var logMaxBytes: Int
    public var logMaxFiles: Int
    /// The container's view of its cgroups, mounted under /sys/fs/cgroup.
    public var cgroupMounts: [CgroupMount]
    /// `<root>/volumes`: a volume's data is `<volumesDir>/<name>/_data`.
    public var volumesDir: String
    /// The network namespace file the container joins; nil makes it its own
    /// (with loopback only), unless it shares the host's.
    public var netnsPath: String?
    /// Host device nodes made in the container (`--device`, see `HostDevices`).
    public var devices: [ShimConfig.DeviceNode]

    public init(
        containerDir: String, bundleDir: String, lowerDirs: [String], cgroup: CgroupPlacement, oomCounterFile: String,
        seccompProgram: String?, logFile: String, logMaxBytes: Int = 10 << 20, logMaxFiles: Int = 3, cgroupMounts: [CgroupMount] = [],
        volumesDir: String = "", netnsPath: String? = nil, devices: [ShimConfig.DeviceNode] = []
    ) {
        self.netnsPath = netnsPath
        self.devices = devices
        self.cgroupMounts = cgroupMounts
        self.volumesDir = volumesDir
        self.containerDir = containerDir
        self.bundleDir = bundleDir
        self.lowerDirs = lowerDirs
        self.cgroup = cgroup
        self.oomCounterFile = oomCounterFile
        self.seccompProgram = seccompProgram
        self.logFile = logFile
        self.logMaxBytes = logMaxBytes
        self.logMaxFiles = logMaxFiles
    }
}

/// Turns a container spec and its image into the exact configuration the
/// shim starts: namespaces, mounts in order, masked paths, identity,
/// capabilities, limits, command. Pure: no I/O, so it is tested without root.
public enum RuntimePlanner {
    // Linux constants the plan uses (the same on every architecture Berth runs on).
    static let cloneNewNS: UInt64 = 0x0002_0000
    static let cloneNewUTS: UInt64 = 0x0400_0000
    static let cloneNewIPC: UInt64 = 0x0800_0000
    static let cloneNewPID: UInt64 = 0x2000_0000
    static let cloneNewNet: UInt64 = 0x4000_0000
    static let msRdonly: UInt = 1
    static let msNosuid: UInt = 2
    static let msNodev: UInt = 4
    static let msNoexec: UInt = 8
    static let msStrictatime: UInt = 1 << 24

    public static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// Paths hidden from the container, as docker hides them.
    public static let maskedPaths = [
        "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
    ]

    /// Paths the container may read but not write.
    public static let readonlyPaths = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

    /// The command: the entrypoint (spec's, else image's) then the arguments
    /// (spec's, else the image's Cmd unless the entrypoint was overridden).
    ///
    /// - Throws: `BerthError.invalidArgument` when there is nothing to run.
    public static func command(spec: ContainerSpec, image: ImageConfig) throws -> [String] {
        let entrypoint = spec.entrypoint ?? image.entrypoint ?? []
        let arguments: [String]
        if !spec.command.isEmpty {
            arguments = spec.command
        } else if spec.entrypoint != nil {
            arguments = []
        } else {
            arguments = image.cmd ?? []
        }
        let command = entrypoint + arguments
        guard !command.isEmpty else {
            throw BerthError.invalid("no command specified: the image has no Cmd or Entrypoint, and none was given")
        }
        return command
    }

    /// The environment: the image's, then the spec's (a later KEY wins),
    /// plus PATH, HOSTNAME and HOME when absent.
    public static func environment(spec: ContainerSpec, image: ImageConfig, hostname: String, home: String) -> [String] {
        var order: [String] = []
        var values: [String: String] = [:]
        func add(_ entry: String) {
            let key = String(entry.split(separator: "=", maxSplits: 1).first ?? "")
            if values[key] == nil { order.append(key) }
            values[key] = entry
        }
        add("PATH=\(defaultPath)")
        add("HOSTNAME=\(hostname)")
        image.env.forEach(add)
        spec.env.map { $0.contains("=") ? $0 : "\($0)=" }.forEach(add)
        if values["HOME"] == nil { add("HOME=\(home)") }
        if spec.tty && values["TERM"] == nil { add("TERM=xterm") }
        return order.compactMap { values[$0] }
    }

    /// The shim configuration for one start of a container.
    ///
    /// - Throws: `BerthError.invalidArgument` for a command, user, capability
    ///   or mount that cannot be honoured.
    public static func plan(container: Container, image: Image, process: AdmittedProcess, paths: RuntimePaths) throws -> ShimConfig {
        let spec = container.spec
        let hostname = spec.hostname ?? container.id.short
        let args = process.command
        let user = process.user
        let capabilities = process.capabilities
        let env = environment(spec: spec, image: image.config, hostname: hostname, home: user.home)
        let path = env.first { $0.hasPrefix("PATH=") }.map { String($0.dropFirst(5)) } ?? defaultPath
        var cwd = spec.workingDir ?? (image.config.workingDir.isEmpty ? "/" : image.config.workingDir)
        if !cwd.hasPrefix("/") { cwd = "/" + cwd }

        typealias M = ShimConfig.MountEntry
        var mounts: [M] = [
            M(kind: .filesystem, source: "proc", target: "/proc", fstype: "proc", flags: msNosuid | msNoexec | msNodev),
            M(kind: .filesystem, source: "tmpfs", target: "/dev", fstype: "tmpfs", data: "mode=755,size=65536k", flags: msNosuid | msStrictatime),
            M(kind: .filesystem, source: "devpts", target: "/dev/pts", fstype: "devpts", data: "newinstance,ptmxmode=0666,mode=0620,gid=5", flags: msNosuid | msNoexec),
            M(kind: .filesystem, source: "shm", target: "/dev/shm", fstype: "tmpfs", data: "mode=1777,size=65536k", flags: msNosuid | msNoexec | msNodev),
            M(kind: .filesystem, source: "mqueue", target: "/dev/mqueue", fstype: "mqueue", flags: msNosuid | msNoexec | msNodev),
            M(kind: .filesystem, source: "sysfs", target: "/sys", fstype: "sysfs", flags: msNosuid | msNoexec | msNodev | msRdonly),
        ]
        for cgroup in paths.cgroupMounts {
            mounts.append(
                M(kind: .filesystem, source: cgroup.fstype, target: cgroup.target, fstype: cgroup.fstype, data: cgroup.data,
                  flags: msNosuid | msNodev | msNoexec | (cgroup.readOnly ? msRdonly : 0)))
        }
        for file in ["hostname", "hosts", "resolv.conf"] {
            mounts.append(M(kind: .bind, source: "\(paths.containerDir)/\(file)", target: "/etc/\(file)", flags: msNosuid | msNodev | msNoexec))
        }
        for mount in spec.mounts {
            switch mount.kind {
            case .bind:
                mounts.append(M(kind: .bind, source: mount.source, target: mount.target, flags: mount.readOnly ? msRdonly : 0))
            case .tmpfs:
                var data = "mode=1777"
                if let size = mount.tmpfsSize { data += ",size=\(size.bytes)" }
                mounts.append(M(kind: .filesystem, source: "tmpfs", target: mount.target, fstype: "tmpfs", data: data,
                                flags: msNosuid | msNodev | (mount.readOnly ? msRdonly : 0)))
            case .volume:
                guard !mount.source.isEmpty, !paths.volumesDir.isEmpty else {
                    throw BerthError(.internal, "volume mount \(mount.target) has no volume")
                }
                mounts.append(M(kind: .bind, source: "\(paths.volumesDir)/\(mount.source)/_data", target: mount.target, flags: mount.readOnly ? msRdonly : 0))
            }
        }

        let lower = paths.lowerDirs.joined(separator: ":")
        let overlay = "lowerdir=\(lower),upperdir=\(paths.containerDir)/upper,workdir=\(paths.containerDir)/work"
        let isRoot = user.uid == 0
        return ShimConfig(
            id: container.id.rawValue,
            // --network host shares the host's network namespace; a container on a
            // network joins the one made for it; any other gets one of its own.
            cloneFlags: cloneNewNS | cloneNewUTS | cloneNewIPC | cloneNewPID | (spec.network == "host" || paths.netnsPath != nil ? 0 : cloneNewNet),
            newCgroupNamespace: true,
            rootfs: "\(paths.containerDir)/rootfs",
            overlayData: overlay,
            readonlyRootfs: spec.readOnlyRootfs,
            mounts: mounts,
            maskedPaths: maskedPaths,
            readonlyPaths: readonlyPaths,
            createDevices: true,
            hostname: hostname,
            cgroupDir: paths.cgroup.cloneInto ?? "", cgroupTasks: paths.cgroup.selfJoinTasks,
            oomCounterFile: paths.oomCounterFile,
            args: args,
            env: env,
            path: path,
            cwd: cwd,
            uid: user.uid,
            gid: user.gid,
            groups: user.additionalGroups,
            rlimits: spec.ulimits.map { u in
                ShimConfig.Rlimit(
                    resource: u.resource, soft: u.soft < 0 ? UInt64.max : UInt64(u.soft), hard: u.hard < 0 ? UInt64.max : UInt64(u.hard))
            },
            capBounding: capabilities,
            capEffective: isRoot ? capabilities : 0,
            capPermitted: isRoot ? capabilities : 0,
            capInheritable: 0,
            capAmbient: 0,
            noNewPrivileges: true,
            seccompFile: paths.seccompProgram ?? "",
            initProcess: spec.initProcess,
            logFile: paths.logFile,
            logMaxBytes: paths.logMaxBytes,
            logMaxFiles: paths.logMaxFiles,
            netnsPath: paths.netnsPath ?? "",
            devices: paths.devices)
    }

    /// The container's /etc/hosts.
    /// - Parameter address: the container's address on its network; nil
    ///   gives the hostname 127.0.1.1, as for a container on no network.
    /// - Parameter extra: `--add-host` entries, after the standard ones
    ///   and before the container's own, as docker writes them; a
    ///   `host-gateway` address is `gateway`.
    public static func hostsFile(hostname: String, address: String? = nil, extra: [String] = [], gateway: String? = nil) -> String {
        var text = """
            127.0.0.1\tlocalhost
            ::1\tlocalhost ip6-localhost ip6-loopback
            fe00::0\tip6-localnet
            ff00::0\tip6-mcastprefix
            ff02::1\tip6-allnodes
            ff02::2\tip6-allrouters

            """
        for entry in extra {
            guard let host = try? ExtraHost(parsing: entry) else { continue }
            let resolved = host.address == ExtraHost.hostGateway ? gateway : host.address
            if let resolved { text += "\(resolved)\t\(host.name)\n" }
        }
        return text + "\(address ?? "127.0.1.1")\t\(hostname)\n"
    }

    /// The container's /etc/resolv.conf: the host's, without loopback
    /// resolvers (which a container in its own network namespace cannot
    /// reach); with `nameserver` (the embedded resolver), that one alone,
    /// with the host's search domains and options.
    public static func resolvConf(host: String, nameserver: String? = nil) -> String {
        var lines: [String] = []
        var servers = 0
        if let nameserver {
            lines.append("nameserver \(nameserver)")
            servers = 1
        }
        for line in host.split(separator: "\n", omittingEmptySubsequences: false) {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.first == "nameserver", fields.count >= 2 {
                let address = fields[1]
                if nameserver != nil || address.hasPrefix("127.") || address == "::1" { continue }
                servers += 1
            }
            lines.append(String(line))
        }
        if servers == 0 { lines += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"] }
        return lines.joined(separator: "\n").trimmingCharacters(in: .newlines) + "\n"
    }
}
