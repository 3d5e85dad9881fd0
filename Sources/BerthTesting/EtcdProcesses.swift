public import BerthEtcd
import BerthLinux
public import BerthTransport
import Foundation
public import Logging
import Synchronization

/// Real etcd members (`/usr/bin/etcd` 3.4, Debian's etcd-server) for
/// tests: one, or a cluster of three, on free loopback ports, with their
/// data and logs in a scratch directory. Members are signalled by PID,
/// never by name. `EtcdProcesses.with` kills every member it started and
/// removes the directory however its body ends; `deinit` does too.
public final class EtcdProcesses: Sendable {
    public struct Member: Sendable {
        public var name: String
        public var clientPort: Int
        public var peerPort: Int
        /// 0 while the member is not running.
        public var pid: Int32
    }

    public static let executable = "/usr/bin/etcd"
    /// Where the members' data directories and logs are.
    public let directory: String
    private let token: String
    private let state: Mutex<[Member]>
    /// With client TLS: a directory with ca.pem, cert.pem and key.pem, the
    /// members' certificate and the CA their clients' must come from.
    public let tlsDirectory: String?

    /// Runs `body` with `count` members serving, then kills them and
    /// removes their directory, whether `body` returns or throws.
    public static func with<T: Sendable>(
        members count: Int, tlsDirectory: String? = nil, _ body: (EtcdProcesses) async throws -> T
    ) async throws -> T {
        let etcd = try await EtcdProcesses(count: count, tlsDirectory: tlsDirectory)
        do {
            let result = try await body(etcd)
            etcd.stop()
            return result
        } catch {
            etcd.stop()
            throw error
        }
    }

    /// Starts `count` members and waits until each answers a client.
    ///
    /// - Throws: when etcd is missing or a member does not serve within 30 s
    ///   (its log's end is in the error).
    ///
    /// - Parameter tlsDirectory: serve clients over TLS with this directory's
    ///   cert.pem and key.pem, and take only clients whose certificate
    ///   ca.pem signed (etcd's `--client-cert-auth`); the harness's own
    ///   clients present the same certificate.
    public init(count: Int, tlsDirectory: String? = nil) async throws {
        self.tlsDirectory = tlsDirectory
        guard FileManager.default.isExecutableFile(atPath: Self.executable) else {
            throw EtcdHarnessError("\(Self.executable) is missing: apt-get install etcd-server")
        }
        token = "berth-etcd-test-\(UUID().uuidString.prefix(8).lowercased())"
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(token).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var members: [Member] = []
        do {
            // Every port stays bound until all are chosen, so that no two are alike.
            var held: [BoundSocket] = []
            for i in 0..<count {
                let client = try BoundSocket(address: 0x7f00_0001, port: 0, udp: false)
                let peer = try BoundSocket(address: 0x7f00_0001, port: 0, udp: false)
                held += [client, peer]
                members.append(Member(name: "m\(i)", clientPort: Int(client.port), peerPort: Int(peer.port), pid: 0))
            }
            held.removeAll()
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        state = Mutex(members)
        do {
            for i in members.indices { try launch(i) }
            for i in members.indices { try await waitUntilServing(i, quorum: true) }
        } catch {
            stop()
            throw error
        }
    }

    deinit { stop() }

    public var members: [Member] { state.withLock { $0 } }

    /// Every member's client endpoint.
    public var endpoints: [TransportAddress] { members.map { .tcp(host: "127.0.0.1", port: $0.clientPort) } }

    /// `etcd://HOST:PORT,...`, as `berth-controller --store` takes it.
    public var storeURL: String { "etcd://" + members.map { "127.0.0.1:\($0.clientPort)" }.joined(separator: ",") }

    /// A client of every member, quiet.
    public func client(requestTimeout: Duration = .seconds(5), members indices: [Int]? = nil) -> EtcdClient {
        let all = endpoints
        let tls = tlsDirectory.flatMap { try? MutualTLS(directory: $0) }
        return EtcdClient(endpoints: (indices ?? Array(all.indices)).map { all[$0] }, tls: tls, requestTimeout: requestTimeout, logger: Self.logger)
    }

    public static var logger: Logger {
        var logger = Logger(label: "berth.etcd.test")
        logger.logLevel = .critical
        return logger
    }

    /// The end of member `i`'s log, for failure messages.
    public func log(_ i: Int) -> String {
        String(((try? String(contentsOfFile: logPath(i), encoding: .utf8)) ?? "").suffix(3000))
    }

    private func logPath(_ i: Int) -> String { "\(directory)/\(members[i].name).log" }

    private func launch(_ i: Int) throws {
        let member = members[i]
        let initialCluster = members.map { "\($0.name)=http://127.0.0.1:\($0.peerPort)" }.joined(separator: ",")
        let log = try Descriptor.open(logPath(i), [.writeOnly, .create, .append])
        defer { log.close() }
        let scheme = tlsDirectory == nil ? "http" : "https"
        let tls = tlsDirectory.map { dir in
            ["--cert-file", "\(dir)/cert.pem", "--key-file", "\(dir)/key.pem", "--client-cert-auth", "--trusted-ca-file", "\(dir)/ca.pem"]
        } ?? []
        let pid = try Processes.spawn(
            executable: Self.executable,
            arguments: tls + [
                "--name", member.name, "--data-dir", "\(directory)/\(member.name)",
                "--listen-client-urls", "\(scheme)://127.0.0.1:\(member.clientPort)",
                "--advertise-client-urls", "\(scheme)://127.0.0.1:\(member.clientPort)",
                "--listen-peer-urls", "http://127.0.0.1:\(member.peerPort)",
                "--initial-advertise-peer-urls", "http://127.0.0.1:\(member.peerPort)",
                "--initial-cluster", initialCluster, "--initial-cluster-state", "new", "--initial-cluster-token", token,
                "--heartbeat-interval", "100", "--election-timeout", "1000", "--logger", "zap", "--log-outputs", "stderr",
            ],
            environment: ["PATH=/usr/bin:/bin"], stdout: log.raw, stderr: log.raw)
        state.withLock { $0[i].pid = pid }
    }

    /// Waits until member `i` answers Status (it runs) and, with `quorum`,
    /// a linearizable read (its cluster has a leader).
    private func waitUntilServing(_ i: Int, quorum: Bool) async throws {
        let client = self.client(requestTimeout: .seconds(1), members: [i])
        defer { client.close() }
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            let pid = members[i].pid
            guard pid > 0, Processes.isRunning(pid) else { throw EtcdHarnessError("etcd member m\(i) exited:\n\(log(i))") }
            var serving = await client.status().first?.error == nil
            if serving && quorum { serving = (try? await client.range("/berth-harness-ready")) != nil }
            if serving { return }
            guard ContinuousClock.now < deadline else { throw EtcdHarnessError("etcd member m\(i) did not serve within 30 s:\n\(log(i))") }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Kills member `i` (SIGKILL) and reaps it.
    public func kill(_ i: Int) {
        let pid = state.withLock { members in
            defer { members[i].pid = 0 }
            return members[i].pid
        }
        guard pid > 0 else { return }
        try? Processes.signal(pid, SIGKILL)
        Processes.waitForExit(pid)
    }

    /// Freezes member `i` (SIGSTOP): its sockets stay open, nothing answers.
    public func pause(_ i: Int) {
        let pid = members[i].pid
        if pid > 0 { try? Processes.signal(pid, SIGSTOP) }
    }

    /// Thaws member `i` (SIGCONT).
    public func resume(_ i: Int) {
        let pid = members[i].pid
        if pid > 0 { try? Processes.signal(pid, SIGCONT) }
    }

    /// Starts killed member `i` again on its data; returns once it runs
    /// and, with `quorum`, once its cluster has a leader.
    public func restart(_ i: Int, quorum: Bool = true) async throws {
        try launch(i)
        try await waitUntilServing(i, quorum: quorum)
    }

    /// Kills every member and removes the directory. Idempotent.
    public func stop() {
        for i in members.indices {
            resume(i)
            kill(i)
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// A harness that could not make what a test needs.
public struct EtcdHarnessError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
