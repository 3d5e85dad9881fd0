import BerthShimProtocol
import Testing

@Suite("The shim's line format")
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
}
