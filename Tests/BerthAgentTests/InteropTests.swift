import BerthTesting
import Foundation
import Testing

/// Clients that are not Berth's own: a C client built with nghttp2 and
/// protobuf-c, and Python's grpcio. Both must work against a running agent.
@Suite("Interop with standard gRPC clients", .ownThreads, .timeLimit(.minutes(5)))
struct InteropTests {
    @Test("the C client (nghttp2 + protobuf-c) calls Version and a server stream, and cancels one", .timeLimit(.minutes(3)))
    func cClient() async throws {
        let build = FileManager.default.temporaryDirectory.appendingPathComponent("berth-interop-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: build) }
        let script = BuildProducts.root.appendingPathComponent("Tests/Interop/c-client/build.sh")
        let built = try await runCommand(URL(fileURLWithPath: "/bin/bash"), [script.path, build.path])
        try #require(built.status == 0, "building the C client failed:\n\(built.stdout)\n\(built.stderr)")

        let agent = try await AgentProcess()
        defer { agent.cleanUp() }
        for address in ["unix://\(agent.socketPath)", "tcp://127.0.0.1:\(agent.tcpPort!)"] {
            let run = try await runCommand(build.appendingPathComponent("berth-interop"), [address], timeout: .seconds(60))
            #expect(run.status == 0, "berth-interop \(address):\n\(run.stdout)\n\(run.stderr)")
            #expect(run.stdout.contains("version=0.1.0"))
            #expect(run.stdout.contains("usage sequence=3"))
            #expect(run.stdout.contains("cancelled after 1 message"))
            #expect(run.stdout.contains("unknown_method status=12"))
        }
    }

    @Test("Python grpcio calls Version, Info and WatchUsage, with a deadline", .timeLimit(.minutes(3)))
    func python() async throws {
        let agent = try await AgentProcess()
        defer { agent.cleanUp() }
        let script = BuildProducts.root.appendingPathComponent("Tests/Interop/python/interop.py")
        for address in ["unix://\(agent.socketPath)", "127.0.0.1:\(agent.tcpPort!)"] {
            let run = try await runCommand(URL(fileURLWithPath: "/usr/bin/env"), ["python3", script.path, address], timeout: .seconds(90))
            #expect(run.status == 0, "interop.py \(address):\n\(run.stdout)\n\(run.stderr)")
            #expect(run.stdout.contains("all checks passed"))
        }
    }
}
