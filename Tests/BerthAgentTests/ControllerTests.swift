import BerthLinux
import BerthModel
import BerthTesting
import Foundation
import Testing

/// A real `berth-controller` process on a temporary data directory and a
/// loopback port, stopped by PID.
final class ControllerProcess: @unchecked Sendable {
    let directory: URL
    let port: Int
    let grace: Double
    let host: String
    let extraArguments: [String]
    private(set) var process: ChildProcess

    init(grace: Double, directory: URL? = nil, port: Int? = nil, host: String = "127.0.0.1", extraArguments: [String] = []) async throws {
        self.host = host
        self.extraArguments = extraArguments
        self.directory = directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("berth-controller-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        self.port = try port ?? MetricsTests.freePort()
        self.grace = grace
        process = ChildProcess(pid: 0)
        do {
            try await start()
        } catch {
            // The error carries the controller's log; nothing is left behind.
            if process.pid > 0 { _ = process.terminate(grace: .seconds(5)) }
            try? FileManager.default.removeItem(at: self.directory)
            throw error
        }
    }

    var address: String { "\(host):\(port)" }
    var log: String { (try? String(contentsOf: directory.appendingPathComponent("controller.log"), encoding: .utf8)) ?? "" }

    func start() async throws {
        let logFD = open(directory.appendingPathComponent("controller.log").path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        defer { close(logFD) }
        let before = log.components(separatedBy: "listening").count
        process = ChildProcess(
            pid: try Processes.spawn(
                executable: try BuildProducts.executable("berth-controller").path,
                arguments: ["--listen", address, "--data", directory.appendingPathComponent("data").path, "--node-grace", String(grace)] + extraArguments,
                environment: ["PATH=/usr/bin:/bin"], stdout: logFD, stderr: logFD))
        let deadline = ContinuousClock.now + .seconds(30)
        while log.components(separatedBy: "listening").count == before {
            guard process.isRunning, ContinuousClock.now < deadline else { throw HarnessError("berth-controller did not start:\n\(log)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    func kill9() {
        kill(process.pid, SIGKILL)
        process.waitUntilExit()
    }

    /// Stops the controller with SIGTERM; one still there 15 s later is an
    /// issue of the test (and is killed, so that the run goes on).
    func cleanUp() {
        if !process.terminate(grace: .seconds(15)) {
            Issue.record("the controller did not stop within 15 s of SIGTERM")
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

@Suite("controller: nodes register, heartbeat, go down and come back (processes)", .ownThreads, .timeLimit(.minutes(3)))
struct ControllerNodeTests {
    struct NodeRecord: Decodable {
        var id: String
        var hostname: String
        var address: String
        var state: String
        var availability: String
        var labels: [String: String]
        var agentLabels: [String: String]
    }

    static func nodes(_ controller: ControllerProcess) async throws -> [NodeRecord] {
        let r = try await runCommand(try BuildProducts.executable("berth"), ["node", "ls", "--format", "json", "--controller", controller.address])
        guard r.status == 0 else { throw HarnessError("node ls: \(r.stderr)") }
        return try JSONDecoder().decode([NodeRecord].self, from: Data(r.stdout.utf8))
    }

    /// Polls until `condition` holds, up to `timeout`; the nodes last seen.
    static func waitFor(_ controller: ControllerProcess, timeout: Duration = .seconds(15), _ condition: ([NodeRecord]) -> Bool) async throws -> [NodeRecord] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let nodes = (try? await Self.nodes(controller)) ?? []
            if condition(nodes) || ContinuousClock.now > deadline { return nodes }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    static func berth(_ controller: ControllerProcess, _ arguments: [String]) async throws -> CommandResult {
        try await runCommand(try BuildProducts.executable("berth"), arguments + ["--controller", controller.address])
    }

    @Test("agents register with their labels; a silent one is down within the grace period and ready again when it returns; drain and labels survive a controller restart; bad input is refused", arguments: StoreKind.allCases)
    func lifecycle(_ store: StoreKind) async throws {
        let etcd = store == .etcd ? try await EtcdProcesses(count: 1) : nil
        defer { etcd?.stop() }
        let controller = try await ControllerProcess(grace: 2, extraArguments: etcd.map { ["--store", $0.storeURL, "--leader-lease", "2"] } ?? [])
        defer { controller.cleanUp() }
        func agent(_ zone: String, directory: URL? = nil, port: Int? = nil) async throws -> (AgentProcess, Int) {
            let port = try port ?? MetricsTests.freePort()
            let agent = try await AgentProcess(
                extraArguments: ["--listen", "127.0.0.1:\(port)", "--controller", controller.address, "--label", "zone=\(zone)"], tcp: false,
                directory: directory)
            return (agent, port)
        }
        let (first, firstPort) = try await agent("a")
        defer { first.cleanUp() }
        let (second, _) = try await agent("b")
        defer { second.cleanUp() }
        let firstID = try first.nodeID
        var nodes = try await Self.waitFor(controller) { $0.count == 2 && $0.allSatisfy { $0.state == "ready" } }
        #expect(nodes.count == 2 && nodes.allSatisfy { $0.state == "ready" && $0.availability == "active" }, "\(nodes)")
        #expect(Set(nodes.compactMap { $0.agentLabels["zone"] }) == ["a", "b"] && nodes.allSatisfy(\.labels.isEmpty))
        #expect(nodes.first { $0.id == firstID }?.address == "127.0.0.1:\(firstPort)")

        #expect(try await Self.berth(controller, ["node", "label", "--add", "tier=web", firstID]).status == 0)
        #expect(try await Self.berth(controller, ["node", "drain", String(firstID.prefix(8))]).status == 0)

        // Silent: down within the grace period (2 s) and one sweep.
        let killed = ContinuousClock.now
        kill(first.pid, SIGKILL)
        first.process.waitUntilExit()
        nodes = try await Self.waitFor(controller) { $0.first { $0.id == firstID }?.state == "down" }
        let downAfter = ContinuousClock.now - killed
        #expect(nodes.first { $0.id == firstID }?.state == "down")
        // The grace period from the last heartbeat, which came up to one
        // interval (0.4 s) before the kill, and a sweep; the rest is room for
        // a loaded machine (each `node ls` above is a process).
        #expect(downAfter >= .milliseconds(1600) && downAfter < .seconds(15), "down after \(downAfter)")
        #expect(nodes.first { $0.id != firstID }?.state == "ready", "the other keeps its heartbeats")

        // Back (the same node ID), with its operator's drain and labels kept.
        let (again, _) = try await agent("a", directory: first.directory, port: firstPort)
        defer { again.cleanUp() }
        nodes = try await Self.waitFor(controller) { $0.first { $0.id == firstID }?.state == "ready" }
        let back = try #require(nodes.first { $0.id == firstID })
        #expect(back.state == "ready" && back.availability == "drain" && back.labels == ["tier": "web"] && back.agentLabels == ["zone": "a"], "\(back)")

        // A controller killed and restarted keeps what it knew; heartbeats go on.
        controller.kill9()
        try await controller.start()
        // (On etcd it leads once it has won its election: at once, since its
        // predecessor's key, at its own address, is its to remove.)
        nodes = try await Self.waitFor(controller, timeout: .seconds(5)) { !$0.isEmpty }
        #expect(nodes.count == 2 && nodes.first { $0.id == firstID }?.availability == "drain")
        try await Task.sleep(for: .seconds(3))
        nodes = try await Self.nodes(controller)
        #expect(nodes.allSatisfy { $0.state == "ready" }, "heartbeats reach the restarted controller: \(nodes)")
        #expect(try await Self.berth(controller, ["node", "activate", firstID]).status == 0)
        #expect(try await Self.nodes(controller).first { $0.id == firstID }?.availability == "active")

        let refusals: [([String], String)] = [
            (["node", "drain", "nosuch"], "no such node: nosuch"),
            (["node", "label", "--add", "novalue", firstID], "expected KEY=VALUE"),
            (["node", "label", firstID], "nothing to change"),
        ]
        for (arguments, message) in refusals {
            let r = try await Self.berth(controller, arguments)
            #expect(r.status != 0 && r.stderr.contains(message), "\(arguments): \(r.stderr)")
        }
        let offLoopback = try await runCommand(
            try BuildProducts.executable("berth-controller"), ["--listen", "0.0.0.0:7450", "--data", controller.directory.appendingPathComponent("x").path])
        #expect(offLoopback.status != 0 && offLoopback.stderr.contains("listen on a loopback address"), "\(offLoopback.stderr)")
        let noAddress = try await runCommand(
            try BuildProducts.executable("berth-agent"), ["--controller", controller.address, "--root", "/nonexistent/r", "--state", "/nonexistent/s"])
        #expect(noAddress.status != 0 && noAddress.stderr.contains("--controller needs an address"), "\(noAddress.stderr)")
    }
}
