import BerthModel
import Foundation
import Testing

/// The JSON Berth writes is a contract (`--format json`, the state store):
/// these files pin it. Set BERTH_UPDATE_GOLDEN=1 to rewrite them after a
/// deliberate change, and review the diff.
@Suite("Golden JSON")
struct GoldenJSONTests {
    static let created = Date(timeIntervalSince1970: 1_798_505_157.25)

    static var spec: ContainerSpec {
        ContainerSpec(
            name: "web", image: "registry.local:5000/team/web:1.2", entrypoint: ["/init"], command: ["httpd", "-f"],
            env: ["PATH=/bin", "MODE=prod"], workingDir: "/srv", user: "1000:1000", labels: ["tier": "front"],
            hostname: "web-1",
            resources: Resources(
                memory: .mebibytes(64), memorySwap: .mebibytes(128), cpus: CPUQuantity(nanoCPUs: 500_000_000),
                cpuShares: 512, cpusetCPUs: CPUSet([0, 1]), cpusetMems: CPUSet([0]), pidsLimit: 64, ioWeight: 300),
            mounts: [Mount(kind: .volume, source: "data", target: "/data"), Mount(kind: .tmpfs, target: "/tmp", tmpfsSize: .mebibytes(16))],
            ports: [PortMapping(hostIP: "127.0.0.1", hostPort: 8080, containerPort: 80), PortMapping(hostPort: 0, containerPort: 53, transport: .udp)],
            network: "front", networkAliases: ["www"], restartPolicy: .onFailure(maxRetries: 3), stopSignal: .quit,
            stopTimeout: 20, readOnlyRootfs: true, initProcess: true, capAdd: ["NET_ADMIN"], capDrop: ["MKNOD"],
            securityOpts: ["seccomp=unconfined"], devices: [DeviceMapping(hostPath: "/dev/fuse", access: [.read, .write])],
            healthcheck: HealthCheck(test: ["CMD-SHELL", "wget -q -O- http://localhost/"], interval: 5, startPeriod: 0.5, retries: 2),
            healthOnFailure: .restart)
    }

    static var container: Container {
        var status = ContainerStatus(createdAt: created)
        try? status.markStarted(pid: 4242, at: created.addingTimeInterval(0.5), healthChecked: true)
        _ = status.recordProbe(
            HealthProbe(start: created.addingTimeInterval(5.5), end: created.addingTimeInterval(5.75), exitCode: 0, output: "ok\n"),
            timings: spec.healthcheck!.effective)
        try? status.markExited(.signaled(.kill, oomKilled: true), at: created.addingTimeInterval(9))
        return Container(
            id: try! ContainerID(String(repeating: "ab", count: 32)), name: "web", spec: spec,
            imageID: "sha256:" + String(repeating: "0f", count: 32), status: status,
            endpoints: [
                ContainerEndpoint(
                    networkID: String(repeating: "cd", count: 32), networkName: "front", interface: "eth0",
                    address: try! IPv4Address(parsing: "10.89.3.2"), subnet: try! IPv4Subnet(parsing: "10.89.3.0/24"),
                    gateway: try! IPv4Address(parsing: "10.89.3.1"), aliases: ["www"])
            ],
            publishedPorts: [
                PublishedPort(hostIP: nil, hostPort: 8080, containerPort: 80, transport: .tcp, containerIP: try! IPv4Address(parsing: "10.89.3.2"))
            ])
    }

    static var event: Event {
        Event(
            revision: 1234, time: created, type: .container, action: .die, actorID: String(repeating: "ab", count: 32),
            attributes: ["name": "web", "exitCode": "137", "reason": "OOMKilled", "signal": "SIGKILL"])
    }

    static var node: NodeInfo {
        NodeInfo(
            id: "0123456789abcdef0123456789abcdef", hostname: "node-a", kernelVersion: "6.1.0-18-amd64",
            operatingSystem: "Debian GNU/Linux 12 (bookworm)", architecture: "x86_64", cgroupMode: .v2,
            capacity: NodeCapacity(cpus: 8, memoryBytes: 16 << 30), allocatable: NodeCapacity(cpus: 7, memoryBytes: 15 << 30),
            labels: ["zone": "a"], containers: ContainerCounts(total: 3, running: 2, paused: 0, stopped: 1), images: 4,
            rootDir: "/var/lib/berth", stateDir: "/run/berth",
            version: VersionInfo(
                version: "0.1.0", apiVersion: "v1", gitCommit: "unknown", swiftVersion: "6.3", nghttp2Version: "1.52.0",
                os: "linux", architecture: "x86_64"))
    }

    static func check<T: Codable & Equatable>(_ value: T, _ name: String) throws {
        let json = try BerthJSON.string(value) + "\n"
        let url = Bundle.module.url(forResource: "Golden", withExtension: nil)!.appendingPathComponent("\(name).json")
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/\(name).json")
        if ProcessInfo.processInfo.environment["BERTH_UPDATE_GOLDEN"] == "1" {
            try json.write(to: source, atomically: true, encoding: .utf8)
        }
        let golden = try String(contentsOf: url, encoding: .utf8)
        #expect(json == golden, "\(name).json differs from what BerthModel writes now")
        let decoded = try BerthJSON.decoder().decode(T.self, from: Data(golden.utf8))
        #expect(decoded == value, "\(name).json does not decode to the same value")
    }

    @Test("container spec") func containerSpec() throws { try Self.check(Self.spec, "container-spec") }
    @Test("container with status") func containerRecord() throws { try Self.check(Self.container, "container") }
    @Test("event") func eventRecord() throws { try Self.check(Self.event, "event") }
    @Test("node info") func nodeInfo() throws { try Self.check(Self.node, "node-info") }

    @Test("malformed JSON gets a clear error")
    func malformed() {
        let bad = #"{"revision": 1, "time": "not a time", "type": "container", "action": "die", "actorID": "x", "attributes": {}}"#
        #expect(throws: DecodingError.self) { try BerthJSON.decoder().decode(Event.self, from: Data(bad.utf8)) }
        let badSignal = #""SIGNOPE""#
        #expect(throws: BerthError.self) { try BerthJSON.decoder().decode(Signal.self, from: Data(badSignal.utf8)) }
    }
}
