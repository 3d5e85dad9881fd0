@testable import BerthAgent
import BerthShimProtocol
import BerthTesting
import Foundation
import Synchronization
import Testing

/// The log reader on files written here in the shim's format: rotations,
/// indexes, lines split across reads, the older text format, and a follower
/// that falls behind.
@Suite("container logs: the reader", .ownThreads, .ownThreads)
final class ContainerLogReaderTests {
    let dir: URL
    var path: String { dir.appendingPathComponent("container.log").path }

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-logs-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: dir) }

    /// Writes a log file as the shim does: header, records, and an index
    /// entry every `interval` bytes of records.
    func write(
        _ file: String, sequence: UInt64, records: [(ContainerLogFormat.Stream, Int64, String)], interval: Int = ContainerLogFormat.indexInterval
    ) throws {
        let base = records.first?.1 ?? 0
        var bytes = ContainerLogFormat.Header(sequence: sequence, base: base).bytes
        var index: [UInt8] = []
        var lines: UInt64 = 0
        var nextIndex = bytes.count
        for (stream, nanos, text) in records {
            if bytes.count >= nextIndex {
                index += ContainerLogFormat.IndexEntry(offset: UInt64(bytes.count), nanos: nanos, lines: lines).bytes
                nextIndex = bytes.count + interval
            }
            bytes += ContainerLogFormat.recordPrefix(stream: stream, nanos: nanos, length: text.utf8.count, base: base) + Array(text.utf8)
            lines += UInt64(text.utf8.filter { $0 == 10 }.count)
        }
        try Data(index).write(to: URL(fileURLWithPath: ContainerLogFormat.indexPath(file)), options: .atomic)
        try Data(bytes).write(to: URL(fileURLWithPath: file), options: .atomic)
    }

    /// Lines 1…n of `seq`, in records of `perRecord` lines each, one second apart.
    static func numbered(_ range: ClosedRange<Int>, perRecord: Int, start: Int64) -> [(ContainerLogFormat.Stream, Int64, String)] {
        stride(from: range.lowerBound, through: range.upperBound, by: perRecord).enumerated().map { i, first in
            let last = min(first + perRecord - 1, range.upperBound)
            return (.stdout, start + Int64(i) * 1_000_000_000, (first...last).map { "\($0)\n" }.joined())
        }
    }

    func read(tail: Int? = nil, since: Date? = nil, until: Date? = nil) async throws -> [String] {
        var lines: [String] = []
        try await ContainerLogReader(path: path).stream(tail: tail, since: since, until: until, follow: false, isRunning: { false }) { batch in
            lines += batch.map { String(decoding: $0.text, as: UTF8.self) + ($0.complete ? "" : "…") }
        }
        return lines
    }

    @Test("three rotated files read in order; --tail across files, from the indexes; --since and --until")
    func rotatedFiles() async throws {
        let t0: Int64 = 1_800_000_000_000_000_000
        // 30,000 lines, 10,000 per file, 7 lines per record, small index intervals.
        try write("\(path).2", sequence: 4, records: Self.numbered(1...10_000, perRecord: 7, start: t0), interval: 4096)
        try write("\(path).1", sequence: 5, records: Self.numbered(10_001...20_000, perRecord: 7, start: t0 + 2_000_000_000_000), interval: 4096)
        try write(path, sequence: 6, records: Self.numbered(20_001...30_000, perRecord: 7, start: t0 + 4_000_000_000_000), interval: 4096)
        let all = try await read()
        #expect(all.count == 30_000)
        #expect(all.first == "1" && all.last == "30000")
        #expect(all.map { Int($0)! } == Array(1...30_000))
        for n in [1, 2, 7, 8, 9_999, 10_000, 10_001, 25_000, 30_000, 40_000] {
            let tail = try await read(tail: n)
            #expect(tail.map { Int($0)! } == Array(max(1, 30_001 - n)...30_000), "tail \(n)")
        }
        #expect(try await read(tail: 0).isEmpty)
        // Records are a second apart: record k of the middle file starts line 10,001 + 7k.
        let since = Date(timeIntervalSince1970: Double(t0 + 2_000_000_000_000 + 100 * 1_000_000_000) / 1e9)
        let fromThen = try await read(since: since)
        #expect(fromThen.first == "10701" && fromThen.last == "30000", "\(fromThen.first ?? "")")
        let until = Date(timeIntervalSince1970: Double(t0 + 3 * 1_000_000_000) / 1e9)
        #expect(try await read(until: until) == (1...28).map(String.init))
    }

    @Test("lines split across reads and streams are put together; a long line comes in 16 KiB pieces; an unfinished last line is kept")
    func assembly() async throws {
        let long = String(repeating: "x", count: 40_000)
        try write(path, sequence: 1, records: [
            (.stdout, 1, "par"), (.stderr, 2, "err"), (.stdout, 3, "tial\nnext"), (.stderr, 4, "or\n"), (.stdout, 5, "\n" + long + "\nend"),
        ])
        var got: [(LogLine.Stream, String, Bool)] = []
        try await ContainerLogReader(path: path).stream(tail: nil, since: nil, until: nil, follow: false, isRunning: { false }) { batch in
            got += batch.map { ($0.stream, String(decoding: $0.text, as: UTF8.self), $0.complete) }
        }
        #expect(got.map(\.1) == ["partial", "error", "next", String(repeating: "x", count: 16384), String(repeating: "x", count: 16384), String(repeating: "x", count: 7232), "end"])
        #expect(got.map(\.2) == [true, true, true, false, false, true, false])
        #expect(got[1].0 == .stderr)
        #expect(try await read(tail: 1) == ["end…"])
        #expect(try await read(tail: 2) == [String(repeating: "x", count: 16384) + "…", String(repeating: "x", count: 16384) + "…", String(repeating: "x", count: 7232), "end…"])
    }

    @Test("a file of the older text format is read as before, beside files of the new one")
    func textFormat() async throws {
        try "1700000000000000000 stdout F old one\n1700000000000000001 stderr P half\n1700000000000000002 stderr F  done\n"
            .write(toFile: "\(path).1", atomically: true, encoding: .utf8)
        try write(path, sequence: 1, records: [(.stdout, 1_800_000_000_000_000_000, "new\n")])
        #expect(try await read() == ["old one", "half done", "new"])
    }

    @Test("a follower sees every line across rotations, and is told when files it needed were rotated away")
    func followAcrossRotations() async throws {
        let t0: Int64 = 1_800_000_000_000_000_000
        try write(path, sequence: 1, records: Self.numbered(1...100, perRecord: 10, start: t0))
        final class Seen: Sendable {
            let running = Mutex(true)
            let got = Mutex<[String]>([])
            let notices = Mutex<[LogNotice]>([])
            /// While `paused`, the follower stays in its wait; `parked` says it is there.
            /// Both change under one lock, so a test that saw `parked` after pausing
            /// knows the follower reads nothing until it is let go.
            let gate = Mutex((paused: false, parked: false))
            func waitForChange() async {
                repeat { try? await Task.sleep(for: .milliseconds(5)) } while gate.withLock { g in
                    g.parked = g.paused
                    return g.paused
                }
            }
        }
        let seen = Seen()
        let reader = ContainerLogReader(path: path)
        let following = Task {
            try await reader.stream(
                tail: nil, since: nil, until: nil, follow: true, isRunning: { seen.running.withLock { $0 } },
                waitForChange: { await seen.waitForChange() }, notice: { n in seen.notices.withLock { $0.append(n) } }
            ) { batch in seen.got.withLock { $0 += batch.map { String(decoding: $0.text, as: UTF8.self) } } }
        }
        func waitFor(_ count: Int) async throws {
            for _ in 0..<2000 where seen.got.withLock({ $0.count }) < count { try await Task.sleep(for: .milliseconds(5)) }
        }
        try await waitFor(100)
        // A rotation: the live file becomes .1, a new live file follows.
        try FileManager.default.moveItem(atPath: path, toPath: "\(path).1")
        try write(path, sequence: 2, records: Self.numbered(101...200, perRecord: 10, start: t0 + 100))
        try await waitFor(200)
        #expect(seen.got.withLock { $0 }.map { Int($0)! } == Array(1...200))
        // Two rotations while it waits: sequence 3 is gone before it is read.
        seen.gate.withLock { $0.paused = true }
        for _ in 0..<2000 where !seen.gate.withLock({ $0.parked }) { try await Task.sleep(for: .milliseconds(5)) }
        #expect(seen.gate.withLock { $0.parked })
        try FileManager.default.moveItem(atPath: path, toPath: "\(path).2")
        try write("\(path).1", sequence: 3, records: Self.numbered(201...300, perRecord: 10, start: t0 + 200))
        try FileManager.default.removeItem(atPath: "\(path).1")
        try write(path, sequence: 4, records: Self.numbered(301...400, perRecord: 10, start: t0 + 300))
        seen.gate.withLock { $0.paused = false }
        try await waitFor(300)
        seen.running.withLock { $0 = false }
        try await following.value
        #expect(seen.got.withLock { $0 }.map { Int($0)! } == Array(1...200) + Array(301...400))
        #expect(seen.notices.withLock { $0 } == [.filesLost(1)])
    }
}
