import BerthAPI
@testable import BerthAgent
import BerthCgroups
import BerthModel
import BerthTesting
import Foundation
import GRPCCore
import SwiftProtobuf
import Testing

/// `Containers.Stats` and `berth stats` against the kernel's own files.
@Suite("stats (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct StatsTests {
    @Test("berth stats memory is the cgroup's usage minus inactive_file; limit and pids are the cgroup's")
    func memoryMatchesCgroup() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        // About 8 MB held in a shell variable while the shell waits.
        let started = try await host.berth([
            "run", "-d", "--name", "holder", "-m", "96m", "--pids-limit", "40", "busybox", "sh", "-c",
            "x=$(head -c 8000000 /dev/zero | tr '\\0' a); sleep 1000; echo ${#x}",
        ])
        #expect(started.status == 0, "\(started.stderr)")
        var c = try await host.inspect("holder")
        // Ready once the memory settles: two reads a while apart agree.
        var last: UInt64 = 0
        for _ in 0..<50 {
            try await Task.sleep(for: .milliseconds(200))
            let now = try host.memoryUsage(c)
            if now > 4_000_000 && now == last { break }
            last = now
        }
        c = try await host.inspect("holder")

        let result = try await host.berth(["stats", "--no-stream", "--format", "json", "holder"])
        #expect(result.status == 0, "\(result.stderr)")
        let usage = try host.memoryUsage(c)
        let inactive = try host.cgroupValue(c, "memory", "memory.stat", ContainerHost.unifiedHierarchy ? "inactive_file" : "total_inactive_file")
        let row = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)")
        let shown = try #require(row["memoryUsage"] as? Int)
        let expected = Int(usage) - Int(inactive)
        #expect(abs(shown - expected) <= 64 * 1024, "stats \(shown), cgroup \(usage) − \(Int(inactive)) = \(expected)")
        #expect(shown > 8_000_000, "the 8 MB the shell holds are counted: \(shown)")
        #expect(row["memoryLimit"] as? Int == 96 << 20)
        #expect(row["pids"] as? Int == Int(try host.cgroupNumber(c, "pids", "pids.current")))
        #expect(row["name"] as? String == "holder")

        // The unary RPC gives the same figures, and the pids limit.
        let sample = try await host.agent.withClient { client in
            try await Berth_Agent_V1_Containers.Client(wrapping: client).stats(.with { $0.container = "holder" }) { response in
                var all: [Berth_Agent_V1_ContainerStatsResponse] = []
                for try await message in response.messages { all.append(message) }
                return all
            }
        }
        #expect(sample.count == 1, "unary: one sample")
        #expect(sample.first?.memory.limitBytes == 96 << 20)
        #expect(sample.first?.pids.limit == 40)
        #expect(abs(Int(sample.first?.memory.workingSetBytes ?? 0) - expected) <= 64 * 1024)

        // The human table shows docker's columns.
        let table = try await host.berth(["stats", "--no-stream", "holder"])
        #expect(table.stdout.hasPrefix("CONTAINER ID   NAME      CPU %"), "\(table.stdout)")
        #expect(table.stdout.contains("/ 96MiB"), "\(table.stdout)")
    }

    @Test("a busy loop under --cpus 0.5 shows about 50% CPU and throttled periods")
    func cpu() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["run", "-d", "--name", "spin", "--cpus", "0.5", "busybox", "sh", "-c", "while :; do :; done"]).status == 0)
        // The loop gets its half CPU only when the host has one to give; on a
        // host busy with other work it gets less, and is then never throttled.
        // Sample until the host lets it reach its limit (other suites running
        // in parallel finish well within the deadline), and check the figures
        // of that sample.
        var percent = 0.0
        var sample = Berth_Agent_V1_ContainerStatsResponse()
        let deadline = ContinuousClock.now + .seconds(90)
        repeat {
            let result = try await host.berth(["stats", "--no-stream", "--format", "json", "spin"])
            let row = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)")
            percent = try #require(row["cpuPercent"] as? Double)
            // Never more than the limit, whatever the host's load.
            #expect(percent < 70, "CPU % \(percent) under --cpus 0.5")
            sample = try await host.agent.withClient { client in
                try await Berth_Agent_V1_Containers.Client(wrapping: client).stats(.with { $0.container = "spin" }) { response in
                    var last = Berth_Agent_V1_ContainerStatsResponse()
                    for try await message in response.messages { last = message }
                    return last
                }
            }
        } while !(percent > 30 && sample.cpu.throttledPeriods > 0) && ContinuousClock.now < deadline
        #expect(percent > 30 && percent < 70, "CPU % \(percent)")
        #expect(sample.cpu.throttledPeriods > 0 && sample.cpu.periods >= sample.cpu.throttledPeriods)
        #expect(sample.cpu.throttledNanos > 0)
    }

    @Test("streamed stats keep coming at the interval; an unknown container is a clear error")
    func streamAndErrors() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["run", "-d", "--name", "idle", "busybox", "sleep", "1000"]).status == 0)
        let start = ContinuousClock.now
        let times = try await host.agent.withClient { client in
            try await Berth_Agent_V1_Containers.Client(wrapping: client).stats(.with {
                $0.container = "idle"
                $0.stream = true
                $0.intervalMs = 200
            }) { response in
                var times: [Date] = []
                for try await message in response.messages {
                    times.append(message.time.date)
                    if times.count == 4 { break }
                }
                return times
            }
        }
        #expect(times.count == 4)
        #expect(ContinuousClock.now - start >= .milliseconds(550), "four samples 200 ms apart")
        let missing = try await host.berth(["stats", "--no-stream", "nosuch"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("nosuch"), "\(missing.stderr)")
    }
}

/// The kernel's formats the stats and metrics parse, without a kernel.
@Suite("stats: kernel formats", .ownThreads, .ownThreads)
struct StatsFormatTests {
    @Test("/proc/PID/net/dev: every interface but loopback, wide counters that touch the colon included")
    func netDev() {
        let text = """
            Inter-|   Receive                                                |  Transmit
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
                lo:     840      10    0    0    0     0          0         0      840      10    0    0    0     0       0          0
              eth0:1234567890123 4567    0    0    0     0          0         0   98765      43    0    0    0     0       0          0
            veth1a2b:    100       2    0    0    0     0          0         0      200       3    0    0    0     0       0          0

            """
        let interfaces = StatsReader.parseNetDev(KernelText(bytes: Array(text.utf8)))
        #expect(interfaces.map(\.name) == ["eth0", "veth1a2b"])
        #expect(interfaces.first?.rxBytes == 1_234_567_890_123 && interfaces.first?.rxPackets == 4567)
        #expect(interfaces.first?.txBytes == 98765 && interfaces.first?.txPackets == 43)
        #expect(interfaces.last?.rxBytes == 100 && interfaces.last?.txPackets == 3)
    }

    @Test("key/value files: the exact key, not one it prefixes; numbers; \"max\"")
    func keyValues() {
        let stat = KernelText(bytes: Array("rss 4096\nrss_huge 0\ntotal_rss 8192\ncache 12\n".utf8))
        #expect(stat.value("rss") == 4096)
        #expect(stat.value("total_rss") == 8192)
        #expect(stat.value("cache") == 12)
        #expect(stat.value("swap") == nil)
        #expect(KernelText(bytes: Array("67108864\n".utf8)).number == 67_108_864)
        #expect(KernelText(bytes: Array("max\n".utf8)).number == nil)
        #expect(KernelText(bytes: Array("99999999999999999999999\n".utf8)).number == nil, "an overflow is no number")
    }
}
