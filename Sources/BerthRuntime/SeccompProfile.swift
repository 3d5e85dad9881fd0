import BerthModel
import Foundation

/// A seccomp profile in docker's JSON format (what `--security-opt
/// seccomp=FILE.json` takes), plus Berth's default profile with docker's
/// default semantics: deny (EPERM) everything not listed; allow a wide set of
/// ordinary system calls; allow namespace-creating `clone` flags, `mount`,
/// `unshare`, `setns`, module, time and tracing calls only with the
/// capability they need; answer `clone3` with ENOSYS (so libcs fall back to
/// `clone`, whose flags can be checked) unless CAP_SYS_ADMIN is granted.
public struct SeccompProfile: Codable, Sendable, Hashable {
    public struct Condition: Codable, Sendable, Hashable {
        public var index: UInt32
        public var value: UInt64
        public var valueTwo: UInt64?
        public var op: String

        public init(index: UInt32, value: UInt64, valueTwo: UInt64? = nil, op: String) {
            self.index = index
            self.value = value
            self.valueTwo = valueTwo
            self.op = op
        }
    }

    public struct Filter: Codable, Sendable, Hashable {
        public var caps: [String]?
        public var arches: [String]?
        public var minKernel: String?

        public init(caps: [String]? = nil, arches: [String]? = nil, minKernel: String? = nil) {
            self.caps = caps
            self.arches = arches
            self.minKernel = minKernel
        }
    }

    public struct Rule: Codable, Sendable, Hashable {
        public var names: [String]
        public var action: String
        public var errnoRet: UInt32?
        public var args: [Condition]?
        public var includes: Filter?
        public var excludes: Filter?

        public init(
            names: [String], action: String, errnoRet: UInt32? = nil, args: [Condition]? = nil, includes: Filter? = nil,
            excludes: Filter? = nil
        ) {
            self.names = names
            self.action = action
            self.errnoRet = errnoRet
            self.args = args
            self.includes = includes
            self.excludes = excludes
        }
    }

    public var defaultAction: String
    public var defaultErrnoRet: UInt32?
    public var syscalls: [Rule]

    public init(defaultAction: String, defaultErrnoRet: UInt32? = nil, syscalls: [Rule]) {
        self.defaultAction = defaultAction
        self.defaultErrnoRet = defaultErrnoRet
        self.syscalls = syscalls
    }

    /// Reads a profile file in docker's format.
    ///
    /// - Throws: `BerthError.invalidArgument` naming the file and what is wrong.
    public static func load(path: String) throws -> SeccompProfile {
        try parse(try read(path: path), named: path)
    }

    /// A profile file's text.
    /// - Throws: `BerthError.invalidArgument` naming the file.
    public static func read(path: String) throws -> String {
        do {
            return try String(contentsOf: URL(fileURLWithPath: path), encoding: .utf8)
        } catch {
            throw BerthError.invalid("seccomp profile \(path): cannot be read")
        }
    }

    /// A profile in docker's format.
    /// - Throws: `BerthError.invalidArgument` naming the profile and what is wrong.
    public static func parse(_ json: String, named name: String) throws -> SeccompProfile {
        do {
            return try JSONDecoder().decode(SeccompProfile.self, from: Data(json.utf8))
        } catch let error as DecodingError {
            throw BerthError.invalid("seccomp profile \(name): not a docker seccomp profile (\(Self.describe(error)))")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, _): return "missing \"\(key.stringValue)\""
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c):
            let path = c.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? c.debugDescription : "at \(path): \(c.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}

extension SeccompProfile {
    /// Berth's default profile.
    public static let `default`: SeccompProfile = {
        var rules: [Rule] = [Rule(names: defaultAllowed, action: "SCMP_ACT_ALLOW")]
        rules.append(Rule(names: ["process_vm_readv", "process_vm_writev", "ptrace"], action: "SCMP_ACT_ALLOW", includes: Filter(minKernel: "4.8")))
        // Any socket family but AF_VSOCK (40).
        rules.append(Rule(names: ["socket"], action: "SCMP_ACT_ALLOW", args: [Condition(index: 0, value: 40, op: "SCMP_CMP_NE")]))
        // personality: only the harmless personas.
        for persona: UInt64 in [0, 8, 131_072, 131_080, 4_294_967_295] {
            rules.append(Rule(names: ["personality"], action: "SCMP_ACT_ALLOW", args: [Condition(index: 0, value: persona, op: "SCMP_CMP_EQ")]))
        }
        rules.append(Rule(names: ["arch_prctl"], action: "SCMP_ACT_ALLOW", includes: Filter(arches: ["amd64", "x32"])))
        rules.append(Rule(names: ["modify_ldt"], action: "SCMP_ACT_ALLOW", includes: Filter(arches: ["amd64", "x32", "x86"])))
        rules.append(
            Rule(
                names: ["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"],
                action: "SCMP_ACT_ALLOW", includes: Filter(arches: ["arm", "arm64"])))
        rules.append(Rule(names: ["open_by_handle_at"], action: "SCMP_ACT_ALLOW", includes: Filter(caps: ["CAP_DAC_READ_SEARCH"])))
        rules.append(
            Rule(
                names: [
                    "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "lookup_dcookie", "mount",
                    "mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl", "quotactl_fd", "setdomainname",
                    "sethostname", "setns", "syslog", "umount", "umount2", "unshare",
                ], action: "SCMP_ACT_ALLOW", includes: Filter(caps: ["CAP_SYS_ADMIN"])))
        // clone without any CLONE_NEW* flag (CLONE_NEWNS|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWCGROUP).
        rules.append(
            Rule(
                names: ["clone"], action: "SCMP_ACT_ALLOW", args: [Condition(index: 0, value: 2_114_060_288, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ")],
                excludes: Filter(caps: ["CAP_SYS_ADMIN"], arches: ["s390", "s390x"])))
        rules.append(Rule(names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38, excludes: Filter(caps: ["CAP_SYS_ADMIN"])))
        let byCapability: [(String, [String])] = [
            ("CAP_SYS_BOOT", ["reboot"]), ("CAP_SYS_CHROOT", ["chroot"]),
            ("CAP_SYS_MODULE", ["delete_module", "init_module", "finit_module"]), ("CAP_SYS_PACCT", ["acct"]),
            ("CAP_SYS_PTRACE", ["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"]),
            ("CAP_SYS_RAWIO", ["iopl", "ioperm"]), ("CAP_SYS_TIME", ["settimeofday", "stime", "clock_settime", "clock_settime64"]),
            ("CAP_SYS_TTY_CONFIG", ["vhangup"]), ("CAP_SYS_NICE", ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
            ("CAP_SYSLOG", ["syslog"]), ("CAP_BPF", ["bpf"]), ("CAP_PERFMON", ["perf_event_open"]),
        ]
        for (capability, names) in byCapability {
            rules.append(Rule(names: names, action: "SCMP_ACT_ALLOW", includes: Filter(caps: [capability])))
        }
        return SeccompProfile(defaultAction: "SCMP_ACT_ERRNO", defaultErrnoRet: 1, syscalls: rules)
    }()

    /// Ordinary system calls every container may make.
    static let defaultAllowed: [String] = [
        "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset", "chdir", "chmod", "chown",
        "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime",
        "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range", "connect",
        "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
        "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit",
        "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir",
        "fchmod", "fchmodat", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr",
        "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync",
        "ftruncate", "ftruncate64", "futex", "futex_time64", "futex_waitv", "futimesat", "getcpu", "getcwd", "getdents",
        "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
        "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
        "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname",
        "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch",
        "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents",
        "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "io_uring_enter",
        "io_uring_register", "io_uring_setup", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
        "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr",
        "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "membarrier", "memfd_create",
        "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2",
        "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend",
        "mq_timedsend_time64", "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
        "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2",
        "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll",
        "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
        "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv",
        "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "rename", "renameat",
        "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
        "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
        "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
        "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
        "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
        "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg",
        "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups",
        "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32",
        "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid", "setsockopt",
        "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "shmat", "shmctl", "shmdt", "shmget",
        "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice",
        "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
        "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
        "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
        "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname",
        "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid",
        "waitpid", "write", "writev",
    ]
}
