import BerthTesting
import Foundation
import Testing

/// Volumes: named, anonymous, the image's own, binds and tmpfs, as docker has them.
@Suite("volumes (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct VolumeTests {
    static func volumes(_ host: ContainerHost) async throws -> [[String: Any]] {
        // docker's: one object per line; an anonymous volume has the label com.docker.volume.anonymous.
        let r = try await host.berth(["volume", "ls", "--format", "json"])
        return try r.stdout.split(separator: "\n").map { line in
            let shown = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            return [
                "name": shown["Name"] as Any, "mountpoint": shown["Mountpoint"] as Any,
                "anonymous": (shown["Labels"] as? String)?.contains("com.docker.volume.anonymous=") == true,
            ]
        }
    }

    @Test("a named volume is made on first use, its data outlives its containers, it mounts read-only, and it cannot be removed while a container uses it")
    func named() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let write = try await host.berth(["run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/file"])
        #expect(write.status == 0, "\(write.stderr)")
        let listed = try await Self.volumes(host)
        #expect(listed.map { $0["name"] as? String } == ["data"], "\(listed)")
        #expect(listed.first?["anonymous"] as? Bool == false)
        let mountpoint = try #require(listed.first?["mountpoint"] as? String)
        #expect(try String(contentsOfFile: mountpoint + "/file", encoding: .utf8) == "kept\n")

        let read = try await host.berth(["run", "--rm", "-v", "data:/data:ro", "busybox", "sh", "-c", "cat /data/file; echo x > /data/other"])
        #expect(read.stdout == "kept\n", "\(read.stdout)")
        #expect(read.status != 0 && read.stderr.contains("Read-only file system"), "\(read.stderr)")

        #expect(try await host.berth(["create", "--name", "user", "--mount", "type=volume,source=data,target=/d", "busybox", "true"]).status == 0)
        let refused = try await host.berth(["volume", "rm", "data"])
        #expect(refused.status != 0 && refused.stderr.contains("in use by user"), "\(refused.stderr)")
        let inspected = try await host.berth(["volume", "inspect", "data"])
        #expect(inspected.stdout.contains("\"Name\": \"data\""), "\(inspected.stdout)")
        #expect(try await host.berth(["rm", "user"]).status == 0)
        #expect(FileManager.default.fileExists(atPath: mountpoint + "/file"), "rm of a container never touches a named volume")
        #expect(try await host.berth(["volume", "rm", "data"]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: mountpoint))
        let gone = try await host.berth(["volume", "inspect", "data"])
        #expect(gone.status != 0 && gone.stderr.contains("no such volume: data"), "\(gone.stderr)")
        #expect(try await host.berth(["volume", "rm", "-f", "data"]).status == 0, "-f ignores a missing volume")
    }

    @Test("anonymous volumes: kept by rm, removed by rm -v, by run --rm and by prune; a named one survives prune")
    func anonymous() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["volume", "create", "keep"]).stdout == "keep\n")
        #expect(try await host.berth(["run", "-d", "--name", "a", "-v", "/scratch", "busybox", "sleep", "1000"]).status == 0)
        let anon = try #require(try await Self.volumes(host).first { $0["anonymous"] as? Bool == true }?["name"] as? String)
        #expect(anon.count == 64)
        #expect(try await host.berth(["rm", "-f", "a"]).status == 0)
        #expect(try await Self.volumes(host).contains { $0["name"] as? String == anon }, "rm without -v keeps it")
        let pruned = try await host.berth(["volume", "prune", "-f"])
        #expect(pruned.stdout.contains(anon), "\(pruned.stdout)")
        #expect(try await Self.volumes(host).compactMap { $0["name"] as? String } == ["keep"])

        #expect(try await host.berth(["run", "-d", "--name", "b", "-v", "/scratch", "busybox", "sleep", "1000"]).status == 0)
        #expect(try await host.berth(["rm", "-f", "-v", "b"]).status == 0)
        #expect(try await host.berth(["run", "--rm", "-v", "/scratch", "busybox", "true"]).status == 0)
        #expect(try await Self.volumes(host).compactMap { $0["name"] as? String } == ["keep"], "rm -v and run --rm take their anonymous volumes")
    }

    @Test("volume prune asks first and reads the answer from standard input, terminal or not; no answer or no removes nothing; -f does not ask")
    func pruneAsks() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        #expect(try await host.berth(["run", "--name", "a", "-v", "/scratch", "busybox", "true"]).status == 0)
        #expect(try await host.berth(["rm", "a"]).status == 0)
        let anon = try #require(try await Self.volumes(host).first { $0["anonymous"] as? Bool == true }?["name"] as? String)
        let berth = try BuildProducts.executable("berth").path
        func prune(input: String, _ arguments: [String] = []) async throws -> CommandResult {
            try await runCommand(
                URL(fileURLWithPath: "/bin/sh"), ["-c", "\(input) | \(berth) volume prune \(arguments.joined(separator: " "))"],
                environment: host.agent.cliEnvironment())
        }
        let question = "Are you sure you want to continue? [y/N] "
        for input in ["printf 'n\\n'", "printf ''", "cat /dev/null", "printf 'nope\\n'"] {
            let declined = try await prune(input: input)
            #expect(declined.status == 0 && declined.stdout.contains(question), "\(input): \(declined.stdout)\(declined.stderr)")
            #expect(!declined.stdout.contains("Deleted Volumes"), "\(input): \(declined.stdout)")
            #expect(try await Self.volumes(host).contains { $0["name"] as? String == anon }, "\(input) removed the volume")
        }
        let accepted = try await prune(input: "printf 'y\\n'")
        #expect(accepted.status == 0 && accepted.stdout.contains(question) && accepted.stdout.contains(anon), "\(accepted.stdout)\(accepted.stderr)")
        #expect(try await Self.volumes(host).isEmpty)

        #expect(try await host.berth(["run", "--name", "b", "-v", "/scratch", "busybox", "true"]).status == 0)
        #expect(try await host.berth(["rm", "b"]).status == 0)
        let forced = try await prune(input: "printf 'n\\n'", ["-f"])
        #expect(forced.status == 0 && !forced.stdout.contains(question) && forced.stdout.contains("Deleted Volumes"), "\(forced.stdout)")
        #expect(try await Self.volumes(host).isEmpty)
    }

    @Test("an image's VOLUME gets an anonymous volume filled with the image's files, owner and mode included", .enabled(if: RegistryTools.available))
    func imageVolume() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-volimage-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let layout = try await TestLayouts.twoLayers(
            in: dir, secondLayer: "mkdir -p data/sub && echo seed > data/sub/file && chown -R 1000:1000 data && chmod 750 data",
            config: ["--config.volume", "/data"])
        #expect(try await host.berth(["image", "import", layout, "withvolume:1"]).status == 0)
        let run = try await host.berth(["run", "--name", "v", "withvolume:1", "sh", "-c", "cat /data/sub/file; stat -c '%u:%g %a' /data; echo more > /data/new"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout == "seed\n1000:1000 750\n", "\(run.stdout)")
        let volume = try #require(try await Self.volumes(host).first)
        #expect(volume["anonymous"] as? Bool == true)
        let mountpoint = try #require(volume["mountpoint"] as? String)
        #expect(FileManager.default.fileExists(atPath: mountpoint + "/new"))
        #expect(try await host.berth(["rm", "-v", "v"]).status == 0)
        #expect(try await Self.volumes(host).isEmpty)
    }

    @Test("--mount for volumes, binds and tmpfs; malformed mounts are refused and leave nothing")
    func mountFlag() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let hostDir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-bind-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: hostDir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: hostDir) }
        try "from the host\n".write(to: hostDir.appendingPathComponent("note"), atomically: true, encoding: .utf8)
        let r = try await host.berth([
            "run", "--rm", "--mount", "type=volume,src=m,dst=/m", "--mount", "type=bind,source=\(hostDir.path),target=/h,readonly",
            "--mount", "type=tmpfs,target=/t,tmpfs-size=1m", "busybox", "sh", "-c",
            "echo v > /m/x && cat /h/note && (echo no > /h/x || true) && df -k /t | tail -1 | awk '{print $2}'",
        ])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "from the host\n1024\n", "\(r.stdout)")
        #expect(r.stderr.contains("Read-only file system"), "\(r.stderr)")
        for bad in ["type=foo,target=/x", "type=volume,target=relative", "type=bind,source=rel,target=/x", "type=tmpfs,source=x,target=/x", "target=/x,bogus=1"] {
            let refused = try await host.berth(["create", "--mount", bad, "busybox"])
            #expect(refused.status != 0 && refused.stderr.contains("mount \"\(bad)\""), "\(bad): \(refused.stderr)")
        }
        let badName = try await host.berth(["create", "-v", "bad name:/x", "busybox"])
        #expect(badName.status != 0, "\(badName.stderr)")
        #expect(try await Self.volumes(host).compactMap { $0["name"] as? String } == ["m"])
        #expect(try await host.berth(["ps", "-aq"]).stdout.isEmpty)
    }
}
