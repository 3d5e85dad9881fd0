import BerthModel
import Foundation
import Testing

@Suite("Parsing what people type")
struct ParsingTests {
    static let mib: Int64 = 1 << 20
    static let sizeCases: [(String, Int64)] = [
        ("64m", 64 * mib), ("1g", 1024 * mib), ("512k", 512 * 1024), ("1.5g", 1536 * mib), ("100", 100),
        ("100b", 100), ("64MiB", 64 * mib), ("64mb", 64 * mib), ("1024KB", mib), (" 64m ", 64 * mib),
        ("2t", 2 * 1024 * 1024 * mib), ("0.5k", 512), ("6M", 6 * mib),
    ]

    @Test("sizes as docker reads them", arguments: sizeCases)
    func sizes(text: String, bytes: Int64) throws {
        #expect(try ByteSize(parsing: text).bytes == bytes)
    }

    @Test("sizes that are not sizes", arguments: ["64x", "", "m", "-1m", "1.2.3g", "1e3", "99999999999p", "1.g", ".5g", "64 m b", "1gg"])
    func badSizes(text: String) {
        #expect(throws: BerthError.self) { try ByteSize(parsing: text) }
    }

    @Test("a bad size says what was wrong and what is expected")
    func badSizeMessage() {
        do {
            _ = try ByteSize(parsing: "64x", for: "memory limit")
            Issue.record("expected an error")
        } catch let error as BerthError {
            #expect(error.code == .invalidArgument)
            #expect(error.message == "memory limit \"64x\": expected a size like 64m or 1g")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("sizes print in docker's short form and in human units")
    func sizeOutput() {
        #expect(ByteSize.mebibytes(64).description == "64m")
        #expect(ByteSize.gibibytes(1).description == "1g")
        #expect(ByteSize(bytes: 1536 << 10).description == "1536k")
        #expect(ByteSize(bytes: 100).description == "100")
        #expect(ByteSize(bytes: 3 << 29).humanReadable == "1.50GiB")
        #expect(ByteSize(bytes: 512).humanReadable == "512B")
        #expect(ByteSize.mebibytes(64).humanReadable == "64.00MiB")
    }

    static let cpuCases: [(String, Int64)] = [
        ("0.5", 500_000_000), ("1.5", 1_500_000_000), ("2", 2_000_000_000), ("0.001", 1_000_000), ("0.000000001", 1),
    ]

    @Test("CPU counts as --cpus takes them", arguments: cpuCases)
    func cpus(text: String, nanos: Int64) throws {
        let q = try CPUQuantity(parsing: text)
        #expect(q.nanoCPUs == nanos)
        #expect(try CPUQuantity(parsing: q.description) == q)
    }

    @Test("CPU counts that are not", arguments: ["0", "-1", "abc", "1.0000000001", "", "1,5", "0.0"])
    func badCPUs(text: String) {
        #expect(throws: BerthError.self) { try CPUQuantity(parsing: text) }
    }

    @Test("CFS quota follows the CPU count")
    func quota() throws {
        #expect(try CPUQuantity(parsing: "0.5").quotaMicroseconds() == 50_000)
        #expect(try CPUQuantity(parsing: "1.5").quotaMicroseconds(period: 100_000) == 150_000)
        #expect(try CPUQuantity(parsing: "0.2").quotaMicroseconds() == 20_000)
    }

    @Test("cpusets parse and fold ranges")
    func cpusets() throws {
        #expect(try CPUSet(parsing: "0-2,4").members == [0, 1, 2, 4])
        #expect(try CPUSet(parsing: "4,0-2,1").description == "0-2,4")
        #expect(try CPUSet(parsing: "7").description == "7")
        for bad in ["", "a", "2-1", "1,,2", "-1", "1-"] {
            #expect(throws: BerthError.self) { try CPUSet(parsing: bad) }
        }
    }

    @Test("signals by name or number")
    func signals() throws {
        #expect(try Signal(parsing: "SIGTERM") == .terminate)
        #expect(try Signal(parsing: "term") == .terminate)
        #expect(try Signal(parsing: "9") == .kill)
        #expect(try Signal(parsing: "KILL").name == "SIGKILL")
        #expect(try Signal(parsing: "SIGRTMIN+3").number == 37)
        #expect(Signal(number: 37).name == "SIGRTMIN+3")
        for bad in ["SIGFOO", "0", "65", "", "TERMX"] {
            #expect(throws: BerthError.self) { try Signal(parsing: bad) }
        }
    }

    @Test("restart policies and their backoff")
    func restartPolicies() throws {
        #expect(try RestartPolicy(parsing: "no") == .no)
        #expect(try RestartPolicy(parsing: "always") == .always)
        #expect(try RestartPolicy(parsing: "unless-stopped") == .unlessStopped)
        #expect(try RestartPolicy(parsing: "on-failure") == .onFailure(maxRetries: nil))
        #expect(try RestartPolicy(parsing: "on-failure:3") == .onFailure(maxRetries: 3))
        for bad in ["sometimes", "always:3", "on-failure:x", "on-failure:-1", "no:1"] {
            #expect(throws: BerthError.self) { try RestartPolicy(parsing: bad) }
        }
        let policy = RestartPolicy.onFailure(maxRetries: 2)
        #expect(policy.shouldRestart(exitCode: 1, restartCount: 0, stoppedByUser: false))
        #expect(!policy.shouldRestart(exitCode: 1, restartCount: 2, stoppedByUser: false))
        #expect(!policy.shouldRestart(exitCode: 0, restartCount: 0, stoppedByUser: false))
        #expect(!RestartPolicy.always.shouldRestart(exitCode: 1, restartCount: 0, stoppedByUser: true))
        let delays = (0..<12).map { RestartPolicy.backoff(attempt: $0) }
        #expect(delays.prefix(4) == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800)])
        #expect(delays.last == .seconds(60))
        #expect(RestartPolicy.backoff(attempt: 100) == .seconds(60))
    }

    @Test("after a run: restart after the backoff, remove (--rm), or stay, by docker's rules")
    func afterExit() {
        func after(_ policy: RestartPolicy, code: Int32 = 1, restarts: Int = 0, byUser: Bool = false, rm: Bool = false) -> AfterExit {
            policy.afterExit(exitCode: code, restartCount: restarts, stoppedByUser: byUser, autoRemove: rm)
        }
        #expect(after(.always) == .restart(after: .milliseconds(100)))
        #expect(after(.always, code: 0, restarts: 3) == .restart(after: .milliseconds(800)))
        #expect(after(.unlessStopped, restarts: 30) == .restart(after: .seconds(60)))
        #expect(after(.always, byUser: true) == .stay, "a stop asked for by a person never restarts")
        #expect(after(.onFailure(maxRetries: 2), restarts: 1) == .restart(after: .milliseconds(200)))
        #expect(after(.onFailure(maxRetries: 2), restarts: 2) == .stay, "retries used up")
        #expect(after(.onFailure(maxRetries: nil), code: 0) == .stay, "a success is not a failure")
        #expect(after(.no, rm: true) == .remove)
        #expect(after(.no, byUser: true, rm: true) == .remove, "--rm holds for a stopped container too")
        #expect(after(.no) == .stay)
    }

    @Test("published ports in every docker form")
    func ports() throws {
        #expect(try PortMapping(parsing: "8080:80") == PortMapping(hostPort: 8080, containerPort: 80))
        #expect(try PortMapping(parsing: "80") == PortMapping(hostPort: 0, containerPort: 80))
        #expect(try PortMapping(parsing: "53:53/udp") == PortMapping(hostPort: 53, containerPort: 53, transport: .udp))
        #expect(try PortMapping(parsing: "127.0.0.1:8080:80") == PortMapping(hostIP: "127.0.0.1", hostPort: 8080, containerPort: 80))
        #expect(try PortMapping(parsing: "127.0.0.1::80") == PortMapping(hostIP: "127.0.0.1", hostPort: 0, containerPort: 80))
        #expect(try PortMapping(parsing: "[::1]:8080:80/tcp") == PortMapping(hostIP: "::1", hostPort: 8080, containerPort: 80))
        #expect(try PortMapping(parsing: "127.0.0.1:8080:80").description == "127.0.0.1:8080:80/tcp")
        for bad in ["", "http", "0", "70000:80", "8080:0", "1.2.3:80:80", "80/sctp", "a:b:c:d", "[::1:80"] {
            #expect(throws: BerthError.self, "\(bad)") { try PortMapping(parsing: bad) }
        }
    }

    @Test("volumes, binds and tmpfs mounts")
    func mounts() throws {
        #expect(try Mount(parsingVolume: "data:/data") == Mount(kind: .volume, source: "data", target: "/data"))
        #expect(try Mount(parsingVolume: "/srv:/srv:ro") == Mount(kind: .bind, source: "/srv", target: "/srv", readOnly: true))
        #expect(try Mount(parsingVolume: "/cache") == Mount(kind: .volume, target: "/cache"))
        #expect(try Mount(parsingTmpfs: "/run:size=64m").tmpfsSize == .mebibytes(64))
        for bad in ["data:relative", "da ta:/x", "/a:/b:rx", "a:/b:ro:x", "/x/../y"] {
            #expect(throws: BerthError.self, "\(bad)") { try Mount(parsingVolume: bad) }
        }
    }

    @Test("impossible limits are rejected with a reason")
    func limits() throws {
        let host = NodeCapacity(cpus: 2, memoryBytes: 8 << 30)
        #expect(throws: Never.self) { try Resources(memory: .mebibytes(64), cpus: CPUQuantity(cpus: 1)).validate(on: host) }
        let cases: [(Resources, String)] = [
            (Resources(memory: .mebibytes(4)), "minimum memory limit"),
            (Resources(memory: .gibibytes(16)), "more than the host's"),
            (Resources(memory: .mebibytes(64), memorySwap: .mebibytes(32)), "at least the memory limit"),
            (Resources(memorySwap: .mebibytes(32)), "requires a memory limit"),
            (Resources(cpus: CPUQuantity(cpus: 3)), "the host has only 2 CPUs"),
            (Resources(cpus: CPUQuantity(nanoCPUs: 5_000_000)), "smallest CPU limit"),
            (Resources(cpuShares: 1), "cpu-shares"),
            (Resources(ioWeight: 5000), "blkio-weight"),
            (Resources(cpusetCPUs: CPUSet([0, 5])), "CPU 5 does not exist"),
        ]
        for (resources, expected) in cases {
            do {
                try resources.validate(on: host)
                Issue.record("expected \(expected)")
            } catch let error as BerthError {
                #expect(error.message.contains(expected), "\(error.message)")
            }
        }
        // Unlimited swap is fine with a memory limit.
        try Resources(memory: .mebibytes(64), memorySwap: ByteSize(bytes: -1)).validate(on: host)
    }

    @Test("container specs are checked as a whole")
    func specs() throws {
        try ContainerSpec(name: "web", image: "busybox").validate()
        let bad: [ContainerSpec] = [
            ContainerSpec(name: "-bad", image: "busybox"),
            ContainerSpec(image: " "),
            ContainerSpec(image: "busybox", env: ["=x"]),
            ContainerSpec(image: "busybox", workingDir: "relative"),
            ContainerSpec(image: "busybox", hostname: "bad_host"),
            ContainerSpec(image: "busybox", mounts: [Mount(kind: .tmpfs, target: "/x"), Mount(kind: .tmpfs, target: "/x")]),
            ContainerSpec(image: "busybox", ports: [PortMapping(hostPort: 80, containerPort: 80), PortMapping(hostPort: 80, containerPort: 81)]),
        ]
        for spec in bad {
            #expect(throws: BerthError.self) { try spec.validate() }
        }
    }

    @Test("timestamps round-trip through RFC 3339")
    func timestamps() {
        for seconds in [0.0, 1_700_000_000.5, 1_798_505_157.123456, -86_400.25] {
            let date = Date(timeIntervalSince1970: seconds)
            let text = RFC3339.format(date)
            let back = RFC3339.parse(text)
            #expect(back != nil, "\(text)")
            #expect(abs((back?.timeIntervalSince1970 ?? 0) - seconds) < 1e-6, "\(text)")
        }
        #expect(RFC3339.format(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00Z")
        #expect(RFC3339.parse("2026-11-29T01:05:57+01:00")?.timeIntervalSince1970 == RFC3339.parse("2026-11-29T00:05:57Z")?.timeIntervalSince1970)
        #expect(RFC3339.parse("2026-13-01T00:00:00Z") == nil)
        #expect(RFC3339.parse("yesterday") == nil)
    }

    @Test("--device as docker spells it: HOST, HOST:CONTAINER, HOST:PERMISSIONS, HOST:CONTAINER:PERMISSIONS")
    func devices() throws {
        let plain = try DeviceMapping(parsing: "/dev/sdc")
        #expect(plain.containerPath == "/dev/sdc" && plain.access == .all)
        let moved = try DeviceMapping(parsing: "/dev/sdc:/dev/xvdc")
        #expect(moved.hostPath == "/dev/sdc" && moved.containerPath == "/dev/xvdc" && moved.access == .all)
        let readOnly = try DeviceMapping(parsing: "/dev/sdc:r")
        #expect(readOnly.containerPath == "/dev/sdc" && readOnly.access == .read)
        let all = try DeviceMapping(parsing: "/dev/sdc:/dev/xvdc:mw")
        #expect(all.access == [.write, .mknod] && all.description == "/dev/sdc:/dev/xvdc:wm")
    }

    @Test("a --device that is not one says why", arguments: [
        ("dev/sdc", "must be absolute"), ("/dev/sdc:xvdc:rw", "must be absolute"), ("/dev/sdc:/dev/x:rwx", "any of r, w and m"),
        ("/dev/sdc:/dev/../etc/x", "may not contain"), ("/a:/b:r:w", "expected HOST"), ("/dev/sdc:", "any of r, w and m"),
    ])
    func badDevices(text: String, says: String) {
        do {
            _ = try DeviceMapping(parsing: text)
            Issue.record("\(text) parsed")
        } catch {
            #expect("\(error)".contains(says), "\(error)")
        }
    }

    @Test("one container path for two devices is refused")
    func twoDevicesOnePath() {
        let spec = ContainerSpec(image: "busybox", devices: [DeviceMapping(hostPath: "/dev/a", containerPath: "/dev/x"), DeviceMapping(hostPath: "/dev/b", containerPath: "/dev/x")])
        #expect(throws: BerthError.self) { try spec.validate() }
    }
}
