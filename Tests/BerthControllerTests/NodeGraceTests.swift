@testable import BerthController
import BerthModel
import Foundation
import Logging
import Synchronization
import BerthTesting
import Testing

/// The registry's grace period on a time the test moves: no sleeps.
@Suite("node grace on an injected clock")
struct NodeGraceTests {
    final class ManualTime: Sendable {
        private let value = Mutex(Duration.seconds(1000))
        func advance(_ by: Duration) { value.withLock { $0 += by } }
        var read: @Sendable () -> Duration { { self.value.withLock { $0 } } }
    }

    func makeRegistry(_ store: TestStore, _ time: ManualTime) async throws -> NodeRegistry {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return try await NodeRegistry(store: store.store, grace: .seconds(10), heartbeatInterval: .seconds(2), logger: logger, now: time.read)
    }

    @Test("a node is down once no heartbeat came for longer than the grace period; a heartbeat renews it; a restarted controller gives a full grace again", arguments: StoreKind.allCases)
    func grace(_ kind: StoreKind) async throws {
        let store = try await TestStore(kind)
        defer { store.close() }
        let time = ManualTime()
        let registry = try await makeRegistry(store, time)
        let id = "0123456789abcdef0123456789abcdef"
        let node = try await SecurityTests.register(registry, id, peer: nil)
        #expect(node.state == .ready)
        time.advance(.seconds(9))
        #expect(await registry.sweep().isEmpty, "9 s of a 10 s grace")
        #expect(try await registry.heartbeat(id: id))
        time.advance(.seconds(10))
        #expect(await registry.sweep().isEmpty, "exactly the grace since the heartbeat")
        time.advance(.milliseconds(1))
        #expect(await registry.sweep().map(\.id) == [id])
        #expect(await registry.list().first?.state == .down)
        #expect(await registry.sweep().isEmpty, "down once")
        #expect(try await registry.heartbeat(id: id))
        #expect(await registry.list().first?.state == .ready, "a heartbeat brings it back")

        // A new controller on the same store: every node gets a full grace
        // (and the agents' retry interval) from when it begins to serve.
        time.advance(.seconds(60))
        let restarted = try await makeRegistry(store, time)
        await restarted.renewAll()
        time.advance(.seconds(10) + ClusterNode.retryInterval)
        #expect(await restarted.sweep().isEmpty)
        time.advance(.milliseconds(1))
        #expect(await restarted.sweep().map(\.id) == [id])
    }
}
