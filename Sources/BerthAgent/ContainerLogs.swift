import BerthModel
import Foundation

/// One line of a container's output, as the shim logged it.
public struct LogLine: Sendable, Hashable {
    public enum Stream: String, Sendable { case stdout, stderr }
    public var time: Date
    public var stream: Stream
    /// False when the line is a piece of a longer one (no newline yet).
    public var complete: Bool
    public var text: [UInt8]
}

/// Reads the shim's log files (`container.log` and its rotations `.1`, `.2`…)
/// in order, and follows them while the container runs.
public struct ContainerLogReader: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    static func parse(_ line: Substring) -> LogLine? {
        let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count >= 3, let nanos = Int64(parts[0]), let stream = LogLine.Stream(rawValue: String(parts[1])) else { return nil }
        let text = parts.count == 4 ? Array(parts[3].utf8) : []
        return LogLine(time: Date(timeIntervalSince1970: Double(nanos) / 1e9), stream: stream, complete: parts[2] == "F", text: text)
    }

    /// The rotated files, oldest first, then the current one.
    var files: [String] {
        var rotated: [(Int, String)] = []
        let dir = (path as NSString).deletingLastPathComponent
        let base = (path as NSString).lastPathComponent
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where name.hasPrefix(base + ".") {
            if let n = Int(name.dropFirst(base.count + 1)) { rotated.append((n, "\(dir)/\(name)")) }
        }
        return rotated.sorted { $0.0 > $1.0 }.map(\.1) + [path]
    }

    /// Every line logged so far.
    public func lines() -> [LogLine] {
        snapshot().lines
    }

    /// The lines of the rotated files and the live one, and how far into
    /// the live file (its inode and offset) they reach.
    func snapshot() -> (lines: [LogLine], inode: Int, offset: Int, pending: Data) {
        var all: [LogLine] = []
        for file in files.dropLast() {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            all += String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap(Self.parse)
        }
        let inode = (try? FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? Int) ?? 0
        let data = FileManager.default.contents(atPath: path) ?? Data()
        // Only whole lines count; a trailing partial line is kept for later.
        let end = data.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? data.startIndex
        all += String(decoding: data[data.startIndex..<end], as: UTF8.self).split(separator: "\n").compactMap(Self.parse)
        return (all, inode, data.count, data[end...])
    }

    /// Streams lines, then (with `follow`) new ones until `isRunning` turns
    /// false and everything written is read.
    ///
    /// - Parameter waitForChange: suspends until new output may be there or
    ///   the container may have stopped (a short timer, or sooner when told).
    public func stream(
        tail: Int?, since: Date?, until: Date?, follow: Bool, isRunning: @escaping @Sendable () async -> Bool,
        waitForChange: @escaping @Sendable () async -> Void = { try? await Task.sleep(for: .milliseconds(50)) },
        emit: ([LogLine]) async throws -> Void
    ) async throws {
        let snapshot = self.snapshot()
        var existing = snapshot.lines
        if let since { existing = existing.filter { $0.time >= since } }
        if let until { existing = existing.filter { $0.time <= until } }
        if let tail { existing = Array(existing.suffix(tail)) }
        if !existing.isEmpty { try await emit(existing) }
        guard follow else { return }
        // Continue exactly where the snapshot stopped.
        var offset = snapshot.offset
        var inode = snapshot.inode
        var pending = Data(snapshot.pending)
        while true {
            let running = await isRunning()
            let attributes = try? FileManager.default.attributesOfItem(atPath: path)
            let size = attributes?[.size] as? Int ?? 0
            let currentInode = attributes?[.systemFileNumber] as? Int ?? 0
            if currentInode != inode || size < offset {
                // Rotated: finish nothing more of the old file; start on the new one.
                inode = currentInode
                offset = 0
                pending.removeAll()
            }
            if size > offset, let handle = FileHandle(forReadingAtPath: path) {
                try handle.seek(toOffset: UInt64(offset))
                let data = try handle.read(upToCount: size - offset) ?? Data()
                try handle.close()
                offset += data.count
                pending.append(data)
                // Whole lines, then what follows the last is kept for later:
                // one cut of the buffer per read (not one per line, which
                // copied the rest of the buffer for every line).
                var batch: [LogLine] = []
                var start = pending.startIndex
                while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[start..<newline], as: UTF8.self)
                    start = pending.index(after: newline)
                    if let parsed = Self.parse(Substring(line)), until.map({ parsed.time <= $0 }) ?? true { batch.append(parsed) }
                }
                pending.removeSubrange(pending.startIndex..<start)
                if !batch.isEmpty { try await emit(batch) }
                continue
            }
            if !running { return }
            try Task.checkCancellation()
            await waitForChange()
        }
    }
}
