import BerthAPI
import BerthCgroups
import BerthModel
import BerthTesting
import Foundation
import GRPCCore
import SwiftProtobuf
import Testing

@Suite("berth-agent: Node service and process behaviour", .ownThreads, .timeLimit(.minutes(5)))
struct AgentServiceTests {
    @Test("Version and Info describe this host, on the unix socket and on TCP")
    func versionAndInfo() async throws {
        let agent = try await AgentProcess()
        defer { agent.cleanUp() }
        for tcp in [false, true] {
            let (version, info) = try await agent.withClient(tcp: tcp) { client in
                let node = Berth_Agent_V1_Node.Client(wrapping: client)
                let version = VersionInfo(proto: try await node.version(Berth_Agent_V1_GetVersionRequest()).version)
                let info = try NodeInfo(proto: try await node.info(Berth_Agent_V1_GetNodeInfoRequest()).info)
                return (version, info)
            }
            #expect(version.version == "0.1.0")
            #expect(version.apiVersion == "v1")
            #expect(version.nghttp2Version.hasPrefix("1."))
            let online = try String(contentsOfFile: "/sys/devices/system/cpu/online", encoding: .utf8)
            #expect(info.capacity.cpus == (try CPUSet(parsing: online.trimmingCharacters(in: .whitespacesAndNewlines))).members.count)
            let meminfo = try String(contentsOfFile: "/proc/meminfo", encoding: .utf8)
            let totalKiB = meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal:") }!
                .split(separator: " ", omittingEmptySubsequences: true)[1]
            #expect(info.capacity.memoryBytes == Int64(totalKiB)! * 1024)
            #expect(info.cgroupMode == (try CgroupModeDetector.detectHost()))
            #expect(info.kernelVersion == (try String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(info.rootDir == agent.root && info.stateDir == agent.state)
            #expect(info.id.count == 32)
        }
    }

    @Test("WatchUsage streams samples until its count, and rejects a too-short interval")
    func watchUsage() async throws {
        let agent = try await AgentProcess(tcp: false)
        defer { agent.cleanUp() }
        try await agent.withClient { client in
            let node = Berth_Agent_V1_Node.Client(wrapping: client)
            let sequences = try await node.watchUsage(.with { $0.intervalMs = 100; $0.count = 3 }) { response in
                var seen: [UInt64] = []
                for try await sample in response.messages {
                    #expect(sample.memoryTotalBytes > 0)
                    #expect(sample.cpuUsageCpus >= 0)
                    seen.append(sample.sequence)
                }
                return seen
            }
            #expect(sequences == [1, 2, 3])
            do {
                try await node.watchUsage(.with { $0.intervalMs = 10 }) { response in
                    for try await _ in response.messages {}
                }
                Issue.record("expected INVALID_ARGUMENT")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument)
                #expect(error.message.contains("shortest interval is 100 ms"))
            }
        }
    }

    @Test("malformed requests get their own code and a message that names what is wrong")
    func pending() async throws {
        let agent = try await AgentProcess(tcp: false)
        defer { agent.cleanUp() }
        try await agent.withClient { client in
            // A stats call that names no container is refused as such.
            do {
                try await Berth_Agent_V1_Containers.Client(wrapping: client).stats(.init()) { r in for try await _ in r.messages {} }
                Issue.record("stats of no container should fail")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument, "\(error)")
            }
            // A message with spaces at its ends (not allowed in an HTTP/2 header) still arrives.
            do {
                _ = try await Berth_Agent_V1_Containers.Client(wrapping: client).inspect(.with { $0.container = "nosuch " })
                Issue.record("inspect of a missing container should fail")
            } catch let error as RPCError {
                #expect(error.code == .notFound, "\(error)")
                #expect(error.message.hasSuffix("nosuch "), "\(error.message)")
            }
            // Connect and disconnect name what they lack.
            do {
                _ = try await Berth_Agent_V1_Networks.Client(wrapping: client).connect(.with { $0.container = "nosuch" })
                Issue.record("connect without a network should fail")
            } catch let error as RPCError {
                #expect(error.code == .notFound && error.message.contains("nosuch"), "\(error)")
            }
            do {
                _ = try await Berth_Agent_V1_Networks.Client(wrapping: client).disconnect(.init())
                Issue.record("disconnect of nothing should fail")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument && error.message.contains("a container name or ID is required"), "\(error)")
            }
        }
    }

    @Test("the control socket is mode 0600 and the node ID survives a restart")
    func socketAndIdentity() async throws {
        let first = try await AgentProcess(tcp: false)
        let attributes = try FileManager.default.attributesOfItem(atPath: first.socketPath)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let id1 = try await first.withClient { try await Berth_Agent_V1_Node.Client(wrapping: $0).info(.init()).info.id }
        #expect(first.stop() == 0)
        // The agent removes its socket on the way out.
        #expect(!FileManager.default.fileExists(atPath: first.socketPath))
        let second = try await AgentProcess(tcp: false, directory: first.directory, cgroupParent: first.cgroupParent)
        defer { second.cleanUp() }
        let id2 = try await second.withClient { try await Berth_Agent_V1_Node.Client(wrapping: $0).info(.init()).info.id }
        #expect(id1 == id2)
    }

    @Test("a second agent on a live socket is refused; a stale socket file is replaced")
    func socketOwnership() async throws {
        let first = try await AgentProcess(tcp: false)
        defer { first.cleanUp() }
        let agent = try BuildProducts.executable("berth-agent")
        let refused = try await runCommand(
            agent, ["--socket", first.socketPath, "--root", first.root + "-2", "--state", first.state + "-2", "--cgroup-parent", first.cgroupParent],
            timeout: .seconds(30))
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("another process is already listening on \(first.socketPath)"), "\(refused.stderr)")
        // The first agent is unharmed.
        _ = try await first.withClient { try await Berth_Agent_V1_Node.Client(wrapping: $0).version(.init()) }

        // kill -9 leaves the socket file behind; the next agent takes it over.
        kill(first.pid, SIGKILL)
        first.process.waitUntilExit()
        #expect(FileManager.default.fileExists(atPath: first.socketPath))
        let next = try await AgentProcess(tcp: false, directory: first.directory, cgroupParent: first.cgroupParent)
        defer { next.cleanUp() }
        _ = try await next.withClient { try await Berth_Agent_V1_Node.Client(wrapping: $0).version(.init()) }
    }

    @Test("bad configuration is refused with a clear message and nothing created", arguments: [
        (["--listen", "0.0.0.0:7000"], "without TLS would let anyone"),
        (["--socket", "relative.sock"], "must be an absolute path"),
        (["--listen", "nonsense"], "expected unix:///PATH or tcp://HOST:PORT"),
        (["--log-level", "loud"], "--log-level loud"),
    ])
    func badConfiguration(arguments: [String], expected: String) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-bad-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let result = try await runCommand(
            try BuildProducts.executable("berth-agent"),
            ["--socket", dir.appendingPathComponent("a.sock").path, "--root", dir.appendingPathComponent("root").path,
             "--state", dir.appendingPathComponent("state").path] + arguments, timeout: .seconds(30))
        #expect(result.status != 0)
        #expect(result.stderr.contains(expected), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("root").path))
    }

    @Test("a corrupt node ID stops the agent with a message instead of being overwritten")
    func corruptNodeID() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-corrupt-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("root"), withIntermediateDirectories: true)
        try "not an id\n".write(to: dir.appendingPathComponent("root/node-id"), atomically: true, encoding: .utf8)
        let result = try await runCommand(
            try BuildProducts.executable("berth-agent"),
            ["--socket", dir.appendingPathComponent("a.sock").path, "--root", dir.appendingPathComponent("root").path,
             "--state", dir.appendingPathComponent("state").path], timeout: .seconds(30))
        #expect(result.status == 1)
        #expect(result.stderr.contains("not a node ID"))
        #expect(try String(contentsOf: dir.appendingPathComponent("root/node-id"), encoding: .utf8) == "not an id\n")
    }

    @Test("SIGTERM lets an in-flight stream finish, then the agent exits 0")
    func gracefulStop() async throws {
        let agent = try await AgentProcess(tcp: false)
        defer { agent.cleanUp() }
        let count = try await agent.withClient { client in
            let node = Berth_Agent_V1_Node.Client(wrapping: client)
            return try await node.watchUsage(.with { $0.intervalMs = 100; $0.count = 8 }) { response in
                var n = 0
                for try await _ in response.messages {
                    n += 1
                    if n == 2 { kill(agent.pid, SIGTERM) }
                }
                return n
            }
        }
        #expect(count == 8)
        let deadline = ContinuousClock.now + .seconds(10)
        while agent.process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!agent.process.isRunning)
        #expect(agent.process.terminationStatus == 0)
        #expect(agent.log.contains("agent stopped"))
    }
}
