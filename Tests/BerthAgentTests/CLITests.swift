import BerthModel
import BerthTesting
import Foundation
import Glibc
import Testing

@Suite("berth CLI against a running agent", .ownThreads, .timeLimit(.minutes(5)))
struct CLITests {
    static func berth(_ arguments: [String], environment: [String: String] = [:]) async throws -> CommandResult {
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "BERTH_HOST")
        for (k, v) in environment { env[k] = v }
        return try await runCommand(try BuildProducts.executable("berth"), arguments, environment: env, timeout: .seconds(60))
    }

    @Test("a server that answers like a TLS-only agent to plaintext (an alert, then the close): every command fails with unavailable, none waits")
    func closedByServer() async throws {
        let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(server >= 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { a in
            a.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(server, $0, length) == 0 && listen(server, 64) == 0 && getsockname(server, $0, &length) == 0 }
        }
        try #require(bound)
        let port = UInt16(bigEndian: address.sin_port)
        // Reads the client's first bytes, answers with a TLS alert, closes.
        let serving = Thread {
            while true {
                let connection = accept(server, nil, nil)
                if connection < 0 { return }
                var buffer = [UInt8](repeating: 0, count: 1024)
                _ = read(connection, &buffer, buffer.count)
                let alert: [UInt8] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]
                _ = write(connection, alert, alert.count)
                close(connection)
            }
        }
        serving.start()
        defer {
            shutdown(server, Int32(SHUT_RDWR))
            close(server)
        }
        var outcomes: [String: Int] = [:]
        for _ in 0..<60 {
            // Killed after 5 s: a command that waits forever shows as a status other than 1.
            var env = ProcessInfo.processInfo.environment
            env.removeValue(forKey: "BERTH_CERT_PATH")
            let r = try await runCommand(try BuildProducts.executable("berth"), ["-H", "tcp://127.0.0.1:\(port)", "ps"], environment: env, timeout: .seconds(5))
            let outcome = r.status == 1 && r.stderr.contains("is unavailable") ? "unavailable" : "status \(r.status): \(r.stderr.prefix(200))"
            outcomes[outcome, default: 0] += 1
        }
        #expect(outcomes == ["unavailable": 60], "\(outcomes)")
    }

    @Test("version and info, with -H before or after the command, BERTH_HOST, and --format json")
    func versionAndInfo() async throws {
        let agent = try await AgentProcess()
        defer { agent.cleanUp() }
        let host = "unix://\(agent.socketPath)"

        let version = try await Self.berth(["-H", host, "version"])
        #expect(version.status == 0, "\(version.stderr)")
        #expect(version.stdout.contains("Client:") && version.stdout.contains("Server:"))
        #expect(version.stdout.contains("nghttp2:       1."))

        let info = try await Self.berth(["info"], environment: ["BERTH_HOST": "tcp://127.0.0.1:\(agent.tcpPort!)"])
        #expect(info.status == 0, "\(info.stderr)")
        #expect(info.stdout.contains(" Berth Root Dir: \(agent.root)"))
        #expect(info.stdout.contains(" CPUs: "))

        let json = try await Self.berth(["info", "--format", "json", "--host", host])
        #expect(json.status == 0)
        let decoded = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(decoded["DockerRootDir"] as? String == agent.root)
        #expect((decoded["NCPU"] as? Int ?? 0) > 0)
        let templated = try await Self.berth(["info", "-f", "{{.DockerRootDir}} {{.OSType}}", "--host", host])
        #expect(templated.stdout == "\(agent.root) linux\n", "\(templated)")

        let versionJSON = try await Self.berth(["--host=\(host)", "version", "--format", "json"])
        #expect(versionJSON.status == 0)
        #expect(versionJSON.stdout.contains("\"nghttp2\""))
        let serverVersion = try await Self.berth(["--host=\(host)", "version", "--format", "{{.Server.Version}} {{.Client.APIVersion}}"])
        #expect(serverVersion.stdout.hasSuffix(" v1\n") && serverVersion.stdout.count > 4, "\(serverVersion)")
    }

    @Test("every command of berth, berth-agent and berth-controller has its manual page in docs/man (scripts/generate-man)")
    func manualPages() async throws {
        for (executable, name) in [("berth-cli", "berth"), ("berth-agent", "berth-agent"), ("berth-controller", "berth-controller")] {
            let dump = try await runCommand(try BuildProducts.executable(executable), ["--experimental-dump-help"])
            let root = try #require((try JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any])?["command"] as? [String: Any])
            var missing: [String] = []
            func walk(_ command: [String: Any], _ path: [String]) {
                let page = BuildProducts.root.appendingPathComponent("docs/man/\(path.joined(separator: ".")).1").path
                if !FileManager.default.fileExists(atPath: page) { missing.append(page) }
                for sub in command["subcommands"] as? [[String: Any]] ?? [] {
                    guard let subName = sub["commandName"] as? String, subName != "help" else { continue }
                    walk(sub, path + [subName])
                }
            }
            walk(root, [name])
            #expect(missing.isEmpty, "commands without a page (run scripts/generate-man): \(missing)")
        }
    }

    @Test("errors are clear and exit non-zero")
    func errors() async throws {
        let missing = try await Self.berth(["-H", "unix:///nonexistent/berth.sock", "info"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("cannot connect to the Berth agent at unix:///nonexistent/berth.sock (No such file or directory)"))

        let refused = try await Self.berth(["-H", "tcp://127.0.0.1:1", "version"])
        #expect(refused.status == 1)
        #expect(refused.stdout.contains("Client:"))
        #expect(refused.stderr.contains("Connection refused"))

        let badHost = try await Self.berth(["-H", "ftp://x", "info"])
        #expect(badHost.status == 1)
        #expect(badHost.stderr.contains("expected unix:///PATH or tcp://HOST:PORT"))

        let badFormat = try await Self.berth(["info", "--format", "{{.Name", "-H", "unix:///nonexistent.sock"])
        #expect(badFormat.status == 1)
        #expect(badFormat.stderr.contains("template parsing error: template: :1: unclosed action"), "\(badFormat.stderr)")

        let usage = try await Self.berth(["frobnicate"])
        #expect(usage.status != 0)
    }
}
