import BerthShimProtocol
import Glibc

/// Writes the container's output to its log, a record per read
/// (`ContainerLogFormat`), with an index entry every 256 KiB, rotating
/// the file by size: `log` → `log.1` → … → `log.<maxFiles-1>`, oldest
/// dropped, each file with its index beside it.
final class LogWriter {
    let path: String
    let maxBytes: Int
    let maxFiles: Int
    private var fd: Int32 = -1
    private var indexFD: Int32 = -1
    private var header = ContainerLogFormat.Header(sequence: 1, base: 0)
    /// Bytes in the live file.
    private var size = 0
    /// Line breaks in the live file.
    private var lines: UInt64 = 0
    /// Where the next index entry is due.
    private var nextIndexAt = ContainerLogFormat.headerSize
    /// Streams whose last byte logged was not a line break.
    private var midLine: Set<ContainerLogFormat.Stream> = []

    init(path: String, maxBytes: Int, maxFiles: Int) throws {
        self.path = path
        self.maxBytes = maxBytes
        self.maxFiles = max(1, maxFiles)
        try openLive()
    }

    /// Continues the live file when it is one of this format (the same
    /// container started again), else starts one: a file of the older
    /// text format is rotated away whole, as the first of the past ones.
    private func openLive() throws {
        let existing = open(path, O_RDWR | O_CLOEXEC)
        if existing >= 0 {
            var head = [UInt8](repeating: 0, count: ContainerLogFormat.headerSize)
            let n = head.withUnsafeMutableBytes { pread(existing, $0.baseAddress, $0.count, 0) }
            if n == ContainerLogFormat.headerSize, let found = ContainerLogFormat.Header(head), resume(existing, found) { return }
            let empty = n == 0
            close(existing)
            if !empty {
                shiftRotated()
                rename(path, "\(path).1")
                unlink(ContainerLogFormat.indexPath(path))
                return try startFile(sequence: 1)
            }
        }
        try startFile(sequence: 1)
    }

    /// Takes up `file` where it ends: its size, and its line breaks (the
    /// last index entry's, and those after it). A damaged tail (a record
    /// cut short) is cut off.
    private func resume(_ file: Int32, _ found: ContainerLogFormat.Header) -> Bool {
        var st = stat()
        guard fstat(file, &st) == 0 else { return false }
        let index = Files.readAll(ContainerLogFormat.indexPath(path))
        let entries = ContainerLogFormat.IndexEntry.all(index)
        var offset = Int(entries.last?.offset ?? UInt64(ContainerLogFormat.headerSize))
        var counted = entries.last?.lines ?? 0
        guard offset <= Int(st.st_size) else { return false }
        // Records after the last entry, read whole.
        var rest = [UInt8](repeating: 0, count: Int(st.st_size) - offset)
        let got = rest.withUnsafeMutableBytes { pread(file, $0.baseAddress, $0.count, off_t(offset)) }
        guard got == rest.count else { return false }
        var at = 0
        decoding: while at < rest.count {
            let decoded = rest.withUnsafeBytes { ContainerLogFormat.decode(UnsafeRawBufferPointer(rebasing: $0[at...]), base: found.base) }
            switch decoded {
            case .record(let record, let size):
                counted += UInt64(ContainerLogFormat.lineBreaks(record.payload))
                at += size
            case .incomplete, .malformed:
                break decoding
            }
        }
        offset += at
        if offset < Int(st.st_size) { _ = ftruncate(file, off_t(offset)) }
        let indexFile = open(ContainerLogFormat.indexPath(path), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard indexFile >= 0 else { return false }
        _ = lseek(file, 0, SEEK_END)
        fd = file
        indexFD = indexFile
        header = found
        size = offset
        lines = counted
        nextIndexAt = Int(entries.last?.offset ?? 0) + ContainerLogFormat.indexInterval
        if entries.isEmpty { nextIndexAt = size }
        return true
    }

    /// A new live file (and index) numbered `sequence`.
    private func startFile(sequence: UInt64) throws {
        if fd >= 0 { close(fd) }
        if indexFD >= 0 { close(indexFD) }
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw SystemCallError(operation: "open \(path)", errno: errno) }
        indexFD = open(ContainerLogFormat.indexPath(path), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o640)
        guard indexFD >= 0 else { throw SystemCallError(operation: "open \(ContainerLogFormat.indexPath(path))", errno: errno) }
        header = ContainerLogFormat.Header(sequence: sequence, base: Files.nowNanos(), continues: midLine)
        Files.writeAll(fd, header.bytes)
        size = ContainerLogFormat.headerSize
        lines = 0
        nextIndexAt = size
    }

    /// Moves `log.N` (and its index) to `log.N+1`, the oldest dropped, so
    /// that `log.1` is free.
    private func shiftRotated() {
        for file in ["\(path).\(maxFiles - 1)"] {
            unlink(file)
            unlink(ContainerLogFormat.indexPath(file))
        }
        var index = maxFiles - 2
        while index >= 1 {
            rename("\(path).\(index)", "\(path).\(index + 1)")
            rename(ContainerLogFormat.indexPath("\(path).\(index)"), ContainerLogFormat.indexPath("\(path).\(index + 1)"))
            index -= 1
        }
    }

    private func rotate() {
        let next = header.sequence + 1
        if maxFiles > 1 {
            shiftRotated()
            rename(path, "\(path).1")
            rename(ContainerLogFormat.indexPath(path), ContainerLogFormat.indexPath("\(path).1"))
        }
        do {
            try startFile(sequence: next)
        } catch {
            Files.writeAll(2, Array("berth-shim: \(error)\n".utf8))
        }
    }

    /// Logs one read of the container's output: one record, or, where it
    /// would pass the size limit, a record up to the limit and the rest in
    /// the next file.
    func write(_ stream: ContainerLogFormat.Stream, _ payload: UnsafeRawBufferPointer) {
        var rest = payload
        while rest.count > 0 {
            // A record's prefix is at most 21 bytes.
            let room = maxBytes - size - 21
            if maxBytes > 0 && size > ContainerLogFormat.headerSize && room < 1 {
                rotate()
                continue
            }
            let n = maxBytes > 0 ? min(rest.count, max(1, room)) : rest.count
            writeRecord(stream, UnsafeRawBufferPointer(rebasing: rest[..<n]))
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
    }

    private func writeRecord(_ stream: ContainerLogFormat.Stream, _ payload: UnsafeRawBufferPointer) {
        let now = Files.nowNanos()
        let prefix = ContainerLogFormat.recordPrefix(stream: stream, nanos: now, length: payload.count, base: header.base)
        if size >= nextIndexAt {
            Files.writeAll(indexFD, ContainerLogFormat.IndexEntry(offset: UInt64(size), nanos: now, lines: lines).bytes)
            nextIndexAt = size + ContainerLogFormat.indexInterval
        }
        Files.writeAll(fd, prefix, payload)
        size += prefix.count + payload.count
        lines += UInt64(ContainerLogFormat.lineBreaks(payload))
        if payload.last == 10 { midLine.remove(stream) } else { midLine.insert(stream) }
    }

    func sync() {
        fsync(fd)
        fsync(indexFD)
    }
}
