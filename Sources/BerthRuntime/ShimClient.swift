import BerthModel
public import BerthShimProtocol
import BerthLinux
import NIOCore
import NIOPosix

/// A process the shim started in its container (exec), as the agent holds it.
public struct ShimExecProcess: Sendable {
    public var pid: Int32
    /// The process's pidfd, for signals (the shim, its parent, reaps it).
    public var pidfd: Int32
    /// The connection on which the shim tells the process's end (a
    /// `ShimExit` line), then closes.
    public var connection: Int32

    /// Reads the end the shim tells: the exit code (or 128 + signal), or nil
    /// while it is not there yet (non-blocking); -1 when the shim went away
    /// without telling it. The connection is closed once an answer is read.
    public static func readEnd(_ connection: Int32, blocking: Bool) -> Int32? {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 512)
        var timeout: Int32 = blocking ? -1 : 0
        let socket = Descriptor(connection)
        while !received.contains(UInt8(ascii: "\n")) {
            guard let ready = try? Poll.readable([socket], timeoutMilliseconds: timeout) else { return -1 }
            if ready.isEmpty { return nil }
            // Once the answer has begun, the rest is waited for.
            timeout = -1
            let n: Int?
            do { n = try buffer.withUnsafeMutableBytes { try socket.receiveNow(into: $0) } } catch { return -1 }
            guard let n else { continue }
            if n == 0 { return -1 }
            received += buffer[0..<n]
        }
        let text = String(decoding: received.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        guard let record = try? LineRecord(singleLine: text), let exit = try? ShimExit(record: record) else { return -1 }
        return exit.code
    }
}

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
        let bytes = try await Blocking.run { Processes.readToEnd(shim.report) }
        // The next container's shim starts while this one's start is recorded.
        launcher.prepare()
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
    /// Each is a connection of its own. A request the shim answers at once
    /// (all but `wait`) is a short blocking exchange on a thread of the
    /// global queue. `wait` sends its request the same way, then reads the
    /// reply on the event loops, holding no thread meanwhile.
    ///
    /// - Throws: `BerthError.unavailable` when the shim does not answer;
    ///   `BerthError.cancelled` when the task waiting is cancelled.
    public func request(_ request: ShimRequest) async throws -> LineRecord {
        if request != .wait {
            return try await Blocking.run {
                try send(request).flatMap { fd in
                    defer { Descriptor(fd).close() }
                    return readReply(fd)
                }.get()
            }
        }
        return try await awaitReply(try await Blocking.run { try send(request).get() })
    }

    private func unanswered(_ error: any Error) -> BerthError {
        BerthError(.unavailable, "the container's shim does not answer at \(socketPath)", underlying: error)
    }

    /// Connects and writes the request, with `fds` attached (SCM_RIGHTS);
    /// the connection, whose reads time out. Blocking.
    private func send(_ request: ShimRequest, fds: [Int32] = []) -> Result<Int32, BerthError> {
        let socket: Descriptor
        do { socket = try UnixSocket.connect(socketPath, timeoutSeconds: Self.quickRequestTimeout) } catch { return .failure(unanswered(error)) }
        do {
            try socket.send(Array((request.line + "\n").utf8), passing: fds)
        } catch {
            socket.close()
            return .failure(unanswered(error))
        }
        return .success(socket.raw)
    }

    /// Reads the one-line reply (blocking, until the socket's read timeout).
    private func readReply(_ fd: Int32) -> Result<LineRecord, BerthError> {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1024)
        while !received.contains(UInt8(ascii: "\n")) {
            let n: Int
            do { n = try buffer.withUnsafeMutableBytes { try Descriptor(fd).read(into: $0) } } catch { return .failure(unanswered(error)) }
            guard n > 0 else { return .failure(BerthError(.unavailable, "the container's shim closed its socket without answering")) }
            received += buffer[0..<n]
        }
        return readReply(from: received)
    }

    /// The reply line at the start of `received`.
    private func readReply(from received: [UInt8]) -> Result<LineRecord, BerthError> {
        let text = String(decoding: received.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        do {
            return .success(try LineRecord(singleLine: text))
        } catch {
            return .failure(BerthError(.unavailable, "the container's shim answered \"\(text)\", which does not parse"))
        }
    }

    /// A connection to the shim handed to the event loops: read only as
    /// fast as its consumer takes it (NIOAsyncChannel's back-pressure). NIO
    /// owns the descriptor from here on; this never closes it itself, even
    /// when NIO refuses it (a second close could hit whatever the number
    /// was given to since).
    private func channel(_ fd: Int32) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        do {
            return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).withConnectedSocket(fd) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(backPressureStrategy: .init(lowWatermark: 2, highWatermark: 4)))
                }
            }
        } catch {
            throw BerthError(.unavailable, "cannot read from the container's shim at \(socketPath)", underlying: error)
        }
    }

    /// The reply to `wait`, read on the event loops when it comes (an
    /// exit may be days away): no thread is held meanwhile. The event
    /// loops own the descriptor, so that it is closed exactly once, by the
    /// one that watches it.
    private func awaitReply(_ fd: Int32) async throws -> LineRecord {
        let connection = try await channel(fd)
        let cancelled = BerthError(.cancelled, "the wait for the container's exit was cancelled")
        let reply: LineRecord?
        do {
            reply = try await connection.executeThenClose { inbound, _ in
                var received: [UInt8] = []
                for try await buffer in inbound {
                    received += buffer.readableBytesView
                    if received.contains(UInt8(ascii: "\n")) { return try readReply(from: received).get() }
                }
                return nil
            }
        } catch {
            throw Task.isCancelled ? cancelled : error
        }
        if let reply { return reply }
        throw Task.isCancelled ? cancelled : BerthError(.unavailable, "the container's shim closed its socket without answering")
    }

    /// Starts a process in the running container through its shim (exec):
    /// the shim clones it from itself, as it did the container's first
    /// process, so that no image of a host file is ever inside the
    /// container. `stdio` are the descriptors `exec` says come (stdin,
    /// stdout, stderr, in that order, those it asks for).
    ///
    /// - Returns: how the start went and, when started, the process.
    /// - Throws: `BerthError.unavailable` when the shim does not answer.
    public func exec(_ exec: ShimExec, id: String, stdio: [Int32]) async throws -> (start: ShimStart, process: ShimExecProcess?) {
        // The process goes on the request's line: no file per exec (a
        // health probe is an exec, hundreds a second on a busy host).
        let inline = try await Blocking.run { request(exec: .exec(id: id, process: exec), stdio: stdio) }
        switch inline {
        case .success(let outcome): return outcome
        case .failure(.refused):
            // A shim started by an agent before the inline form (it outlives
            // agents): the process in the file `exec-ID` of the bundle.
            let file = ShimExec.file(id, in: bundleDir)
            try AtomicFile.write(Array(exec.record.text.utf8), to: file, mode: 0o600, durable: false)
            defer { try? FileIO.removeFile(file) }
            let outcome = try await Blocking.run { request(exec: .exec(id: id, process: nil), stdio: stdio) }
            switch outcome {
            case .success(let outcome): return outcome
            case .failure(.refused(let text)): throw BerthError(.unavailable, "the container's shim answered \"\(text)\", which does not parse")
            case .failure(.failed(let error)): throw error
            }
        case .failure(.failed(let error)):
            throw error
        }
    }

    /// Why an exec request got no start.
    private enum ExecRequestFailure: Error {
        /// The shim does not take the request as sent (its answer).
        case refused(String)
        case failed(BerthError)
    }

    /// Sends an exec request with its stdio (blocking) and reads the start.
    private func request(exec request: ShimRequest, stdio: [Int32]) -> Result<(ShimStart, ShimExecProcess?), ExecRequestFailure> {
        let fd: Int32
        switch send(request, fds: stdio) {
        case .success(let connected): fd = connected
        case .failure(let error): return .failure(.failed(error))
        }
        let socket = Descriptor(fd)
        var received: [UInt8] = []
        var passed: [Int32] = []
        var buffer = [UInt8](repeating: 0, count: 1024)
        func closeAll() {
            passed.forEach { Descriptor($0).close() }
            socket.close()
        }
        while !received.contains(UInt8(ascii: "\n")) {
            let n: Int
            do {
                let got = try buffer.withUnsafeMutableBytes { try socket.receive(into: $0, maxDescriptors: 2) }
                passed += got.descriptors
                n = got.count
            } catch {
                closeAll()
                return .failure(.failed(unanswered(error)))
            }
            if n == 0 {
                closeAll()
                return .failure(.failed(BerthError(.unavailable, "the container's shim closed its socket without answering")))
            }
            received += buffer[0..<n]
        }
        let text = String(decoding: received.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        guard let record = try? LineRecord(singleLine: text), let start = try? ShimStart(record: record) else {
            closeAll()
            return .failure(.refused(text))
        }
        guard case .started(let pid, _, _) = start, let pidfd = passed.first else {
            closeAll()
            return .success((start, nil))
        }
        passed.dropFirst().forEach { Descriptor($0).close() }
        return .success((start, ShimExecProcess(pid: pid, pidfd: pidfd, connection: fd)))
    }

    /// The exit recorded in the bundle, if the process has exited.
    public func recordedExit() -> ShimExit? {
        guard let text = try? FileIO.read("\(bundleDir)/exit") else { return nil }
        return try? ShimExit(record: LineRecord(parsing: text))
    }
}

extension ShimClient {
    /// A piece of the container's output, as the shim read it.
    public enum OutputChunk: Sendable {
        case stdout([UInt8])
        case stderr([UInt8])
    }

    /// Follows the container's output through its shim (attach): every
    /// byte, in order, as the shim reads it, handed to `deliver` one piece
    /// at a time; returns once the output has ended. The shim reads no
    /// faster than `deliver` takes it, so a slow reader slows the container
    /// instead of losing output.
    ///
    /// - Parameter attached: called once the shim has the attach request,
    ///   before any output is delivered.
    /// - Throws: `BerthError.unavailable` when the shim does not answer, or
    ///   goes away before the end; what `attached` or `deliver` throws.
    public func followOutput(attached: () async throws -> Void = {}, _ deliver: (OutputChunk) async throws -> Void) async throws {
        // A channel of its own on the event loops: it reads only while its
        // few buffers are taken, so the socket fills when `deliver` is slow,
        // and the shim waits.
        let channel = try await channel(try await Blocking.run { try send(.attach).get() })
        let ended: Bool = try await channel.executeThenClose { inbound, _ in
            try await attached()
            var pending: [UInt8] = []
            var consumed = 0
            for try await buffer in inbound {
                pending += buffer.readableBytesView
                while let (tag, range) = ShimAttach.parse(pending[consumed...]) {
                    consumed = range.upperBound
                    switch tag {
                    case 1: try await deliver(.stdout(Array(pending[range])))
                    case 2: try await deliver(.stderr(Array(pending[range])))
                    default: return true
                    }
                }
                if consumed > 0 {
                    pending.removeFirst(consumed)
                    consumed = 0
                }
            }
            return false
        }
        guard ended else { throw BerthError(.unavailable, "the container's shim went away before the end of its output") }
    }
}
