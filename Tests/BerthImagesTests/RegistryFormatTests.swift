@testable import BerthImages
import BerthModel
import Foundation
import Testing

/// Compressed layers read through gzip and zstd made by the real tools.
@Suite("compression")
struct CompressionTests {
    static func tool(_ argv: [String], input: [UInt8]) throws -> [UInt8] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-compress-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("in")
        try Data(input).write(to: file)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: argv[0])
        process.arguments = Array(argv.dropFirst()) + [file.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Array(output)
    }

    static func readAll<S: ByteSource>(_ source: inout S) throws -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 3000)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try source.read(into: $0) }
            out += buffer[0..<n]
            if n < buffer.count { return out }
        }
    }

    static let text: [UInt8] = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 / 7) }

    @Test("gzip: one member, several members back to back, and a truncated stream is an error", .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/gzip")))
    func gzip() throws {
        let one = try Self.tool(["/usr/bin/gzip", "-c"], input: Self.text)
        #expect(LayerCompression.detect(one) == .gzip)
        var source = try GzipByteSource(BytesSource(bytes: one))
        #expect(try Self.readAll(&source) == Self.text)

        let second = try Self.tool(["/usr/bin/gzip", "-c"], input: Array("tail".utf8))
        var both = try GzipByteSource(BytesSource(bytes: one + second))
        #expect(try Self.readAll(&both) == Self.text + Array("tail".utf8))

        var truncated = try GzipByteSource(BytesSource(bytes: Array(one.prefix(one.count / 2))))
        #expect(throws: BerthError.self) { _ = try Self.readAll(&truncated) }
        var garbage = try GzipByteSource(BytesSource(bytes: [0x1f, 0x8b] + Array(repeating: 0x55, count: 100)))
        #expect(throws: BerthError.self) { _ = try Self.readAll(&garbage) }
    }

    @Test("zstd: a frame, and a truncated one is an error", .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/zstd")))
    func zstd() throws {
        let frame = try Self.tool(["/usr/bin/zstd", "-q", "-c"], input: Self.text)
        #expect(LayerCompression.detect(frame) == .zstd)
        var source = try ZstdByteSource(BytesSource(bytes: frame))
        #expect(try Self.readAll(&source) == Self.text)
        var truncated = try ZstdByteSource(BytesSource(bytes: Array(frame.prefix(frame.count - 10))))
        #expect(throws: BerthError.self) { _ = try Self.readAll(&truncated) }
        #expect(LayerCompression.detect(Array("plain tar".utf8)) == .none)
    }
}

/// What the registry client parses: challenges, manifests, who may use plain HTTP.
@Suite("registry formats")
struct RegistryFormatTests {
    @Test("WWW-Authenticate challenges: bearer with quoted commas, basic, junk")
    func challenges() {
        let bearer = AuthChallenge(parsing: #"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#)
        #expect(bearer?.scheme == "bearer")
        #expect(bearer?.parameters["realm"] == "https://auth.docker.io/token")
        #expect(bearer?.parameters["service"] == "registry.docker.io")
        #expect(bearer?.parameters["scope"] == "repository:library/busybox:pull,push")
        #expect(AuthChallenge(parsing: #"Basic realm="berth-test""#) == AuthChallenge(scheme: "basic", parameters: ["realm": "berth-test"]))
        #expect(AuthChallenge(parsing: #"Bearer realm="unterminated"#) == nil)
        #expect(AuthChallenge(parsing: "") == nil)
    }

    @Test("plain HTTP only on loopback or for registries named insecure")
    func plainHTTP() {
        for registry in ["127.0.0.1:5000", "127.3.2.1", "localhost:5000", "[::1]:5000", "localhost"] {
            #expect(RegistryClient.allowsPlainHTTP(registry, insecure: []), "\(registry)")
        }
        for registry in ["docker.io", "10.0.0.1:5000", "127.0.0.1.example.com", "localhost.example.com:5000", "[::2]:5000"] {
            #expect(!RegistryClient.allowsPlainHTTP(registry, insecure: []), "\(registry)")
        }
        #expect(RegistryClient.allowsPlainHTTP("10.0.0.1:5000", insecure: ["10.0.0.1:5000"]))
    }

    @Test("manifests: index, manifest, schema 1 and unknown types, a layer that is not a layer")
    func manifests() throws {
        let index = #"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:\#(String(repeating: "a", count: 64))","size":10,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#
        guard case .index(let parsed) = try ManifestDocument(bytes: Array(index.utf8), mediaType: "", what: "x") else {
            Issue.record("not an index")
            return
        }
        #expect(parsed.manifests.first.flatMap(\.platform).map(ImagePlatform(os: "linux", architecture: "arm64").matches) == true)
        #expect(parsed.manifests.first.flatMap(\.platform).map(ImagePlatform(os: "linux", architecture: "arm64", variant: "v7").matches) == false)
        let schema1 = #"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#
        #expect(throws: BerthError.self) { try ManifestDocument(bytes: Array(schema1.utf8), mediaType: "", what: "x") }
        let helm = #"{"schemaVersion":2,"config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:\#(String(repeating: "b", count: 64))","size":1},"layers":[{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","digest":"sha256:\#(String(repeating: "c", count: 64))","size":1}]}"#
        do {
            _ = try ManifestDocument(bytes: Array(helm.utf8), mediaType: "application/vnd.oci.image.manifest.v1+json", what: "chart")
            Issue.record("a helm chart was taken for an image")
        } catch let error as BerthError {
            #expect(error.message.contains("not an image layer"), "\(error)")
        }
        #expect(throws: BerthError.self) { try ManifestDocument(bytes: Array("{not json".utf8), mediaType: "", what: "x") }
        #expect(throws: BerthError.self) { try ImagePlatform(parsing: "linux") }
        #expect(try ImagePlatform(parsing: "linux/arm64/v8") == ImagePlatform(os: "linux", architecture: "arm64", variant: "v8"))
    }

    @Test("docker's Healthcheck and Shell in an image config: nanoseconds, 0 for the default, a test Berth cannot run left out; written back the same")
    func healthcheckConfig() throws {
        let json = #"""
            {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
             "config": {"Cmd": ["nginx"], "Shell": ["/bin/bash", "-c"],
                        "Healthcheck": {"Test": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"], "Interval": 30000000000,
                                        "Timeout": 5000000000, "StartPeriod": 0, "Retries": 3}}}
            """#
        let config = try JSONDecoder().decode(OCIImageConfig.self, from: Data(json.utf8)).imageConfig
        #expect(config.healthcheck == HealthCheck(test: ["CMD-SHELL", "curl -f http://localhost/ || exit 1"], interval: 30, timeout: 5, retries: 3))
        #expect(config.shell == ["/bin/bash", "-c"])
        #expect(config.healthcheck?.probeCommand(shell: config.shell) == ["/bin/bash", "-c", "curl -f http://localhost/ || exit 1"])
        let again = OCIImageConfig(image: config, diffIDs: [], architecture: "amd64", os: "linux", created: Date(), comment: "")
        #expect(again.imageConfig == config)

        let odd = #"{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": {"Healthcheck": {"Test": ["SSH", "x"]}}}"#
        #expect(try JSONDecoder().decode(OCIImageConfig.self, from: Data(odd.utf8)).imageConfig.healthcheck == nil)
        let none = #"{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": {"Healthcheck": {"Test": ["NONE"]}}}"#
        #expect(try JSONDecoder().decode(OCIImageConfig.self, from: Data(none.utf8)).imageConfig.healthcheck?.isDisabled == true)
    }
}
