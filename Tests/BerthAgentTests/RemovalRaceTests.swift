import BerthModel
import BerthTesting
import Foundation
import Testing

/// A create and the removal of what it uses, raced: the agent orders them
/// (the container exists and the removal is refused, or the removal came
/// first), and never leaves a container whose volume, network or image is gone.
@Suite("removals racing creates (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(10)))
struct RemovalRaceTests {
    static let rounds = 200

    /// Runs `round` for 0..<rounds, `width` at a time; the results in order.
    static func race<T: Sendable>(width: Int = 8, _ round: @escaping @Sendable (Int) async throws -> T) async throws -> [T] {
        try await withThrowingTaskGroup(of: (Int, T).self) { group in
            var results: [Int: T] = [:]
            var next = 0
            while next < min(width, rounds) {
                let i = next
                group.addTask { (i, try await round(i)) }
                next += 1
            }
            for try await (i, result) in group {
                results[i] = result
                if next < rounds {
                    let i = next
                    group.addTask { (i, try await round(i)) }
                    next += 1
                }
            }
            return (0..<rounds).map { results[$0]! }
        }
    }

    @Test("create -v VOLUME against volume rm VOLUME, 200 races: a container's volume is always there")
    func volumes() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let outcomes = try await Self.race { i in
            let made = try await host.berth(["volume", "create", "race\(i)"])
            #expect(made.status == 0, "\(made.stderr)")
            async let created = host.berth(["create", "--name", "c\(i)", "-v", "race\(i):/data", "busybox", "true"])
            async let removed = host.berth(["volume", "rm", "race\(i)"])
            let (c, r) = try await (created, removed)
            // Made again by the create if the removal came first: either way it is there.
            let there = try await host.berth(["volume", "inspect", "race\(i)"]).status == 0
            return (c.status == 0, r.status == 0, there)
        }
        for (i, (created, _, there)) in outcomes.enumerated() where created {
            #expect(there, "c\(i) was made; its volume race\(i) is gone")
        }
        #expect(outcomes.allSatisfy { $0.0 }, "every create succeeds (it makes the volume again if it was removed)")
    }

    @Test("create --network NET against network rm NET, 200 races: a container's network is always there")
    func networks() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let outcomes = try await Self.race { i in
            let made = try await host.berth(["network", "create", "racenet\(i)"])
            #expect(made.status == 0, "\(made.stderr)")
            async let created = host.berth(["create", "--name", "n\(i)", "--network", "racenet\(i)", "busybox", "true"])
            async let removed = host.berth(["network", "rm", "racenet\(i)"])
            let (c, r) = try await (created, removed)
            let there = try await host.berth(["network", "inspect", "racenet\(i)"]).status == 0
            // One network at a time per worker: the container, then the network, go.
            if c.status == 0 { _ = try await host.berth(["rm", "n\(i)"]) }
            if there { _ = try await host.berth(["network", "rm", "racenet\(i)"]) }
            return (c.status == 0, r.status == 0, there)
        }
        for (i, (created, removed, there)) in outcomes.enumerated() {
            if created { #expect(there && !removed, "n\(i) was made; its network racenet\(i) is gone") }
            #expect(created != removed, "round \(i): exactly one of the create and the removal succeeds")
        }
    }

    @Test("create IMAGE against rmi IMAGE, 200 races: a container's image is always there")
    func images() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let tar = try TestImage.tar.get()
        let outcomes = try await Self.race(width: 1) { i in
            // The image has one name, and no container uses it: rmi deletes it.
            let made = try await host.berth(["image", "import", tar, "solo"])
            #expect(made.status == 0, "\(made.stderr)")
            _ = try await host.berth(["rmi", "busybox"])
            async let created = host.berth(["create", "--pull", "never", "--name", "i\(i)", "solo", "true"])
            async let removed = host.berth(["rmi", "solo"])
            let (c, r) = try await (created, removed)
            var there = false
            if c.status == 0 {
                let image = try await host.inspect("i\(i)").imageID
                there = try await host.berth(["image", "inspect", image]).status == 0
                _ = try await host.berth(["rm", "i\(i)"])
                _ = try await host.berth(["rmi", "-f", image])
            }
            return (c.status == 0, r.status == 0, there)
        }
        for (i, (created, removed, there)) in outcomes.enumerated() {
            if created { #expect(there && !removed, "i\(i) was made; its image is gone") }
            #expect(created != removed, "round \(i): exactly one of the create and the removal succeeds")
        }
    }
}
