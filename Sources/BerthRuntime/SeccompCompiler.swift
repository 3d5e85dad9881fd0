import BerthModel
import BerthLinux
import CSeccomp
import Foundation

/// Compiles a `SeccompProfile` to a BPF program with libseccomp, before any
/// container process exists; the container's first process only loads it.
public enum SeccompCompiler {
    /// Architectures a native program may also run as (their system calls
    /// must be filtered too).
    static var subArchitectures: [String] {
        #if arch(x86_64)
        return ["x86", "x32"]
        #elseif arch(arm64)
        return ["arm"]
        #else
        return []
        #endif
    }

    static func action(_ name: String, errno: UInt32?, defaultErrno: UInt32?) throws -> UInt32 {
        switch name {
        case "SCMP_ACT_ALLOW": return berth_scmp_act_allow()
        case "SCMP_ACT_ERRNO": return berth_scmp_act_errno(errno ?? defaultErrno ?? 1)
        case "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD": return berth_scmp_act_kill_thread()
        case "SCMP_ACT_KILL_PROCESS": return berth_scmp_act_kill_process()
        case "SCMP_ACT_TRAP": return berth_scmp_act_trap()
        case "SCMP_ACT_LOG": return berth_scmp_act_log()
        case "SCMP_ACT_TRACE": return berth_scmp_act_trace(errno ?? 1)
        default: throw BerthError.invalid("seccomp action \"\(name)\" is not supported")
        }
    }

    static func compare(_ op: String) throws -> scmp_compare {
        switch op {
        case "SCMP_CMP_NE": return SCMP_CMP_NE
        case "SCMP_CMP_LT": return SCMP_CMP_LT
        case "SCMP_CMP_LE": return SCMP_CMP_LE
        case "SCMP_CMP_EQ": return SCMP_CMP_EQ
        case "SCMP_CMP_GE": return SCMP_CMP_GE
        case "SCMP_CMP_GT": return SCMP_CMP_GT
        case "SCMP_CMP_MASKED_EQ": return SCMP_CMP_MASKED_EQ
        default: throw BerthError.invalid("seccomp comparison \"\(op)\" is not supported")
        }
    }

    /// Whether the host kernel is at least `version` ("4.8").
    static func kernelAtLeast(_ version: String, running: String) -> Bool {
        let want = version.split(separator: ".").compactMap { Int($0) }
        let have = running.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        for (a, b) in zip(have + [0, 0], want + [0, 0]).prefix(2) where a != b { return a > b }
        return true
    }

    static func applies(_ rule: SeccompProfile.Rule, capabilities: Set<String>, kernel: String) -> Bool {
        let arch = Platform.architecture
        if let inc = rule.includes {
            if let caps = inc.caps, !caps.allSatisfy(capabilities.contains) { return false }
            if let arches = inc.arches, !arches.contains(arch) { return false }
            if let minKernel = inc.minKernel, !kernelAtLeast(minKernel, running: kernel) { return false }
        }
        if let exc = rule.excludes {
            if let caps = exc.caps, caps.contains(where: capabilities.contains) { return false }
            if let arches = exc.arches, arches.contains(arch) { return false }
        }
        return true
    }

    /// Compiles `profile` for a container holding `capabilities`
    /// (`CAP_…` names) and writes the BPF program to `path`.
    ///
    /// - Throws: `BerthError.invalidArgument` for a profile libseccomp rejects,
    ///   naming the rule.
    public static func compile(_ profile: SeccompProfile, capabilities: [String], to path: String, kernel: String) throws {
        let defaultAction = try action(profile.defaultAction, errno: profile.defaultErrnoRet, defaultErrno: profile.defaultErrnoRet)
        guard let ctx = seccomp_init(defaultAction) else { throw BerthError(.internal, "seccomp_init failed") }
        defer { seccomp_release(ctx) }
        // The container's first process sets no_new_privs itself.
        _ = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)
        // A binary tree of syscall numbers rather than a list: every syscall
        // is decided in a few comparisons instead of hundreds, and the
        // kernel's load of the filter (which runs it once for every syscall
        // number to build its allow cache) takes a fraction of the time.
        guard seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2) == 0 else {
            throw BerthError(.internal, "libseccomp cannot build a binary-tree filter (SCMP_FLTATR_CTL_OPTIMIZE)")
        }
        for arch in subArchitectures {
            let token = seccomp_arch_resolve_name(arch == "x86" ? "x86" : arch)
            if token != 0 {
                let rc = seccomp_arch_add(ctx, token)
                if rc != 0 && rc != -EEXIST { throw BerthError(.internal, "seccomp_arch_add \(arch): \(rc)") }
            }
        }
        let caps = Set(capabilities)
        for rule in profile.syscalls where applies(rule, capabilities: caps, kernel: kernel) {
            let ruleAction = try action(rule.action, errno: rule.errnoRet, defaultErrno: profile.defaultErrnoRet)
            if ruleAction == defaultAction { continue }
            let conditions = try (rule.args ?? []).map { c in
                scmp_arg_cmp(arg: c.index, op: try compare(c.op), datum_a: c.value, datum_b: c.valueTwo ?? 0)
            }
            // Conditions on distinct arguments are ANDed in one rule; several on
            // the same argument are separate rules (ORed), as docker does.
            let sameIndex = Set(conditions.map(\.arg)).count != conditions.count
            let groups: [[scmp_arg_cmp]] = sameIndex ? conditions.map { [$0] } : [conditions]
            for name in rule.names {
                let number = seccomp_syscall_resolve_name(name)
                if number == __NR_SCMP_ERROR { continue }  // not a system call on this architecture
                for group in groups {
                    let rc = group.withUnsafeBufferPointer { seccomp_rule_add_array(ctx, ruleAction, number, UInt32($0.count), $0.baseAddress) }
                    if rc != 0 {
                        throw BerthError.invalid("seccomp rule for \(name) (\(rule.action)) was refused by libseccomp (\(rc))")
                    }
                }
            }
        }
        let file: Descriptor
        do { file = try Descriptor.open(path, [.writeOnly, .create, .truncate], permissions: 0o600) } catch {
            throw BerthError(.internal, "cannot write \(path)", underlying: error)
        }
        defer { file.close() }
        let rc = seccomp_export_bpf(ctx, file.raw)
        guard rc == 0 else { throw BerthError(.internal, "seccomp_export_bpf failed (\(rc))") }
    }
}
