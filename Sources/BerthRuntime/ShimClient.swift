import BerthModel
public import BerthShimProtocol
import BerthLinux
import CBerthLinux
import Dispatch
import Glibc
import NIOCore
import NIOPosix

/// The agent's side of one `berth-shim`: starting it, and asking it for
/// state, signals, the exit, and deletion over its control socket.
public struct ShimClient: Sendable {
    public let bundleDir: String
    public var socketPath: String { "\(bundleDir)/shim.sock" }

    public init(bundleDir: String) {
        self.bundleDir = bundleDir
    }

    /// Writes the config into the bundle, starts the shim, and waits for it
    /// to report the container's process started (or why it did not).
    ///
    /// - Returns: the shim's pid and the start outcome.
    /// - Throws: `BerthError` when the shim cannot be started or reports nothing.
    public func start(config: ShimConfig, launcher: ShimLauncher) async throws -> (shimPID: Int32, start: ShimStart) {
        // The bundle lives in the state directory, for one boot: no fsync.
        try AtomicFile.write(Array(config.record.text.utf8), to: "\(bundleDir)/config", mode: 0o600, durable: false)
        let shim = try launcher.launch(bundleDir: bundleDir)
        let bytes = await withCheckedContinuation { (continuation: CheckedContinuation<[UInt8], Never>) in
            DispatchQueue.global().async { continuation.resume(returning: Processes.readToEnd(shim.report)) }
        }
        // The next container's shim starts while this one's start is recorded.
        DispatchQueue.global().async { launcher.prepare() }
        let text = String(decoding: bytes, as: UTF8.self)
        do {
            return (shim.pid, try ShimStart(record: LineRecord(parsing: text)))
        } catch {
            Processes.reap(shim.pid)
            let log = (try? FileIO.read("\(bundleDir)/shim.log")) ?? ""
            throw BerthError(.internal, "berth-shim exited without reporting a start\(log.isEmpty ? "" : ": \(log.suffix(500))")")
        }
    }

    /// How long a request the shim answers at once may take.
    static let quickRequestTimeout: Int32 = 30

    /// Sends one request and returns the reply (which for `wait` comes when
    /// the process exits).
    ///
    /// A request the shim answers at once (all but `wait`) is a short
    /// blocking exchange on a thread of the global queue, which costs a
    /// fraction of an event loop channel's set-up; `wait` waits on the event
    /// loop, holding no thread.
    ///
    /// - Throws: `BerthError.unavailable` when the shim does not answer.
    public func request(_ request: ShimRequest) async throws -> LineRecord {
        var path = socketPath
        // sun_path holds 107 bytes; reach a long path through a descriptor of its directory.
        var dirfd: Int32 = -1
        if path.utf8.count > 100 {
            dirfd = open(bundleDir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dirfd >= 0 { path = "/proc/self/fd/\(dirfd)/shim.sock" }
        }
        defer { if dirfd >= 0 { close(dirfd) } }
        if request != .wait {
            let socketPath = path
            let reply = await withCheckedContinuation { (continuation: CheckedContinuation<Result<LineRecord, BerthError>, Never>) in
                DispatchQueue.global().async { continuation.resume(returning: exchange(request, at: socketPath)) }
            }
            return try reply.get()
        }
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(unixDomainSocketPath: path) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
            return try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: request.line + "\n"))
                var buffer = ByteBuffer()
                for try await var chunk in inbound {
                    buffer.writeBuffer(&chunk)
                    if let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
                        let line = buffer.readString(length: newline - buffer.readerIndex) ?? ""
                        return try LineRecord(singleLine: line)
                    }
                }
                throw BerthError(.unavailable, "the shim closed its socket without answering")
            }
        } catch let error as BerthError {
            throw error
        } catch {
            throw BerthError(.unavailable, "the container's shim does not answer at \(socketPath)", underlying: error)
        }
    }

    /// One request and its one-line reply over a blocking connection.
    private func exchange(_ request: ShimRequest, at path: String) -> Result<LineRecord, BerthError> {
        func unanswered(_ operation: String, _ error: Int32) -> Result<LineRecord, BerthError> {
            .failure(BerthError(.unavailable, "the container's shim does not answer at \(socketPath)", underlying: SystemError(operation, errno: error)))
        }
        let fd = berth_unix_connect(path, Self.quickRequestTimeout)
        guard fd >= 0 else { return unanswered("connect", errno) }
        defer { close(fd) }
        let line = Array((request.line + "\n").utf8)
        guard berth_write_all(fd, line, line.count) == 0 else { return unanswered("write", errno) }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1024)
        while !reply.contains(UInt8(ascii: "\n")) {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return unanswered("read", errno) }
            guard n > 0 else { return .failure(BerthError(.unavailable, "the container's shim closed its socket without answering")) }
            reply += buffer[0..<n]
        }
        let text = String(decoding: reply.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        do {
            return .success(try LineRecord(singleLine: text))
        } catch {
            return .failure(BerthError(.unavailable, "the container's shim answered \"\(text)\", which does not parse"))
        }
    }

    /// The exit recorded in the bundle, if the process has exited.
    public func recordedExit() -> ShimExit? {
        guard let text = try? FileIO.read("\(bundleDir)/exit") else { return nil }
        return try? ShimExit(record: LineRecord(parsing: text))
    }
}
