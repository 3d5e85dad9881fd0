public import BerthModel
import BerthLinux
import Synchronization

/// How a cgroup v2 driver holds a cgroup to its device rules: by attaching
/// the program built from them.
public protocol DeviceFilter: Sendable {
    /// Attaches a program allowing exactly `rules` to the cgroup directory at `path`.
    ///
    /// - Throws: `BerthError.unavailable` when the kernel refuses.
    func apply(_ rules: [DeviceRule], toCgroup path: String) throws
}

/// The kernel's BPF device programs. A program is loaded once per set of
/// rules (the default set serves every container without `--device`) and
/// attached to each container's cgroup; the kernel keeps an attached
/// program for as long as the cgroup exists.
public final class KernelDeviceFilter: DeviceFilter {
    private let loaded = Mutex<[[DeviceRule]: LoadedDeviceProgram]>([:])

    public init() {}

    public func apply(_ rules: [DeviceRule], toCgroup path: String) throws {
        do {
            let program = try loaded.withLock { cache -> LoadedDeviceProgram in
                if let program = cache[rules] { return program }
                let program = try LoadedDeviceProgram(instructions: DeviceFilterProgram(rules: rules).bytes)
                // Only the defaults come back often; a set with --device
                // devices is loaded for its container alone.
                if rules == DeviceRule.defaults { cache[rules] = program }
                return program
            }
            try program.attach(toCgroup: path)
        } catch {
            throw BerthError(
                .unavailable,
                "cannot hold cgroup \(path) to its device rules: this kernel must allow BPF cgroup device programs (CONFIG_CGROUP_BPF)",
                underlying: error)
        }
    }
}
