public import BerthModel
import BerthLinux

/// One way of placing containers in cgroups and holding them to limits.
/// Drivers work under their own subtree (`berth/` by default) of a root
/// that is a parameter, so tests run them on temporary trees.
///
/// Every method names the container's cgroup by a name (its ID); nothing
/// outside the driver's subtree is ever written.
/// How a new process enters a container's cgroup without being migrated by
/// PID: a migration by PID takes the kernel's global threadgroup lock for
/// writing, which waits for an RCU grace period (milliseconds) each time.
public struct CgroupPlacement: Sendable, Equatable {
    /// cgroup v2: the directory to clone the process into (CLONE_INTO_CGROUP).
    public var cloneInto: String?
    /// cgroup v1: one `tasks` file per hierarchy; the process writes "0"
    /// (itself) to each before it does anything else.
    public var selfJoinTasks: [String]

    public init(cloneInto: String? = nil, selfJoinTasks: [String] = []) {
        self.cloneInto = cloneInto
        self.selfJoinTasks = selfJoinTasks
    }
}

public protocol CgroupDriver: Sendable {
    /// v1, v2 or hybrid (v1 controllers).
    var mode: CgroupMode { get }

    /// Creates the cgroup, applies the limits and holds it to Docker's
    /// device rules (`DeviceRule.defaults`) plus `devices` (`--device`):
    /// v1 through its `devices` controller, v2 through a BPF program.
    ///
    /// - Throws: `BerthError.invalidArgument` for a limit this host cannot
    ///   enforce; `BerthError.internal` naming the file the kernel refused;
    ///   `BerthError.unavailable` when the device rules cannot be enforced.
    ///   A failed create leaves nothing behind.
    func create(_ name: String, resources: Resources, devices: [DeviceRule]) throws

    /// Changes limits of an existing cgroup (only those given).
    func update(_ name: String, resources: Resources) throws

    /// How a container's first process gets into the cgroup.
    func placement(_ name: String) -> CgroupPlacement

    /// The file holding the `oom_kill` counter.
    func oomCounterFile(_ name: String) -> String

    /// Stops every process of the cgroup (pause); returns once frozen.
    func freeze(_ name: String) throws
    func thaw(_ name: String) throws
    func isFrozen(_ name: String) throws -> Bool

    /// PIDs in the cgroup.
    func processes(_ name: String) throws -> [Int32]

    func stats(_ name: String) throws -> CgroupStats

    /// Removes the cgroup, retrying while the kernel says EBUSY.
    ///
    /// - Throws: `BerthError.failedPrecondition` if processes remain.
    func remove(_ name: String) throws

    func exists(_ name: String) -> Bool

    /// What to mount at /sys/fs/cgroup inside a container (in its cgroup
    /// namespace, read-only): the container sees its own cgroup as the root.
    var containerMounts: [CgroupMount] { get }

    /// Makes, in the background, a cgroup for the next `create` to take
    /// over, when the driver can (none is made if one is ready or under way).
    func prepareSpare()

    /// Removes the spare cgroup, and any a driver of an agent killed before
    /// left; `closing`, makes no more.
    func removeSpares(closing: Bool)
}

extension CgroupDriver {
    /// Creates the cgroup with Docker's device rules alone.
    public func create(_ name: String, resources: Resources) throws {
        try create(name, resources: resources, devices: [])
    }

    public func prepareSpare() {}
    public func removeSpares(closing: Bool) {}
}

/// One filesystem to mount inside a container for its cgroups.
public struct CgroupMount: Sendable, Hashable {
    public var fstype: String
    public var target: String
    public var data: String
    public var readOnly: Bool
}

extension CgroupV1Driver {
    /// Picks the driver for this host's cgroup mode.
    ///
    /// - Throws: `BerthError.unavailable` when cgroups are not mounted.
    public static func detectDriver(root: String = "/sys/fs/cgroup", parent: String = "berth") throws -> any CgroupDriver {
        switch try CgroupModeDetector.detectHost() {
        case .v2: return try CgroupV2Driver(root: root, parent: parent)
        case .v1: return try CgroupV1Driver(root: root, parent: parent, mode: .v1)
        case .hybrid: return try CgroupV1Driver(root: root, parent: parent, mode: .hybrid)
        }
    }
}

/// A kernel interface file's bytes (memory.stat, cpu.stat, pids.max…),
/// parsed where they lie: a stats read for hundreds of containers builds no
/// strings and no dictionaries.
public struct KernelText: Sendable {
    public let bytes: [UInt8]

    /// nil when the file cannot be read (a controller this host lacks).
    public init?(_ path: String) {
        guard let bytes = try? FileIO.readBytes(path) else { return nil }
        self.bytes = bytes
    }

    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// The file as one decimal number ("max" and the like give nil).
    public var number: UInt64? { Self.decimal(bytes[...].drop { $0 == 32 || $0 == 10 }) }

    /// The value of the `key value` line for `key`.
    public func value(_ key: StaticString) -> UInt64? {
        let k = UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
        var lineStart = 0
        let n = bytes.count
        while lineStart < n {
            var lineEnd = lineStart
            while lineEnd < n && bytes[lineEnd] != 10 { lineEnd += 1 }
            if lineEnd - lineStart > k.count && bytes[lineStart + k.count] == 32 {
                var same = true
                for i in 0..<k.count where bytes[lineStart + i] != k[i] {
                    same = false
                    break
                }
                if same { return Self.decimal(bytes[(lineStart + k.count + 1)..<lineEnd]) }
            }
            lineStart = lineEnd + 1
        }
        return nil
    }

    /// The file's lines, each split at spaces, as byte slices.
    public func forEachLine(_ body: ([ArraySlice<UInt8>]) -> Void) {
        for line in bytes.split(separator: 10) { body(line.split(separator: 32)) }
    }

    /// Leading decimal digits; nil when there are none.
    public static func decimal(_ digits: ArraySlice<UInt8>) -> UInt64? {
        var value: UInt64 = 0
        var any = false
        for byte in digits {
            guard byte >= 48 && byte <= 57 else { break }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(UInt64(byte - 48))
            if overflow1 || overflow2 { return nil }
            value = sum
            any = true
        }
        return any ? value : nil
    }

    public static func equals(_ slice: ArraySlice<UInt8>, _ text: StaticString) -> Bool {
        slice.count == text.utf8CodeUnitCount && slice.elementsEqual(UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
