import Glibc

/// Writes the container's output as lines `<unix-nanos> <stream> <F|P> <text>`
/// (F: a full line, P: part of a longer one), rotating the file by size:
/// `log` → `log.1` → … → `log.<maxFiles-1>`, oldest dropped.
final class LogWriter {
    let path: String
    let maxBytes: Int
    let maxFiles: Int
    private var fd: Int32 = -1
    private var size = 0

    init(path: String, maxBytes: Int, maxFiles: Int) throws {
        self.path = path
        self.maxBytes = maxBytes
        self.maxFiles = max(1, maxFiles)
        try reopen()
    }

    private func reopen() throws {
        if fd >= 0 { close(fd) }
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw SystemCallError(operation: "open \(path)", errno: errno) }
        var st = stat()
        fstat(fd, &st)
        size = Int(st.st_size)
    }

    private func rotate() {
        guard maxFiles > 1 else {
            // Only one file: start it afresh.
            ftruncate(fd, 0)
            size = 0
            return
        }
        unlink("\(path).\(maxFiles - 1)")
        var index = maxFiles - 2
        while index >= 1 {
            rename("\(path).\(index)", "\(path).\(index + 1)")
            index -= 1
        }
        rename(path, "\(path).1")
        try? reopen()
    }

    func write(stream: String, partial: Bool, text: ArraySlice<UInt8>) {
        var line = Array("\(Files.nowNanos()) \(stream) \(partial ? "P" : "F") ".utf8)
        line += text
        line.append(UInt8(ascii: "\n"))
        if maxBytes > 0 && size > 0 && size + line.count > maxBytes { rotate() }
        Files.writeAll(fd, line)
        size += line.count
    }

    func sync() { fsync(fd) }
}

/// Splits a pipe's bytes into lines for the log.
final class StreamSplitter {
    let stream: String
    let fd: Int32
    private var pending: [UInt8] = []
    private let log: LogWriter
    static let maxLine = 16 * 1024

    init(stream: String, fd: Int32, log: LogWriter) {
        self.stream = stream
        self.fd = fd
        self.log = log
    }

    /// Reads what is there. Returns false at end of file.
    func drain() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { return errno == EINTR || errno == EAGAIN }
        if n == 0 {
            flush()
            return false
        }
        pending += buffer[0..<n]
        var start = 0
        while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
            log.write(stream: stream, partial: false, text: pending[start..<newline])
            start = newline + 1
        }
        pending.removeFirst(start)
        while pending.count >= Self.maxLine {
            log.write(stream: stream, partial: true, text: pending[0..<Self.maxLine])
            pending.removeFirst(Self.maxLine)
        }
        return true
    }

    func flush() {
        if !pending.isEmpty {
            log.write(stream: stream, partial: true, text: pending[...])
            pending.removeAll()
        }
    }
}
