import BerthImages
import BerthLinux
import BerthModel
import BerthTesting
import Foundation
import Testing

/// `berth load`, `berth save` and `berth image import` of OCI layouts and
/// docker archives, made and read by umoci and skopeo.
@Suite("image archives (root)", .ownThreads, .enabled(if: Privileges.root && RegistryTools.available), .timeLimit(.minutes(5)))
struct ImageArchiveTests {
    static func scratch() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-archives-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    static func skopeo(_ arguments: [String]) async throws -> CommandResult {
        try await runCommand(URL(fileURLWithPath: "/usr/bin/skopeo"), arguments, environment: ["PATH": "/usr/bin:/bin", "HOME": "/tmp"])
    }

    @Test("an OCI layout directory, skopeo's docker archive and Berth's own saved archive load and run; skopeo reads what berth save writes")
    func loadAndSave() async throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let layout = try await TestLayouts.twoLayers(in: dir)

        // An OCI layout directory, named on import (its ref name is a bare tag).
        let imported = try await host.berth(["image", "import", layout, "team/app:v1"])
        #expect(imported.status == 0, "\(imported.stderr)")
        #expect(try await host.berth(["run", "--rm", "team/app:v1"]).stdout == "hello\nhi\n/tmp\n")

        // A docker archive (docker save's format), named by its RepoTags.
        let archive = dir.appendingPathComponent("docker.tar").path
        #expect(try await Self.skopeo(["copy", "--quiet", "oci:\(layout):v1", "docker-archive:\(archive):team/docker:v2"]).status == 0)
        let loaded = try await host.berth(["load", "-i", archive])
        #expect(loaded.status == 0, "\(loaded.stderr)")
        #expect(loaded.stdout.contains("Loaded image: team/docker:v2"), "\(loaded.stdout)")
        #expect(try await host.berth(["run", "--rm", "team/docker:v2", "cat", "/etc/motd"]).stdout == "hello\n")

        // Saved, read back by skopeo, removed and loaded again.
        let saved = dir.appendingPathComponent("saved.tar").path
        let save = try await host.berth(["save", "-o", saved, "team/app:v1"])
        #expect(save.status == 0, "\(save.stderr)\nthe agent's log ends:\n\(host.agent.log.suffix(3000))")
        let inspect = try await Self.skopeo(["inspect", "oci-archive:\(saved)"])
        let savedSize = (try? FileManager.default.attributesOfItem(atPath: saved)[.size] as? Int) ?? -1
        #expect(inspect.status == 0, "\(inspect.stderr)\nsaved.tar is \(savedSize) bytes; the agent's log ends:\n\(host.agent.log.suffix(3000))")
        #expect(inspect.stdout.contains("\"Layers\"") && inspect.stdout.contains("GREETING=hi"), "\(inspect.stdout)")
        #expect(try await host.berth(["rmi", "team/app:v1", "team/docker:v2"]).status == 0)
        let reloaded = try await host.berth(["load", "-i", saved])
        #expect(reloaded.stdout == "Loaded image: team/app:v1\n", "\(reloaded.stdout) \(reloaded.stderr)")
        #expect(try await host.berth(["run", "--rm", "team/app:v1"]).stdout == "hello\nhi\n/tmp\n")

        let unknown = try await host.berth(["save", "-o", dir.appendingPathComponent("none.tar").path, "nosuch:1"])
        #expect(unknown.status != 0 && unknown.stderr.contains("no such image: nosuch:1"), "\(unknown.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("none.tar").path), "no file left from a failed save")
    }

    @Test("an image's Entrypoint, Cmd, User, Labels and StopSignal shape its containers; the container's own settings win")
    func imageConfig() async throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let layout = try await TestLayouts.twoLayers(in: dir)
        try await TestLayouts.umoci([
            "config", "--image", "\(layout):v1", "--config.entrypoint", "/bin/sh", "--config.entrypoint", "-c", "--clear=config.cmd",
            "--config.cmd", "trap 'echo got USR1; exit 42' USR1; id -u; while :; do sleep 0.1; done",
            "--config.user", "1000:1000", "--config.label", "org.example.team=core", "--config.label", "tier=base",
            "--config.stopsignal", "SIGUSR1",
        ])
        #expect(try await host.berth(["image", "import", layout, "configured:1"]).status == 0)
        #expect(try await host.berth(["run", "-d", "--name", "c", "--label", "tier=mine", "configured:1"]).status == 0)
        let c = try await host.waitFor("c") { $0.status.state == .running }
        #expect(c.spec.labels == ["org.example.team": "core", "tier": "mine"], "\(c.spec.labels)")
        #expect(try await host.berth(["stop", "c"]).status == 0)
        let stopped = try await host.waitFor("c") { $0.status.state == .exited }
        #expect(stopped.status.exitCode == 42, "the image's stop signal, SIGUSR1, was sent: \(stopped.status)")
        let logs = try await host.berth(["logs", "c"])
        #expect(logs.stdout == "1000\ngot USR1\n", "\(logs.stdout)")
        let own = try await host.berth(["run", "--rm", "-u", "0", "configured:1", "id -u; exit 3"])
        #expect(own.status == 3 && own.stdout == "0\n", "the command given replaces Cmd after the Entrypoint: \(own)")
    }

    @Test("an image a container uses is not removed; forced, it loses its names and stays until no container uses it")
    func inUse() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["image", "tag", "busybox", "mine:1"]).status == 0)
        #expect(try await host.berth(["run", "-d", "--name", "user", "mine:1", "sleep", "1000"]).status == 0)
        let id = try await host.inspect("user").imageID
        #expect(try await host.berth(["rmi", "busybox"]).stdout == "Untagged: busybox:latest\n", "another name goes, the image stays")
        let refused = try await host.berth(["rmi", "mine:1"])
        #expect(refused.status != 0 && refused.stderr.contains("is used by a container"), "\(refused.stderr)")
        let forced = try await host.berth(["rmi", "-f", "mine:1"])
        #expect(forced.status == 0 && forced.stdout == "Untagged: mine:1\n", "\(forced.stdout) \(forced.stderr)")
        let listed = try await host.berth(["images"])
        #expect(listed.stdout.contains("<none>") && listed.stdout.contains(String(id.dropFirst(7).prefix(12))), "\(listed.stdout)")
        let alive = try await host.berth(["exec", "user", "ls", "/bin/busybox"])
        #expect(alive.status == 0, "the container keeps its layers: \(alive.stderr)")
        #expect(try await host.berth(["rm", "-f", "user"]).status == 0)
        let deleted = try await host.berth(["rmi", id])
        #expect(deleted.status == 0 && deleted.stdout.contains("Deleted: \(id)"), "\(deleted.stdout) \(deleted.stderr)")
        #expect(try await host.berth(["images", "-q"]).stdout.isEmpty)
    }

    @Test("rmi of an ID whose image has two names is refused in docker's words unless forced; by name, one name goes")
    func removeByIDWithNames() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["image", "tag", "busybox", "other:2"]).status == 0)
        let id = try #require(try await host.berth(["images", "-q"]).stdout.split(separator: "\n").first.map(String.init))
        let refused = try await host.berth(["rmi", id])
        #expect(refused.status == 1, "\(refused.stdout)")
        #expect(refused.stderr.contains("conflict: unable to delete \(id) (must be forced) - image is referenced in multiple repositories"), "\(refused.stderr)")
        let listed = try await host.berth(["images"]).stdout
        #expect(listed.contains("busybox") && listed.contains("other"), "both names stay: \(listed)")
        #expect(try await host.berth(["rmi", "other:2"]).stdout == "Untagged: other:2\n")
        #expect(try await host.berth(["image", "tag", "busybox", "other:2"]).status == 0)
        let forced = try await host.berth(["rmi", "-f", id])
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(forced.stdout.contains("Untagged: busybox:latest") && forced.stdout.contains("Untagged: other:2") && forced.stdout.contains("Deleted: sha256:\(id)"), "\(forced.stdout)")
        #expect(try await host.berth(["images", "-q"]).stdout.isEmpty)
    }

    @Test("load prints the images the archive holds, by the archive's names only, not other names the image has here")
    func loadPrintsArchiveNames() async throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["image", "tag", "busybox", "shipped:1"]).status == 0)
        let archive = dir.appendingPathComponent("shipped.tar").path
        #expect(try await host.berth(["save", "-o", archive, "shipped:1"]).status == 0)
        #expect(try await host.berth(["rmi", "shipped:1"]).stdout == "Untagged: shipped:1\n")
        // The image is here as busybox; the archive names it shipped:1.
        let loaded = try await host.berth(["load", "-i", archive])
        #expect(loaded.status == 0, "\(loaded.stderr)")
        #expect(loaded.stdout == "Loaded image: shipped:1\n", "\(loaded.stdout)")
        let again = try await host.berth(["load", "-i", archive])
        #expect(again.stdout == "Loaded image: shipped:1\n", "\(again.stdout)")
    }

    @Test("hostile or broken archives are refused with a clear error and record nothing: a blob that is not its digest, a link out of the archive, a missing layer, a layer unlike its diff ID")
    func hostileArchives() async throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let before = try await host.berth(["images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}} {{.Digest}} {{.CreatedAt}} {{.Size}}"]).stdout

        func archive(_ name: String, _ entries: [(String, TarEntry.Kind, [UInt8], String)]) throws -> String {
            var tar = TarWriter()
            for (path, kind, data, link) in entries {
                try tar.append(TarEntry(name: path, kind: kind, linkName: link), data: data)
            }
            try tar.finish()
            let path = dir.appendingPathComponent(name).path
            try Data(tar.output).write(to: URL(fileURLWithPath: path))
            return path
        }
        let zeros = "sha256:" + String(repeating: "0", count: 64)
        let layout = Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8)
        let index = Array(#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(zeros)","size":2}]}"#.utf8)

        let liar = try archive("liar.tar", [
            ("oci-layout", .file, layout, ""), ("index.json", .file, index, ""), ("blobs/sha256/\(zeros.dropFirst(7))", .file, Array("{}".utf8), ""),
        ])
        let r1 = try await host.berth(["load", "-i", liar])
        #expect(r1.status != 0 && r1.stderr.contains("digest mismatch"), "\(r1.stderr)")

        let escape = try archive("escape.tar", [
            ("manifest.json", .file, Array(#"[{"Config":"c.json","Layers":["a/layer.tar"]}]"#.utf8), ""),
            ("a/layer.tar", .symlink, [], "../../etc/shadow"),
        ])
        let r2 = try await host.berth(["load", "-i", escape])
        #expect(r2.status != 0 && r2.stderr.contains("outside the archive"), "\(r2.stderr)")

        let config = Array(#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["\#(zeros)"]}}"#.utf8)
        let missing = try archive("missing.tar", [
            ("manifest.json", .file, Array(#"[{"Config":"c.json","RepoTags":["bad/missing:1"],"Layers":["a/layer.tar"]}]"#.utf8), ""),
            ("c.json", .file, config, ""),
        ])
        let r3 = try await host.berth(["load", "-i", missing])
        #expect(r3.status != 0 && r3.stderr.contains("a/layer.tar, which it does not hold"), "\(r3.stderr)")

        var layer = TarWriter()
        try layer.append(TarEntry(name: "hello", kind: .file), data: Array("hi\n".utf8))
        try layer.finish()
        let unlike = try archive("unlike.tar", [
            ("manifest.json", .file, Array(#"[{"Config":"c.json","RepoTags":["bad/unlike:1"],"Layers":["a/layer.tar"]}]"#.utf8), ""),
            ("c.json", .file, config, ""), ("a/layer.tar", .file, layer.output, ""),
        ])
        let r4 = try await host.berth(["load", "-i", unlike])
        #expect(r4.status != 0 && r4.stderr.contains("does not match the image config"), "\(r4.stderr)")

        #expect(try await host.berth(["images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}} {{.Digest}} {{.CreatedAt}} {{.Size}}"]).stdout == before, "nothing recorded, nothing lost")
    }
}
