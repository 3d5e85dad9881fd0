import BerthAPI
import BerthTesting
import Foundation
import GRPCCore
import Synchronization
import Testing

/// Hostile and broken clients against a real agent process: each gets the
/// right HTTP/2 or gRPC error, a well-behaved client keeps being served the
/// whole time, and the agent's memory stays bounded.
@Suite("berth-agent: hostile clients", .ownThreads, .timeLimit(.minutes(5)))
struct HostileClientTests {
    final class Monitor: Sendable {
        let state = Mutex<(ok: Int, failed: [String])>((0, []))
        func record(_ error: (any Error)?) {
            state.withLock { s in
                if let error { s.failed.append("\(error)") } else { s.ok += 1 }
            }
        }
    }

    @Test("garbage, huge messages, header floods and rapid resets, while a good client is served", .timeLimit(.minutes(5)))
    func hostile() async throws {
        let agent = try await AgentProcess()
        defer { agent.cleanUp() }
        let port = try #require(agent.tcpPort)
        let monitor = Monitor()
        let stop = Mutex(false)

        // A well-behaved client calling Version every 20 ms throughout.
        let good = Task {
            try await agent.withClient { client in
                let node = Berth_Agent_V1_Node.Client(wrapping: client)
                while !stop.withLock({ $0 }) {
                    do {
                        // Generous: the whole suite runs in parallel on two
                        // cores; a stall of this length would still fail.
                        var options = CallOptions.defaults
                        options.timeout = .seconds(15)
                        _ = try await node.version(.init(), options: options)
                        monitor.record(nil)
                    } catch {
                        monitor.record(error)
                    }
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
        }
        try await Task.sleep(for: .milliseconds(300))
        let baseline = agent.residentBytes

        // 1. Garbage bytes.
        for _ in 0..<20 {
            let raw = try await RawHTTP2Client(port: port, http2: false)
            // The agent may close the connection before all of it is written.
            try? await raw.sendRaw((0..<4096).map { _ in UInt8.random(in: 0...255) })
            #expect(await raw.wait { $0.connectionClosed })
        }

        // 2. A non-gRPC content-type, a truncated prefix, a 100 MiB message.
        let raw = try await RawHTTP2Client(port: port)
        let json = try await raw.request(
            [(":method", "POST"), (":scheme", "http"), (":path", "/berth.agent.v1.Node/Version"), (":authority", "x"),
             ("content-type", "application/json")], body: Array("{}".utf8))
        let truncated = try await raw.grpcRequest(path: "/berth.agent.v1.Node/Version", body: [0, 0, 0])
        let length = 100 * 1024 * 1024
        let huge = try await raw.grpcRequest(
            path: "/berth.agent.v1.Node/Version",
            body: [0, UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)], endStream: false)
        for _ in 0..<16 {
            try? await raw.sendData(huge, [UInt8](repeating: 0x5A, count: 1 << 20), endStream: false)
        }
        #expect(await raw.wait { $0.streams[json]?.closed != nil && $0.streams[truncated]?.closed != nil && $0.streams[huge]?.closed != nil })
        #expect(raw.observed.streams[json]?.header(":status") == "415")
        #expect(raw.observed.streams[truncated]?.header("grpc-status") == "13")
        #expect(raw.observed.streams[huge]?.header("grpc-status") == "8")
        await raw.close()

        // 3. A header flood.
        let flooder = try await RawHTTP2Client(port: port)
        let flood = (0..<1000).map { ("x-flood-\($0)", String(repeating: "f", count: 30)) }
        let flooded = try await flooder.grpcRequest(path: "/berth.agent.v1.Node/Version", extra: flood, body: [0, 0, 0, 0, 0])
        #expect(await flooder.wait { $0.streams[flooded]?.closed != nil || $0.connectionClosed })
        #expect(flooder.observed.streams[flooded]?.header("grpc-status") == "8")
        await flooder.close()

        // 4. Rapid reset, from several connections at once.
        try await withThrowingTaskGroup(of: UInt32?.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let attacker = try await RawHTTP2Client(port: port, http2: false)
                    // The agent ends the connection while the flood is still being written.
                    try? await attacker.sendRaw(RawHTTP2Client.rapidResetBytes(count: 5000, path: "/berth.agent.v1.Node/WatchUsage"))
                    _ = await attacker.wait { $0.connectionClosed }
                    defer { Task { await attacker.close() } }
                    return RawHTTP2Client.goAwayCode(in: attacker.observed.rawReceived)
                }
            }
            for try await code in group {
                #expect(code != nil, "each rapid-reset connection ends with GOAWAY")
            }
        }

        // 5. Many idle connections that never speak: dropped after the sniffing timeout, not kept forever.
        var idle: [RawHTTP2Client] = []
        for _ in 0..<100 { idle.append(try await RawHTTP2Client(port: port, http2: false)) }

        try await Task.sleep(for: .milliseconds(500))
        let after = agent.residentBytes
        stop.withLock { $0 = true }
        try await good.value
        for client in idle { await client.close() }

        let (ok, failed) = monitor.state.withLock { ($0.ok, $0.failed) }
        #expect(failed.isEmpty, "the good client saw failures: \(failed.prefix(3))")
        #expect(ok > 10)
        // Bounded memory: the 16 MiB of a refused 100 MiB upload and 20,000
        // reset streams leave no lasting growth beyond a few buffers.
        #expect(after - baseline < 64 * 1024 * 1024, "resident memory grew from \(baseline) to \(after) bytes")
        #expect(agent.process.isRunning)
    }
}
