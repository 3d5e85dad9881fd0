import BerthLinux
import BerthModel
import BerthTesting
import Foundation
import Glibc
import Testing

/// `berth pull` against a real registry (Debian's docker-registry on
/// 127.0.0.1) holding images built by umoci and pushed by skopeo.
@Suite("pull from a registry (root)", .ownThreads, .enabled(if: Privileges.root && RegistryTools.available), .timeLimit(.minutes(5)))
struct PullTests {
    /// What an agent's image store holds on disk: blob digests, unpacked layers, partial downloads.
    static func stored(_ host: ContainerHost) -> (blobs: Set<String>, layers: Set<String>, partials: [String]) {
        let root = host.agent.root
        let blobs = Set((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/content/sha256")) ?? [])
        let layers = Set((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/layers")) ?? [])
        let partials = ((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/content/ingest")) ?? []).filter { $0.hasSuffix(".partial") }
        return (blobs, layers, partials)
    }

    @Test("a two-layer image: pulled with each layer verified, its whiteout applied and its config honoured; pulled again, it is up to date; run pulls what is missing; rmi collects it")
    func pullAndRun() async throws {
        let registry = try await LocalRegistry()
        defer { registry.stop() }
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        try await registry.push(layout: try await TestLayouts.twoLayers(in: registry.directory), tag: "v1", as: "test/bb:v1")
        let image = "\(registry.address)/test/bb:v1"
        let before = Self.stored(host)

        let pulled = try await host.berth(["pull", image])
        #expect(pulled.status == 0, "\(pulled.stderr)")
        #expect(pulled.stdout.components(separatedBy: ": Pull complete").count == 3, "\(pulled.stdout)")
        #expect(pulled.stdout.contains("Digest: sha256:"), "\(pulled.stdout)")
        #expect(pulled.stdout.hasSuffix("\(image)\n"), "\(pulled.stdout)")
        let inspected = try #require(try JSONSerialization.jsonObject(with: Data(try await host.berth(["image", "inspect", image]).stdout.utf8)) as? [[String: Any]])
        #expect(((inspected.first?["RootFS"] as? [String: Any])?["Layers"] as? [String])?.count == 2)

        let run = try await host.berth(["run", "--rm", image])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout == "hello\nhi\n/tmp\n", "Cmd, Env, WorkingDir and both layers: \(run.stdout)")
        let vi = try await host.berth(["run", "--rm", image, "ls", "/bin/vi"])
        #expect(vi.status != 0, "the second layer's whiteout hides /bin/vi: \(vi.stdout)")

        let again = try await host.berth(["pull", image])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.components(separatedBy: ": Already exists").count == 3, "\(again.stdout)")
        #expect(again.stdout.contains("Status: Image is up to date for \(image)"), "\(again.stdout)")

        // Removed, everything it brought goes; run pulls it back by itself.
        #expect(try await host.berth(["rmi", image]).status == 0)
        let after = Self.stored(host)
        #expect(after.blobs == before.blobs && after.layers == before.layers, "rmi leaves what was there before the pull, no more")
        let rerun = try await host.berth(["run", "--rm", image])
        #expect(rerun.status == 0, "\(rerun.stderr)")
        #expect(rerun.stderr.contains("Unable to find image '\(image)' locally"), "\(rerun.stderr)")
        #expect(rerun.stdout == "hello\nhi\n/tmp\n", "the pull's progress goes to stderr, the container's output to stdout: \(rerun.stdout)")
        let never = try await host.berth(["run", "--rm", "--pull", "never", "\(registry.address)/test/none:v1"])
        #expect(never.status != 0 && never.stderr.contains("no such image"), "\(never.stderr)")
    }

    @Test("a multi-platform index: the host's image is chosen, --platform picks another, and one the index lacks is a clear error")
    func multiPlatform() async throws {
        let registry = try await LocalRegistry()
        defer { registry.stop() }
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let native = Platform.architecture
        let foreign = native == "amd64" ? "arm64" : "amd64"
        for arch in [native, foreign] {
            let layout = try await TestLayouts.twoLayers(in: registry.directory, architecture: arch, motd: "built for \(arch)")
            try await registry.push(layout: layout, tag: "v1", as: "test/multi:\(arch)")
        }
        // An index over both, put to the registry as it would come from a build.
        let script = """
            import json, sys, urllib.request
            base = "http://\(registry.address)/v2/test/multi/manifests/"
            oci = "application/vnd.oci.image.manifest.v1+json"
            entries = []
            for arch in sys.argv[1:]:
                r = urllib.request.urlopen(urllib.request.Request(base + arch, headers={"Accept": oci}))
                body = r.read()
                entries.append({"mediaType": oci, "digest": r.headers["Docker-Content-Digest"], "size": len(body),
                                "platform": {"os": "linux", "architecture": arch}})
            index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}).encode()
            req = urllib.request.Request(base + "v1", data=index, method="PUT",
                                         headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
            urllib.request.urlopen(req).read()
            """
        let put = try await runCommand(URL(fileURLWithPath: "/usr/bin/python3"), ["-c", script, native, foreign], environment: ["PATH": "/usr/bin:/bin"])
        #expect(put.status == 0, "\(put.stderr)")
        let image = "\(registry.address)/test/multi:v1"

        let run = try await host.berth(["run", "--rm", image, "cat", "/etc/motd"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout == "built for \(native)\n", "\(run.stdout)")

        let other = try await host.berth(["pull", "--platform", "linux/\(foreign)", image])
        #expect(other.status == 0, "\(other.stderr)")
        let inspected = try #require(try JSONSerialization.jsonObject(with: Data(try await host.berth(["image", "inspect", image]).stdout.utf8)) as? [[String: Any]])
        #expect(inspected.first?["Architecture"] as? String == foreign)

        let missing = try await host.berth(["pull", "--platform", "linux/s390x", image])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("has no image for linux/s390x"), "\(missing.stderr)")
        #expect(missing.stderr.contains("linux/\(native)") && missing.stderr.contains("linux/\(foreign)"), "names what it has: \(missing.stderr)")
        let malformed = try await host.berth(["pull", "--platform", "linux", image])
        #expect(malformed.status != 0 && malformed.stderr.contains("OS/ARCHITECTURE"), "\(malformed.stderr)")
    }

    @Test("a registry that requires basic auth: refused without a login, a wrong password stores nothing, berth login keeps the right one (0600), logout forgets it")
    func basicAuth() async throws {
        let registry = try await LocalRegistry(user: "alice", password: "s3cret pass")
        defer { registry.stop() }
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        try await registry.push(layout: try await TestLayouts.twoLayers(in: registry.directory), tag: "v1", as: "private/bb:v1")
        let config = registry.directory.appendingPathComponent("client-config")
        let env = ["BERTH_CONFIG": config.path]
        let image = "\(registry.address)/private/bb:v1"

        let anonymous = try await host.berth(["pull", image], environment: env)
        #expect(anonymous.status != 0)
        #expect(anonymous.stderr.contains("requires a login: berth login \(registry.address)"), "\(anonymous.stderr)")

        let wrong = try await host.berth(["login", "-u", "alice", "-p", "nope", registry.address], environment: env)
        #expect(wrong.status != 0 && wrong.stderr.contains("wrong user name or password"), "\(wrong.stderr)")
        #expect(!FileManager.default.fileExists(atPath: config.appendingPathComponent("config.json").path), "a refused login stores nothing")

        let login = try await host.berth(["login", "-u", "alice", "-p", "s3cret pass", registry.address], environment: env)
        #expect(login.status == 0, "\(login.stderr)")
        #expect(login.stdout == "Login Succeeded\n")
        let file = config.appendingPathComponent("config.json").path
        let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(try String(contentsOfFile: file, encoding: .utf8).contains(Data("alice:s3cret pass".utf8).base64EncodedString()))

        let pulled = try await host.berth(["run", "--rm", image], environment: env)
        #expect(pulled.status == 0, "\(pulled.stderr)")
        #expect(pulled.stdout == "hello\nhi\n/tmp\n")

        #expect(try await host.berth(["logout", registry.address], environment: env).stdout == "Removing login credentials for \(registry.address)\n")
        #expect(try await host.berth(["rmi", image]).status == 0)
        #expect(try await host.berth(["pull", image], environment: env).status != 0, "logged out, refused again")
    }

    @Test("a registry behind a token service: anonymous pulls get a bearer token, a private repository needs berth login, and the token asked for names the repository")
    func bearerTokens() async throws {
        let tokens = try await TokenService()
        defer { tokens.stop() }
        let registry = try await LocalRegistry(tokens: tokens)
        defer { registry.stop() }
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let layout = try await TestLayouts.twoLayers(in: registry.directory)
        try await registry.push(layout: layout, tag: "v1", as: "public/bb:v1")
        try await registry.push(layout: layout, tag: "v1", as: "private/bb:v1")
        let env = ["BERTH_CONFIG": registry.directory.appendingPathComponent("client-config").path]

        let open = try await host.berth(["run", "--rm", "\(registry.address)/public/bb:v1"], environment: env)
        #expect(open.status == 0, "\(open.stderr)")
        #expect(open.stdout == "hello\nhi\n/tmp\n")
        #expect(tokens.requests.contains("repository:public/bb:pull anonymous"), "\(tokens.requests)")

        let refused = try await host.berth(["pull", "\(registry.address)/private/bb:v1"], environment: env)
        #expect(refused.status != 0 && refused.stderr.contains("refused anonymous access"), "\(refused.stderr)")
        let wrong = try await host.berth(["login", "-u", tokens.user, "-p", "wrong", registry.address], environment: env)
        #expect(wrong.status != 0, "\(wrong.stdout)")
        #expect(try await host.berth(["login", "-u", tokens.user, "-p", tokens.password, registry.address], environment: env).status == 0)
        let pulled = try await host.berth(["pull", "\(registry.address)/private/bb:v1"], environment: env)
        #expect(pulled.status == 0, "\(pulled.stderr)")
        #expect(tokens.requests.contains("repository:private/bb:pull \(tokens.user)"), "\(tokens.requests)")
    }

    @Test("a full disk: the pull fails with a clear error, no image or half-unpacked layer is left, and the images already stored are untouched")
    func fullDisk() async throws {
        let registry = try await LocalRegistry()
        defer { registry.stop() }
        try await registry.push(layout: try await TestLayouts.twoLayers(in: registry.directory), tag: "v1", as: "test/bb:v1")
        // The agent's root on a 3 MiB tmpfs: room for the layer blobs (1.1 MB), not for busybox unpacked (2 MB more).
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-agent-test-\(UUID().uuidString.prefix(8))")
        let root = directory.appendingPathComponent("root").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        guard mount("tmpfs", root, "tmpfs", 0, "size=3m,mode=0700") == 0 else { throw HarnessError("mount tmpfs: \(errno)") }
        let agent: AgentProcess
        do {
            agent = try await AgentProcess(tcp: false, directory: directory)
        } catch {
            umount2(root, Int32(MNT_DETACH))
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
        defer {
            agent.stop()
            umount2(root, Int32(MNT_DETACH))
            agent.cleanUp()
        }
        let env = ["BERTH_HOST": "unix://\(agent.socketPath)"]
        func berth(_ arguments: [String]) async throws -> CommandResult {
            try await runCommand(try BuildProducts.executable("berth"), arguments, environment: ProcessInfo.processInfo.environment.merging(env) { $1 })
        }
        // A small image first, to see it survive.
        let small = FileManager.default.temporaryDirectory.appendingPathComponent("berth-small-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: small, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: small) }
        try "kept\n".write(to: small.appendingPathComponent("file"), atomically: true, encoding: .utf8)
        #expect(try await berth(["image", "import", small.path, "small:1"]).status == 0)
        let before = try await berth(["images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}} {{.Digest}} {{.CreatedAt}} {{.Size}}"]).stdout

        let pull = try await berth(["pull", "\(registry.address)/test/bb:v1"])
        #expect(pull.status != 0)
        #expect(pull.stderr.contains("no space left"), "\(pull.stderr)")
        #expect(try await berth(["images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}} {{.Digest}} {{.CreatedAt}} {{.Size}}"]).stdout == before)
        let layers = try FileManager.default.contentsOfDirectory(atPath: "\(root)/layers")
        #expect(!layers.contains { $0.hasPrefix(".tmp-") }, "no half-unpacked layer: \(layers)")
        #expect(try await berth(["image", "inspect", "small:1"]).status == 0)
    }

    @Test("a pull cut off mid-blob fails clearly, leaves no image, and the next pull resumes from where it stopped")
    func interruptedAndResumed() async throws {
        let registry = try await LocalRegistry()
        defer { registry.stop() }
        let proxy = try await FaultyProxy(upstream: registry)
        defer { proxy.stop() }
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        try await registry.push(layout: try await TestLayouts.twoLayers(in: registry.directory), tag: "v1", as: "test/bb:v1")
        let image = "\(proxy.address)/test/bb:v1"
        let before = try await host.berth(["images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}} {{.Digest}} {{.CreatedAt}} {{.Size}}"]).stdout

        try proxy.setMode("cut-blob 300000")
        let cut = try await host.berth(["pull", image])
        #expect(cut.status != 0)
        #expect(cut.stderr.contains("pulling again resumes"), "\(cut.stderr)")
        #expect(try await host.berth(["images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}} {{.Digest}} {{.CreatedAt}} {{.Size}}"]).stdout == before, "no image, and the others untouched")
        // The cut layer's partial download is kept; so may be the small
        // layer's, when the failure cut it off too (on a busy host).
        func size(_ partial: String) -> Int {
            ((try? FileManager.default.attributesOfItem(atPath: "\(host.agent.root)/content/ingest/\(partial)"))?[.size] as? Int) ?? 0
        }
        let partial = try #require(Self.stored(host).partials.max { size($0) < size($1) }, "the partial download is kept")
        let held = size(partial)
        #expect(held > 0 && held <= 300_000, "\(held) bytes held")

        try proxy.setMode("pass")
        let resumed = try await host.berth(["pull", image])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let digest = "sha256:" + partial.dropLast(".partial".count)
        #expect(proxy.requests.contains { $0.hasPrefix("GET /v2/test/bb/blobs/\(digest) bytes=\(held)-") }, "resumed with a range request: \(proxy.requests)")
        #expect(Self.stored(host).partials.isEmpty)
        #expect(try await host.berth(["run", "--rm", image]).stdout == "hello\nhi\n/tmp\n")
    }

    @Test("bad registries: a tampered blob is rejected by its digest, a 500, a manifest that does not parse, nobody listening; each a clear error, nothing stored")
    func badRegistries() async throws {
        let registry = try await LocalRegistry()
        defer { registry.stop() }
        let proxy = try await FaultyProxy(upstream: registry)
        defer { proxy.stop() }
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let layout = try await TestLayouts.twoLayers(in: registry.directory)
        try await registry.push(layout: layout, tag: "v1", as: "test/bb:v1")
        let before = (images: try await host.berth(["images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}} {{.Digest}} {{.CreatedAt}} {{.Size}}"]).stdout, stored: Self.stored(host))

        try proxy.setMode("status 500")
        let failing = try await host.berth(["pull", "\(proxy.address)/test/bb:v1"])
        #expect(failing.status != 0 && failing.stderr.contains("HTTP 500"), "\(failing.stderr)")
        try proxy.setMode("garbage-manifest")
        let garbage = try await host.berth(["pull", "\(proxy.address)/test/bb:v1"])
        #expect(garbage.status != 0 && garbage.stderr.contains("does not parse"), "\(garbage.stderr)")
        let nobody = try await host.berth(["pull", "127.0.0.1:\(try LocalRegistry.freePort())/test/bb:v1"])
        #expect(nobody.status != 0 && nobody.stderr.contains("connection refused"), "\(nobody.stderr)")
        #expect(!nobody.stderr.contains("agent"), "the registry is unreachable, not the agent: \(nobody.stderr)")

        // The big layer's bytes changed in the registry's storage, its size kept.
        let layers = try #require(
            try FileManager.default.contentsOfDirectory(atPath: "\(layout)/blobs/sha256").map { "sha256:" + $0 }
                .filter { FileManager.default.fileExists(atPath: registry.blobPath($0)) }
                .max { (try? FileManager.default.attributesOfItem(atPath: registry.blobPath($0))[.size] as? Int ?? 0) ?? 0 < (try? FileManager.default.attributesOfItem(atPath: registry.blobPath($1))[.size] as? Int ?? 0) ?? 0 })
        let path = registry.blobPath(layers)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[bytes.count / 2] ^= 0xff
        try bytes.write(to: URL(fileURLWithPath: path))
        let tampered = try await host.berth(["pull", "\(registry.address)/test/bb:v1"])
        #expect(tampered.status != 0)
        #expect(tampered.stderr.contains("digest mismatch") && tampered.stderr.contains(layers), "\(tampered.stderr)")

        #expect(try await host.berth(["images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}} {{.Digest}} {{.CreatedAt}} {{.Size}}"]).stdout == before.images, "no image recorded; the others untouched")
        let after = Self.stored(host)
        #expect(!after.blobs.contains(String(layers.dropFirst(7))), "the tampered blob is not stored")
        // (Another layer cut off when the pull failed keeps its partial download, to resume.)
        #expect(!after.partials.contains(String(layers.dropFirst(7)) + ".partial"), "nor kept to resume from: \(after.partials)")
    }
}
