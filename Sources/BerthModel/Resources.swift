/// Limits and weights for one container, as `docker run` takes them.
///
/// A nil field means "not limited" (or the kernel's default weight).
public struct Resources: Codable, Sendable, Hashable {
    /// Hard memory limit (`-m`): `memory.limit_in_bytes` / `memory.max`.
    public var memory: ByteSize?
    /// Memory plus swap (`--memory-swap`). `-1` bytes means unlimited swap;
    /// nil means twice the memory limit, as docker does.
    public var memorySwap: ByteSize?
    /// CPU time as a number of CPUs (`--cpus`): CFS quota / `cpu.max`.
    public var cpus: CPUQuantity?
    /// Relative CPU weight (`--cpu-shares`, 2...262144; docker's default is 1024).
    public var cpuShares: Int?
    /// CPUs the container may run on (`--cpuset-cpus`).
    public var cpusetCPUs: CPUSet?
    /// Memory nodes the container may use (`--cpuset-mems`).
    public var cpusetMems: CPUSet?
    /// Maximum number of tasks (`--pids-limit`); nil or a value <= 0 means unlimited.
    public var pidsLimit: Int64?
    /// Relative block I/O weight (`--blkio-weight`, 10...1000).
    public var ioWeight: Int?

    public init(
        memory: ByteSize? = nil,
        memorySwap: ByteSize? = nil,
        cpus: CPUQuantity? = nil,
        cpuShares: Int? = nil,
        cpusetCPUs: CPUSet? = nil,
        cpusetMems: CPUSet? = nil,
        pidsLimit: Int64? = nil,
        ioWeight: Int? = nil
    ) {
        self.memory = memory
        self.memorySwap = memorySwap
        self.cpus = cpus
        self.cpuShares = cpuShares
        self.cpusetCPUs = cpusetCPUs
        self.cpusetMems = cpusetMems
        self.pidsLimit = pidsLimit
        self.ioWeight = ioWeight
    }

    /// The smallest memory limit the kernel can honour for a container, as
    /// docker enforces it.
    public static let minimumMemory = ByteSize.mebibytes(6)

    /// Checks the limits against each other and, when given, against the host.
    ///
    /// - Parameter host: the host's capacity; when nil, only limits that are
    ///   impossible on any host are rejected.
    /// - Throws: `BerthError.invalidArgument` naming the first impossible limit.
    public func validate(on host: NodeCapacity? = nil) throws {
        if let memory {
            if memory.bytes <= 0 {
                throw BerthError.invalid("memory limit \(memory): must be greater than 0")
            }
            if memory < Resources.minimumMemory {
                throw BerthError.invalid(
                    "memory limit \(memory): the minimum memory limit allowed is 6MiB")
            }
            if let host, memory.bytes > host.memoryBytes {
                throw BerthError.invalid(
                    "memory limit \(memory.humanReadable) is more than the host's \(ByteSize(bytes: host.memoryBytes).humanReadable)"
                )
            }
        }
        if let swap = memorySwap, swap.bytes != -1 {
            guard let memory else {
                throw BerthError.invalid("memory-swap \(swap) requires a memory limit (-m) as well")
            }
            if swap < memory {
                throw BerthError.invalid(
                    "memory-swap \(swap) must be at least the memory limit \(memory) (memory-swap is memory plus swap)")
            }
        }
        if let cpus {
            if let host, cpus.nanoCPUs > Int64(host.cpus) * 1_000_000_000 {
                throw BerthError.invalid(
                    "cpus \(cpus): the host has only \(host.cpus) CPU\(host.cpus == 1 ? "" : "s")")
            }
            // The kernel's minimum CFS quota is 1 ms per 100 ms period.
            if cpus.quotaMicroseconds() < 1000 {
                throw BerthError.invalid("cpus \(cpus): the smallest CPU limit is 0.01")
            }
        }
        if let shares = cpuShares, !(2...262_144).contains(shares) {
            throw BerthError.invalid("cpu-shares \(shares): must be between 2 and 262144")
        }
        if let weight = ioWeight, !(10...1000).contains(weight) {
            throw BerthError.invalid("blkio-weight \(weight): must be between 10 and 1000")
        }
        if let host, let set = cpusetCPUs, let highest = set.members.last, highest >= host.cpus {
            throw BerthError.invalid(
                "cpuset-cpus \(set): CPU \(highest) does not exist; the host has CPUs 0-\(host.cpus - 1)")
        }
    }
}

/// A process limit (`--ulimit nofile=1024:2048`).
public struct Ulimit: Codable, Sendable, Hashable, CustomStringConvertible {
    /// The limits Linux knows, by docker's names.
    public static let names: [String: Int32] = [
        "cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "rss": 5, "nproc": 6, "nofile": 7, "memlock": 8, "as": 9,
        "locks": 10, "sigpending": 11, "msgqueue": 12, "nice": 13, "rtprio": 14, "rttime": 15,
    ]

    public var name: String
    public var soft: Int64
    public var hard: Int64

    public init(name: String, soft: Int64, hard: Int64) {
        self.name = name
        self.soft = soft
        self.hard = hard
    }

    /// Parses `name=soft[:hard]`; -1 means unlimited.
    ///
    /// - Throws: `BerthError.invalidArgument` for an unknown name or soft above hard.
    public init(parsing text: String) throws {
        let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, let resource = Ulimit.names[parts[0]] else {
            throw BerthError.invalid("ulimit \"\(text)\": expected NAME=SOFT[:HARD] with NAME one of \(Ulimit.names.keys.sorted().joined(separator: ", "))")
        }
        _ = resource
        let values = parts[1].split(separator: ":", maxSplits: 1).map { Int64($0) }
        guard let soft = values.first ?? nil, let hard = values.count == 2 ? values[1] : soft else {
            throw BerthError.invalid("ulimit \"\(text)\": the limits must be whole numbers")
        }
        if hard != -1 && (soft == -1 || soft > hard) {
            throw BerthError.invalid("ulimit \"\(text)\": the soft limit \(soft) is above the hard limit \(hard)")
        }
        self.init(name: parts[0], soft: soft, hard: hard)
    }

    public var resource: Int32 { Ulimit.names[name] ?? -1 }
    public var description: String { "\(name)=\(soft):\(hard)" }
}
