import CBerthSyscalls
import Glibc

/// Unix stream sockets: connecting, and descriptors passed with the bytes (SCM_RIGHTS).
public enum UnixSocket {
    /// A blocking, close-on-exec connection to the socket at `path`, whose
    /// reads and writes give up after `timeoutSeconds` (EAGAIN). A path too
    /// long for `sun_path` is reached through a descriptor of its directory.
    public static func connect(_ path: String, timeoutSeconds: Int32) throws -> Descriptor {
        var target = path
        var directory: Descriptor?
        if path.utf8.count > 100, let slash = path.lastIndex(of: "/") {
            directory = try? Descriptor.open(String(path[..<slash]), .directory)
            if let directory { target = "/proc/self/fd/\(directory.raw)/\(path[path.index(after: slash)...])" }
        }
        defer { directory?.close() }
        let fd = berth_unix_connect(target, timeoutSeconds)
        guard fd >= 0 else { throw SystemError.last("connect", path: path) }
        return Descriptor(fd)
    }
}

extension Descriptor {
    /// Sends all of `bytes` as one message on a unix socket, with `descriptors` attached.
    public func send(_ bytes: [UInt8], passing descriptors: [Int32]) throws {
        let sent = bytes.withUnsafeBytes { raw in
            descriptors.withUnsafeBufferPointer { berth_send_with_fds(self.raw, raw.baseAddress, raw.count, $0.baseAddress, Int32(descriptors.count)) }
        }
        guard sent == 0 else { throw SystemError.last("sendmsg") }
    }

    /// Receives what is there (0 at the end), and the descriptors that came
    /// with it (at most `maxDescriptors`, close-on-exec; the caller owns them).
    /// EINTR is retried.
    public func receive(into buffer: UnsafeMutableRawBufferPointer, maxDescriptors: Int) throws -> (count: Int, descriptors: [Int32]) {
        var fds = [Int32](repeating: -1, count: max(1, maxDescriptors))
        while true {
            var received: Int32 = 0
            let n = berth_recv_with_fds(raw, buffer.baseAddress, buffer.count, &fds, Int32(maxDescriptors), &received)
            let descriptors = Array(fds[0..<Int(received)])
            if n >= 0 { return (n, descriptors) }
            let error = SystemError.last("recvmsg")
            descriptors.forEach { Glibc.close($0) }
            if error.code != .interrupted { throw error }
        }
    }

    /// A receive that does not wait: nil when nothing is there yet.
    public func receiveNow(into buffer: UnsafeMutableRawBufferPointer) throws -> Int? {
        while true {
            let n = recv(raw, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT))
            if n >= 0 { return n }
            if Glibc.errno == EINTR { continue }
            if Glibc.errno == EAGAIN { return nil }
            throw SystemError.last("recv")
        }
    }
}
