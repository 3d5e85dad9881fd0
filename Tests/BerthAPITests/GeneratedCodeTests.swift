import BerthLinux
import Foundation
import Testing

/// The generated Swift under Sources/BerthAPI/Generated must be exactly what
/// scripts/generate-protos makes from proto/ today.
@Suite("Generated protobuf code")
struct GeneratedCodeTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("the committed code is not stale", .timeLimit(.minutes(20)))
    func notStale() async throws {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("berth-generated-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: output) }
        // Foundation's Process would park a thread of the shared pool for good;
        // Berth's own spawner does not.
        let environment = ProcessInfo.processInfo.environment.map { "\($0)=\($1)" }
        let result = try await Processes.run(
            "/bin/bash", ["-c", "cd \"$0\" && scripts/generate-protos \"$1\"", Self.root.path, output.path], environment: environment,
            timeout: .seconds(1200))
        try #require(result.status == 0, "scripts/generate-protos failed:\n\((result.stdout + result.stderr).suffix(2000))")

        let committed = Self.root.appendingPathComponent("Sources/BerthAPI/Generated")
        let fresh = try Set(FileManager.default.contentsOfDirectory(atPath: output.path).filter { $0.hasSuffix(".swift") })
        let existing = try Set(FileManager.default.contentsOfDirectory(atPath: committed.path).filter { $0.hasSuffix(".swift") })
        #expect(fresh == existing, "generated files differ: run scripts/generate-protos")
        for name in fresh.intersection(existing).sorted() {
            let a = try Data(contentsOf: output.appendingPathComponent(name))
            let b = try Data(contentsOf: committed.appendingPathComponent(name))
            #expect(a == b, "\(name) is stale: run scripts/generate-protos and commit the result")
        }
    }
}
