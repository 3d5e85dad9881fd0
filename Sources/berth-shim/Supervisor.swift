import BerthShimProtocol
import CBerthContainer
import CBerthSyscalls
import Glibc

/// Starts one container and watches it until the agent deletes it.
final class Supervisor {
    let bundle: String
    let config: ShimConfig
    private var pidfd: Int32 = -1
    private var pid: Int32 = 0
    private var exitRecord: ShimExit?
    private var oomBaseline: UInt64 = 0
    /// The container's stdout and stderr, until each ends.
    private var outputs: [OutputPipe] = []
    private var log: LogWriter?
    /// Connections following the output live (attach), by descriptor.
    private var attached: [Int32: AttachedClient] = [:]
    /// Until the first attach, or until the agent says no attach comes
    /// (`release`), the output is not read: an attached run gets every
    /// byte from the first, however long its attach takes.
    private var gated = false
    private var attachGateDeadline: Int64 = 0
    /// How far an attached client may fall behind before the container's
    /// output stops being read (and the container, its pipe full, waits).
    static let attachWindow = 256 * 1024
    /// How long an output gate waits for an attach or a release at most:
    /// only for an agent that died between a start and its attach and was
    /// not started again (a restarted agent releases every gate it finds).
    static let attachGateNanos: Int64 = 300_000_000_000
    private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)
    private var listener: Int32 = -1
    private var clients: [Int32: [UInt8]] = [:]
    private var waiters: [Int32] = []
    private var deleteRequested: Int32?
    /// Descriptors that came with a client's request bytes (SCM_RIGHTS),
    /// until its request line is complete.
    private var passed: [Int32: [Int32]] = [:]
    /// Processes started in the container (exec), by pidfd: the connection
    /// that is told of the end.
    private var execs: [Int32: Int32] = [:]
    private let images: RuntimeImages
    /// The host's /dev/null, for the stdio a process is not given: the
    /// container's own may be anything its root put there.
    private let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)

    init(bundle: String, images: RuntimeImages) throws {
        self.bundle = bundle
        self.images = images
        self.config = try ShimConfig(record: LineRecord(parsing: Files.readText(bundle + "/config")))
    }

    // MARK: Start

    /// The C strings of the process spec, kept while the shim runs.
    private let arena = CArena()

    func start() -> ShimStart {
        var seccomp: [UInt8] = []
        if !config.seccompFile.isEmpty {
            do {
                seccomp = try Files.read(config.seccompFile)
            } catch {
                return .failed(stage: "read seccomp program", errno: 0, errnoName: "", detail: "\(error)")
            }
        }
        let logWriter: LogWriter
        do {
            logWriter = try LogWriter(path: config.logFile, maxBytes: config.logMaxBytes, maxFiles: config.logMaxFiles)
        } catch {
            return .failed(stage: "open log", errno: 0, errnoName: "", detail: "\(error)")
        }
        log = logWriter
        var outPipe: [Int32] = [0, 0]
        var errPipe: [Int32] = [0, 0]
        guard berth_pipe2_cloexec(&outPipe) == 0, berth_pipe2_cloexec(&errPipe) == 0 else {
            return .failed(stage: "pipe", errno: errno, errnoName: Self.errnoName(errno), detail: "")
        }
        oomBaseline = Files.oomKills(config.oomCounterFile)

        if config.initProcess && images.initFD < 0 {
            close(outPipe[0])
            close(outPipe[1])
            close(errPipe[0])
            close(errPipe[1])
            return .failed(stage: "init", errno: ENOENT, errnoName: Self.errnoName(ENOENT), detail: "the shim was given no init to run")
        }
        var spec = config.processSpec(
            in: arena, seccomp: seccomp, stdin: devNull, stdout: outPipe[1], stderr: errPipe[1], initFD: images.initFD, forbidden: images.forbidden)
        var result = berth_start_result()
        let rc = berth_container_start(&spec, &result)
        close(outPipe[1])
        close(errPipe[1])
        if rc != 0 {
            close(outPipe[0])
            close(errPipe[0])
            let stage = withUnsafeBytes(of: result.stage) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            return .failed(stage: stage, errno: result.error, errnoName: Self.errnoName(result.error), detail: "")
        }
        pid = result.pid
        pidfd = result.pidfd
        let startedAt = Files.nowNanos()
        for fd in [outPipe[0], errPipe[0]] {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        outputs = [OutputPipe(stream: .stdout, fd: outPipe[0]), OutputPipe(stream: .stderr, fd: errPipe[0])]
        gated = config.attachGate
        attachGateDeadline = startedAt + Self.attachGateNanos
        let warnings = withUnsafeBytes(of: result.warnings) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            .split(separator: "\n").map(String.init)
        do {
            try listen()
        } catch {
            _ = berth_pidfd_send_signal(pidfd, SIGKILL)
            return .failed(stage: "control socket", errno: 0, errnoName: "", detail: "\(error)")
        }
        return .started(pid: pid, startedAt: startedAt, warnings: warnings)
    }

    static func errnoName(_ e: Int32) -> String {
        guard e != 0, let name = berth_errno_name(e) else { return "" }
        return String(cString: name)
    }

    private func listen() throws {
        unlink(bundle + "/shim.sock")
        // sun_path holds 107 bytes; a long bundle path is reached through a
        // descriptor of its directory instead.
        var path = bundle + "/shim.sock"
        if path.utf8.count > 100 {
            let dirfd = open(bundle, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard dirfd >= 0 else { throw SystemCallError(operation: "open \(bundle)", errno: errno) }
            path = "/proc/self/fd/\(dirfd)/shim.sock"
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw SystemCallError(operation: "socket", errno: errno) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SystemCallError(operation: "socket path too long", errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw SystemCallError(operation: "bind \(path)", errno: errno) }
        chmod(bundle + "/shim.sock", 0o600)
        guard Glibc.listen(fd, 16) == 0 else { throw SystemCallError(operation: "listen", errno: errno) }
        listener = fd
    }

    // MARK: Supervise

    func run() {
        while true {
            if gated && Files.nowNanos() >= attachGateDeadline { gated = false }
            // The output is read only while every attached client keeps up.
            let reading = !gated && attached.values.allSatisfy { $0.backlog < Self.attachWindow }
            var fds: [pollfd] = []
            if pidfd >= 0 && exitRecord == nil { fds.append(pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)) }
            if reading { for o in outputs { fds.append(pollfd(fd: o.fd, events: Int16(POLLIN), revents: 0)) } }
            if listener >= 0 { fds.append(pollfd(fd: listener, events: Int16(POLLIN), revents: 0)) }
            for fd in clients.keys { fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
            for fd in execs.keys { fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
            for (fd, client) in attached {
                fds.append(pollfd(fd: fd, events: Int16(client.backlog > 0 ? POLLOUT : POLLIN), revents: 0))
            }
            let timeout = gated ? Int32(clamping: max(1, (attachGateDeadline - Files.nowNanos()) / 1_000_000)) : -1
            let n = poll(&fds, nfds_t(fds.count), timeout)
            if n < 0 {
                if errno == EINTR { continue }
                fatal("poll: \(String(cString: strerror(errno)))")
            }
            for entry in fds where entry.revents != 0 {
                if entry.fd == pidfd && exitRecord == nil {
                    reap()
                } else if entry.fd == listener {
                    accept()
                } else if let output = outputs.first(where: { $0.fd == entry.fd }) {
                    if !drain(output) {
                        close(output.fd)
                        outputs.removeAll { $0 === output }
                        if outputs.isEmpty { endAttachments() }
                    }
                } else if let client = attached[entry.fd] {
                    if entry.revents & Int16(POLLOUT) != 0 { flush(client) }
                    if entry.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 && client.backlog == 0 { detach(client) }
                } else if execs[entry.fd] != nil {
                    reapExec(entry.fd)
                } else if clients[entry.fd] != nil {
                    serve(entry.fd)
                }
            }
            // With the output closed, the exit is still waited for by
            // poll, never by a blocking wait: PID 1 of the container does
            // not become waitable until every other process of its PID
            // namespace is reaped, and the shim reaps the processes exec'd
            // into it (a blocking wait here would wait for itself).
            if exitRecord != nil && outputs.isEmpty { finishExit() }
            // Processes exec'd in the container die with its PID 1; their
            // ends are told, and attached connections get the rest of the
            // output, before the shim leaves.
            if let requester = deleteRequested, exitRecord != nil, outputs.isEmpty, execs.isEmpty, attached.isEmpty {
                reply(requester, "ok=1")
                unlink(bundle + "/shim.sock")
                return
            }
        }
    }

    // MARK: Output

    /// Reads what the container wrote, logs it, and queues it for every
    /// attached client. False at the end of the pipe.
    private func drain(_ output: OutputPipe) -> Bool {
        let n = readBuffer.withUnsafeMutableBytes { read(output.fd, $0.baseAddress, $0.count) }
        if n < 0 { return errno == EINTR || errno == EAGAIN }
        if n == 0 { return false }
        readBuffer.withUnsafeBytes { bytes in
            let chunk = UnsafeRawBufferPointer(rebasing: bytes[0..<n])
            log?.write(output.stream, chunk)
            for client in attached.values {
                client.queue(ShimAttach.frame(output.stream.rawValue, chunk))
                flush(client)
            }
        }
        return true
    }

    /// Starts following the output for the connection `fd`.
    private func attach(_ fd: Int32) {
        clients.removeValue(forKey: fd)
        passed.removeValue(forKey: fd)?.forEach { close($0) }
        let client = AttachedClient(fd: fd)
        attached[fd] = client
        gated = false
        if outputs.isEmpty {
            client.queue(ShimAttach.endFrame)
            client.ending = true
            flush(client)
        }
    }

    /// The output has ended: every attached client is told, after what it has not read yet.
    private func endAttachments() {
        for client in attached.values where !client.ending {
            client.queue(ShimAttach.endFrame)
            client.ending = true
            flush(client)
        }
    }

    /// Sends what it can of a client's backlog without waiting; a client
    /// told the end and caught up, or gone, is let go.
    private func flush(_ client: AttachedClient) {
        if !client.send() || (client.ending && client.backlog == 0) { detach(client) }
    }

    private func detach(_ client: AttachedClient) {
        attached.removeValue(forKey: client.fd)
        close(client.fd)
    }

    private func reap() {
        var code: Int32 = 0
        var status: Int32 = 0
        guard berth_pidfd_wait(pidfd, &code, &status, WNOHANG) == 0 else { return }
        let finished = Files.nowNanos()
        var exit = ShimExit(code: 0, signal: 0, oomKilled: false, finishedAt: finished)
        if code == CLD_EXITED {
            exit.code = status
        } else {
            exit.signal = status
            exit.code = 128 + status
        }
        exit.oomKilled = Files.oomKills(config.oomCounterFile) > oomBaseline
        exitRecord = exit
        close(pidfd)
        pidfd = -1
    }

    private var exitWritten = false

    private func finishExit() {
        guard !exitWritten, let exit = exitRecord else { return }
        exitWritten = true
        try? Files.writeAtomically(exit.record.text, to: bundle + "/exit")
        for fd in waiters { reply(fd, exit.record.singleLine) }
        waiters.removeAll()
        // The log is complete; make it durable once the exit is reported.
        log?.sync()
    }

    private func accept() {
        let fd = berth_accept_cloexec_nonblock(listener)
        if fd >= 0 { clients[fd] = [] }
    }

    private func serve(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        var received: [Int32] = Array(repeating: -1, count: 4)
        var count: Int32 = 0
        let n = buffer.withUnsafeMutableBytes { berth_recv_with_fds(fd, $0.baseAddress, $0.count, &received, 4, &count) }
        if count > 0 { passed[fd, default: []] += received[0..<Int(count)] }
        if n <= 0 {
            if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
            drop(fd)
            return
        }
        clients[fd, default: []] += buffer[0..<n]
        guard let newline = clients[fd]!.firstIndex(of: UInt8(ascii: "\n")) else {
            // An exec's process comes on its line: room for a large environment.
            if clients[fd]!.count > 1 << 20 { drop(fd) }
            return
        }
        let line = String(decoding: clients[fd]![..<newline], as: UTF8.self)
        clients[fd]!.removeFirst(newline + 1)
        let descriptors = passed.removeValue(forKey: fd) ?? []
        guard let request = ShimRequest(line: Substring(line)) else {
            descriptors.forEach { close($0) }
            reply(fd, "error=unknown request")
            return
        }
        if case .exec(let id, let process) = request {
            startExec(id, process: process, stdio: descriptors, client: fd)
            return
        }
        if case .attach = request {
            descriptors.forEach { close($0) }
            attach(fd)
            return
        }
        descriptors.forEach { close($0) }
        switch request {
        case .state:
            if let exit = exitRecord, exitWritten {
                var r = exit.record
                r.add("state", "exited")
                reply(fd, r.singleLine)
            } else {
                var r = LineRecord()
                r.add("state", "running")
                r.add("pid", pid)
                reply(fd, r.singleLine)
            }
        case .signal(let signal):
            if exitRecord != nil {
                reply(fd, "error=the container is not running")
            } else if berth_pidfd_send_signal(pidfd, signal) == 0 {
                reply(fd, "ok=1")
            } else {
                reply(fd, "error=\(String(cString: strerror(errno)))")
            }
        case .wait:
            if let exit = exitRecord, exitWritten {
                reply(fd, exit.record.singleLine)
            } else {
                waiters.append(fd)
            }
        case .delete:
            if exitRecord == nil, pidfd >= 0 { _ = berth_pidfd_send_signal(pidfd, SIGKILL) }
            deleteRequested = fd
        case .release:
            gated = false
            reply(fd, "ok=1")
        case .exec, .attach:
            break
        }
    }

    // MARK: Exec

    /// Starts the process `process` (or, when the request had none, the
    /// file `exec-ID` in the bundle) describes, as a child of
    /// this shim (a clone of it until its exec, like the container's
    /// first process, so that nothing of a host binary is ever in the
    /// container), and answers with its start; its end follows later on
    /// the same connection.
    private func startExec(_ id: String, process: ShimExec?, stdio: [Int32], client: Int32) {
        defer { stdio.forEach { close($0) } }
        // The connection now belongs to this exec: no more requests on it.
        clients.removeValue(forKey: client)
        func refuse(_ stage: String, _ error: Int32, _ detail: String) {
            reply(client, ShimStart.failed(stage: stage, errno: error, errnoName: Self.errnoName(error), detail: detail).record.singleLine)
            close(client)
        }
        let exec: ShimExec
        if let process {
            exec = process
        } else {
            let file = ShimExec.file(id, in: bundle)
            do {
                exec = try ShimExec(record: LineRecord(parsing: Files.readText(file)))
            } catch {
                unlink(file)
                return refuse("read exec", 0, "\(error)")
            }
            unlink(file)
        }
        guard exitRecord == nil, pidfd >= 0, deleteRequested == nil else {
            return refuse("exec", ESRCH, "the container is not running")
        }
        let wanted = [exec.stdin, exec.stdout, exec.stderr]
        guard stdio.count == wanted.filter({ $0 }).count else {
            return refuse("exec", EBADF, "expected \(wanted.filter { $0 }.count) descriptors with the request, got \(stdio.count)")
        }
        var given = stdio.makeIterator()
        let fds = wanted.map { $0 ? given.next() ?? devNull : devNull }
        var seccomp: [UInt8] = []
        if !exec.process.seccompFile.isEmpty {
            do {
                seccomp = try Files.read(exec.process.seccompFile)
            } catch {
                return refuse("read seccomp program", 0, "\(error)")
            }
        }
        let arena = CArena()
        var spec = exec.process.processSpec(
            in: arena, seccomp: seccomp, stdin: fds[0], stdout: fds[1], stderr: fds[2], forbidden: images.forbidden)
        spec.controlling_tty = exec.controllingTerminal ? 1 : 0
        var result = berth_start_result()
        guard berth_exec_start(&spec, pidfd, &result) == 0 else {
            let stage = withUnsafeBytes(of: result.stage) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            return refuse(stage, result.error, "")
        }
        let text = ShimStart.started(pid: result.pid, startedAt: Files.nowNanos(), warnings: []).record.singleLine + "\n"
        let sent = Array(text.utf8).withUnsafeBytes { bytes in
            withUnsafePointer(to: result.pidfd) { berth_send_with_fds(client, bytes.baseAddress, bytes.count, $0, 1) }
        }
        if sent != 0 {
            // The agent is gone: the process runs on (its stdio is the
            // agent's, so it will end); its end is reaped, told to no one.
            close(client)
            execs[result.pidfd] = -1
            return
        }
        execs[result.pidfd] = client
    }

    /// A process exec'd in the container has ended: reap it and tell its connection.
    private func reapExec(_ processFD: Int32) {
        var code: Int32 = 0
        var status: Int32 = 0
        guard berth_pidfd_wait(processFD, &code, &status, WNOHANG) == 0 else { return }
        let client = execs.removeValue(forKey: processFD) ?? -1
        close(processFD)
        guard client >= 0 else { return }
        let ended = code == CLD_EXITED
            ? ShimExit(code: status, signal: 0, oomKilled: false, finishedAt: Files.nowNanos())
            : ShimExit(code: 128 + status, signal: status, oomKilled: false, finishedAt: Files.nowNanos())
        reply(client, ended.record.singleLine)
        close(client)
    }

    private func reply(_ fd: Int32, _ line: String) {
        // Replies are short; a blocking write on a fresh non-blocking socket
        // fits in the socket buffer.
        Files.writeAll(fd, Array((line + "\n").utf8))
    }

    private func drop(_ fd: Int32) {
        clients.removeValue(forKey: fd)
        passed.removeValue(forKey: fd)?.forEach { close($0) }
        waiters.removeAll { $0 == fd }
        if deleteRequested == fd { deleteRequested = nil }
        close(fd)
    }
}

/// The container's stdout or stderr, as the shim reads it.
final class OutputPipe {
    let stream: ContainerLogFormat.Stream
    let fd: Int32

    init(stream: ContainerLogFormat.Stream, fd: Int32) {
        self.stream = stream
        self.fd = fd
    }
}

/// A connection following the output live: the frames it has not taken yet.
final class AttachedClient {
    let fd: Int32
    private var pending: [UInt8] = []
    private var sent = 0
    /// The end frame is queued.
    var ending = false

    init(fd: Int32) {
        self.fd = fd
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    var backlog: Int { pending.count - sent }

    func queue(_ frame: [UInt8]) {
        if sent >= 64 * 1024 {
            pending.removeFirst(sent)
            sent = 0
        }
        pending += frame
    }

    /// Writes what the socket takes now. False when the peer is gone.
    func send() -> Bool {
        while sent < pending.count {
            let n = pending.withUnsafeBytes { bytes in
                Glibc.send(fd, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if n < 0 {
                if errno == EINTR { continue }
                return errno == EAGAIN
            }
            sent += n
        }
        pending.removeAll(keepingCapacity: true)
        sent = 0
        return true
    }
}
