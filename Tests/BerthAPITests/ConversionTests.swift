import BerthAPI
import BerthModel
import Foundation
import GRPCCore
import Testing

@Suite("BerthModel ↔ protobuf")
struct ConversionTests {
    static var spec: ContainerSpec {
        ContainerSpec(
            name: "web", image: "busybox:1.36", entrypoint: [], command: ["httpd", "-f", "-p", "80"], env: ["A=1"],
            workingDir: "/www", user: "nobody", labels: ["a": "b"], hostname: "web",
            resources: Resources(
                memory: .mebibytes(64), memorySwap: ByteSize(bytes: -1), cpus: CPUQuantity(nanoCPUs: 250_000_000),
                cpuShares: 100, cpusetCPUs: CPUSet([1]), cpusetMems: nil, pidsLimit: 10, ioWeight: nil),
            mounts: [Mount(kind: .bind, source: "/srv", target: "/www", readOnly: true)],
            ports: [PortMapping(hostIP: "127.0.0.1", hostPort: 8080, containerPort: 80), PortMapping(hostPort: 0, containerPort: 53, transport: .udp)],
            network: "none", restartPolicy: .unlessStopped, stopSignal: .user1, stopTimeout: 0, readOnlyRootfs: true,
            initProcess: true, capAdd: ["SYS_TIME"], capDrop: ["ALL"], tty: true, openStdin: true, autoRemove: true)
    }

    @Test("a container spec survives the wire, including absent and empty fields")
    func specRoundTrip() throws {
        #expect(try ContainerSpec(proto: Self.spec.proto) == Self.spec)
        let minimal = ContainerSpec(image: "busybox")
        #expect(try ContainerSpec(proto: minimal.proto) == minimal)
        // An empty entrypoint (override to nothing) differs from none (the image's).
        #expect(try ContainerSpec(proto: Self.spec.proto).entrypoint == [])
        #expect(try ContainerSpec(proto: minimal.proto).entrypoint == nil)
    }

    @Test("a container with its status survives the wire")
    func containerRoundTrip() throws {
        var status = ContainerStatus(createdAt: Date(timeIntervalSince1970: 1_700_000_000.5))
        try status.markStarted(pid: 99, at: Date(timeIntervalSince1970: 1_700_000_001))
        try status.markExited(.signaled(.kill, oomKilled: true), at: Date(timeIntervalSince1970: 1_700_000_002.25))
        let container = Container(
            id: ContainerID.random(), name: "web", spec: Self.spec, imageID: "sha256:" + String(repeating: "1", count: 64), status: status)
        #expect(try Container(proto: container.proto) == container)
    }

    @Test("events and node info survive the wire")
    func eventAndNode() throws {
        let event = Event(
            revision: 7, time: Date(timeIntervalSince1970: 1_700_000_000.125), type: .container, action: .oom, actorID: "abc",
            attributes: ["name": "web"])
        #expect(try Event(proto: event.proto) == event)
        let node = NodeInfo(
            id: "n", hostname: "h", kernelVersion: "k", operatingSystem: "o", architecture: "x86_64", cgroupMode: .hybrid,
            capacity: NodeCapacity(cpus: 2, memoryBytes: 1 << 30), allocatable: NodeCapacity(cpus: 1, memoryBytes: 1 << 29),
            labels: ["zone": "a"], containers: ContainerCounts(total: 1, running: 1), images: 2, rootDir: "/r", stateDir: "/s",
            version: VersionInfo(version: "0.1.0", apiVersion: "v1", gitCommit: "x", swiftVersion: "6.3", nghttp2Version: "1.52.0", os: "linux", architecture: "x86_64"))
        #expect(try NodeInfo(proto: node.proto) == node)
    }

    @Test("malformed wire values are rejected with a clear error")
    func malformed() {
        var spec = Self.spec.proto
        spec.restartPolicy = "sometimes"
        #expect(throws: BerthError.self) { try ContainerSpec(proto: spec) }
        spec = Self.spec.proto
        spec.resources.cpusetCpus = "3-1"
        #expect(throws: BerthError.self) { try ContainerSpec(proto: spec) }
        var port = Berth_Agent_V1_PortMapping()
        port.containerPort = 70_000
        #expect(throws: BerthError.self) { try PortMapping(proto: port) }
        var mount = Berth_Agent_V1_Mount()
        mount.target = "/x"
        #expect(throws: BerthError.self) { try Mount(proto: mount) }
        #expect(throws: BerthError.self) { try ContainerStatus(proto: Berth_Agent_V1_ContainerStatus()) }
    }

    @Test("domain errors map to gRPC codes in one place, and back")
    func errors() {
        let pairs: [(BerthError.Code, RPCError.Code)] = [
            (.invalidArgument, .invalidArgument), (.notFound, .notFound), (.alreadyExists, .alreadyExists),
            (.failedPrecondition, .failedPrecondition), (.resourceExhausted, .resourceExhausted),
            (.permissionDenied, .permissionDenied), (.unavailable, .unavailable), (.unimplemented, .unimplemented),
            (.internal, .internalError),
        ]
        for (code, rpc) in pairs {
            let error = BerthError(code, "m")
            #expect(error.rpcErrorCode == rpc)
            let back = BerthError(RPCError(code: error.rpcErrorCode, message: error.rpcErrorMessage, metadata: error.rpcErrorMetadata))
            #expect(back.code == code && back.message == "m")
        }
    }
}
