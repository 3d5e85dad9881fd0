@testable import BerthController
import BerthModel
import Foundation
import Testing

/// Replicas with health checks, in memory: running only once healthy,
/// unhealthy ones replaced, updates gated on health.
@Suite("health-gated replicas and updates")
struct HealthGatingTests {
    typealias World = PlannerWorld

    @Test("a replica whose container runs but is not yet healthy is starting; healthy, running; unhealthy, failed and replaced, the service saying why")
    func replicaStates() {
        let replica = Replica(id: "r1", serviceID: "s", serviceName: "web", slot: 1, version: 1, nodeID: "n", createdAt: World.start, updatedAt: World.start)
        let now = World.start + 2
        let starting = replica.applying(.container(id: "r1", ContainerReport(state: .running, health: .starting)), isJob: false, now: now)
        #expect(starting.state == .starting && starting.runningSince == nil)
        #expect(starting.message == "waiting for its health check to pass")
        let healthy = starting.applying(.container(id: "r1", ContainerReport(state: .running, health: .healthy)), isJob: false, now: now + 1)
        #expect(healthy.state == .running && healthy.runningSince == now + 1, "running counts from when it turned healthy")
        let unhealthy = healthy.applying(
            .container(id: "r1", ContainerReport(state: .running, health: .unhealthy, healthOutput: "connection refused")), isJob: false, now: now + 2)
        #expect(unhealthy.state == .failed && unhealthy.message == "unhealthy: connection refused")
        let restarting = healthy.applying(
            .container(id: "r1", ContainerReport(state: .running, health: .unhealthy, agentActsOnHealth: true)), isJob: false, now: now + 2)
        #expect(restarting.state == .starting, "its agent restarts it (--health-on-failure): not counted, not failed")

        // The planner replaces the unhealthy replica after the slot's backoff, and says why.
        var world = World(nodes: [World.node(1), World.node(2)], services: [World.service(replicas: 2)])
        world.run(seconds: 3)
        let victim = world.live.first { $0.slot == 1 }!
        let index = world.replicas.firstIndex { $0.id == victim.id }!
        world.replicas[index] = victim.applying(
            .container(id: victim.id, ContainerReport(state: .running, health: .unhealthy, healthOutput: "HTTP 500")), isJob: false, now: world.now)
        world.plan()
        #expect(world.replicas.first { $0.id == victim.id }?.desiredState == .shutdown)
        #expect(world.service("web").message.contains("unhealthy: HTTP 500"), "\(world.service("web").message)")
        world.run(seconds: 5)
        #expect(world.live.count == 2 && world.live.allSatisfy { $0.state == .running && $0.id != victim.id })
    }

    /// A check that passes for version 1, and for version 2 stays
    /// `starting` then turns unhealthy after `seconds`.
    static func failingAfter(_ seconds: Double) -> (Replica, Date) -> HealthStatus {
        { replica, now in replica.version == 1 ? .healthy : now.timeIntervalSince(replica.createdAt) >= seconds ? .unhealthy : .starting }
    }

    /// Runs the world a second at a time, up to `seconds` or until `done`,
    /// with agents that report each container running with the health
    /// `health` gives it; returns the fewest replicas counted running
    /// (healthy) after any pass, and the seconds it ran.
    @discardableResult
    static func run(
        _ world: inout World, seconds: Int, until done: (World) -> Bool = { _ in false }, health: (Replica, Date) -> HealthStatus = failingAfter(3)
    ) -> (fewest: Int, seconds: Int) {
        var fewest = Int.max
        var ran = 0
        while ran < seconds && !done(world) {
            world.plan()
            fewest = min(fewest, world.live.count { $0.state == .running })
            for i in world.replicas.indices where world.replicas[i].isAssigned && !world.replicas[i].removed {
                let replica = world.replicas[i]
                if replica.desiredState == .shutdown {
                    world.replicas[i] = replica.applying(.gone(id: replica.id), isJob: false, now: world.now)
                    continue
                }
                guard replica.state != .pending || (replica.notBefore ?? .distantPast) <= world.now else { continue }
                let status = health(replica, world.now)
                world.replicas[i] = replica.applying(
                    .container(id: replica.id, ContainerReport(state: .running, health: status, healthOutput: status == .unhealthy ? "never ready" : "")),
                    isJob: false, now: world.now)
            }
            fewest = min(fewest, world.live.count { $0.state == .running })
            world.now += 1
            ran += 1
        }
        world.plan()
        return (fewest, ran)
    }

    /// Two nodes and a 4-replica service (start-first, parallelism 1),
    /// its replicas healthy and running.
    static func fourHealthy(failureAction: UpdatePolicy.FailureAction, monitor: Double) -> World {
        var world = World(
            nodes: [World.node(1), World.node(2)],
            services: [World.service(replicas: 4, update: UpdatePolicy(parallelism: 1, monitor: monitor, order: .startFirst, failureAction: failureAction))])
        run(&world, seconds: 3)
        return world
    }

    @Test("start-first, parallelism 1, rollback: a version whose check never passes is rolled back, and 4 healthy replicas serve throughout")
    func rollbackOnHealth() {
        var world = Self.fourHealthy(failureAction: .rollback, monitor: 5)
        #expect(world.live.count { $0.state == .running } == 4)
        UpdateTests.update(&world, image: "bad")
        let fewest = Self.run(&world, seconds: 40).fewest
        let web = world.service("web")
        #expect(web.update?.state == .rolledBack, "\(String(describing: web.update))")
        #expect(web.update?.message.contains("unhealthy: never ready") == true, "\(String(describing: web.update?.message))")
        #expect(web.version == 1)
        #expect(world.live.count == 4 && world.live.allSatisfy { $0.version == 1 && $0.state == .running })
        #expect(fewest >= 3, "never fewer than 3 healthy: \(fewest)")
        #expect(Set(world.replicas.filter { $0.version == 2 }.map(\.slot)).count == 1, "one slot tried, then rolled back")
    }

    @Test("with pause, the update stops after the first replica that never turns healthy, and says why")
    func pauseOnHealth() {
        var world = Self.fourHealthy(failureAction: .pause, monitor: 5)
        UpdateTests.update(&world, image: "bad")
        let fewest = Self.run(&world, seconds: 30).fewest
        let web = world.service("web")
        #expect(web.update?.state == .paused)
        #expect(web.update?.message.hasPrefix("update paused: replica") == true && web.update?.message.contains("unhealthy") == true)
        #expect(web.message.contains("unhealthy"), "service ls/inspect show it: \(web.message)")
        #expect(fewest >= 3)
        #expect(world.live.count { $0.version == 1 && $0.state == .running } == 4)
    }

    @Test("a new replica settles only once healthy for the monitor: a healthy version goes through, batch by batch")
    func healthyUpdate() {
        var world = Self.fourHealthy(failureAction: .rollback, monitor: 2)
        UpdateTests.update(&world, image: "good")
        // Version 2 turns healthy after 3 s of starting.
        let (fewest, seconds) = Self.run(&world, seconds: 120, until: { $0.service("web").update?.state != .updating }) { replica, now in
            replica.version == 1 || now.timeIntervalSince(replica.createdAt) >= 3 ? .healthy : .starting
        }
        #expect(world.service("web").update?.state == .completed)
        #expect(world.live.count == 4 && world.live.allSatisfy { $0.version == 2 && $0.state == .running })
        // Four batches, each 3 s starting then 2 s of monitor: at least 20 s.
        #expect(seconds >= 20, "\(seconds) s")
        #expect(fewest >= 4, "start-first keeps the old one until the new one is healthy")
    }
}
