import BerthRuntime
import BerthShimProtocol
import BerthTesting
import Foundation
import Synchronization
import Testing

@Suite("The shim's line format", .ownThreads, .ownThreads)
struct LineRecordTests {
    @Test("values with escapes, repeats and multi-byte text survive a round trip")
    func roundTrip() throws {
        var record = LineRecord()
        record.add("arg", "sh")
        record.add("arg", "-c")
        record.add("arg", "printf 'a\\nb' \\\\ done\r")
        record.add("env", "GREETING=grüß dich, 世界 = ok")
        record.add("empty", "")
        record.add("count", 42)
        record.add("flag", true)
        let text = record.text
        #expect(!text.dropLast().contains("\r"))
        #expect(text.split(separator: "\n").count == 7)
        let parsed = try LineRecord(parsing: text)
        #expect(parsed == record)
        #expect(parsed.all("arg") == ["sh", "-c", "printf 'a\\nb' \\\\ done\r"])
        #expect(parsed["env"] == "GREETING=grüß dich, 世界 = ok")
        #expect(parsed["empty"] == "")
        #expect(parsed.int("count") == 42)
        #expect(parsed.bool("flag"))
        #expect(parsed["missing"] == nil)
        #expect(parsed.all("missing").isEmpty)
    }

    @Test("a line without '=', an unknown escape and a dangling escape are errors naming the line")
    func errors() {
        #expect(throws: LineRecordError.self) { try LineRecord(parsing: "a=1\nno equals sign\n") }
        do {
            _ = try LineRecord(parsing: "a=1\nb=bad \\t escape\n")
            Issue.record("an unknown escape parsed")
        } catch {
            #expect(error.line == 2)
            #expect(error.reason.contains("unknown escape"))
        }
        do {
            _ = try LineRecord(parsing: "a=ends with \\")
            Issue.record("a dangling escape parsed")
        } catch {
            #expect(error.reason == "dangling escape")
        }
    }

    @Test("a shim config's devices and an exec's description survive a round trip; an exec is never an init")
    func devicesAndExec() throws {
        var config = ShimConfig(
            id: "c1", cloneFlags: 0, newCgroupNamespace: true, rootfs: "/r", overlayData: "", readonlyRootfs: false, mounts: [],
            maskedPaths: [], readonlyPaths: [], createDevices: true, hostname: "h", cgroupDir: "", cgroupTasks: [], oomCounterFile: "",
            args: ["sleep", "1"], env: ["A=b"], path: "/bin", cwd: "/", uid: 0, gid: 0, groups: [], rlimits: [], capBounding: 1,
            capEffective: 1, capPermitted: 1, capInheritable: 0, capAmbient: 0, noNewPrivileges: true, seccompFile: "",
            initProcess: true, logFile: "/l", logMaxBytes: 1, logMaxFiles: 1,
            devices: [ShimConfig.DeviceNode(path: "/dev/x|y", type: "b", major: 8, minor: 16, mode: 0o660, uid: 0, gid: 6)])
        let parsed = try ShimConfig(record: LineRecord(parsing: config.record.text))
        #expect(parsed == config)
        config.args = ["true"]
        let exec = ShimExec(process: config, stdin: false, stdout: true, stderr: true, controllingTerminal: false)
        let back = try ShimExec(record: LineRecord(parsing: exec.record.text))
        #expect(back.stdin == false && back.stdout && back.stderr && !back.controllingTerminal)
        #expect(back.process.args == ["true"])
        #expect(back.process.initProcess == false)
        #expect(throws: LineRecordError.self) { try ShimExec(record: LineRecord(parsing: config.record.text)) }
    }

    /// A process to exec, as an exec's record carries it.
    static func execProcess() -> ShimConfig {
        ShimConfig(
            id: "c1", cloneFlags: 0, newCgroupNamespace: true, rootfs: "/r", overlayData: "", readonlyRootfs: false, mounts: [],
            maskedPaths: [], readonlyPaths: [], createDevices: true, hostname: "h", cgroupDir: "", cgroupTasks: [], oomCounterFile: "",
            args: [], env: [], path: "/bin", cwd: "/", uid: 0, gid: 0, groups: [], rlimits: [], capBounding: 1,
            capEffective: 1, capPermitted: 1, capInheritable: 0, capAmbient: 0, noNewPrivileges: true, seccompFile: "",
            initProcess: false, logFile: "/l", logMaxBytes: 1, logMaxFiles: 1)
    }

    @Test("every request reads back as itself; exec IDs cannot name a file outside the bundle")
    func execIDs() {
        #expect(ShimRequest(line: "exec 0123abcDEF") == .exec(id: "0123abcDEF", process: nil))
        var process = LineRecordTests.execProcess()
        process.args = ["sh", "-c", "echo a  b\tc\nd"]
        process.env = ["A=x y", "B=\\"]
        let exec = ShimExec(process: process, stdin: false, stdout: true, stderr: true, controllingTerminal: false)
        let line = ShimRequest.exec(id: "abc1", process: exec).line
        #expect(!line.contains("\n"), "one line: \(line)")
        #expect(ShimRequest(line: Substring(line)) == .exec(id: "abc1", process: exec), "the process comes back as it went")
        #expect(ShimRequest(line: "exec abc1 not-a-record") == nil)
        for request in [ShimRequest.state, .signal(15), .wait, .delete, .attach, .release] {
            #expect(ShimRequest(line: Substring(request.line)) == request, "\(request.line)")
        }
        for bad in ["exec ../config", "exec a/b", "exec", "exec a b", "exec .", "exec a.b"] {
            #expect(ShimRequest(line: Substring(bad)) == nil, "\(bad)")
        }
    }
}

/// `ShimClient.exec` against a shim that predates requests carrying their
/// process (shims outlive agents, so an upgraded agent meets them): a
/// stand-in that speaks the old protocol on a unix socket, as such a shim
/// answers — "error=unknown request" to `exec ID RECORD`, the process read
/// from `exec-ID` in the bundle for `exec ID`.
@Suite("exec against an older shim")
struct OlderShimTests {
    @Test("refused on the request's line, the exec is sent again with its process in the bundle's file, which is gone afterwards")
    func fileFallback() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-oldshim-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #expect(server >= 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = dir + "/shim.sock"
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.enumerated() { raw[i] = byte }
        }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(server, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0 && listen(server, 4) == 0)

        // The older shim: two connections, one request line each.
        let seen = Mutex<[(line: String, file: String?)]>([])
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            for _ in 0..<2 {
                let client = accept(server, nil, nil)
                guard client >= 0 else { return }
                var line: [UInt8] = []
                var byte: UInt8 = 0
                while read(client, &byte, 1) == 1 && byte != UInt8(ascii: "\n") { line.append(byte) }
                let text = String(decoding: line, as: UTF8.self)
                let parts = text.split(separator: " ", maxSplits: 2)
                let reply: String
                if parts.count == 3 {
                    seen.withLock { $0.append((text, nil)) }
                    reply = "error=unknown request"
                } else {
                    let file = try? String(contentsOfFile: dir + "/exec-\(parts[1])", encoding: .utf8)
                    seen.withLock { $0.append((text, file)) }
                    reply = ShimStart.failed(stage: "exec", errno: 2, errnoName: "ENOENT", detail: "probe").record.singleLine
                }
                _ = reply.utf8CString.withUnsafeBytes { write(client, $0.baseAddress, $0.count - 1) }
                _ = "\n".withCString { write(client, $0, 1) }
                close(client)
            }
        }
        thread.start()
        defer { close(server) }

        var process = LineRecordTests.execProcess()
        process.args = ["/bin/check", "--fast"]
        let exec = ShimExec(process: process, stdin: false, stdout: true, stderr: true, controllingTerminal: false)
        let (start, started) = try await ShimClient(bundleDir: dir).exec(exec, id: "abc1", stdio: [])
        done.wait()
        #expect(started == nil)
        #expect(start == .failed(stage: "exec", errno: 2, errnoName: "ENOENT", detail: "probe"))
        let requests = seen.withLock { $0 }
        #expect(requests.count == 2)
        #expect(requests.first?.line.hasPrefix("exec abc1 ") == true, "first on the request's line")
        #expect(requests.last?.line == "exec abc1", "then as before")
        let file = try #require(requests.last?.file, "the file was there when the older shim read it")
        #expect(try ShimExec(record: LineRecord(parsing: file)) == exec)
        #expect(!FileManager.default.fileExists(atPath: dir + "/exec-abc1"), "and removed after")
    }
}
