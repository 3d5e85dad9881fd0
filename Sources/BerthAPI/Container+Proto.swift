public import BerthModel
import FoundationEssentials
import SwiftProtobuf

extension Resources {
    public var proto: Berth_Agent_V1_Resources {
        var p = Berth_Agent_V1_Resources()
        if let memory { p.memoryBytes = memory.bytes }
        if let memorySwap { p.memorySwapBytes = memorySwap.bytes }
        if let cpus { p.nanoCpus = cpus.nanoCPUs }
        if let cpuShares { p.cpuShares = Int32(clamping: cpuShares) }
        if let cpusetCPUs { p.cpusetCpus = cpusetCPUs.description }
        if let cpusetMems { p.cpusetMems = cpusetMems.description }
        if let pidsLimit { p.pidsLimit = pidsLimit }
        if let ioWeight { p.ioWeight = Int32(clamping: ioWeight) }
        return p
    }

    /// - Throws: `BerthError.invalidArgument` for a malformed cpuset.
    public init(proto p: Berth_Agent_V1_Resources) throws {
        self.init(
            memory: p.hasMemoryBytes ? ByteSize(bytes: p.memoryBytes) : nil,
            memorySwap: p.hasMemorySwapBytes ? ByteSize(bytes: p.memorySwapBytes) : nil,
            cpus: p.hasNanoCpus ? CPUQuantity(nanoCPUs: p.nanoCpus) : nil,
            cpuShares: p.hasCpuShares ? Int(p.cpuShares) : nil,
            cpusetCPUs: p.hasCpusetCpus ? try CPUSet(parsing: p.cpusetCpus, for: "cpuset-cpus") : nil,
            cpusetMems: p.hasCpusetMems ? try CPUSet(parsing: p.cpusetMems, for: "cpuset-mems") : nil,
            pidsLimit: p.hasPidsLimit ? p.pidsLimit : nil,
            ioWeight: p.hasIoWeight ? Int(p.ioWeight) : nil)
    }
}

extension Mount {
    public var proto: Berth_Agent_V1_Mount {
        .with {
            switch kind {
            case .volume: $0.kind = .volume
            case .bind: $0.kind = .bind
            case .tmpfs: $0.kind = .tmpfs
            }
            $0.source = source
            $0.target = target
            $0.readOnly = readOnly
            if let tmpfsSize { $0.tmpfsSizeBytes = tmpfsSize.bytes }
        }
    }

    /// - Throws: `BerthError.invalidArgument` for an unset kind or a relative target.
    public init(proto p: Berth_Agent_V1_Mount) throws {
        let kind: Kind
        switch p.kind {
        case .volume: kind = .volume
        case .bind: kind = .bind
        case .tmpfs: kind = .tmpfs
        default: throw BerthError.invalid("mount \(p.target): the kind (volume, bind or tmpfs) is not set")
        }
        try Mount.checkTarget(p.target, in: p.target)
        self.init(
            kind: kind, source: p.source, target: p.target, readOnly: p.readOnly,
            tmpfsSize: p.hasTmpfsSizeBytes ? ByteSize(bytes: p.tmpfsSizeBytes) : nil)
    }
}

extension PortMapping {
    public var proto: Berth_Agent_V1_PortMapping {
        .with {
            $0.hostIp = hostIP ?? ""
            $0.hostPort = UInt32(hostPort)
            $0.containerPort = UInt32(containerPort)
            $0.protocol = transport == .udp ? .udp : .tcp
        }
    }

    /// - Throws: `BerthError.invalidArgument` for ports outside 0...65535.
    public init(proto p: Berth_Agent_V1_PortMapping) throws {
        guard let host = UInt16(exactly: p.hostPort), let container = UInt16(exactly: p.containerPort), container > 0 else {
            throw BerthError.invalid("published port \(p.hostPort):\(p.containerPort): ports run from 1 to 65535")
        }
        let transport: PortProtocol = p.protocol == .udp ? .udp : .tcp
        self.init(hostIP: p.hostIp.isEmpty ? nil : p.hostIp, hostPort: host, containerPort: container, transport: transport)
    }
}

extension ContainerSpec {
    public var proto: Berth_Agent_V1_ContainerSpec {
        var p = Berth_Agent_V1_ContainerSpec()
        p.name = name ?? ""
        p.image = image
        if let entrypoint { p.entrypoint = .with { $0.values = entrypoint } }
        p.command = command
        p.env = env
        if let workingDir { p.workingDir = workingDir }
        if let user { p.user = user }
        p.labels = labels
        if let hostname { p.hostname = hostname }
        p.resources = resources.proto
        p.mounts = mounts.map(\.proto)
        p.ports = ports.map(\.proto)
        p.publishAll = publishAll
        p.network = network
        p.networkAliases = networkAliases
        if let ipv4Address { p.ipv4Address = ipv4Address }
        p.extraHosts = extraHosts ?? []
        p.additionalNetworks = (additionalNetworks ?? []).map { a in
            .with {
                $0.network = a.network
                $0.ipv4Address = a.ipv4Address ?? ""
                $0.aliases = a.aliases
            }
        }
        p.restartPolicy = restartPolicy.description
        p.stopSignal = stopSignal?.name ?? ""
        if let stopTimeout { p.stopTimeoutSeconds = Int32(clamping: stopTimeout) }
        p.readOnlyRootfs = readOnlyRootfs
        p.init_p = initProcess
        p.capAdd = capAdd
        p.capDrop = capDrop
        p.securityOpts = securityOpts
        p.tty = tty
        p.openStdin = openStdin
        p.autoRemove = autoRemove
        p.ulimits = ulimits.map { u in .with { $0.name = u.name; $0.soft = u.soft; $0.hard = u.hard } }
        p.devices = devices.map { d in
            .with {
                $0.hostPath = d.hostPath
                $0.containerPath = d.containerPath
                $0.permissions = d.access.description
            }
        }
        if let healthcheck { p.healthcheck = healthcheck.proto }
        p.healthOnFailure = healthOnFailure == .none ? "" : healthOnFailure.rawValue
        if let log {
            p.log = .with { l in
                if let size = log.maxSize { l.maxSizeBytes = size.bytes }
                if let files = log.maxFiles { l.maxFiles = Int32(clamping: files) }
            }
        }
        return p
    }

    /// - Throws: `BerthError.invalidArgument` naming the first malformed field.
    public init(proto p: Berth_Agent_V1_ContainerSpec) throws {
        self.init(
            name: p.name.isEmpty ? nil : p.name,
            image: p.image,
            entrypoint: p.hasEntrypoint ? p.entrypoint.values : nil,
            command: p.command,
            env: p.env,
            workingDir: p.hasWorkingDir ? p.workingDir : nil,
            user: p.hasUser ? p.user : nil,
            labels: p.labels,
            hostname: p.hasHostname ? p.hostname : nil,
            resources: try Resources(proto: p.resources),
            mounts: try p.mounts.map(Mount.init(proto:)),
            ports: try p.ports.map(PortMapping.init(proto:)),
            publishAll: p.publishAll,
            network: p.network.isEmpty ? "bridge" : p.network,
            networkAliases: p.networkAliases,
            ipv4Address: p.hasIpv4Address ? p.ipv4Address : nil,
            additionalNetworks: p.additionalNetworks.isEmpty
                ? nil
                : p.additionalNetworks.map { NetworkAttachment(network: $0.network, ipv4Address: $0.ipv4Address.isEmpty ? nil : $0.ipv4Address, aliases: $0.aliases) },
            extraHosts: p.extraHosts.isEmpty ? nil : p.extraHosts,
            restartPolicy: try RestartPolicy(parsing: p.restartPolicy),
            stopSignal: p.stopSignal.isEmpty ? nil : try Signal(parsing: p.stopSignal),
            stopTimeout: p.hasStopTimeoutSeconds ? Int(p.stopTimeoutSeconds) : nil,
            readOnlyRootfs: p.readOnlyRootfs,
            initProcess: p.init_p,
            capAdd: p.capAdd,
            capDrop: p.capDrop,
            securityOpts: p.securityOpts,
            tty: p.tty,
            openStdin: p.openStdin,
            autoRemove: p.autoRemove,
            ulimits: try p.ulimits.map { u in try Ulimit(parsing: "\(u.name)=\(u.soft):\(u.hard)") },
            log: p.hasLog
                ? LogConfig(
                    maxSize: p.log.hasMaxSizeBytes ? ByteSize(bytes: p.log.maxSizeBytes) : nil,
                    maxFiles: p.log.hasMaxFiles ? Int(p.log.maxFiles) : nil) : nil,
            devices: try p.devices.map { d in
                try DeviceMapping(
                    parsing: [d.hostPath, d.containerPath.isEmpty ? d.hostPath : d.containerPath, d.permissions.isEmpty ? "rwm" : d.permissions]
                        .joined(separator: ":"))
            },
            healthcheck: p.hasHealthcheck ? try HealthCheck(proto: p.healthcheck) : nil,
            healthOnFailure: p.healthOnFailure.isEmpty ? .none : try HealthFailureAction(parsing: p.healthOnFailure))
    }
}

extension HealthCheck {
    public var proto: Berth_Agent_V1_HealthCheck {
        .with {
            func ms(_ seconds: Double) -> Int64 { Int64((seconds * 1000).rounded()) }
            $0.test = test
            if let interval { $0.intervalMs = ms(interval) }
            if let timeout { $0.timeoutMs = ms(timeout) }
            if let startPeriod { $0.startPeriodMs = ms(startPeriod) }
            if let startInterval { $0.startIntervalMs = ms(startInterval) }
            if let retries { $0.retries = Int32(clamping: retries) }
        }
    }

    /// - Throws: `BerthError.invalidArgument` for a check docker would refuse.
    public init(proto p: Berth_Agent_V1_HealthCheck) throws {
        self.init(
            test: p.test, interval: p.hasIntervalMs ? Double(p.intervalMs) / 1000 : nil, timeout: p.hasTimeoutMs ? Double(p.timeoutMs) / 1000 : nil,
            startPeriod: p.hasStartPeriodMs ? Double(p.startPeriodMs) / 1000 : nil,
            startInterval: p.hasStartIntervalMs ? Double(p.startIntervalMs) / 1000 : nil, retries: p.hasRetries ? Int(p.retries) : nil)
        try validate()
    }
}

extension Health {
    public var proto: Berth_Agent_V1_Health {
        .with {
            $0.status = status.rawValue
            $0.failingStreak = Int32(clamping: failingStreak)
            $0.log = log.map { probe in
                .with {
                    $0.start = probe.start.proto
                    $0.end = probe.end.proto
                    $0.exitCode = probe.exitCode
                    $0.output = probe.output
                }
            }
        }
    }

    /// - Throws: `BerthError.invalidArgument` for an unknown status.
    public init(proto p: Berth_Agent_V1_Health) throws {
        guard let status = HealthStatus(rawValue: p.status) else { throw BerthError.invalid("unknown health status \"\(p.status)\"") }
        self.init(
            restoring: status, failingStreak: Int(p.failingStreak),
            log: p.log.map { HealthProbe(start: $0.start.date, end: $0.end.date, exitCode: $0.exitCode, output: $0.output) })
    }
}

extension ContainerState {
    public var proto: Berth_Agent_V1_ContainerState {
        switch self {
        case .created: return .created
        case .running: return .running
        case .paused: return .paused
        case .exited: return .exited
        case .dead: return .dead
        }
    }

    /// - Throws: `BerthError.invalidArgument` for an unset state.
    public init(proto: Berth_Agent_V1_ContainerState) throws {
        switch proto {
        case .created: self = .created
        case .running: self = .running
        case .paused: self = .paused
        case .exited: self = .exited
        case .dead: self = .dead
        default: throw BerthError.invalid("container state is not set")
        }
    }
}

extension Date {
    var proto: Google_Protobuf_Timestamp { Google_Protobuf_Timestamp(date: self) }
}

extension ContainerStatus {
    public var proto: Berth_Agent_V1_ContainerStatus {
        var p = Berth_Agent_V1_ContainerStatus()
        p.state = state.proto
        p.pid = pid ?? 0
        if let exitCode { p.exitCode = exitCode }
        p.signal = signal?.name ?? ""
        p.reason = reason?.rawValue ?? ""
        p.error = error ?? ""
        p.createdAt = createdAt.proto
        if let startedAt { p.startedAt = startedAt.proto }
        if let finishedAt { p.finishedAt = finishedAt.proto }
        p.restartCount = Int32(clamping: restartCount)
        p.stoppedByUser = stoppedByUser
        if let health { p.health = health.proto }
        return p
    }

    /// - Throws: `BerthError.invalidArgument` for an unset state or an unknown reason.
    public init(proto p: Berth_Agent_V1_ContainerStatus) throws {
        var reason: ExitReason?
        if !p.reason.isEmpty {
            guard let r = ExitReason(rawValue: p.reason) else { throw BerthError.invalid("unknown exit reason \"\(p.reason)\"") }
            reason = r
        }
        self.init(
            restoring: try ContainerState(proto: p.state), pid: p.pid == 0 ? nil : p.pid,
            exitCode: p.hasExitCode ? p.exitCode : nil,
            signal: p.signal.isEmpty ? nil : try Signal(parsing: p.signal), reason: reason,
            error: p.error.isEmpty ? nil : p.error, createdAt: p.createdAt.date,
            startedAt: p.hasStartedAt ? p.startedAt.date : nil, finishedAt: p.hasFinishedAt ? p.finishedAt.date : nil,
            restartCount: Int(p.restartCount), stoppedByUser: p.stoppedByUser, health: p.hasHealth ? try Health(proto: p.health) : nil)
    }
}

extension Container {
    public var proto: Berth_Agent_V1_Container {
        .with {
            $0.id = id.rawValue
            $0.name = name
            $0.spec = spec.proto
            $0.imageID = imageID
            $0.status = status.proto
            $0.endpoints = endpoints.map { e in
                .with {
                    $0.networkID = e.networkID
                    $0.networkName = e.networkName
                    $0.interface = e.interface
                    $0.ipv4Address = e.address.description
                    $0.subnet = e.subnet.description
                    $0.gateway = e.gateway.description
                    $0.macAddress = e.address.macAddress
                    $0.aliases = e.aliases
                }
            }
            $0.publishedPorts = publishedPorts.map { port in
                .with {
                    if let ip = port.hostIP { $0.hostIp = ip.description }
                    $0.hostPort = UInt32(port.hostPort)
                    $0.containerPort = UInt32(port.containerPort)
                    $0.protocol = port.transport.rawValue
                    $0.containerIp = port.containerIP.description
                }
            }
        }
    }

    /// How the container's last run ended, as `Wait` and `Run` answer.
    public var exitProto: Berth_Agent_V1_WaitContainerResponse {
        .with {
            $0.exitCode = status.exitCode ?? 0
            $0.signal = status.signal?.name ?? ""
            $0.reason = status.reason?.rawValue ?? ""
            $0.error = status.error ?? ""
        }
    }

    /// - Throws: `BerthError.invalidArgument` naming the first malformed field.
    public init(proto p: Berth_Agent_V1_Container) throws {
        self.init(
            id: try ContainerID(p.id), name: p.name, spec: try ContainerSpec(proto: p.spec), imageID: p.imageID,
            status: try ContainerStatus(proto: p.status),
            endpoints: try p.endpoints.map { e in
                ContainerEndpoint(
                    networkID: e.networkID, networkName: e.networkName, interface: e.interface, address: try IPv4Address(parsing: e.ipv4Address),
                    subnet: try IPv4Subnet(parsing: e.subnet), gateway: try IPv4Address(parsing: e.gateway), aliases: e.aliases)
            },
            publishedPorts: try p.publishedPorts.map { port in
                guard let transport = PortProtocol(rawValue: port.protocol), let hostPort = UInt16(exactly: port.hostPort),
                    let containerPort = UInt16(exactly: port.containerPort)
                else { throw BerthError.invalid("published port \(port.hostPort)/\(port.protocol) is malformed") }
                return PublishedPort(
                    hostIP: port.hostIp.isEmpty ? nil : try IPv4Address(parsing: port.hostIp), hostPort: hostPort, containerPort: containerPort,
                    transport: transport, containerIP: try IPv4Address(parsing: port.containerIp))
            })
    }
}

extension EventType {
    public var proto: Berth_Agent_V1_EventType {
        switch self {
        case .container: return .container
        case .image: return .image
        case .volume: return .volume
        case .network: return .network
        case .node: return .node
        }
    }

    /// - Throws: `BerthError.invalidArgument` for an unset type.
    public init(proto: Berth_Agent_V1_EventType) throws {
        switch proto {
        case .container: self = .container
        case .image: self = .image
        case .volume: self = .volume
        case .network: self = .network
        case .node: self = .node
        default: throw BerthError.invalid("event type is not set")
        }
    }
}

extension Event {
    public var proto: Berth_Agent_V1_Event {
        .with {
            $0.revision = revision
            $0.time = time.proto
            $0.type = type.proto
            $0.action = action.rawValue
            $0.actorID = actorID
            $0.attributes = attributes
        }
    }

    /// - Throws: `BerthError.invalidArgument` for an unset type.
    public init(proto p: Berth_Agent_V1_Event) throws {
        self.init(
            revision: p.revision, time: p.time.date, type: try EventType(proto: p.type),
            action: EventAction(rawValue: p.action), actorID: p.actorID, attributes: p.attributes)
    }
}
