import BerthLinux
import BerthModel
import BerthShimProtocol
import Foundation

/// One line of a container's output, as the shim logged it.
public struct LogLine: Sendable, Hashable {
    public enum Stream: String, Sendable { case stdout, stderr }
    public var time: Date
    public var stream: Stream
    /// False when the line is a piece of a longer one (no newline yet), or
    /// the output's last bytes, which ended without one.
    public var complete: Bool
    public var text: [UInt8]
}

/// What a reader of a log is told besides lines.
public enum LogNotice: Sendable, Hashable {
    /// Files of the log were rotated away before they were read: their
    /// lines are missing from what follows.
    case filesLost(Int)
}

/// Reads a container's log (`container.log` and its rotations `.1`, `.2`…,
/// in `ContainerLogFormat`, or in the text format of earlier versions) in
/// order, a block at a time, and follows it while the container runs.
///
/// Memory stays bounded whatever the log's size: files are read in blocks
/// of 256 KiB, and lines are handed on in batches the caller awaits.
public struct ContainerLogReader: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// A line longer than this is handed on in pieces (docker's 16 KiB).
    static let maxLine = 16 * 1024
    /// Lines per batch, at most.
    static let batchLines = 1024
    static let batchBytes = 256 * 1024

    /// Streams lines, then (with `follow`) new ones until `isRunning` turns
    /// false and everything written is read.
    ///
    /// - Parameters:
    ///   - waitForChange: suspends until new output may be there or the
    ///     container may have stopped (a short timer, or sooner when told).
    ///   - notice: told when lines went missing (files rotated away unread).
    public func stream(
        tail: Int?, since: Date?, until: Date?, follow: Bool, isRunning: @escaping @Sendable () async -> Bool,
        waitForChange: @escaping @Sendable () async -> Void = { try? await Task.sleep(for: .milliseconds(50)) },
        notice: (LogNotice) async throws -> Void = { _ in },
        emit: ([LogLine]) async throws -> Void
    ) async throws {
        var cursors = LogFileCursor.openAll(path)
        // Not written yet: with follow, wait for the first file or the end.
        while cursors.isEmpty {
            guard follow, await isRunning() else { return }
            try Task.checkCancellation()
            await waitForChange()
            cursors = LogFileCursor.openAll(path)
        }
        var start = (file: 0, offset: cursors[0].firstRecordOffset, skipLines: 0)
        if let tail {
            start = LogTail.locate(tail, in: cursors)
        } else if let since {
            start = LogTail.locate(since: Int64(since.timeIntervalSince1970 * 1e9), in: cursors)
        }
        for cursor in cursors { cursor.seek(cursor.firstRecordOffset) }
        let untilNanos = until.map { Int64($0.timeIntervalSince1970 * 1e9) }
        var assembler = LineAssembler(skipLines: start.skipLines)
        // Read from its beginning, the oldest file may start in the middle
        // of a line whose start went with a file rotated away.
        if start.file == 0, start.offset == cursors[0].firstRecordOffset { assembler.dropFragments(cursors[0].continues) }
        var batch = Batch()
        func deliver(_ lines: [LogLine]) async throws {
            for line in lines {
                if let since, line.time < since { continue }
                batch.add(line)
                if batch.full { try await emit(batch.take()) }
            }
        }
        cursors.removeFirst(start.file)
        cursors[0].seek(start.offset)
        // What exists now.
        var current = cursors.removeFirst()
        while true {
            while let record = current.next() {
                if let untilNanos, record.nanos > untilNanos {
                    try await deliver(assembler.finish())
                    if !batch.isEmpty { try await emit(batch.take()) }
                    return
                }
                try await deliver(assembler.feed(record))
            }
            guard !cursors.isEmpty else { break }
            let next = cursors.removeFirst()
            // A file rotated away between the listing and its opening.
            if current.sequence > 0, next.sequence > current.sequence + 1 {
                try await notice(.filesLost(Int(next.sequence - current.sequence - 1)))
                try await deliver(assembler.finish())
                assembler.dropFragments(next.continues)
            }
            current = next
        }
        if !follow || untilNanos != nil {
            try await deliver(assembler.finish())
            if !batch.isEmpty { try await emit(batch.take()) }
            return
        }
        // Follow: new records of the live file; on a rotation, the rest of
        // the old file and then the file that came after it.
        while true {
            if !batch.isEmpty { try await emit(batch.take()) }
            let running = await isRunning()
            var progressed = false
            while let record = current.next() {
                progressed = true
                try await deliver(assembler.feed(record))
            }
            if let successor = current.successor() {
                while let record = current.next() { try await deliver(assembler.feed(record)) }
                if successor.lost > 0 {
                    try await notice(.filesLost(successor.lost))
                    try await deliver(assembler.finish())
                    assembler.dropFragments(successor.cursor.continues)
                }
                current = successor.cursor
                continue
            }
            if progressed { continue }
            if !running {
                try await deliver(assembler.finish())
                if !batch.isEmpty { try await emit(batch.take()) }
                return
            }
            try Task.checkCancellation()
            await waitForChange()
        }
    }

    /// Every line logged so far (for tests).
    public func lines() async throws -> [LogLine] {
        var all: [LogLine] = []
        try await stream(tail: nil, since: nil, until: nil, follow: false, isRunning: { false }) { all += $0 }
        return all
    }

    struct Batch {
        private var lines: [LogLine] = []
        private var bytes = 0
        var isEmpty: Bool { lines.isEmpty }
        var full: Bool { lines.count >= ContainerLogReader.batchLines || bytes >= ContainerLogReader.batchBytes }
        mutating func add(_ line: LogLine) {
            lines.append(line)
            bytes += line.text.count
        }
        mutating func take() -> [LogLine] {
            defer {
                lines = []
                bytes = 0
            }
            return lines
        }
    }
}

/// Turns records (reads of the container's output, any size) into lines,
/// one assembly per stream.
struct LineAssembler {
    private var pending: [ContainerLogFormat.Stream: (bytes: [UInt8], time: Int64)] = [:]
    /// Streams whose bytes up to their next line break are a fragment to leave out.
    private var fragments: Set<ContainerLogFormat.Stream> = []
    /// Line breaks to pass over before the first line handed on (`--tail`
    /// starting inside a record).
    private var skipLines: Int

    init(skipLines: Int = 0) { self.skipLines = skipLines }

    mutating func dropFragments(_ streams: Set<ContainerLogFormat.Stream>) { fragments = streams }

    mutating func feed(_ record: ContainerLogFormat.Record) -> [LogLine] {
        var out: [LogLine] = []
        var bytes = record.payload[...]
        if fragments.contains(record.stream) {
            guard let newline = bytes.firstIndex(of: 10) else { return [] }
            bytes = bytes[(newline + 1)...]
            fragments.remove(record.stream)
        }
        while skipLines > 0, let newline = bytes.firstIndex(of: 10) {
            bytes = bytes[(newline + 1)...]
            skipLines -= 1
        }
        if skipLines > 0 { return [] }
        var current = pending[record.stream] ?? ([], record.nanos)
        if current.bytes.isEmpty { current.time = record.nanos }
        var start = bytes.startIndex
        while let newline = bytes[start...].firstIndex(of: 10) {
            current.bytes += bytes[start..<newline]
            // A line longer than the limit: pieces, the last one complete.
            var piece = 0
            while current.bytes.count - piece > ContainerLogReader.maxLine {
                out.append(Self.line(record.stream, current.time, Array(current.bytes[piece..<(piece + ContainerLogReader.maxLine)]), complete: false))
                piece += ContainerLogReader.maxLine
            }
            out.append(Self.line(record.stream, current.time, Array(current.bytes[piece...]), complete: true))
            current = ([], record.nanos)
            start = newline + 1
        }
        current.bytes += bytes[start...]
        while current.bytes.count >= ContainerLogReader.maxLine {
            out.append(Self.line(record.stream, current.time, Array(current.bytes.prefix(ContainerLogReader.maxLine)), complete: false))
            current.bytes.removeFirst(ContainerLogReader.maxLine)
            current.time = record.nanos
        }
        pending[record.stream] = current
        return out
    }

    /// The pieces of lines that never got their newline.
    mutating func finish() -> [LogLine] {
        var out: [LogLine] = []
        for stream in [ContainerLogFormat.Stream.stdout, .stderr] {
            if let rest = pending[stream], !rest.bytes.isEmpty { out.append(Self.line(stream, rest.time, rest.bytes, complete: false)) }
        }
        pending = [:]
        return out.sorted { $0.time < $1.time }
    }

    static func line(_ stream: ContainerLogFormat.Stream, _ nanos: Int64, _ bytes: [UInt8], complete: Bool) -> LogLine {
        LogLine(time: Date(timeIntervalSince1970: Double(nanos) / 1e9), stream: stream == .stdout ? .stdout : .stderr, complete: complete, text: bytes)
    }
}

/// One file of a log, open: its records read a block at a time.
final class LogFileCursor {
    enum Format {
        case records(ContainerLogFormat.Header)
        /// The text format of earlier versions: `<nanos> <stream> <F|P> <text>` lines.
        case text
    }

    let path: String
    let fd: Descriptor
    let format: Format
    let inode: UInt64
    private var buffer: [UInt8] = []
    private var used = 0
    /// The file offset of buffer[used].
    private(set) var offset: Int

    static let blockSize = 256 * 1024

    private init(path: String, fd: Descriptor, format: Format, inode: UInt64) {
        self.path = path
        self.fd = fd
        self.format = format
        self.inode = inode
        if case .records = format { offset = ContainerLogFormat.headerSize } else { offset = 0 }
    }

    deinit { fd.close() }

    /// Opens `path` and reads its header.
    static func open(_ path: String) -> LogFileCursor? {
        guard let fd = try? Descriptor.open(path) else { return nil }
        guard let st = try? fd.status() else {
            fd.close()
            return nil
        }
        var head = [UInt8](repeating: 0, count: ContainerLogFormat.headerSize)
        let n = (try? head.withUnsafeMutableBytes { try fd.read(into: $0, at: 0) }) ?? 0
        if n == ContainerLogFormat.headerSize, let header = ContainerLogFormat.Header(head) {
            return LogFileCursor(path: path, fd: fd, format: .records(header), inode: st.inode)
        }
        let start = Array(head.prefix(max(0, min(n, 8))))
        if n < ContainerLogFormat.headerSize && start == Array(ContainerLogFormat.magic.prefix(start.count)) {
            // Empty, or a header being written: nothing to read yet.
            fd.close()
            return nil
        }
        return LogFileCursor(path: path, fd: fd, format: .text, inode: st.inode)
    }

    /// The log's files, oldest first, then the live one; each opened now,
    /// so that rotations while it is read change nothing of what it reads.
    static func openAll(_ path: String) -> [LogFileCursor] {
        var rotated: [(Int, String)] = []
        let dir = (path as NSString).deletingLastPathComponent
        let base = (path as NSString).lastPathComponent
        for name in (try? FileIO.list(dir)) ?? [] where name.hasPrefix(base + ".") {
            if let n = Int(name.dropFirst(base.count + 1)) { rotated.append((n, "\(dir)/\(name)")) }
        }
        return (rotated.sorted { $0.0 > $1.0 }.map(\.1) + [path]).compactMap(open)
    }

    var sequence: UInt64 {
        if case .records(let header) = format { return header.sequence }
        return 0
    }

    /// Streams whose first bytes here continue a line of the file before.
    var continues: Set<ContainerLogFormat.Stream> {
        if case .records(let header) = format { return header.continues }
        return []
    }

    var firstRecordOffset: Int {
        if case .records = format { return ContainerLogFormat.headerSize }
        return 0
    }

    /// The entries of its index (none for the text format).
    var index: [ContainerLogFormat.IndexEntry] {
        guard case .records = format else { return [] }
        return ContainerLogFormat.IndexEntry.all((try? FileIO.readBytes(ContainerLogFormat.indexPath(path), limit: 64 << 20)) ?? [])
    }

    func seek(_ to: Int) {
        buffer = []
        used = 0
        offset = to
    }

    /// Reads another block; false at the current end of the file.
    private func fill() -> Bool {
        if used > 0 {
            buffer.removeFirst(used)
            used = 0
        }
        var block = [UInt8](repeating: 0, count: Self.blockSize)
        let n = (try? block.withUnsafeMutableBytes { try fd.read(into: $0, at: Int64(offset + buffer.count)) }) ?? 0
        guard n > 0 else { return false }
        buffer += block[0..<n]
        return true
    }

    /// The next record, or nil at the end of what is written (a record
    /// still being written counts as not there yet).
    func next() -> ContainerLogFormat.Record? {
        while true {
            if let record = decode() { return record }
            guard fill() else { return nil }
        }
    }

    private func decode() -> ContainerLogFormat.Record? {
        guard used < buffer.count else { return nil }
        switch format {
        case .records(let header):
            let decoded = buffer.withUnsafeBytes { ContainerLogFormat.decode(UnsafeRawBufferPointer(rebasing: $0[used...]), base: header.base) }
            switch decoded {
            case .record(let record, let size):
                used += size
                offset += size
                return record
            case .incomplete:
                return nil
            case .malformed:
                // A damaged file: nothing after this point can be trusted.
                used = buffer.count
                offset = Int.max / 2
                return nil
            }
        case .text:
            guard let newline = buffer[used...].firstIndex(of: 10) else { return nil }
            let line = buffer[used..<newline]
            used = newline + 1
            offset += line.count + 1
            return Self.parseText(line)
        }
    }

    /// A line of the text format as a record (a complete line keeps its newline).
    static func parseText(_ line: ArraySlice<UInt8>) -> ContainerLogFormat.Record? {
        let parts = line.split(separator: 32, maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count >= 3, let nanos = Int64(String(decoding: parts[0], as: UTF8.self)) else { return nil }
        let stream: ContainerLogFormat.Stream = Array(parts[1]) == Array("stderr".utf8) ? .stderr : .stdout
        var payload = parts.count == 4 ? Array(parts[3]) : []
        if Array(parts[2]) == [UInt8(ascii: "F")] { payload.append(10) }
        return ContainerLogFormat.Record(stream: stream, nanos: nanos, payload: payload)
    }

    /// After a rotation, the file that follows this one: the one numbered
    /// next, or (when that one was rotated away before it was read) the
    /// oldest newer one, and how many were lost between. Nil while this
    /// is still the live file.
    func successor() -> (cursor: LogFileCursor, lost: Int)? {
        if let st = try? FileIO.statusFollowingLinks(path), st.inode == inode { return nil }
        // This file was renamed: the log goes on in a newer one.
        let candidates = Self.openAll(Self.livePath(of: path)).filter { $0.sequence > sequence }
        guard let next = candidates.min(by: { $0.sequence < $1.sequence }) else { return nil }
        return (next, Int(next.sequence - sequence - 1))
    }

    /// The size of the file now.
    var size: Int {
        (try? fd.status()).map { Int($0.size) } ?? 0
    }

    /// The live file's path for a path of the log (`container.log.2` → `container.log`).
    static func livePath(of path: String) -> String {
        let name = (path as NSString).lastPathComponent
        if let dot = name.lastIndex(of: "."), Int(name[name.index(after: dot)...]) != nil {
            return ((path as NSString).deletingLastPathComponent as NSString).appendingPathComponent(String(name[..<dot]))
        }
        return path
    }
}

/// Where `--tail` and `--since` start reading, from the logs' indexes.
enum LogTail {
    typealias Start = (file: Int, offset: Int, skipLines: Int)

    /// The start of the `count`th line from the end (an unfinished last
    /// line counts as one).
    static func locate(_ count: Int, in cursors: [LogFileCursor]) -> Start {
        let newest = cursors.count - 1
        guard count > 0 else { return (newest, cursors[newest].size, 0) }
        var needed = count
        for fileIndex in cursors.indices.reversed() {
            let cursor = cursors[fileIndex]
            let entries = cursor.index
            // Line breaks in the file: the last entry's count and those after it.
            let last = entries.last
            cursor.seek(Int(last?.offset ?? UInt64(cursor.firstRecordOffset)))
            var lines = Int(last?.lines ?? 0)
            var unfinished = false
            while let record = cursor.next() {
                lines += ContainerLogFormat.lineBreaks(record.payload)
                if let final = record.payload.last { unfinished = final != 10 }
            }
            if fileIndex == newest && unfinished { lines += 1 }
            if lines >= needed {
                // Start after line break number `skip`.
                let skip = lines - needed
                let from = entries.last { Int($0.lines) <= skip }
                return (fileIndex, Int(from?.offset ?? UInt64(cursor.firstRecordOffset)), skip - Int(from?.lines ?? 0))
            }
            needed -= lines
        }
        return (0, cursors[0].firstRecordOffset, 0)
    }

    /// The first record at or after `nanos` is at or after the returned start.
    static func locate(since nanos: Int64, in cursors: [LogFileCursor]) -> Start {
        // The newest file whose first entry is no later than `nanos`, and its latest such entry.
        for fileIndex in cursors.indices.reversed() {
            let entries = cursors[fileIndex].index
            if let from = entries.last(where: { $0.nanos <= nanos }) { return (fileIndex, Int(from.offset), 0) }
            if case .text = cursors[fileIndex].format { return (fileIndex, 0, 0) }
        }
        return (0, cursors[0].firstRecordOffset, 0)
    }
}
