import BerthModel

/// Linux capabilities by name, and docker's default set.
public enum Capabilities {
    /// Names in kernel order (CAP_CHOWN is 0).
    public static let names = [
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
        "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
        "CHECKPOINT_RESTORE",
    ]

    /// What docker grants a container unless told otherwise.
    public static let dockerDefault = [
        "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
        "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
    ]

    /// The bit of a capability name (`NET_ADMIN`, `CAP_NET_ADMIN`, any case).
    public static func bit(_ name: String) -> Int? {
        var n = name.uppercased()
        if n.hasPrefix("CAP_") { n = String(n.dropFirst(4)) }
        return names.firstIndex(of: n)
    }

    /// docker's default set with `--cap-add` and `--cap-drop` applied
    /// (`ALL` adds or drops every capability; drop is applied first, as docker does).
    ///
    /// - Throws: `BerthError.invalidArgument` for an unknown capability name.
    public static func resolve(add: [String], drop: [String]) throws -> UInt64 {
        func mask(_ list: [String], flag: String) throws -> UInt64 {
            var m: UInt64 = 0
            for name in list {
                if name.uppercased() == "ALL" {
                    m |= (1 << UInt64(names.count)) - 1
                    continue
                }
                guard let b = bit(name) else {
                    throw BerthError.invalid("\(flag) \"\(name)\": not a Linux capability (for example NET_ADMIN or SYS_TIME)")
                }
                m |= 1 << UInt64(b)
            }
            return m
        }
        var set = try mask(dockerDefault, flag: "")
        set &= ~(try mask(drop, flag: "--cap-drop"))
        set |= try mask(add, flag: "--cap-add")
        return set
    }

    /// The names in a mask.
    public static func names(in mask: UInt64) -> [String] {
        names.enumerated().filter { mask & (1 << UInt64($0.offset)) != 0 }.map { "CAP_" + $0.element }
    }
}
