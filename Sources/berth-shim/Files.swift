import CBerthSyscalls
import Glibc

struct SystemCallError: Error, CustomStringConvertible {
    var operation: String
    var errno: Int32
    var description: String { "\(operation): \(String(cString: strerror(errno)))" }
}

enum Files {
    static func read(_ path: String, limit: Int = 64 << 20) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError(operation: "open \(path)", errno: errno) }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while out.count < limit {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemCallError(operation: "read \(path)", errno: errno)
            }
            if n == 0 { break }
            out += buffer[0..<n]
        }
        return out
    }

    /// The whole file, or nothing when it cannot be read.
    static func readAll(_ path: String) -> [UInt8] {
        (try? read(path)) ?? []
    }

    /// Writes `prefix` then `payload` (one writev when it all fits); a peer
    /// that is gone ends the attempt quietly.
    static func writeAll(_ fd: Int32, _ prefix: [UInt8], _ payload: UnsafeRawBufferPointer) {
        let total = prefix.count + payload.count
        let written = prefix.withUnsafeBytes { head -> Int in
            var vectors = [
                iovec(iov_base: UnsafeMutableRawPointer(mutating: head.baseAddress), iov_len: head.count),
                iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count),
            ]
            var n: Int
            repeat { n = writev(fd, &vectors, 2) } while n < 0 && errno == EINTR
            return n
        }
        guard written >= 0, written < total else { return }
        // A short write: the rest, as plain writes.
        if written < prefix.count {
            writeAll(fd, Array(prefix[written...]))
            _ = berth_write_all(fd, payload.baseAddress, payload.count)
        } else {
            let done = written - prefix.count
            _ = berth_write_all(fd, payload.baseAddress.map { $0 + done }, payload.count - done)
        }
    }

    static func readText(_ path: String) throws -> String {
        String(decoding: try read(path), as: UTF8.self)
    }

    /// Writes all of `bytes`; a peer that is gone ends the attempt quietly.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { berth_write_all(fd, $0.baseAddress, $0.count) }
    }

    /// Temp file, rename: whoever reads the file (the agent, after a crash
    /// of either) sees the old content or the new. Not fsynced: the bundle
    /// lives in the state directory, for one boot, like the shim itself.
    static func writeAtomically(_ text: String, to path: String) throws {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SystemCallError(operation: "open \(temporary)", errno: errno) }
        writeAll(fd, Array(text.utf8))
        close(fd)
        guard rename(temporary, path) == 0 else { throw SystemCallError(operation: "rename \(path)", errno: errno) }
    }

    static func nowNanos() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// The `oom_kill N` value of memory.oom_control (v1) or memory.events (v2).
    static func oomKills(_ path: String) -> UInt64 {
        guard !path.isEmpty, let text = try? readText(path) else { return 0 }
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, parts[0] == "oom_kill", let n = UInt64(parts[1]) { return n }
        }
        return 0
    }
}
