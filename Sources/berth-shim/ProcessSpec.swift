import BerthShimProtocol
import CBerthContainer
import CBerthSyscalls
import Glibc

/// C strings and arrays for a `berth_container_spec`, freed with the arena.
final class CArena {
    private var pointers: [UnsafeMutableRawPointer] = []

    init() {}

    deinit {
        for pointer in pointers { free(pointer) }
    }

    func string(_ text: String) -> UnsafePointer<CChar> {
        let p = strdup(text)!
        pointers.append(UnsafeMutableRawPointer(p))
        return UnsafePointer(p)
    }

    func strings(_ items: [String], nullTerminated: Bool) -> UnsafePointer<UnsafePointer<CChar>?> {
        let array = buffer(of: UnsafePointer<CChar>?.self, count: items.count + 1)
        for (i, item) in items.enumerated() { array[i] = string(item) }
        array[items.count] = nil
        return UnsafePointer(array)
    }

    func array<T>(_ items: [T]) -> UnsafePointer<T> {
        let array = buffer(of: T.self, count: max(1, items.count))
        for (i, item) in items.enumerated() { (array + i).initialize(to: item) }
        return UnsafePointer(array)
    }

    private func buffer<T>(of type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let raw = malloc(MemoryLayout<T>.stride * count)!
        pointers.append(raw)
        return raw.bindMemory(to: T.self, capacity: count)
    }
}

extension ShimConfig {
    /// The C description of the container's process (and, for a container
    /// start, its root filesystem), its strings held by `arena`.
    ///
    /// - Parameters:
    ///   - seccomp: the compiled BPF program, empty for none.
    ///   - stdin, stdout, stderr: descriptors for fds 0–2; -1 for /dev/null.
    ///   - initFD: a sealed copy of berth-init, for a container with an init (-1: none).
    ///   - forbidden: files the process must never execute (the runtime's own images).
    func processSpec(
        in arena: CArena, seccomp: [UInt8], stdin: Int32, stdout: Int32, stderr: Int32, initFD: Int32 = -1,
        forbidden: [berth_file_identity] = []
    ) -> berth_container_spec {
        var spec = berth_container_spec()
        spec.clone_flags = cloneFlags
        spec.new_cgroup_namespace = newCgroupNamespace ? 1 : 0
        spec.rootfs = arena.string(rootfs)
        spec.overlay_data = overlayData.isEmpty ? nil : arena.string(overlayData)
        spec.readonly_rootfs = readonlyRootfs ? 1 : 0
        spec.mounts = arena.array(
            mounts.map { m in
                berth_mount(
                    kind: m.kind == .bind ? Int32(BERTH_MOUNT_BIND.rawValue) : Int32(BERTH_MOUNT_FILESYSTEM.rawValue),
                    source: arena.string(m.source), target: arena.string(m.target), fstype: m.fstype.isEmpty ? nil : arena.string(m.fstype),
                    data: m.data.isEmpty ? nil : arena.string(m.data), flags: m.flags, propagation_private: 0)
            })
        spec.mount_count = mounts.count
        spec.masked_paths = arena.strings(maskedPaths, nullTerminated: false)
        spec.masked_count = maskedPaths.count
        spec.readonly_paths = arena.strings(readonlyPaths, nullTerminated: false)
        spec.readonly_count = readonlyPaths.count
        spec.create_devices = createDevices ? 1 : 0
        spec.hostname = hostname.isEmpty ? nil : arena.string(hostname)
        spec.cgroup_dir = cgroupDir.isEmpty ? nil : arena.string(cgroupDir)
        spec.cgroup_tasks = arena.strings(cgroupTasks, nullTerminated: false)
        spec.cgroup_tasks_count = cgroupTasks.count
        spec.argv = arena.strings(args, nullTerminated: true)
        spec.envp = arena.strings(env, nullTerminated: true)
        spec.path = path.isEmpty ? nil : arena.string(path)
        spec.cwd = arena.string(cwd)
        spec.uid = uid
        spec.gid = gid
        spec.groups = arena.array(groups)
        spec.group_count = groups.count
        spec.rlimits = arena.array(rlimits.map { berth_rlimit(resource: $0.resource, soft: $0.soft, hard: $0.hard) })
        spec.rlimit_count = rlimits.count
        spec.cap_bounding = capBounding
        spec.cap_effective = capEffective
        spec.cap_permitted = capPermitted
        spec.cap_inheritable = capInheritable
        spec.cap_ambient = capAmbient
        spec.cap_last = Self.lastCapability
        spec.no_new_privs = noNewPrivileges ? 1 : 0
        if !seccomp.isEmpty {
            spec.seccomp_program = UnsafeRawPointer(arena.array(seccomp))
            spec.seccomp_program_length = seccomp.count
        }
        spec.stdin_fd = stdin
        spec.stdout_fd = stdout
        spec.stderr_fd = stderr
        spec.`init` = initProcess ? 1 : 0
        spec.init_fd = initFD
        spec.init_argv = arena.strings(["berth-init", "--"] + args, nullTerminated: true)
        spec.forbidden_exec = arena.array(forbidden)
        spec.forbidden_exec_count = forbidden.count
        spec.devices = arena.array(
            devices.map { d in
                berth_device_node(
                    path: arena.string(d.path), type: CChar(UInt8(ascii: d.type == "b" ? "b" : "c")), major: d.major, minor: d.minor,
                    mode: d.mode, uid: d.uid, gid: d.gid)
            })
        spec.device_count = devices.count
        spec.netns_path = netnsPath.isEmpty ? nil : arena.string(netnsPath)
        return spec
    }

    /// The highest capability number this kernel knows.
    static var lastCapability: Int32 {
        let fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 40 }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 16)
        let n = read(fd, &buffer, buffer.count)
        guard n > 0, let value = Int32(String(decoding: buffer[..<n], as: UTF8.self).split(separator: "\n").first ?? "") else { return 40 }
        return value
    }
}
