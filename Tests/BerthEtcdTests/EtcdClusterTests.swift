import BerthEtcd
import BerthModel
import BerthTesting
import BerthTransport
import Testing

/// The client on three real members, one or two of them down.
@Suite("the etcd client on a three-member cluster", .serialized)
struct EtcdClusterTests {
    @Test(
        "one member killed: reads, writes and a watch go on through the others; two down: a write fails saying the store has no quorum within the timeout per member; back: writes work"
    )
    func quorum() async throws {
        try await EtcdProcesses.with(members: 3) { etcd in
            let timeout = Duration.seconds(2)
            let client = etcd.client(requestTimeout: timeout)
            defer { client.close() }
            let start = try await client.put("/q/before", Array("0".utf8))
            let seen = Seen()
            let watching = Task {
                try await client.watch("/q/", prefix: true, from: start + 1) { events, revision in
                    _ = seen.add(events, revision)
                    if events.contains(where: { $0.key == "/q/one-down" }) { throw Enough() }
                }
            }
            try await Task.sleep(for: .milliseconds(300))

            // The member calls start at (the first) goes.
            etcd.kill(0)
            try await client.put("/q/one-down", Array("1".utf8))
            #expect(try await client.range("/q/one-down").values.first?.value == Array("1".utf8))
            #expect(try await client.range("/q/", prefix: true).values.count == 2)
            let watched = try await within(.seconds(10), "the watch resuming on another member") { await watching.result }
            #expect(throws: Enough.self) { try watched.get() }
            #expect(seen.events.map(\.key).contains("/q/one-down"))
            let statuses = await client.status()
            #expect(statuses[0].error != nil && statuses[1].error == nil && statuses[2].error == nil)

            // A second member frozen: no quorum.
            etcd.pause(1)
            let began = ContinuousClock.now
            do {
                try await client.put("/q/two-down", Array("2".utf8))
                Issue.record("a write was taken without a quorum")
            } catch let error as BerthError {
                let took = began.duration(to: .now)
                #expect(error.code == .unavailable)
                #expect(error.message.hasPrefix("the store has no quorum"), "\(error.message)")
                for endpoint in etcd.endpoints {
                    guard case .tcp(host: let host, port: let port) = endpoint else { continue }
                    #expect(error.message.contains("\(host):\(port)"), "\(error.message)")
                }
                #expect(took <= timeout * 3 + .milliseconds(500), "it took \(took)")
            }

            // Both back: writes work again.
            etcd.resume(1)
            try await etcd.restart(0)
            let written = try await within(.seconds(20), "a write after the members came back") {
                while true {
                    do {
                        return try await client.put("/q/back", Array("3".utf8))
                    } catch let error as BerthError where error.code == .unavailable {
                        try await Task.sleep(for: .milliseconds(200))
                    }
                }
            }
            #expect(written > start)
            // The refused write may land yet: a leader without a quorum keeps
            // it in its log, and commits it once the quorum is back.
            let keys = try await client.range("/q/", prefix: true).values.map(\.key)
            #expect(keys == ["/q/back", "/q/before", "/q/one-down"] || keys == ["/q/back", "/q/before", "/q/one-down", "/q/two-down"], "\(keys)")
        }
    }

    @Test("the raft leader killed under concurrent transactions: every call ends (taken, or refused) within its deadline, and calls go on after")
    func concurrentCallsThroughLeaderLoss() async throws {
        try await EtcdProcesses.with(members: 3) { etcd in
            let timeout = Duration.seconds(2)
            let client = etcd.client(requestTimeout: timeout)
            defer { client.close() }
            try await client.put("/c/node", Array("n".utf8))
            let raftLeader = await client.status().firstIndex(where: \.isLeader) ?? 0
            let slowest = Shared(Duration.zero)
            let stop = Shared(false)
            let calls = Task {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for worker in 0..<6 {
                        group.addTask {
                            var n = 0
                            while !stop.value {
                                let began = ContinuousClock.now
                                _ = try? await client.txn(if: [.present("/c/node")], then: [.put("/c/\(worker)", Array("\(n)".utf8))], else: [])
                                let took = began.duration(to: .now)
                                slowest.update { $0 = max($0, took) }
                                n += 1
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            try await Task.sleep(for: .milliseconds(500))
            etcd.kill(raftLeader)
            try await Task.sleep(for: .seconds(4))
            stop.value = true
            try await within(timeout * 3 + .seconds(2), "the calls under way to end") { try await calls.value }
            #expect(slowest.value <= timeout * 3 + .seconds(1), "the slowest call took \(slowest.value)")
            let written = try await within(.seconds(10), "a write after") { try await client.put("/c/after", Array("a".utf8)) }
            #expect(written > 0)
        }
    }

    @Test("the raft leader killed under calls that their callers cancel (an agent's heartbeat past its deadline): every call ends at once when cancelled")
    func cancelledCallsThroughLeaderLoss() async throws {
        try await EtcdProcesses.with(members: 3) { etcd in
            let client = etcd.client(requestTimeout: .seconds(5))
            defer { client.close() }
            try await client.put("/c/node", Array("n".utf8))
            let raftLeader = await client.status().firstIndex(where: \.isLeader) ?? 0
            let slowest = Shared(Duration.zero)
            let stop = Shared(false)
            let calls = Task {
                await withTaskGroup(of: Void.self) { group in
                    for worker in 0..<6 {
                        group.addTask {
                            var n = 0
                            while !stop.value {
                                let value = Array("\(n)".utf8)
                                let call = Task {
                                    _ = try? await client.txn(if: [.present("/c/node")], then: [.put("/c/\(worker)", value)], else: [])
                                }
                                try? await Task.sleep(for: .milliseconds(50 + 37 * worker % 400))
                                let cancelled = ContinuousClock.now
                                call.cancel()
                                await call.value
                                slowest.update { $0 = max($0, cancelled.duration(to: .now)) }
                                n += 1
                            }
                        }
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(500))
            etcd.kill(raftLeader)
            try await Task.sleep(for: .seconds(4))
            stop.value = true
            try await within(.seconds(10), "the calls under way to end") { await calls.value }
            #expect(slowest.value < .seconds(1), "a cancelled call took \(slowest.value) to end")
            let written = try await within(.seconds(10), "a write after") { try await client.put("/c/after", Array("a".utf8)) }
            #expect(written > 0)
        }
    }

    @Test("a member frozen (SIGSTOP) under concurrent calls, with a watch open on it: every call ends by its deadline")
    func deadlinesOnFrozenMember() async throws {
        try await EtcdProcesses.with(members: 1) { etcd in
            let client = etcd.client(requestTimeout: .seconds(1))
            defer { client.close() }
            try await client.put("/f/node", Array("n".utf8))
            let watching = Task { try? await client.watch("/f/", prefix: true) { _, _ in } }
            defer { watching.cancel() }
            try await Task.sleep(for: .milliseconds(300))
            etcd.pause(0)
            defer { etcd.resume(0) }
            for round in 0..<3 {
                let slowest = Shared(Duration.zero)
                try await within(.seconds(20), "round \(round) of calls to end") {
                    await withTaskGroup(of: Void.self) { group in
                        for worker in 0..<12 {
                            group.addTask {
                                try? await Task.sleep(for: .milliseconds(worker * 7))
                                let began = ContinuousClock.now
                                _ = try? await client.txn(if: [.present("/f/node")], then: [.put("/f/\(worker)", [1])], else: [])
                                slowest.update { $0 = max($0, began.duration(to: .now)) }
                            }
                        }
                    }
                }
                #expect(slowest.value < .seconds(3), "round \(round): the slowest call took \(slowest.value)")
            }
        }
    }
}
