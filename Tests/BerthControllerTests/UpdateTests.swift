@testable import BerthController
import BerthModel
import Foundation
import Testing

@Suite("rolling updates: batches, the monitor, failure actions, rollback")
struct UpdateTests {
    typealias World = PlannerWorld

    /// A world whose `web` runs 6 replicas of version 1, steadily.
    static func running(_ update: UpdatePolicy, replicas: Int = 6, nodes: Int = 3) -> World {
        var world = World(nodes: (1...nodes).map { World.node($0) }, services: [World.service(replicas: replicas, update: update)])
        world.run(seconds: 12)
        return world
    }

    /// Updates `web` as `service update` does: the old spec kept, a new version.
    static func update(_ world: inout World, image: String = "busybox:2", _ change: (inout ServiceSpec) -> Void = { _ in }) {
        var service = world.service("web")
        let next = max(service.version, service.previous?.version ?? 0) + 1
        service.previous = VersionedSpec(version: service.version, spec: service.spec)
        service.version = next
        service.spec.container.image = image
        change(&service.spec)
        service.update = UpdateStatus(state: .updating, startedAt: world.now)
        world.services[0] = service
    }

    @Test("an update replaces `parallelism` replicas at a time, each batch only after the last has run for the monitor, then completes")
    func batches() {
        var world = Self.running(UpdatePolicy(parallelism: 2, monitor: 5))
        Self.update(&world)
        var maxInFlight = 0
        var seconds = 0
        while world.service("web").update?.state == .updating && seconds < 120 {
            world.plan()
            let inFlight = world.live.count { $0.version == 2 && !ServicePlanner.isSettled($0, monitor: 5, now: world.now) }
            maxInFlight = max(maxInFlight, inFlight)
            world.agentsAct()
            world.now += 1
            seconds += 1
        }
        #expect(world.service("web").update?.state == .completed)
        #expect(maxInFlight == 2, "\(maxInFlight)")
        #expect(world.live.count == 6 && world.live.allSatisfy { $0.version == 2 })
        // Three batches, each held for the monitor (5 s): at least 15 s.
        #expect(seconds >= 15, "\(seconds) s")
    }

    @Test("--update-delay waits between batches")
    func delay() {
        var world = Self.running(UpdatePolicy(parallelism: 3, delay: 20, monitor: 1))
        Self.update(&world)
        var seconds = 0
        while world.service("web").update?.state == .updating && seconds < 200 {
            world.plan()
            world.agentsAct()
            world.now += 1
            seconds += 1
        }
        #expect(world.service("web").update?.state == .completed && seconds >= 21, "\(seconds) s")
    }

    @Test("replicas that exit at once fail the monitor: with parallelism 2, exactly 2 are replaced, the update pauses, and the old ones keep serving")
    func pauseOnFailure() {
        var world = Self.running(UpdatePolicy(parallelism: 2, monitor: 5))
        Self.update(&world, image: "bad")
        world.run(seconds: 30, failing: { $0.version == 2 ? 1 : nil })
        let web = world.service("web")
        #expect(web.update?.state == .paused, "\(String(describing: web.update))")
        #expect(web.update?.message.contains("update paused: replica") == true && web.update?.message.contains("of version 2 failed") == true)
        let everVersion2 = Set(world.replicas.filter { $0.version == 2 }.map(\.slot))
        #expect(everVersion2.count == 2, "only the first batch's slots were tried: \(everVersion2)")
        #expect(world.live.count == 6 && world.live.allSatisfy { $0.version == 1 && $0.state == .running }, "the failed slots are back on version 1")
        // A paused update places nothing on the new version, also after a node's loss.
        world.nodes[0].state = .down
        world.run(seconds: 5, failing: { $0.version == 2 ? 1 : nil })
        #expect(world.live.count == 6 && world.live.allSatisfy { $0.version == 1 && $0.nodeID != world.nodes[0].id })
        #expect(!world.replicas.contains { $0.version == 2 && $0.createdAt > PlannerWorld.start + 30 + 12 })
    }

    @Test("--update-failure-action rollback restores the previous spec batch by batch; service rollback does so on request")
    func rollback() {
        var world = Self.running(UpdatePolicy(parallelism: 2, monitor: 3, failureAction: .rollback))
        Self.update(&world, image: "bad")
        world.run(seconds: 40, failing: { $0.version == 2 ? 1 : nil })
        var web = world.service("web")
        #expect(web.update?.state == .rolledBack, "\(String(describing: web.update))")
        #expect(web.version == 1 && web.spec.container.image == "busybox" && web.previous?.version == 2)
        #expect(world.live.count == 6 && world.live.allSatisfy { $0.version == 1 && $0.state == .running })

        // A good update, then a rollback asked for: back to version 1's spec.
        Self.update(&world, image: "busybox:3")
        world.run(seconds: 40)
        web = world.service("web")
        #expect(web.update?.state == .completed && world.live.allSatisfy { $0.version == 3 })
        web.previous = VersionedSpec(version: 3, spec: web.spec)
        web.spec.container.image = "busybox"
        web.version = 1
        web.update = UpdateStatus(state: .rollingBack, startedAt: world.now)
        world.services[0] = web
        world.run(seconds: 40)
        #expect(world.service("web").update?.state == .rolledBack && world.live.allSatisfy { $0.version == 1 })
    }

    @Test("--update-max-failure-ratio tolerates that share of failures; continue goes on regardless")
    func failureRatio() {
        var world = Self.running(UpdatePolicy(parallelism: 1, monitor: 1, maxFailureRatio: 0.5), replicas: 4)
        Self.update(&world)
        // Slot 1's new replica fails once (1 of 4 is under the ratio); the update goes on.
        var failedOnce = false
        world.run(seconds: 60, failing: { replica in
            guard replica.version == 2, replica.slot == 1, !failedOnce else { return nil }
            failedOnce = true
            return 1
        })
        #expect(world.service("web").update?.state == .completed && world.live.allSatisfy { $0.version == 2 })

        var going = Self.running(UpdatePolicy(parallelism: 2, monitor: 1, failureAction: .continue), replicas: 4)
        Self.update(&going, image: "bad")
        going.run(seconds: 20, failing: { $0.version == 2 ? 1 : nil })
        #expect(going.service("web").update?.state == .updating)
        #expect(Set(going.replicas.filter { $0.version == 2 }.map(\.slot)) == [1, 2, 3, 4], "continue tries every slot")
    }

    @Test("start-first: the new replica runs before the old one in its slot stops")
    func startFirst() {
        var world = Self.running(UpdatePolicy(parallelism: 1, monitor: 1, order: .startFirst), replicas: 2)
        Self.update(&world)
        world.plan()
        let slot1 = world.live.filter { $0.slot == 1 }
        #expect(slot1.count == 2 && slot1.contains { $0.version == 1 && $0.state == .running }, "both, while the new one starts")
        world.agentsAct()
        world.plan()
        #expect(world.live.filter { $0.slot == 1 }.map(\.version) == [2], "the old one goes once the new one runs")
        world.run(seconds: 10)
        #expect(world.service("web").update?.state == .completed && world.live.count == 2)
    }

    @Test("a scale is no update: no replica is replaced")
    func scaleIsNoUpdate() {
        var world = Self.running(UpdatePolicy(), replicas: 2)
        let before = Set(world.live.map(\.id))
        world.services[0].spec.replicas = 3
        world.plan()
        #expect(before.isSubset(of: Set(world.live.map(\.id))) && world.live.count == 3)
    }
}
