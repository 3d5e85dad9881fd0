@testable import BerthImages
import BerthLinux
import Foundation
import Testing

/// Layers crafted to escape their directory. Each must fail or stay inside,
/// and the file planted outside must be untouched.
@Suite("safe layer unpack against hostile tars", .enabled(if: getuid() == 0))
struct HostileLayerTests {
    let base: URL
    let layer: URL
    let outside: URL

    init() throws {
        base = FileManager.default.temporaryDirectory.appendingPathComponent("berth-layer-\(UUID().uuidString.prefix(8))")
        layer = base.appendingPathComponent("layer")
        outside = base.appendingPathComponent("outside")
        try FileManager.default.createDirectory(at: layer, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
        try "precious".write(to: outside.appendingPathComponent("victim"), atomically: true, encoding: .utf8)
    }

    func cleanUp() { try? FileManager.default.removeItem(at: base) }

    func unpack(_ entries: [(TarEntry, [UInt8])]) throws -> LayerUnpacker.Report {
        var writer = TarWriter()
        for (entry, data) in entries { try writer.append(entry, data: data) }
        try writer.finish()
        var reader = TarReader(BytesSource(bytes: writer.output))
        return try LayerUnpacker.unpack(&reader, into: layer.path)
    }

    var victimIntact: Bool {
        (try? String(contentsOf: outside.appendingPathComponent("victim"), encoding: .utf8)) == "precious"
    }

    func file(_ entry: String, _ text: String) -> (TarEntry, [UInt8]) {
        (TarEntry(name: entry, kind: .file, size: Int64(text.utf8.count)), Array(text.utf8))
    }

    @Test("a name with .. is refused")
    func dotDot() throws {
        defer { cleanUp() }
        #expect(throws: LayerUnpacker.HostileEntry.self) { try unpack([file("../outside/victim", "owned")]) }
        #expect(throws: LayerUnpacker.HostileEntry.self) { try unpack([file("a/../../outside/victim", "owned")]) }
        #expect(victimIntact)
    }

    @Test("an absolute name lands inside the layer")
    func absolute() throws {
        defer { cleanUp() }
        _ = try unpack([file(outside.appendingPathComponent("victim").path, "inside")])
        #expect(victimIntact)
        #expect(try String(contentsOf: layer.appendingPathComponent(outside.appendingPathComponent("victim").path), encoding: .utf8) == "inside")
    }

    @Test("a symlink to the outside, then a write through it, stays inside")
    func symlinkThenWrite() throws {
        defer { cleanUp() }
        _ = try unpack([
            (TarEntry(name: "escape", kind: .symlink, linkName: outside.path), []),
            file("escape/victim", "owned"),
            (TarEntry(name: "up", kind: .symlink, linkName: "../../../../.."), []),
            file("up" + outside.path + "/victim", "owned too"),
        ])
        #expect(victimIntact)
        // The writes went to the layer's own copies of those paths.
        #expect(FileManager.default.fileExists(atPath: layer.appendingPathComponent(outside.path + "/victim").path))
    }

    @Test("a hard link to a file outside the layer is refused")
    func hardlinkOutside() throws {
        defer { cleanUp() }
        #expect(throws: LayerUnpacker.HostileEntry.self) {
            try unpack([(TarEntry(name: "stolen", kind: .hardlink, linkName: outside.appendingPathComponent("victim").path), [])])
        }
        #expect(throws: LayerUnpacker.HostileEntry.self) {
            try unpack([(TarEntry(name: "stolen", kind: .hardlink, linkName: "../outside/victim"), [])])
        }
        // A symlink planted first does not help a hard link out either.
        #expect(throws: (any Error).self) {
            try unpack([
                (TarEntry(name: "dir", kind: .symlink, linkName: outside.path), []),
                (TarEntry(name: "stolen", kind: .hardlink, linkName: "dir/victim"), []),
            ])
        }
        #expect(victimIntact)
        let st = try FileIO.status(outside.appendingPathComponent("victim").path)
        #expect(st.links == 1)
    }

    @Test("whiteouts and opaque directories become overlayfs markers")
    func whiteouts() throws {
        defer { cleanUp() }
        _ = try unpack([
            (TarEntry(name: "etc", kind: .directory, mode: 0o755), []),
            (TarEntry(name: "etc/.wh.passwd", kind: .file), []),
            (TarEntry(name: "var", kind: .directory, mode: 0o755), []),
            (TarEntry(name: "var/.wh..wh..opq", kind: .file), []),
        ])
        let whiteout = try FileIO.status(layer.appendingPathComponent("etc/passwd").path)
        #expect(whiteout.isCharacterDevice && whiteout.rdevMajor == 0 && whiteout.rdevMinor == 0)
        #expect(FileIO.xattr(layer.appendingPathComponent("var").path, name: "trusted.overlay.opaque") == Array("y".utf8))
    }

    @Test("a whiteout of .. or . is refused, and deletes nothing outside")
    func whiteoutOfParent() throws {
        defer { cleanUp() }
        for name in [".wh...", "etc/.wh...", ".wh..", "../outside/.wh.victim"] {
            #expect(throws: LayerUnpacker.HostileEntry.self, "\(name)") {
                try unpack([(TarEntry(name: "etc", kind: .directory, mode: 0o755), []), (TarEntry(name: name, kind: .file), [])])
            }
        }
        #expect(victimIntact)
        #expect(FileManager.default.fileExists(atPath: outside.path))
    }

    @Test("device nodes are skipped with a warning; trusted xattrs from a layer are ignored")
    func devicesAndXattrs() throws {
        defer { cleanUp() }
        let report = try unpack([
            (TarEntry(name: "sda", kind: .blockDevice, mode: 0o660, devMajor: 8, devMinor: 0), []),
            (TarEntry(name: "dir", kind: .directory, mode: 0o755, xattrs: ["trusted.overlay.redirect": Array("/etc".utf8)]), []),
        ])
        #expect(!FileManager.default.fileExists(atPath: layer.appendingPathComponent("sda").path))
        #expect(report.warnings.contains { $0.contains("skipped device node sda") })
        #expect(report.warnings.contains { $0.contains("trusted.overlay.redirect") })
    }

    @Test("modes, owners, setuid bits and times are kept")
    func attributes() throws {
        defer { cleanUp() }
        _ = try unpack([
            (TarEntry(name: "bin", kind: .directory, mode: 0o755, mtime: 1_000_000), []),
            (TarEntry(name: "bin/su", kind: .file, mode: 0o4755, uid: 0, gid: 0, size: 2, mtime: 1_500_000), [1, 2]),
            (TarEntry(name: "home/user/file", kind: .file, mode: 0o600, uid: 1000, gid: 1000, size: 0, mtime: 1_600_000), []),
        ])
        let su = try FileIO.status(layer.appendingPathComponent("bin/su").path)
        #expect(su.mode & 0o7777 == 0o4755 && su.mtime == 1_500_000)
        let owned = try FileIO.status(layer.appendingPathComponent("home/user/file").path)
        #expect(owned.uid == 1000 && owned.gid == 1000 && owned.mode & 0o777 == 0o600)
        #expect(try FileIO.status(layer.appendingPathComponent("bin").path).mtime == 1_000_000)
    }
}
