import BerthModel
import BerthTemplate
import FoundationEssentials

/// Berth's records in the shapes `docker inspect` prints and its
/// `--format` templates read: docker's keys in docker's order, with
/// docker's nulls, empty lists and left-out fields.
enum DockerShape {
    /// Go's zero time, as docker prints a time that never was.
    static let zeroTime = "0001-01-01T00:00:00Z"

    static func time(_ date: Date?) -> TemplateValue { .string(date.map(RFC3339.format) ?? zeroTime) }

    /// A list, or null when empty (docker's nil slices).
    static func listOrNull(_ items: [TemplateValue]) -> TemplateValue { items.isEmpty ? .nilList : .list(items) }

    static func stringsOrNull(_ items: [String]) -> TemplateValue { items.isEmpty ? .nilList : .strings(items) }

    // MARK: Containers

    /// `docker container inspect`: the record, with the image's
    /// configuration filling what the container takes from it (as docker's
    /// Config shows the merged result), and volume mountpoints.
    static func container(_ c: Container, image: ImageConfig?, volumePaths: [String: String] = [:]) -> TemplateValue {
        let spec = c.spec
        let command = c.admitted?.command ?? ((spec.entrypoint ?? image?.entrypoint ?? []) + (spec.command.isEmpty ? image?.cmd ?? [] : spec.command))
        return .object(
            "*types.ContainerJSON",
            [
                "Id": .string(c.id.rawValue),
                "Created": time(c.status.createdAt),
                "Path": .string(command.first ?? ""),
                "Args": .strings(Array(command.dropFirst())),
                "State": state(c.status),
                "Image": .string(c.imageID),
                "ResolvConfPath": .string(""),
                "HostnamePath": .string(""),
                "HostsPath": .string(""),
                "LogPath": .string(""),
                "Name": .string("/" + c.name),
                "RestartCount": .integer(c.status.restartCount),
                "Driver": .string("overlay"),
                "Platform": .string("linux"),
                "MountLabel": .string(""),
                "ProcessLabel": .string(""),
                "AppArmorProfile": .string(""),
                "ExecIDs": .nilList,
                "HostConfig": hostConfig(spec),
                "GraphDriver": .object("types.GraphDriverData", ["Data": .nilMap, "Name": .string("overlay")]),
                "Mounts": .list(spec.mounts.filter { $0.kind != .tmpfs }.map { mountPoint($0, volumePaths: volumePaths) }),
                "Config": config(c, image: image),
                "NetworkSettings": networkSettings(c),
            ], aliases: ["ID": "Id"])
    }

    static func state(_ s: ContainerStatus) -> TemplateValue {
        .object(
            "*types.ContainerState",
            [
                "Status": .string(s.state.rawValue),
                "Running": .bool(s.state == .running || s.state == .paused),
                "Paused": .bool(s.state == .paused),
                "Restarting": .bool(false),
                "OOMKilled": .bool(s.oomKilled),
                "Dead": .bool(s.state == .dead),
                "Pid": .integer(s.state == .running || s.state == .paused ? s.pid ?? 0 : 0),
                "ExitCode": .integer(s.exitCode ?? 0),
                "Error": .string(s.error ?? ""),
                "StartedAt": time(s.startedAt),
                "FinishedAt": time(s.finishedAt),
                "Health": s.health.map(health) ?? .omitted,
            ])
    }

    static func health(_ h: Health) -> TemplateValue {
        .object(
            "*types.Health",
            [
                "Status": .string(h.status.rawValue),
                "FailingStreak": .integer(h.failingStreak),
                "Log": .list(
                    h.log.map { probe in
                        .object(
                            "*types.HealthcheckResult",
                            ["Start": time(probe.start), "End": time(probe.end), "ExitCode": .integer(probe.exitCode), "Output": .string(probe.output)])
                    }),
            ])
    }

    static func portKey(_ port: UInt16, _ transport: PortProtocol) -> String { "\(port)/\(transport.rawValue)" }

    /// A port binding added to docker's `{"80/tcp": [bindings]}` map (a
    /// port exposed without bindings, `null`, gets its first).
    static func append(_ binding: TemplateValue, to key: String, in map: inout [String: TemplateValue]) {
        if case .list(let existing)? = map[key] { map[key] = .list(existing + [binding]) } else { map[key] = .list([binding]) }
    }

    static func hostConfig(_ spec: ContainerSpec) -> TemplateValue {
        let r = spec.resources
        var bindings: [String: TemplateValue] = [:]
        for p in spec.ports {
            let key = portKey(p.containerPort, p.transport)
            let binding = TemplateValue.object("nat.PortBinding", ["HostIp": .string(p.hostIP ?? ""), "HostPort": .string(p.hostPort == 0 ? "" : String(p.hostPort))])
            append(binding, to: key, in: &bindings)
        }
        let binds = spec.mounts.filter { $0.kind == .bind }.map { "\($0.source):\($0.target)" + ($0.readOnly ? ":ro" : "") }
        let tmpfs = spec.mounts.filter { $0.kind == .tmpfs }
        let (policy, retries): (String, Int) =
            switch spec.restartPolicy {
            case .no: ("no", 0)
            case .always: ("always", 0)
            case .unlessStopped: ("unless-stopped", 0)
            case .onFailure(let max): ("on-failure", max ?? 0)
            }
        var logOptions: [String: String] = [:]
        if let size = spec.log?.maxSize { logOptions["max-size"] = size.description }
        if let files = spec.log?.maxFiles { logOptions["max-file"] = String(files) }
        return .object(
            "*container.HostConfig",
            [
                "Binds": stringsOrNull(binds),
                "ContainerIDFile": .string(""),
                "LogConfig": .object("container.LogConfig", ["Type": .string("berth"), "Config": .strings(logOptions)]),
                "NetworkMode": .string(spec.network),
                "PortBindings": .map(bindings),
                "RestartPolicy": .object("container.RestartPolicy", ["Name": .string(policy), "MaximumRetryCount": .integer(retries)]),
                "AutoRemove": .bool(spec.autoRemove),
                "VolumeDriver": .string(""),
                "VolumesFrom": .nilList,
                "ConsoleSize": .list([.int(0), .int(0)]),
                "CapAdd": stringsOrNull(spec.capAdd),
                "CapDrop": stringsOrNull(spec.capDrop),
                "CgroupnsMode": .string("host"),
                "Dns": .list([]),
                "DnsOptions": .list([]),
                "DnsSearch": .list([]),
                "ExtraHosts": stringsOrNull(spec.extraHosts ?? []),
                "GroupAdd": .nilList,
                "IpcMode": .string("private"),
                "Cgroup": .string(""),
                "Links": .nilList,
                "OomScoreAdj": .int(0),
                "PidMode": .string(""),
                "Privileged": .bool(false),
                "PublishAllPorts": .bool(spec.publishAll),
                "ReadonlyRootfs": .bool(spec.readOnlyRootfs),
                "SecurityOpt": stringsOrNull(spec.securityOpts),
                "Tmpfs": tmpfs.isEmpty
                    ? .omitted : .strings(Dictionary(tmpfs.map { ($0.target, $0.tmpfsSize.map { "size=\($0.bytes)" } ?? "") }, uniquingKeysWith: { $1 })),
                "UTSMode": .string(""),
                "UsernsMode": .string(""),
                "ShmSize": .int(65536 * 1024),
                "Runtime": .string("berth"),
                "Isolation": .string(""),
                "CpuShares": .integer(r.cpuShares ?? 0),
                "Memory": .integer(r.memory?.bytes ?? 0),
                "NanoCpus": .integer(r.cpus?.nanoCPUs ?? 0),
                "CgroupParent": .string(""),
                "BlkioWeight": .integer(r.ioWeight ?? 0),
                "CpuPeriod": .int(0),
                "CpuQuota": .int(0),
                "CpusetCpus": .string(r.cpusetCPUs?.description ?? ""),
                "CpusetMems": .string(r.cpusetMems?.description ?? ""),
                "Devices": .list(
                    spec.devices.map {
                        .object(
                            "container.DeviceMapping",
                            ["PathOnHost": .string($0.hostPath), "PathInContainer": .string($0.containerPath), "CgroupPermissions": .string($0.access.description)])
                    }),
                "MemoryReservation": .int(0),
                "MemorySwap": .integer(r.memorySwap?.bytes ?? 0),
                "MemorySwappiness": .null,
                "OomKillDisable": .bool(false),
                "PidsLimit": r.pidsLimit.map { .int($0) } ?? .null,
                "Ulimits": listOrNull(
                    spec.ulimits.map { .object("*units.Ulimit", ["Name": .string($0.name), "Hard": .int($0.hard), "Soft": .int($0.soft)]) }),
                "MaskedPaths": .nilList,
                "ReadonlyPaths": .nilList,
                "Init": spec.initProcess ? .bool(true) : .omitted,
            ],
            aliases: [
                "CPUShares": "CpuShares", "NanoCPUs": "NanoCpus", "CPUPeriod": "CpuPeriod", "CPUQuota": "CpuQuota", "DNS": "Dns", "DNSOptions": "DnsOptions",
                "DNSSearch": "DnsSearch", "OomKillDisable": "OomKillDisable",
            ])
    }

    static func mountPoint(_ m: Mount, volumePaths: [String: String]) -> TemplateValue {
        switch m.kind {
        case .volume:
            return .object(
                "types.MountPoint",
                [
                    "Type": .string("volume"), "Name": .string(m.source), "Source": .string(volumePaths[m.source] ?? ""), "Destination": .string(m.target),
                    "Driver": .string("local"), "Mode": .string(m.readOnly ? "ro" : "z"), "RW": .bool(!m.readOnly), "Propagation": .string(""),
                ])
        default:
            return .object(
                "types.MountPoint",
                [
                    "Type": .string(m.kind.rawValue), "Source": .string(m.source), "Destination": .string(m.target), "Mode": .string(m.readOnly ? "ro" : ""),
                    "RW": .bool(!m.readOnly), "Propagation": .string(m.kind == .bind ? "rprivate" : ""),
                ])
        }
    }

    /// Docker's Config: the container's settings over its image's.
    static func config(_ c: Container, image: ImageConfig?) -> TemplateValue {
        let spec = c.spec
        var env = image?.env ?? []
        for entry in spec.env {
            let key = entry.split(separator: "=", maxSplits: 1).first.map(String.init) ?? entry
            env.removeAll { $0 == key || $0.hasPrefix(key + "=") }
            env.append(entry)
        }
        var labels = image?.labels ?? [:]
        labels.merge(spec.labels) { $1 }
        var exposed = Set(image?.exposedPorts ?? [])
        for p in spec.ports { exposed.insert(portKey(p.containerPort, p.transport)) }
        let volumes = image?.volumes ?? []
        let stopSignal = spec.stopSignal.map { "\($0)" } ?? image.flatMap { $0.stopSignal.isEmpty ? nil : $0.stopSignal }
        let check = spec.healthcheck ?? image?.healthcheck
        return .object(
            "*container.Config",
            [
                "Hostname": .string(spec.hostname ?? c.id.short),
                "Domainname": .string(""),
                "User": .string(spec.user ?? image?.user ?? ""),
                "AttachStdin": .bool(false),
                "AttachStdout": .bool(false),
                "AttachStderr": .bool(false),
                "ExposedPorts": exposed.isEmpty ? .omitted : .map(Dictionary(uniqueKeysWithValues: exposed.map { ($0, .map([:])) })),
                "Tty": .bool(spec.tty),
                "OpenStdin": .bool(spec.openStdin),
                "StdinOnce": .bool(false),
                "Env": .strings(env),
                "Cmd": spec.command.isEmpty ? .strings(image?.cmd) : .strings(spec.command),
                "Healthcheck": check.map(healthConfig) ?? .omitted,
                "Image": .string(spec.image),
                "Volumes": volumes.isEmpty ? .nilMap : .map(Dictionary(uniqueKeysWithValues: volumes.map { ($0, .map([:])) })),
                "WorkingDir": .string(spec.workingDir ?? image?.workingDir ?? ""),
                "Entrypoint": .strings(spec.entrypoint ?? image?.entrypoint),
                "OnBuild": .nilList,
                "Labels": .strings(labels),
                "StopSignal": stopSignal.map { .string($0) } ?? .omitted,
                "StopTimeout": spec.stopTimeout.map { .integer($0) } ?? .omitted,
            ])
    }

    static func healthConfig(_ h: HealthCheck) -> TemplateValue {
        func nanos(_ seconds: Double?) -> TemplateValue { seconds.map { .int(Int64(($0 * 1e9).rounded())) } ?? .omitted }
        return .object(
            "*container.HealthConfig",
            [
                "Test": .strings(h.test), "Interval": nanos(h.interval), "Timeout": nanos(h.timeout), "StartPeriod": nanos(h.startPeriod),
                "StartInterval": nanos(h.startInterval), "Retries": h.retries.map { .integer($0) } ?? .omitted,
            ])
    }

    static func networkSettings(_ c: Container) -> TemplateValue {
        var ports: [String: TemplateValue] = [:]
        for p in c.spec.ports { ports[portKey(p.containerPort, p.transport)] = .nilList }
        for p in c.publishedPorts {
            let key = portKey(p.containerPort, p.transport)
            let binding = TemplateValue.object("nat.PortBinding", ["HostIp": .string(p.hostIP?.description ?? "0.0.0.0"), "HostPort": .string(String(p.hostPort))])
            append(binding, to: key, in: &ports)
        }
        // The top-level address fields are those of the default bridge, as docker's.
        let bridge = c.endpoints.first { $0.networkName == "bridge" }
        var networks: [String: TemplateValue] = [:]
        for e in c.endpoints {
            networks[e.networkName] = .object(
                "*network.EndpointSettings",
                [
                    "IPAMConfig": .null, "Links": .nilList, "Aliases": stringsOrNull(e.aliases), "MacAddress": .string(e.address.macAddress),
                    "DriverOpts": .nilMap, "NetworkID": .string(e.networkID), "EndpointID": .string(""), "Gateway": .string(e.gateway.description),
                    "IPAddress": .string(e.address.description), "IPPrefixLen": .integer(e.subnet.prefix), "IPv6Gateway": .string(""),
                    "GlobalIPv6Address": .string(""), "GlobalIPv6PrefixLen": .int(0),
                    "DNSNames": e.networkName == "bridge" ? .nilList : .strings([c.name, c.id.short] + e.aliases),
                ])
        }
        return .object(
            "*types.NetworkSettings",
            [
                "Bridge": .string(""),
                "SandboxID": .string(""),
                "SandboxKey": .string(""),
                "Ports": .map(ports),
                "HairpinMode": .bool(false),
                "LinkLocalIPv6Address": .string(""),
                "LinkLocalIPv6PrefixLen": .int(0),
                "SecondaryIPAddresses": .nilList,
                "SecondaryIPv6Addresses": .nilList,
                "EndpointID": .string(""),
                "Gateway": .string(bridge?.gateway.description ?? ""),
                "GlobalIPv6Address": .string(""),
                "GlobalIPv6PrefixLen": .int(0),
                "IPAddress": .string(bridge?.address.description ?? ""),
                "IPPrefixLen": .integer(bridge?.subnet.prefix ?? 0),
                "IPv6Gateway": .string(""),
                "MacAddress": .string(bridge?.address.macAddress ?? ""),
                "Networks": .map(networks),
            ])
    }

    // MARK: Images, networks, volumes

    /// `docker image inspect`.
    static func image(_ i: Image) -> TemplateValue {
        let references = i.names.compactMap { try? ImageReference(parsing: $0) }
        let tags = references.filter { $0.tag != nil }.map(\.familiar)
        let digests = references.map { "\(DockerRows.repository($0))@\(i.digest)" }
        let config = i.config
        return .object(
            "*image.InspectResponse",
            [
                "Id": .string(i.id),
                "RepoTags": .strings(tags),
                "RepoDigests": .strings(i.digest.isEmpty ? [] : Array(Set(digests)).sorted()),
                "Parent": .string(""),
                "Comment": .string(""),
                "Created": time(i.createdAt),
                "DockerVersion": .string(""),
                "Author": .string(""),
                "Config": .object(
                    "*container.Config",
                    [
                        "Hostname": .string(""), "Domainname": .string(""), "User": .string(config.user), "AttachStdin": .bool(false),
                        "AttachStdout": .bool(false), "AttachStderr": .bool(false),
                        "ExposedPorts": config.exposedPorts.isEmpty ? .omitted : .map(Dictionary(uniqueKeysWithValues: config.exposedPorts.map { ($0, .map([:])) })),
                        "Tty": .bool(false), "OpenStdin": .bool(false), "StdinOnce": .bool(false), "Env": stringsOrNull(config.env),
                        "Cmd": .strings(config.cmd), "Healthcheck": config.healthcheck.map(healthConfig) ?? .omitted, "Image": .string(""),
                        "Volumes": config.volumes.isEmpty ? .nilMap : .map(Dictionary(uniqueKeysWithValues: config.volumes.map { ($0, .map([:])) })),
                        "WorkingDir": .string(config.workingDir), "Entrypoint": .strings(config.entrypoint), "OnBuild": .nilList,
                        "Labels": config.labels.isEmpty ? .nilMap : .strings(config.labels),
                        "StopSignal": config.stopSignal.isEmpty ? .omitted : .string(config.stopSignal),
                        "Shell": config.shell.isEmpty ? .omitted : .strings(config.shell),
                    ]),
                "Architecture": .string(i.architecture),
                "Os": .string(i.os),
                "Size": .int(i.sizeBytes),
                "GraphDriver": .object("types.GraphDriverData", ["Data": .nilMap, "Name": .string("overlay")]),
                "RootFS": .object("image.RootFS", ["Type": .string("layers"), "Layers": .strings(i.layers)]),
                "Metadata": .object("image.Metadata", ["LastTagTime": .string(zeroTime)]),
            ], aliases: ["ID": "Id"])
    }

    /// `docker network inspect`.
    static func network(_ n: NetworkView) -> TemplateValue {
        var containers: [String: TemplateValue] = [:]
        let prefix = n.subnet.split(separator: "/").last.map(String.init) ?? "24"
        for e in n.containers {
            containers[e.containerID] = .object(
                "network.EndpointResource",
                [
                    "Name": .string(e.containerName), "EndpointID": .string(""), "MacAddress": .string(e.macAddress),
                    "IPv4Address": .string(e.ipv4Address.isEmpty || e.ipv4Address.contains("/") ? e.ipv4Address : "\(e.ipv4Address)/\(prefix)"), "IPv6Address": .string(""),
                ])
        }
        return .object(
            "network.Inspect",
            [
                "Name": .string(n.name),
                "Id": .string(n.id),
                "Created": time(n.createdAt),
                "Scope": .string(n.driver == "overlay" ? "swarm" : "local"),
                "Driver": .string(n.driver),
                "EnableIPv6": .bool(false),
                "IPAM": .object(
                    "network.IPAM",
                    [
                        "Driver": .string("default"), "Options": .nilMap,
                        "Config": n.subnet.isEmpty ? .list([]) : .list([.object("network.IPAMConfig", ["Subnet": .string(n.subnet), "Gateway": .string(n.gateway)])]),
                    ]),
                "Internal": .bool(n.internal),
                "Attachable": .bool(false),
                "Ingress": .bool(false),
                "ConfigFrom": .object("network.ConfigReference", ["Network": .string("")]),
                "ConfigOnly": .bool(false),
                "Containers": .map(containers),
                "Options": n.bridge.isEmpty ? .map([:]) : .strings(["com.docker.network.bridge.name": n.bridge]),
                "Labels": .strings(n.labels),
            ], aliases: ["ID": "Id"])
    }

    /// `docker volume inspect`.
    static func volume(_ v: VolumeView) -> TemplateValue {
        .object(
            "*volume.Volume",
            [
                "CreatedAt": .string(RFC3339.format(Date(timeIntervalSince1970: v.createdAt.timeIntervalSince1970.rounded(.down)))),
                "Driver": .string(v.driver),
                "Labels": v.labels.isEmpty ? .nilMap : .strings(v.labels),
                "Mountpoint": .string(v.mountpoint),
                "Name": .string(v.name),
                "Options": .nilMap,
                "Scope": .string("local"),
            ])
    }
}
