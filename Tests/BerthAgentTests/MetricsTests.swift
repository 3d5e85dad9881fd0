import BerthLinux
import BerthModel
import BerthTesting
import Foundation
import Testing

/// `/metrics`: the text format checked by promtool, the values against the
/// kernel's files, and a real Prometheus server scraping the agent.
@Suite("metrics (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct MetricsTests {
    /// A host whose agent also serves plain HTTP on a loopback port.
    static func host() async throws -> (ContainerHost, port: Int) {
        let host = try await ContainerHost(extraArguments: ["--metrics-listen", "127.0.0.1:0"])
        guard let range = host.agent.log.range(of: "address=tcp://127.0.0.1:"),
            let port = Int(host.agent.log[range.upperBound...].prefix { $0.isNumber })
        else {
            host.cleanUp()
            throw HarnessError("the metrics listener did not start:\n\(host.agent.log)")
        }
        return (host, port)
    }

    /// The value of the one sample of `name` whose labels include all of `labels`.
    static func value(_ text: String, _ name: String, _ labels: [String: String] = [:]) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
            let head = line[..<(line.lastIndex(of: " ") ?? line.endIndex)]
            guard head.prefix(while: { $0 != "{" && $0 != " " }) == name else { continue }
            if labels.allSatisfy({ head.contains("\($0.key)=\"\($0.value)\"") }) {
                return Double(line[line.index(after: line.lastIndex(of: " ")!)...])
            }
        }
        return nil
    }

    @Test("/metrics passes promtool, has cAdvisor's series for each container with the kernel's values, and berth_* for the agent")
    func scrape() async throws {
        let (host, port) = try await Self.host()
        defer { host.cleanUp() }
        #expect(try await host.berth(["run", "-d", "--name", "web", "-m", "64m", "--cpus", "0.5", "busybox", "sleep", "1000"]).status == 0)
        #expect(try await host.berth(["run", "-d", "--name", "frozen", "busybox", "sleep", "1000"]).status == 0)
        #expect(try await host.berth(["pause", "frozen"]).status == 0)
        #expect(try await host.berth(["run", "--name", "gone", "busybox", "true"]).status == 0)
        #expect(try await host.berth(["start", "nosuch"]).status == 1)
        let web = try await host.inspect("web")

        let (status, text) = try await RawHTTP2Client.get(port: port, path: "/metrics")
        #expect(status == 200)
        let file = host.agent.directory.appendingPathComponent("metrics.txt")
        try text.write(to: file, atomically: true, encoding: .utf8)
        let promtool = try await runCommand(URL(fileURLWithPath: "/bin/sh"), ["-c", "promtool check metrics < \(file.path)"])
        #expect(promtool.status == 0, "promtool: \(promtool.stdout)\(promtool.stderr)")

        let labels = ["id": "/\(host.agent.cgroupParent)/\(web.id.rawValue)", "name": "web", "image": "busybox"]
        #expect(Self.value(text, "container_spec_memory_limit_bytes", labels) == Double(64 << 20))
        #expect(Self.value(text, "container_spec_cpu_quota", labels) == 50_000)
        #expect(Self.value(text, "container_spec_cpu_period", labels) == 100_000)
        #expect(Self.value(text, "container_processes", labels) == 1)
        let usage = Double(try host.memoryUsage(web))
        let shown = try #require(Self.value(text, "container_memory_usage_bytes", labels))
        #expect(abs(shown - usage) <= 64 * 1024, "metrics \(shown), cgroup \(usage)")
        let cpu = try #require(Self.value(text, "container_cpu_usage_seconds_total", labels))
        let kernelCPU = try host.cpuSeconds(web)
        #expect(cpu > 0 && cpu <= kernelCPU + 0.01)
        #expect(Self.value(text, "container_cpu_usage_seconds_total", ["name": "frozen"]) != nil, "a paused container is still reported")
        #expect(Self.value(text, "container_cpu_usage_seconds_total", ["name": "gone"]) == nil, "an exited container has no series")

        #expect(Self.value(text, "berth_containers", ["state": "running"]) == 1)
        #expect(Self.value(text, "berth_containers", ["state": "paused"]) == 1)
        #expect(Self.value(text, "berth_containers", ["state": "exited"]) == 1)
        #expect(Self.value(text, "berth_shims_alive") == 2)
        #expect((Self.value(text, "berth_agent_resident_memory_bytes") ?? 0) > 1_000_000)
        #expect((Self.value(text, "berth_events_written_total") ?? 0) >= 8)
        // Two detached runs create; the attached one is a Run call.
        #expect(Self.value(text, "berth_rpc_requests_total", ["method": "berth.agent.v1.Containers/Create", "code": "OK"]) == 2)
        #expect(Self.value(text, "berth_rpc_requests_total", ["method": "berth.agent.v1.Containers/Run", "code": "OK"]) == 1)
        #expect(Self.value(text, "berth_rpc_requests_total", ["method": "berth.agent.v1.Containers/Start", "code": "NOT_FOUND"]) == 1)
        #expect(Self.value(text, "berth_rpc_duration_seconds_count", ["method": "berth.agent.v1.Containers/Pause"]) == 1)

        // The same on the control socket; the metrics port speaks no gRPC.
        let local = try await RawHTTP2Client.get(unixPath: host.agent.socketPath, path: "/metrics")
        #expect(local.status == 200 && local.body.contains("container_memory_working_set_bytes{"))
        let grpc = try await runCommand(try BuildProducts.executable("berth"), ["-H", "tcp://127.0.0.1:\(port)", "version"])
        #expect(grpc.status != 0, "gRPC on the metrics port: \(grpc.stdout)")
    }

    @Test("berth_shims_alive counts every running container's shim after an agent restart, re-adopted ones included")
    func shimsAfterRestart() async throws {
        let first = try await ContainerHost()
        defer { first.cleanUp() }
        for i in 0..<6 {
            #expect(try await first.berth(["run", "-d", "--name", "c\(i)", "busybox", "sleep", "1000"]).status == 0)
        }
        #expect(try await first.berth(["pause", "c5"]).status == 0)
        let before = try await RawHTTP2Client.get(unixPath: first.agent.socketPath, path: "/metrics")
        #expect(Self.value(before.body, "berth_shims_alive") == 6, "\(before.body.split(separator: "\n").filter { $0.hasPrefix("berth_shims") })")
        #expect(first.agent.stop() == 0)
        let second = try await AgentProcess(tcp: false, directory: first.agent.directory, cgroupParent: first.agent.cgroupParent)
        defer { second.cleanUp() }
        let after = try await RawHTTP2Client.get(unixPath: second.socketPath, path: "/metrics")
        #expect(Self.value(after.body, "berth_shims_alive") == 6, "\(after.body.split(separator: "\n").filter { $0.hasPrefix("berth_shims") })")
        #expect(Self.value(after.body, "berth_containers", ["state": "running"]) == 5)
        // The count follows the containers: one stopped, one more started.
        #expect(try await second.berth(["stop", "-t", "1", "c0"]).status == 0)
        #expect(try await second.berth(["run", "-d", "--name", "c6", "busybox", "sleep", "1000"]).status == 0)
        let later = try await RawHTTP2Client.get(unixPath: second.socketPath, path: "/metrics")
        #expect(Self.value(later.body, "berth_shims_alive") == 6)
    }

    /// A free TCP port on loopback (bound, read and released).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw HarnessError("no free loopback port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @Test("a real Prometheus server scrapes the agent; a container's series comes back from its query API")
    func prometheus() async throws {
        let (host, port) = try await Self.host()
        defer { host.cleanUp() }
        let executable = "/usr/bin/prometheus"
        try #require(FileManager.default.isExecutableFile(atPath: executable), "prometheus is not installed (scripts/test installs it)")
        #expect(try await host.berth(["run", "-d", "--name", "scraped", "-m", "48m", "busybox", "sleep", "1000"]).status == 0)

        let dir = host.agent.directory.appendingPathComponent("prometheus")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let config = """
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: berth
                static_configs:
                  - targets: ["127.0.0.1:\(port)"]
            """
        try config.write(to: dir.appendingPathComponent("prometheus.yml"), atomically: true, encoding: .utf8)
        let webPort = try Self.freePort()
        let logFD = open(dir.appendingPathComponent("prometheus.log").path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        defer { close(logFD) }
        let server = ChildProcess(
            pid: try Processes.spawn(
                executable: executable,
                arguments: [
                    "--config.file=\(dir.path)/prometheus.yml", "--storage.tsdb.path=\(dir.path)/data",
                    "--web.listen-address=127.0.0.1:\(webPort)", "--log.level=warn",
                ],
                environment: ["PATH=/usr/bin:/bin"], stdout: logFD, stderr: logFD))
        defer {
            if server.isRunning {
                kill(server.pid, SIGTERM)
                let deadline = ContinuousClock.now + .seconds(10)
                while server.isRunning && ContinuousClock.now < deadline { usleep(20_000) }
                if server.isRunning { kill(server.pid, SIGKILL) }
                server.waitUntilExit()
            }
        }

        // Until Prometheus has scraped the container's working set.
        let query = "/api/v1/query?query=container_spec_memory_limit_bytes%7Bname%3D%22scraped%22%7D"
        var result: [[String: Any]] = []
        let deadline = ContinuousClock.now + .seconds(60)
        while result.isEmpty && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(500))
            #expect(server.isRunning, "prometheus exited")
            guard let response = try? await RawHTTP2Client.get(port: webPort, path: query), response.status == 200,
                let json = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any],
                let data = json["data"] as? [String: Any]
            else { continue }
            result = data["result"] as? [[String: Any]] ?? []
        }
        let series = try #require(result.first, "Prometheus never returned the container's series")
        let metric = series["metric"] as? [String: String] ?? [:]
        #expect(metric["name"] == "scraped")
        #expect(metric["image"] == "busybox")
        #expect(metric["job"] == "berth")
        let value = (series["value"] as? [Any])?.last as? String
        #expect(value == String(48 * 1024 * 1024))

        // The target is healthy: Prometheus parsed every scrape.
        let up = try await RawHTTP2Client.get(port: webPort, path: "/api/v1/query?query=up%7Bjob%3D%22berth%22%7D")
        #expect(up.body.contains("\"value\":[") && up.body.contains(",\"1\"]"), "\(up.body)")
    }
}
