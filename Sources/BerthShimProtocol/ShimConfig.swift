/// Everything `berth-shim` needs to start and supervise one container,
/// resolved by the agent: no lookups happen in the shim.
public struct ShimConfig: Sendable, Hashable {
    public struct MountEntry: Sendable, Hashable {
        public enum Kind: String, Sendable { case filesystem, bind }
        public var kind: Kind
        public var source: String
        public var target: String
        public var fstype: String
        public var data: String
        /// MS_* flags.
        public var flags: UInt

        public init(kind: Kind, source: String, target: String, fstype: String = "", data: String = "", flags: UInt = 0) {
            self.kind = kind
            self.source = source
            self.target = target
            self.fstype = fstype
            self.data = data
            self.flags = flags
        }
    }

    /// A device node made in the container (`--device`), as the host has it.
    public struct DeviceNode: Sendable, Hashable {
        /// Absolute, inside the container.
        public var path: String
        /// "c" or "b".
        public var type: String
        public var major: UInt32
        public var minor: UInt32
        /// Permission bits.
        public var mode: UInt32
        public var uid: UInt32
        public var gid: UInt32

        public init(path: String, type: String, major: UInt32, minor: UInt32, mode: UInt32, uid: UInt32 = 0, gid: UInt32 = 0) {
            self.path = path
            self.type = type
            self.major = major
            self.minor = minor
            self.mode = mode
            self.uid = uid
            self.gid = gid
        }
    }

    public struct Rlimit: Sendable, Hashable {
        public var resource: Int32
        public var soft: UInt64
        public var hard: UInt64

        public init(resource: Int32, soft: UInt64, hard: UInt64) {
            self.resource = resource
            self.soft = soft
            self.hard = hard
        }
    }

    public var id: String
    /// CLONE_NEW* flags.
    public var cloneFlags: UInt64
    public var newCgroupNamespace: Bool
    public var rootfs: String
    /// "lowerdir=…,upperdir=…,workdir=…"; empty binds `rootfs` onto itself.
    public var overlayData: String
    public var readonlyRootfs: Bool
    public var mounts: [MountEntry]
    public var maskedPaths: [String]
    public var readonlyPaths: [String]
    public var createDevices: Bool
    public var hostname: String
    /// cgroup v2: the directory the process is cloned into ("" for none).
    public var cgroupDir: String
    /// cgroup v1: the `tasks` files the process writes itself to, first thing.
    public var cgroupTasks: [String]
    /// File and key of the cgroup's OOM-kill counter (memory.oom_control or
    /// memory.events, key oom_kill).
    public var oomCounterFile: String
    public var args: [String]
    public var env: [String]
    public var path: String
    public var cwd: String
    public var uid: UInt32
    public var gid: UInt32
    public var groups: [UInt32]
    public var rlimits: [Rlimit]
    public var capBounding: UInt64
    public var capEffective: UInt64
    public var capPermitted: UInt64
    public var capInheritable: UInt64
    public var capAmbient: UInt64
    public var noNewPrivileges: Bool
    /// The compiled BPF program, a file in the bundle; empty for none.
    public var seccompFile: String
    public var initProcess: Bool
    /// Where stdout and stderr go (one file, CRI log lines).
    public var logFile: String
    /// Rotation: the size at which the log is rotated, and how many rotated files are kept.
    public var logMaxBytes: Int
    public var logMaxFiles: Int
    /// A network namespace file the container joins (its `cloneFlags` then
    /// lack CLONE_NEWNET); empty for none.
    public var netnsPath: String
    /// Device nodes made in the container (`--device`).
    public var devices: [DeviceNode]
    /// The output is not read until a connection attaches or the agent
    /// releases it (`ShimRequest.release`): an attached run receives it
    /// from the first byte.
    public var attachGate: Bool

    public init(
        id: String, cloneFlags: UInt64, newCgroupNamespace: Bool, rootfs: String, overlayData: String,
        readonlyRootfs: Bool, mounts: [MountEntry], maskedPaths: [String], readonlyPaths: [String],
        createDevices: Bool, hostname: String, cgroupDir: String, cgroupTasks: [String], oomCounterFile: String, args: [String],
        env: [String], path: String, cwd: String, uid: UInt32, gid: UInt32, groups: [UInt32], rlimits: [Rlimit],
        capBounding: UInt64, capEffective: UInt64, capPermitted: UInt64, capInheritable: UInt64,
        capAmbient: UInt64, noNewPrivileges: Bool, seccompFile: String, initProcess: Bool, logFile: String,
        logMaxBytes: Int, logMaxFiles: Int, netnsPath: String = "", devices: [DeviceNode] = [], attachGate: Bool = false
    ) {
        self.netnsPath = netnsPath
        self.devices = devices
        self.attachGate = attachGate
        self.id = id
        self.cloneFlags = cloneFlags
        self.newCgroupNamespace = newCgroupNamespace
        self.rootfs = rootfs
        self.overlayData = overlayData
        self.readonlyRootfs = readonlyRootfs
        self.mounts = mounts
        self.maskedPaths = maskedPaths
        self.readonlyPaths = readonlyPaths
        self.createDevices = createDevices
        self.hostname = hostname
        self.cgroupDir = cgroupDir
        self.cgroupTasks = cgroupTasks
        self.oomCounterFile = oomCounterFile
        self.args = args
        self.env = env
        self.path = path
        self.cwd = cwd
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.rlimits = rlimits
        self.capBounding = capBounding
        self.capEffective = capEffective
        self.capPermitted = capPermitted
        self.capInheritable = capInheritable
        self.capAmbient = capAmbient
        self.noNewPrivileges = noNewPrivileges
        self.seccompFile = seccompFile
        self.initProcess = initProcess
        self.logFile = logFile
        self.logMaxBytes = logMaxBytes
        self.logMaxFiles = logMaxFiles
    }

    public var record: LineRecord {
        var r = LineRecord()
        r.add("id", id)
        r.add("clone_flags", cloneFlags)
        r.add("new_cgroup_namespace", newCgroupNamespace)
        r.add("rootfs", rootfs)
        r.add("overlay", overlayData)
        r.add("readonly_rootfs", readonlyRootfs)
        for m in mounts {
            r.add("mount", [m.kind.rawValue, m.source, m.target, m.fstype, m.data, String(m.flags)].map(Self.escapeField).joined(separator: "|"))
        }
        r.add("masked", maskedPaths)
        r.add("readonly", readonlyPaths)
        r.add("create_devices", createDevices)
        r.add("hostname", hostname)
        r.add("cgroup_dir", cgroupDir)
        r.add("cgroup_tasks", cgroupTasks)
        r.add("oom_counter", oomCounterFile)
        r.add("arg", args)
        r.add("env", env)
        r.add("path", path)
        r.add("cwd", cwd)
        r.add("uid", uid)
        r.add("gid", gid)
        r.add("group", groups.map { String($0) })
        for l in rlimits { r.add("rlimit", "\(l.resource):\(l.soft):\(l.hard)") }
        r.add("cap_bounding", capBounding)
        r.add("cap_effective", capEffective)
        r.add("cap_permitted", capPermitted)
        r.add("cap_inheritable", capInheritable)
        r.add("cap_ambient", capAmbient)
        r.add("no_new_privs", noNewPrivileges)
        r.add("seccomp", seccompFile)
        r.add("init", initProcess)
        r.add("log_file", logFile)
        r.add("log_max_bytes", logMaxBytes)
        r.add("log_max_files", logMaxFiles)
        if !netnsPath.isEmpty { r.add("netns", netnsPath) }
        if attachGate { r.add("attach_gate", true) }
        for d in devices {
            r.add("device", [d.path, d.type, String(d.major), String(d.minor), String(d.mode, radix: 8), String(d.uid), String(d.gid)].map(Self.escapeField).joined(separator: "|"))
        }
        return r
    }

    static func escapeField(_ s: String) -> String {
        var out = ""
        for ch in s.unicodeScalars {
            switch ch {
            case "%": out += "%25"
            case "|": out += "%7C"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    static func unescapeField(_ s: Substring) -> String {
        var out = ""
        var i = s.startIndex
        while i < s.endIndex {
            if s[i] == "%", s.distance(from: i, to: s.endIndex) >= 3 {
                let code = s[s.index(after: i)..<s.index(i, offsetBy: 3)]
                if code == "25" {
                    out += "%"
                    i = s.index(i, offsetBy: 3)
                    continue
                }
                if code == "7C" {
                    out += "|"
                    i = s.index(i, offsetBy: 3)
                    continue
                }
            }
            out.append(s[i])
            i = s.index(after: i)
        }
        return out
    }

    /// - Throws: `LineRecordError` for a missing or malformed field.
    public init(record r: LineRecord) throws(LineRecordError) {
        func required(_ key: String) throws(LineRecordError) -> String {
            guard let v = r[key] else { throw LineRecordError(line: 0, reason: "missing \(key)") }
            return v
        }
        func number<T: FixedWidthInteger>(_ key: String, _: T.Type) throws(LineRecordError) -> T {
            guard let v = T(try required(key)) else { throw LineRecordError(line: 0, reason: "\(key) is not a number") }
            return v
        }
        var mounts: [MountEntry] = []
        for text in r.all("mount") {
            let f = text.split(separator: "|", omittingEmptySubsequences: false).map(Self.unescapeField)
            guard f.count == 6, let kind = MountEntry.Kind(rawValue: f[0]), let flags = UInt(f[5]) else {
                throw LineRecordError(line: 0, reason: "malformed mount \(text)")
            }
            mounts.append(MountEntry(kind: kind, source: f[1], target: f[2], fstype: f[3], data: f[4], flags: flags))
        }
        var rlimits: [Rlimit] = []
        for text in r.all("rlimit") {
            let f = text.split(separator: ":")
            guard f.count == 3, let res = Int32(f[0]), let soft = UInt64(f[1]), let hard = UInt64(f[2]) else {
                throw LineRecordError(line: 0, reason: "malformed rlimit \(text)")
            }
            rlimits.append(Rlimit(resource: res, soft: soft, hard: hard))
        }
        var devices: [DeviceNode] = []
        for text in r.all("device") {
            let f = text.split(separator: "|", omittingEmptySubsequences: false).map(Self.unescapeField)
            guard f.count == 7, f[0].hasPrefix("/"), f[1] == "c" || f[1] == "b", let major = UInt32(f[2]), let minor = UInt32(f[3]),
                let mode = UInt32(f[4], radix: 8), let uid = UInt32(f[5]), let gid = UInt32(f[6])
            else {
                throw LineRecordError(line: 0, reason: "malformed device \(text)")
            }
            devices.append(DeviceNode(path: f[0], type: f[1], major: major, minor: minor, mode: mode, uid: uid, gid: gid))
        }
        var groups: [UInt32] = []
        for g in r.all("group") {
            guard let v = UInt32(g) else { throw LineRecordError(line: 0, reason: "malformed group \(g)") }
            groups.append(v)
        }
        self.init(
            id: try required("id"), cloneFlags: try number("clone_flags", UInt64.self),
            newCgroupNamespace: r.bool("new_cgroup_namespace"), rootfs: try required("rootfs"),
            overlayData: r["overlay"] ?? "", readonlyRootfs: r.bool("readonly_rootfs"), mounts: mounts,
            maskedPaths: r.all("masked"), readonlyPaths: r.all("readonly"), createDevices: r.bool("create_devices"),
            hostname: r["hostname"] ?? "", cgroupDir: r["cgroup_dir"] ?? "", cgroupTasks: r.all("cgroup_tasks"), oomCounterFile: r["oom_counter"] ?? "",
            args: r.all("arg"), env: r.all("env"), path: r["path"] ?? "", cwd: r["cwd"] ?? "/",
            uid: try number("uid", UInt32.self), gid: try number("gid", UInt32.self), groups: groups, rlimits: rlimits,
            capBounding: try number("cap_bounding", UInt64.self), capEffective: try number("cap_effective", UInt64.self),
            capPermitted: try number("cap_permitted", UInt64.self),
            capInheritable: try number("cap_inheritable", UInt64.self), capAmbient: try number("cap_ambient", UInt64.self),
            noNewPrivileges: r.bool("no_new_privs"), seccompFile: r["seccomp"] ?? "", initProcess: r.bool("init"),
            logFile: try required("log_file"), logMaxBytes: r.int("log_max_bytes") ?? 0, logMaxFiles: r.int("log_max_files") ?? 1,
            netnsPath: r["netns"] ?? "", devices: devices, attachGate: r.bool("attach_gate"))
        if args.isEmpty { throw LineRecordError(line: 0, reason: "no command (arg)") }
    }
}
