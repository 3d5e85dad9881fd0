import BerthTransport
import Foundation
import GRPCCore
import Logging
import Testing

/// Where `swift build` put the package's executables.
enum BuildProducts {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func executable(_ name: String) throws -> URL {
        var candidates: [URL] = []
        if let first = ProcessInfo.processInfo.arguments.first {
            var dir = URL(fileURLWithPath: first).deletingLastPathComponent()
            // Inside an .xctest bundle on some layouts.
            for _ in 0..<4 {
                candidates.append(dir.appendingPathComponent(name))
                dir = dir.deletingLastPathComponent()
            }
        }
        candidates.append(root.appendingPathComponent(".build/debug/\(name)"))
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
            throw HarnessError("\(name) is not built; run `swift build` first (looked in \(candidates.map(\.path)))")
        }
        return found
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A real `berth-agent` process on temporary directories, a unix socket and
/// a loopback TCP port, stopped by PID (SIGTERM, then SIGKILL) when done.
final class AgentProcess: @unchecked Sendable {
    let directory: URL
    let socketPath: String
    let root: String
    let state: String
    private(set) var tcpPort: Int?
    let process: Process
    let logURL: URL

    /// Starts the agent and waits until it answers on its socket.
    init(extraArguments: [String] = [], tcp: Bool = true, directory: URL? = nil) async throws {
        let dir = directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("berth-agent-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        self.directory = dir
        self.socketPath = dir.appendingPathComponent("agent.sock").path
        self.root = dir.appendingPathComponent("root").path
        self.state = dir.appendingPathComponent("state").path
        self.logURL = dir.appendingPathComponent("agent-\(UUID().uuidString.prefix(4)).log")
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let log = try FileHandle(forWritingTo: logURL)
        process = Process()
        process.executableURL = try BuildProducts.executable("berth-agent")
        var arguments = ["--socket", socketPath, "--root", root, "--state", state]
        if tcp { arguments += ["--listen", "127.0.0.1:0"] }
        process.arguments = arguments + extraArguments
        process.standardOutput = log
        process.standardError = log
        try process.run()
        try log.close()
        try await waitUntilReady(tcp: tcp)
    }

    var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }
    var pid: Int32 { process.processIdentifier }

    private func waitUntilReady(tcp: Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if !process.isRunning {
                throw HarnessError("berth-agent exited with \(process.terminationStatus):\n\(log)")
            }
            let text = log
            let unixReady = text.contains("address=unix://\(socketPath)")
            if tcp, let range = text.range(of: "address=tcp://127.0.0.1:") {
                let digits = text[range.upperBound...].prefix { $0.isNumber }
                tcpPort = Int(digits)
            }
            if unixReady && (!tcp || tcpPort != nil) { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        stop()
        throw HarnessError("berth-agent did not start listening within 20 s:\n\(log)")
    }

    /// Sends SIGTERM and waits; SIGKILL after `grace`. Returns the exit status.
    @discardableResult
    func stop(grace: Duration = .seconds(10)) -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + grace
        while process.isRunning && ContinuousClock.now < deadline { usleep(10_000) }
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    /// Stops the agent and removes its directory.
    func cleanUp() {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Resident memory in bytes, from /proc.
    var residentBytes: Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kib = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } ?? 0
            return kib * 1024
        }
        return 0
    }

    /// Runs `body` with a gRPC client on the unix socket or on TCP.
    func withClient<R: Sendable>(tcp: Bool = false, _ body: @Sendable (GRPCClient<NGHTTP2ClientTransport>) async throws -> R) async throws -> R {
        let address: TransportAddress = tcp ? .tcp(host: "127.0.0.1", port: tcpPort ?? 0) : .unix(path: socketPath)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return try await withGRPCClient(transport: NGHTTP2ClientTransport(config: .init(address: address), logger: logger)) {
            try await body($0)
        }
    }
}

/// Runs a command and collects its output.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

func runCommand(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil, timeout: Duration = .seconds(120)) throws -> CommandResult {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    if let environment { process.environment = environment }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Read both pipes concurrently so neither fills up.
    let group = DispatchGroup()
    nonisolated(unsafe) var outData = Data()
    nonisolated(unsafe) var errData = Data()
    group.enter()
    DispatchQueue.global().async {
        outData = out.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let seconds = Double(timeout.components.seconds)
    if group.wait(timeout: .now() + seconds) == .timedOut {
        kill(process.processIdentifier, SIGKILL)
        throw HarnessError("\(executable.lastPathComponent) \(arguments) did not finish within \(seconds) s")
    }
    process.waitUntilExit()
    return CommandResult(
        status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
}
