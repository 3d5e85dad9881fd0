import CBerthSyscalls
import Glibc

/// The kernel's side of cgroup v2 device access: a BPF program of type
/// BPF_PROG_TYPE_CGROUP_DEVICE, loaded once and attached to each cgroup.
public final class LoadedDeviceProgram: Sendable {
    /// The program's descriptor; the kernel keeps the program while it is
    /// open or attached to a cgroup.
    public let descriptor: Int32

    /// Loads `instructions` (struct bpf_insn, 8 bytes each).
    ///
    /// - Throws: `SystemError` from bpf(BPF_PROG_LOAD), with the verifier's
    ///   reasons when it refused the program.
    public init(instructions: [UInt8]) throws {
        var log = [CChar](repeating: 0, count: 8192)
        let fd = instructions.withUnsafeBytes { berth_bpf_load_device_program($0.baseAddress, $0.count / 8, &log, log.count) }
        guard fd >= 0 else {
            let saved = errno
            let reasons = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw SystemError("bpf(BPF_PROG_LOAD) of the device program" + (reasons.isEmpty ? "" : " (\(reasons.prefix(400)))"), errno: saved)
        }
        descriptor = fd
    }

    deinit { close(descriptor) }

    /// Attaches the program to the cgroup directory `path`, beside any
    /// attached by its ancestors (BPF_F_ALLOW_MULTI: all must allow).
    ///
    /// - Throws: `SystemError` from open or bpf(BPF_PROG_ATTACH).
    public func attach(toCgroup path: String) throws {
        let cgroup = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard cgroup >= 0 else { throw SystemError("open", path: path, errno: errno) }
        defer { close(cgroup) }
        guard berth_bpf_attach_device_program(descriptor, cgroup) == 0 else {
            throw SystemError("bpf(BPF_PROG_ATTACH) of the device program", path: path, errno: errno)
        }
    }

    /// How many device programs are attached to the cgroup at `path` itself.
    ///
    /// - Throws: `SystemError` from open or bpf(BPF_PROG_QUERY).
    public static func attachedCount(cgroup path: String) throws -> Int {
        let cgroup = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard cgroup >= 0 else { throw SystemError("open", path: path, errno: errno) }
        defer { close(cgroup) }
        let count = berth_bpf_count_device_programs(cgroup)
        guard count >= 0 else { throw SystemError("bpf(BPF_PROG_QUERY)", path: path, errno: errno) }
        return Int(count)
    }
}
