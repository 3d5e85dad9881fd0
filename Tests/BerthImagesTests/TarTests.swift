@testable import BerthImages
import Foundation
import Testing

struct BytesSource: ByteSource {
    var bytes: [UInt8]
    var offset = 0
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = min(buffer.count, bytes.count - offset)
        for i in 0..<n { buffer[i] = bytes[offset + i] }
        offset += n
        return n
    }
}

@Suite("tar reader and writer")
struct TarTests {
    @Test("what the writer writes, the reader reads back: long names, links, xattrs, large ids")
    func roundTrip() throws {
        var writer = TarWriter()
        let long = String(repeating: "deep/", count: 30) + "file.txt"
        try writer.append(TarEntry(name: "dir", kind: .directory, mode: 0o750, uid: 1, gid: 2, mtime: 1_700_000_000))
        try writer.append(TarEntry(name: "dir/a.txt", kind: .file, mode: 0o640, size: 5, mtime: 1_700_000_001), data: Array("hello".utf8))
        try writer.append(TarEntry(name: long, kind: .file, size: 3), data: [1, 2, 3])
        try writer.append(TarEntry(name: "link", kind: .symlink, linkName: String(repeating: "t", count: 150)))
        try writer.append(TarEntry(name: "hard", kind: .hardlink, linkName: "dir/a.txt"))
        try writer.append(TarEntry(name: "big-ids", kind: .file, uid: 5_000_000, gid: 5_000_001, xattrs: ["user.note": Array("x".utf8)]))
        try writer.finish()
        var reader = TarReader(BytesSource(bytes: writer.output))
        var entries: [TarEntry] = []
        var contents: [String: [UInt8]] = [:]
        while let entry = try reader.next() {
            entries.append(entry)
            var data: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 7)
            while true {
                let n = try buffer.withUnsafeMutableBytes { try reader.readData(into: $0) }
                if n == 0 { break }
                data += buffer[0..<n]
            }
            contents[entry.name] = data
        }
        #expect(entries.map(\.name) == ["dir/", "dir/a.txt", long, "link", "hard", "big-ids"])
        #expect(entries[0].kind == .directory && entries[0].mode == 0o750 && entries[0].uid == 1)
        #expect(contents["dir/a.txt"] == Array("hello".utf8))
        #expect(contents[long] == [1, 2, 3])
        #expect(entries[3].linkName.count == 150)
        #expect(entries[4].kind == .hardlink && entries[4].linkName == "dir/a.txt")
        #expect(entries[5].uid == 5_000_000 && entries[5].xattrs["user.note"] == Array("x".utf8))
    }

    @Test("a damaged or truncated archive is a clear error")
    func malformed() throws {
        var writer = TarWriter()
        try writer.append(TarEntry(name: "a", kind: .file, size: 1000), data: [UInt8](repeating: 1, count: 1000))
        try writer.finish()
        var corrupted = writer.output
        corrupted[0] ^= 0xFF
        var reader = TarReader(BytesSource(bytes: corrupted))
        #expect(throws: TarError.self) { _ = try reader.next() }
        var truncated = TarReader(BytesSource(bytes: Array(writer.output.prefix(700))))
        #expect(throws: TarError.self) {
            while try truncated.next() != nil {
                var buffer = [UInt8](repeating: 0, count: 4096)
                while try buffer.withUnsafeMutableBytes({ try truncated.readData(into: $0) }) > 0 {}
            }
        }
        var notTar = TarReader(BytesSource(bytes: Array(String(repeating: "this is text ", count: 100).utf8)))
        #expect(throws: TarError.self) { _ = try notTar.next() }
    }
}
