@testable import BerthAgent
import BerthModel
import BerthRuntime
import BerthTesting
import Foundation
import Synchronization
import Testing

/// A host whose files and devices are what the test says.
final class StubHost: AdmissionHost {
    let paths: Set<String>
    let profiles: [String: String]
    let devices: Set<String>
    let grantableCapabilities: UInt64
    private let reads = Mutex(0)

    init(paths: Set<String> = [], profiles: [String: String] = [:], devices: Set<String> = [], grantable: UInt64 = ~0) {
        self.paths = paths
        self.profiles = profiles
        self.devices = devices
        self.grantableCapabilities = grantable
    }

    var profileReads: Int { reads.withLock { $0 } }
    func pathExists(_ path: String) -> Bool { paths.contains(path) }
    func readProfile(_ path: String) throws -> String {
        reads.withLock { $0 += 1 }
        guard let text = profiles[path] else { throw BerthError.invalid("seccomp profile \(path): cannot be read") }
        return text
    }
    func checkDevices(_ mappings: [DeviceMapping]) throws {
        for mapping in mappings where !devices.contains(mapping.hostPath) {
            throw BerthError.invalid("error gathering device information while adding custom device \"\(mapping.hostPath)\": no such file or directory")
        }
    }
}

@Suite("container admission (pure)")
struct AdmissionTests {
    static let users = UserDatabase(
        passwd: "root:x:0:0:root:/root:/bin/sh\nweb:x:101:102:web:/srv:/bin/false\n", group: "root:x:0:\nweb:x:102:\nextra:x:200:web\n")

    static var image: Image {
        var config = ImageConfig()
        config.entrypoint = ["/entry"]
        config.cmd = ["serve"]
        config.user = "web"
        config.labels = ["from": "image", "both": "image"]
        config.volumes = ["/data", "/cache"]
        return Image(
            id: "sha256:" + String(repeating: "a", count: 64), names: ["app:latest"], digest: "", sizeBytes: 0, layers: [], os: "linux",
            architecture: "amd64", config: config, createdAt: Date(timeIntervalSince1970: 0))
    }

    static func spec(_ configure: (inout ContainerSpec) -> Void = { _ in }) -> ContainerSpec {
        var spec = ContainerSpec(image: "app")
        configure(&spec)
        return spec
    }

    @Test("the checks before the image: limits against the host, a name in use, the default network's name")
    func check() throws {
        let capacity = NodeCapacity(cpus: 2, memoryBytes: 1 << 30)
        let checked = try ContainerAdmission.check(Self.spec { $0.network = "default" }, capacity: capacity, names: ["taken"])
        #expect(checked.network == "bridge")
        #expect(throws: BerthError.self) { try ContainerAdmission.check(Self.spec { $0.name = "taken" }, capacity: capacity, names: ["taken"]) }
        #expect(throws: BerthError.self) {
            try ContainerAdmission.check(Self.spec { $0.resources.cpus = CPUQuantity(cpus: 8) }, capacity: capacity, names: [])
        }
    }

    @Test("the image's settings under the container's: labels merged, VOLUME paths get volumes, user and command resolved")
    func admitted() throws {
        let spec = Self.spec {
            $0.labels = ["both": "own"]
            $0.mounts = [Mount(kind: .tmpfs, target: "/cache")]
            $0.command = ["check", "--all"]
            $0.capAdd = ["NET_ADMIN"]
        }
        let admission = try ContainerAdmission.admit(spec, image: Self.image, onNetwork: false, users: Self.users, host: StubHost())
        #expect(admission.spec.labels == ["from": "image", "both": "own"])
        #expect(admission.spec.mounts.map(\.target) == ["/cache", "/data"], "a mount at /cache covers the image's VOLUME there")
        #expect(admission.process.command == ["/entry", "check", "--all"])
        #expect(admission.process.user == ProcessUser(uid: 101, gid: 102, additionalGroups: [200], home: "/srv"))
        let netAdmin = UInt64(1) << UInt64(Capabilities.names.firstIndex(of: "NET_ADMIN")!)
        #expect(admission.process.capabilities & netAdmin != 0)
        #expect(admission.process.seccomp == .defaultProfile)
    }

    @Test("a seccomp profile file is read once, at admission, and kept: what the record runs does not follow the file")
    func profileKept() throws {
        let json = #"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}"#
        let host = StubHost(profiles: ["/p.json": json, "/bad.json": #"{"syscalls": 3}"#])
        let admission = try ContainerAdmission.admit(
            Self.spec { $0.securityOpts = ["seccomp=/p.json"] }, image: Self.image, onNetwork: false, users: Self.users, host: host)
        #expect(admission.process.seccomp == .profile(json: json))
        #expect(host.profileReads == 1)
        #expect(try admission.process.seccomp.profile()?.defaultAction == "SCMP_ACT_ERRNO")
        #expect(admission.process.seccomp.key.hasPrefix("file-"))
        let unconfined = try ContainerAdmission.admit(
            Self.spec { $0.securityOpts = ["seccomp=unconfined", "no-new-privileges"] }, image: Self.image, onNetwork: false, users: Self.users,
            host: host)
        #expect(unconfined.process.seccomp == .unconfined)
        #expect(throws: BerthError.self) {
            try ContainerAdmission.admit(Self.spec { $0.securityOpts = ["seccomp=/bad.json"] }, image: Self.image, onNetwork: false, users: Self.users, host: host)
        }
    }

    @Test("what cannot be honoured is a clear error: an alias off a network, a missing bind source, an unknown user, capability, option or device")
    func refusals() throws {
        let host = StubHost(paths: ["/srv/here"], devices: ["/dev/null"])
        func refusal(_ configure: (inout ContainerSpec) -> Void) -> String? {
            do {
                _ = try ContainerAdmission.admit(Self.spec(configure), image: Self.image, onNetwork: false, users: Self.users, host: host)
                return nil
            } catch let error as BerthError {
                return error.message
            } catch {
                return "\(error)"
            }
        }
        #expect(refusal { $0.networkAliases = ["db"] } == "--network-alias needs a user-defined network")
        #expect(refusal { $0.mounts = [Mount(kind: .bind, source: "/srv/gone", target: "/x")] } == "bind source path does not exist: /srv/gone")
        #expect(refusal { $0.mounts = [Mount(kind: .bind, source: "/srv/here", target: "/x")] } == nil)
        #expect(refusal { $0.user = "nobody" }?.contains("unable to find user nobody") == true)
        #expect(refusal { $0.capAdd = ["NOT_A_CAP"] } != nil)
        #expect(refusal { $0.securityOpts = ["apparmor=x"] }?.contains("supported are") == true)
        #expect(refusal { $0.devices = [DeviceMapping(hostPath: "/dev/nothing")] } != nil)
        #expect(refusal { $0.devices = [DeviceMapping(hostPath: "/dev/null")] } == nil)
    }

    @Test("a capability the host does not grant: refused by name when asked for, left out of docker's defaults and ALL")
    func ungrantedCapabilities() throws {
        let bit = { (name: String) in UInt64(1) << UInt64(Capabilities.bit(name)!) }
        let host = StubHost(grantable: ~(bit("SYS_RESOURCE") | bit("CHOWN")))
        do {
            _ = try ContainerAdmission.admit(Self.spec { $0.capAdd = ["SYS_RESOURCE"] }, image: Self.image, onNetwork: false, users: Self.users, host: host)
            Issue.record("admitted")
        } catch let error as BerthError {
            #expect(error.message == "--cap-add SYS_RESOURCE: the host does not grant this capability (it is not in the agent's bounding set)")
        }
        let defaults = try ContainerAdmission.admit(Self.spec { _ in }, image: Self.image, onNetwork: false, users: Self.users, host: host)
        #expect(defaults.process.capabilities & bit("CHOWN") == 0 && defaults.process.capabilities & bit("KILL") != 0)
        let all = try ContainerAdmission.admit(Self.spec { $0.capAdd = ["ALL"] }, image: Self.image, onNetwork: false, users: Self.users, host: host)
        #expect(all.process.capabilities & (bit("SYS_RESOURCE") | bit("CHOWN")) == 0 && all.process.capabilities & bit("SYS_ADMIN") != 0)
    }

    @Test("the record keeps its admission and every start runs it; a record from before is admitted at its start")
    func keptWithTheRecord() async throws {
        let bench = try SupervisorBench()
        defer { bench.cleanUp() }
        let (created, _) = try await bench.supervisor.create(bench.spec("kept", ["echo", "hi"]))
        let admitted = try #require(created.admitted)
        #expect(admitted.command == ["echo", "hi"])
        #expect(try bench.database.allContainers().first { $0.id == created.id }?.admitted == admitted, "persisted")
        _ = try await bench.supervisor.start("kept")
        #expect(bench.runtime.process(created.id)?.admitted == admitted)

        // A record as an older agent wrote it, without an admission.
        let (old, _) = try await bench.supervisor.create(bench.spec("old", ["echo", "old"]))
        var stripped = old
        stripped.admitted = nil
        _ = try bench.database.update(stripped)
        let restarted = try SupervisorBench(sharing: bench)
        _ = try await restarted.supervisor.start("old")
        #expect(restarted.runtime.process(old.id)?.admitted?.command == ["echo", "old"])
    }
}
