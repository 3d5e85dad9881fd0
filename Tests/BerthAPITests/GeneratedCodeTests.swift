import BerthLinux
import Foundation
import Testing

/// The generated Swift under Sources/BerthAPI/Generated, the generated C
/// under Sources/berth/generated, and etcd's client under
/// Sources/BerthEtcd/Generated must be exactly what scripts/generate-protos
/// makes from proto/ and etcd's protos today.
@Suite("Generated protobuf code")
struct GeneratedCodeTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("the committed code is not stale", .timeLimit(.minutes(20)))
    func notStale() async throws {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("berth-generated-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: output) }
        let swift = output.appendingPathComponent("swift")
        let c = output.appendingPathComponent("c")
        let etcd = output.appendingPathComponent("etcd")
        // Foundation's Process would park a thread of the shared pool for good;
        // Berth's own spawner does not.
        let environment = ProcessInfo.processInfo.environment.map { "\($0)=\($1)" }
        let result = try await Processes.run(
            "/bin/bash", ["-c", "cd \"$0\" && scripts/generate-protos \"$1\" \"$2\" \"$3\"", Self.root.path, swift.path, c.path, etcd.path],
            environment: environment, timeout: .seconds(1200))
        try #require(result.status == 0, "scripts/generate-protos failed:\n\((result.stdout + result.stderr).suffix(2000))")

        try Self.expectSame(fresh: swift, committed: Self.root.appendingPathComponent("Sources/BerthAPI/Generated"), suffixes: [".swift"])
        try Self.expectSame(fresh: c, committed: Self.root.appendingPathComponent("Sources/berth/generated"), suffixes: [".pb-c.c", ".pb-c.h"])
        try Self.expectSame(fresh: etcd, committed: Self.root.appendingPathComponent("Sources/BerthEtcd/Generated"), suffixes: [".swift"])
    }

    /// The files under both trees whose names end in one of `suffixes` are the same files, byte for byte.
    static func expectSame(fresh: URL, committed: URL, suffixes: [String]) throws {
        func files(_ dir: URL) throws -> Set<String> {
            let all = try FileManager.default.subpathsOfDirectory(atPath: dir.path)
            return Set(all.filter { path in suffixes.contains { path.hasSuffix($0) } })
        }
        let made = try files(fresh)
        let existing = try files(committed)
        #expect(!made.isEmpty)
        #expect(made == existing, "generated files under \(committed.lastPathComponent) differ: run scripts/generate-protos")
        for name in made.intersection(existing).sorted() {
            let a = try Data(contentsOf: fresh.appendingPathComponent(name))
            let b = try Data(contentsOf: committed.appendingPathComponent(name))
            #expect(a == b, "\(name) is stale: run scripts/generate-protos and commit the result")
        }
    }
}
