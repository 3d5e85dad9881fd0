import BerthAgent
import BerthAPI
import BerthModel
import BerthTesting
import BerthTransport
import Foundation
import GRPCCore
import Synchronization
import SwiftProtobuf
import Testing

/// The event log and `Events.Watch`, on a real database and a real gRPC
/// server and client (no agent process, no root).
@Suite("events: the log and Watch", .ownThreads, .timeLimit(.minutes(5)))
struct EventsTests {
    static func database(retention: Int = 100_000) throws -> (AgentDatabase, URL) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-events-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return (try AgentDatabase(path: dir.appendingPathComponent("agent.db").path, eventRetention: retention), dir)
    }

    static func pending(_ n: Int, container: String = "c1", name: String = "web") -> [AgentDatabase.PendingEvent] {
        (0..<n).map { i in
            .init(type: .container, action: i % 2 == 0 ? .start : .die, actorID: container, attributes: ["name": name, "n": String(i)])
        }
    }

    @Test("10,000 events written while a slow watcher reads: it sees all of them, in order, and the writer never waits for it")
    func slowWatcher() async throws {
        let (db, dir) = try Self.database()
        defer { try? FileManager.default.removeItem(at: dir) }
        try await TransportHarness.withServerAndClient(.unix, services: [EventsService(database: db, page: 500)]) { client, _, _ in
            let events = Berth_Agent_V1_Events.Client(wrapping: client)
            let writerDone = Mutex<Int?>(nil)
            async let written: Void = {
                for batch in 0..<100 {
                    try db.append(Self.pending(100))
                    if batch % 10 == 0 { try await Task.sleep(for: .milliseconds(5)) }
                }
            }()
            var options = CallOptions.defaults
            options.timeout = .seconds(240)
            let seen = try await events.watch(.with { $0.fromRevision = 0 }, options: options) { response in
                var seen: [UInt64] = []
                for try await message in response.messages {
                    seen.append(message.event.revision)
                    if seen.count % 250 == 0 {
                        // A slow consumer: it falls behind the writer on purpose.
                        try await Task.sleep(for: .milliseconds(20))
                        if writerDone.withLock({ $0 }) == nil, (try? db.eventBounds().latest) == 10_000 {
                            let count = seen.count
                            writerDone.withLock { $0 = count }
                        }
                    }
                    if seen.count == 10_000 { break }
                }
                return seen
            }
            try await written
            #expect(seen == Array(1...10_000), "every revision once, in order")
            let behind = try #require(writerDone.withLock { $0 }, "the writer finished while the watcher was still reading")
            #expect(behind < 10_000)
        }
    }

    @Test("a revision older than the log keeps is refused naming the oldest kept; a future one is refused; from 0 starts at the oldest; live_only sees only new events")
    func retention() async throws {
        let (db, dir) = try Self.database(retention: 100)
        defer { try? FileManager.default.removeItem(at: dir) }
        try db.append(Self.pending(300))
        let bounds = try db.eventBounds()
        #expect(bounds.oldest == 201 && bounds.latest == 300)
        let metrics = AgentMetrics()
        try await TransportHarness.withServerAndClient(.unix, services: [EventsService(database: db, metrics: metrics)]) { client, _, _ in
            let events = Berth_Agent_V1_Events.Client(wrapping: client)
            do {
                try await events.watch(.with { $0.fromRevision = 50 }) { response in for try await _ in response.messages {} }
                Issue.record("a compacted revision was accepted")
            } catch let error as RPCError {
                #expect(error.code == .failedPrecondition)
                #expect(error.message.contains("the oldest revision kept is 201"), "\(error.message)")
            }
            #expect(metrics.text.contains("berth_event_watches_behind_total 1"), "the cut-off watch is counted")
            do {
                try await events.watch(.with { $0.fromRevision = 301 }) { response in for try await _ in response.messages {} }
                Issue.record("a future revision was accepted")
            } catch let error as RPCError {
                #expect(error.code == .outOfRange)
                #expect(error.message == "revision 301 is in the future: the latest revision is 300", "\(error.message)")
            }
            func first(_ request: Berth_Agent_V1_WatchEventsRequest, count: Int) async throws -> [UInt64] {
                try await events.watch(request) { response in
                    var revisions: [UInt64] = []
                    for try await message in response.messages {
                        revisions.append(message.event.revision)
                        if revisions.count == count { break }
                    }
                    return revisions
                }
            }
            #expect(try await first(.with { $0.fromRevision = 0 }, count: 3) == [201, 202, 203])
            #expect(try await first(.with { $0.fromRevision = 250 }, count: 2) == [251, 252])
            // Live only: nothing old, only what comes after the watch began
            // (an event every 100 ms until the watcher has one).
            async let live = first(.with { $0.liveOnly = true }, count: 1)
            let feeder = Task {
                while !Task.isCancelled {
                    try db.append(Self.pending(1))
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            let received = try await live
            feeder.cancel()
            #expect(received.count == 1 && received[0] > 300, "\(received)")
        }
    }

    @Test("filters: type, container by name or ID prefix, event; different keys must all match; an unknown key is refused")
    func filters() async throws {
        let (db, dir) = try Self.database()
        defer { try? FileManager.default.removeItem(at: dir) }
        try db.append(Self.pending(4, container: "aaaa1111", name: "web"))
        try db.append(Self.pending(4, container: "bbbb2222", name: "db"))
        try db.append([.init(type: .image, action: .tag, actorID: "sha256:1234", attributes: ["name": "busybox:latest"])])
        try await TransportHarness.withServerAndClient(.unix, services: [EventsService(database: db)]) { client, _, _ in
            let events = Berth_Agent_V1_Events.Client(wrapping: client)
            func matching(_ filters: [(String, [String])], count: Int) async throws -> [Berth_Agent_V1_Event] {
                try await events.watch(.with { r in r.filters = filters.map { f in .with { $0.key = f.0; $0.values = f.1 } } }) { response in
                    var out: [Berth_Agent_V1_Event] = []
                    for try await message in response.messages {
                        out.append(message.event)
                        if out.count == count { break }
                    }
                    return out
                }
            }
            #expect(try await matching([("type", ["image"])], count: 1).map(\.action) == ["tag"])
            let web = try await matching([("container", ["web"])], count: 4)
            #expect(web.allSatisfy { $0.actorID == "aaaa1111" })
            let dbDies = try await matching([("container", ["bbbb"]), ("event", ["die"])], count: 2)
            #expect(dbDies.allSatisfy { $0.actorID == "bbbb2222" && $0.action == "die" })
            do {
                _ = try await matching([("colour", ["red"])], count: 1)
                Issue.record("an unknown filter was accepted")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument)
                #expect(error.message.contains("supported filters are type, container, image and event"))
            }
        }
    }
}

@Suite("events: across an agent restart (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct EventsRestartTests {
    @Test("kill -9 of the agent mid-watch: the watcher resumes from its last revision with no gap and no duplicate")
    func resume() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let seen = SeenEvents()
        let agent = host.agent
        // Watch from the start while a container comes and goes; the agent then dies under the watch.
        let watcher = Task { try await agent.watchEvents(from: 0, into: seen, until: { _ in false }) }
        #expect(try await host.berth(["run", "--rm", "--name", "one", "busybox", "true"]).status == 0)
        for _ in 0..<100 where !seen.withLock({ $0.contains { $0.action == "destroy" } }) { try await Task.sleep(for: .milliseconds(50)) }
        kill(agent.pid, SIGKILL)
        agent.process.waitUntilExit()
        do {
            try await watcher.value
            Issue.record("the watch ended without an error although the agent died")
        } catch {}
        let beforeCrash = seen.withLock { $0 }
        #expect(beforeCrash.contains { $0.action == "destroy" && $0.attributes["name"] == "one" })

        // A new agent on the same directories; more events; the watcher resumes after its last revision.
        let second = try await AgentProcess(tcp: false, directory: agent.directory, cgroupParent: agent.cgroupParent)
        defer { second.cleanUp() }
        #expect(try await second.berth(["run", "--rm", "--name", "two", "busybox", "true"]).status == 0)
        let last = try #require(beforeCrash.last?.revision)
        try await second.watchEvents(from: last, into: seen) { events in
            events.contains { $0.action == "destroy" && $0.attributes["name"] == "two" }
        }
        let revisions = seen.withLock { $0.map(\.revision) }
        #expect(revisions == Array(1...UInt64(revisions.count)), "every revision once, in order: \(revisions)")
        let actions = seen.withLock { $0.filter { $0.attributes["name"] == "two" }.map(\.action) }
        #expect(actions == ["create", "start", "die", "destroy"], "\(actions)")
    }
}
