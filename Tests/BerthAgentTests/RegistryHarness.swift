import BerthLinux
import Foundation
import Testing

/// Whether the registry tools are installed (scripts/install-deps installs them).
enum RegistryTools {
    static let available: Bool = ["/usr/bin/docker-registry", "/usr/bin/skopeo", "/usr/bin/umoci", "/usr/bin/htpasswd"].allSatisfy {
        FileManager.default.isExecutableFile(atPath: $0)
    }
}

/// A real registry (Debian's docker-registry) on 127.0.0.1, on a directory
/// of its own, stopped by its PID. With `user`, it requires basic auth.
final class LocalRegistry: @unchecked Sendable {
    let directory: URL
    let port: Int
    let process: ChildProcess
    let credentials: (user: String, password: String)?
    var address: String { "127.0.0.1:\(port)" }

    init(user: String? = nil, password: String? = nil, tokens: TokenService? = nil) async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-registry-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        port = try Self.freePort()
        var auth = ""
        if let user, let password {
            credentials = (user, password)
            let htpasswd = directory.appendingPathComponent("htpasswd").path
            let made = try Processes.runBlocking("/usr/bin/htpasswd", ["-Bbc", htpasswd, user, password], environment: ["PATH=/usr/bin:/bin"])
            guard made.status == 0 else { throw HarnessError("htpasswd: \(made.stderr)") }
            auth = """
                auth:
                  htpasswd:
                    realm: berth-test
                    path: \(htpasswd)

                """
        } else if let tokens {
            credentials = (tokens.user, tokens.password)
            auth = """
                auth:
                  token:
                    realm: http://127.0.0.1:\(tokens.port)/token
                    service: berth-test-registry
                    issuer: \(tokens.issuer)
                    rootcertbundle: \(tokens.certificate)

                """
        } else {
            credentials = nil
        }
        let config = """
            version: 0.1
            log:
              level: error
            storage:
              filesystem:
                rootdirectory: \(directory.path)/data
              delete:
                enabled: true
            \(auth)http:
              addr: 127.0.0.1:\(port)

            """
        let configPath = directory.appendingPathComponent("config.yml")
        try config.write(to: configPath, atomically: true, encoding: .utf8)
        let log = open(directory.appendingPathComponent("registry.log").path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        defer { close(log) }
        process = ChildProcess(
            pid: try Processes.spawn(
                executable: "/usr/bin/docker-registry", arguments: ["serve", configPath.path], environment: ["PATH=/usr/bin:/bin"],
                stdout: log, stderr: log))
        try await Self.waitForPort(port, process: process, what: "docker-registry")
    }

    /// Copies an image from an OCI layout into this registry with skopeo.
    /// `all` copies a whole index, not just the host's image.
    func push(layout: String, tag: String, as name: String, all: Bool = false) async throws {
        var arguments = ["copy", "--quiet", "--dest-tls-verify=false"]
        if all { arguments.append("--all") }
        if let credentials { arguments += ["--dest-creds", "\(credentials.user):\(credentials.password)"] }
        arguments += ["oci:\(layout):\(tag)", "docker://\(address)/\(name)"]
        let result = try await runCommand(URL(fileURLWithPath: "/usr/bin/skopeo"), arguments, environment: ["PATH": "/usr/bin:/bin", "HOME": directory.path])
        guard result.status == 0 else { throw HarnessError("skopeo \(arguments.joined(separator: " ")): \(result.stderr)") }
    }

    /// Where the registry keeps a blob's bytes.
    func blobPath(_ digest: String) -> String {
        let hex = String(digest.dropFirst(7))
        return "\(directory.path)/data/docker/registry/v2/blobs/sha256/\(hex.prefix(2))/\(hex)/data"
    }

    func stop() {
        if process.isRunning {
            kill(process.pid, SIGTERM)
            let deadline = ContinuousClock.now + .seconds(10)
            while process.isRunning && ContinuousClock.now < deadline { usleep(10_000) }
            if process.isRunning {
                kill(process.pid, SIGKILL)
                process.waitUntilExit()
            }
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// A loopback TCP port nobody listens on now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw HarnessError("bind: \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Waits until something accepts connections on the loopback port.
    static func waitForPort(_ port: Int, process: ChildProcess, what: String) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            guard process.isRunning else { throw HarnessError("\(what) exited with \(process.terminationStatus)") }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            close(fd)
            if connected { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw HarnessError("\(what) did not listen on 127.0.0.1:\(port) within 30 s")
    }
}

/// A Python script of Tests/Fixtures serving on a loopback port it picks
/// and writes to a file, logging its requests; stopped by its PID. Its last
/// two arguments are the log file and the port file.
final class PythonFixture: @unchecked Sendable {
    let directory: URL
    let port: Int
    let process: ChildProcess

    init(script: String, arguments: [String], directory: URL, what: String) async throws {
        self.directory = directory
        let portFile = directory.appendingPathComponent("port").path
        process = ChildProcess(
            pid: try Processes.spawn(
                executable: "/usr/bin/python3",
                arguments: [BuildProducts.root.appendingPathComponent("Tests/Fixtures/\(script)").path] + arguments
                    + [directory.appendingPathComponent("requests.log").path, portFile],
                environment: ["PATH=/usr/bin:/bin"], stdout: 2, stderr: 2))
        let deadline = ContinuousClock.now + .seconds(30)
        while !FileManager.default.fileExists(atPath: portFile) {
            guard process.isRunning, ContinuousClock.now < deadline else {
                if process.isRunning { kill(process.pid, SIGKILL) }
                throw HarnessError("\(what) did not start")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        port = Int(try String(contentsOfFile: portFile, encoding: .utf8)) ?? 0
    }

    /// One line per request, as the script logs them.
    var requests: [String] {
        ((try? String(contentsOf: directory.appendingPathComponent("requests.log"), encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    func stop() {
        if process.isRunning {
            kill(process.pid, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

/// A registry token service (Tests/Fixtures/token-server.py) with a key and
/// certificate made by openssl: the bearer-token flow, for real.
final class TokenService: @unchecked Sendable {
    let fixture: PythonFixture
    let user = "bob"
    let password = "token pass"
    let issuer = "berth-test-issuer"
    var port: Int { fixture.port }
    var certificate: String { fixture.directory.appendingPathComponent("cert.pem").path }
    /// "SCOPE USER" per token request.
    var requests: [String] { fixture.requests }

    init() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-tokens-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let key = directory.appendingPathComponent("key.pem").path
        let certificate = directory.appendingPathComponent("cert.pem").path
        let made = try await runCommand(
            URL(fileURLWithPath: "/usr/bin/openssl"),
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", certificate, "-days", "2", "-subj", "/CN=berth-test-token-issuer"],
            environment: ["PATH": "/usr/bin:/bin"])
        guard made.status == 0 else {
            try? FileManager.default.removeItem(at: directory)
            throw HarnessError("openssl: \(made.stderr)")
        }
        fixture = try await PythonFixture(
            script: "token-server.py", arguments: [key, certificate, issuer, user, password], directory: directory, what: "the token service")
    }

    func stop() { fixture.stop() }
}

/// A proxy in front of a registry that fails on demand
/// (Tests/Fixtures/registry-proxy.py): cuts blobs short, answers errors,
/// serves a manifest that does not parse. Logs each request.
final class FaultyProxy: @unchecked Sendable {
    let fixture: PythonFixture
    var address: String { "127.0.0.1:\(fixture.port)" }
    /// "METHOD PATH RANGE" per request.
    var requests: [String] { fixture.requests }

    init(upstream: LocalRegistry) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-proxy-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        fixture = try await PythonFixture(
            script: "registry-proxy.py", arguments: [String(upstream.port), directory.appendingPathComponent("mode").path], directory: directory,
            what: "the registry proxy")
    }

    /// pass | cut-blob BYTES | status CODE | garbage-manifest
    func setMode(_ mode: String) throws {
        try mode.write(to: fixture.directory.appendingPathComponent("mode"), atomically: true, encoding: .utf8)
    }

    func stop() { fixture.stop() }
}

/// Images built with umoci into an OCI layout, from the busybox test root filesystem.
enum TestLayouts {
    /// A layout with tag `v1`: busybox as one layer, then a second layer that
    /// adds /etc/motd and deletes /bin/vi (a whiteout); Cmd, Env and
    /// WorkingDir set. `architecture` sets the config's (for index tests).
    /// `secondLayer` runs in the second layer's root directory; `config`
    /// adds `umoci config` options.
    static func twoLayers(
        in directory: URL, architecture: String? = nil, motd: String = "hello", secondLayer: String = "", config extra: [String] = []
    ) async throws -> String {
        let layout = directory.appendingPathComponent("layout-\(UUID().uuidString.prefix(6))").path
        let rootfs = try TestImage.rootfs()
        let first = directory.appendingPathComponent("bundle1-\(UUID().uuidString.prefix(6))").path
        let second = directory.appendingPathComponent("bundle2-\(UUID().uuidString.prefix(6))").path
        defer {
            try? FileManager.default.removeItem(atPath: first)
            try? FileManager.default.removeItem(atPath: second)
        }
        try await umoci(["init", "--layout", layout])
        try await umoci(["new", "--image", "\(layout):v1"])
        try await umoci(["unpack", "--image", "\(layout):v1", first])
        try await shell("cp -a '\(rootfs)/.' '\(first)/rootfs/'")
        try await umoci(["repack", "--image", "\(layout):v1", first])
        try await umoci(["unpack", "--image", "\(layout):v1", second])
        try await shell("echo '\(motd)' > '\(second)/rootfs/etc/motd' && rm '\(second)/rootfs/bin/vi' && cd '\(second)/rootfs' && true \(secondLayer.isEmpty ? "" : "&& \(secondLayer)")")
        try await umoci(["repack", "--image", "\(layout):v1", second])
        var config = [
            "config", "--image", "\(layout):v1", "--config.cmd", "sh", "--config.cmd", "-c", "--config.cmd", "cat /etc/motd; echo $GREETING; pwd",
            "--config.env", "GREETING=hi", "--config.workingdir", "/tmp",
        ]
        if let architecture { config += ["--architecture", architecture] }
        config += extra
        try await umoci(config)
        return layout
    }

    static func umoci(_ arguments: [String]) async throws {
        let result = try await runCommand(URL(fileURLWithPath: "/usr/bin/umoci"), arguments, environment: ["PATH": "/usr/bin:/bin"])
        guard result.status == 0 else { throw HarnessError("umoci \(arguments.joined(separator: " ")): \(result.stderr)") }
    }

    static func shell(_ script: String) async throws {
        let result = try await runCommand(URL(fileURLWithPath: "/bin/sh"), ["-c", script], environment: ["PATH": "/usr/bin:/bin"])
        guard result.status == 0 else { throw HarnessError("\(script): \(result.stderr)") }
    }
}
