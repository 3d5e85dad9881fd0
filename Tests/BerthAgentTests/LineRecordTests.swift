import BerthShimProtocol
import BerthTesting
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

    @Test("every request reads back as itself; exec IDs cannot name a file outside the bundle")
    func execIDs() {
        #expect(ShimRequest(line: "exec 0123abcDEF") == .exec(id: "0123abcDEF", process: nil))
        var process = ShimConfig(
            id: "c1", cloneFlags: 0, newCgroupNamespace: true, rootfs: "/r", overlayData: "", readonlyRootfs: false, mounts: [],
            maskedPaths: [], readonlyPaths: [], createDevices: true, hostname: "h", cgroupDir: "", cgroupTasks: [], oomCounterFile: "",
            args: [], env: [], path: "/bin", cwd: "/", uid: 0, gid: 0, groups: [], rlimits: [], capBounding: 1,
            capEffective: 1, capPermitted: 1, capInheritable: 0, capAmbient: 0, noNewPrivileges: true, seccompFile: "",
            initProcess: false, logFile: "/l", logMaxBytes: 1, logMaxFiles: 1)
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
