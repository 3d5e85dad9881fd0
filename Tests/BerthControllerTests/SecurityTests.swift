@testable import BerthController
import BerthLinux
import BerthModel
import BerthTransport
import Foundation
import Logging
import BerthTesting
import Testing

@Suite("identities, revocation, the registry's rules, the data directory's lock")
struct SecurityTests {
    static func scratch() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-security-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    static func registry(_ store: TestStore) async throws -> NodeRegistry {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return try await NodeRegistry(store: store.store, grace: .seconds(10), heartbeatInterval: .seconds(2), logger: logger)
    }

    static func register(_ registry: NodeRegistry, _ id: String, address: String = "10.0.0.1:7440", labels: [String: String] = [:], peer: PeerIdentity?)
        async throws -> ClusterNode
    {
        try await registry.register(
            id: id, hostname: "h-\(id.prefix(4))", address: address, labels: labels, capacity: NodeCapacity(cpus: 2, memoryBytes: 1 << 30),
            allocatable: NodeCapacity(cpus: 2, memoryBytes: 1 << 30), agentVersion: "test", peer: peer)
    }

    @Test("a node's certificate names its node ID; the registry lets it register and heartbeat as that node only", arguments: StoreKind.allCases)
    func identity(_ kind: StoreKind) async throws {
        let store = try await TestStore(kind)
        defer { store.close() }
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let ca = directory.appendingPathComponent("ca").path
        try ClusterCA.initialize(directory: ca)
        let issued = try ClusterCA.issue(caDirectory: ca, name: "node0", role: .node, ipAddresses: ["10.0.0.1"], outputDirectory: directory.appendingPathComponent("node0").path)
        let id = try #require(issued.nodeID)
        let tls = try MutualTLS(directory: directory.appendingPathComponent("node0").path)
        #expect(tls.identity == PeerIdentity(role: "node", name: id, serial: issued.serial))
        let (inspected, dns, ips) = try ClusterCA.inspect(certificateDirectory: directory.appendingPathComponent("node0").path)
        #expect(inspected == issued && dns == ["node0"] && ips == ["10.0.0.1"])
        #expect(throws: BerthError.self) {
            try ClusterCA.issue(caDirectory: ca, name: "op", role: .operator, nodeID: id, outputDirectory: directory.appendingPathComponent("x").path)
        }

        let registry = try await Self.registry(store)
        let peer = tls.identity
        _ = try await Self.register(registry, id, peer: peer)
        let other = String(repeating: "a", count: 32)
        for attempt in [{ try await Self.register(registry, other, address: "10.0.0.2:7440", peer: peer) }] {
            do {
                _ = try await attempt()
                Issue.record("another node's ID was taken")
            } catch let error as BerthError {
                #expect(error.code == .permissionDenied && error.message.contains("belongs to another node"))
            }
        }
        await #expect(throws: BerthError.self) { try await registry.heartbeat(id: other, peer: peer) }
        #expect(try await registry.heartbeat(id: id, peer: peer))
        // Without TLS (loopback) there is no certificate to check.
        _ = try await Self.register(registry, other, address: "10.0.0.2:7440", peer: nil)
        // Two ready nodes cannot share one address.
        await #expect(throws: BerthError.self) { try await Self.register(registry, String(repeating: "b", count: 32), address: "10.0.0.2:7440", peer: nil) }
    }

    @Test("node rm: a ready node only with force; a removed node may not register or heartbeat again, even after a restart of the controller", arguments: StoreKind.allCases)
    func removal(_ kind: StoreKind) async throws {
        let store = try await TestStore(kind)
        defer { store.close() }
        let id = String(repeating: "c", count: 32)
        var registry = try await Self.registry(store)
        _ = try await Self.register(registry, id, peer: nil)
        do {
            _ = try await registry.remove(id, force: false)
            Issue.record("a ready node was removed without force")
        } catch let error as BerthError {
            #expect(error.code == .failedPrecondition && error.message.contains("is ready"))
        }
        _ = try await registry.remove(String(id.prefix(8)), force: true)
        #expect(await registry.list().isEmpty)
        registry = try await Self.registry(store)
        do {
            _ = try await Self.register(registry, id, peer: nil)
            Issue.record("a removed node registered again")
        } catch let error as BerthError {
            #expect(error.code == .permissionDenied && error.message.contains("was removed from the cluster"))
        }
        await #expect(throws: BerthError.self) { try await registry.heartbeat(id: id) }
    }

    @Test("node label --rm of an agent's own label is refused, saying where it comes from; nothing changes", arguments: StoreKind.allCases)
    func agentLabels(_ kind: StoreKind) async throws {
        let store = try await TestStore(kind)
        defer { store.close() }
        let id = String(repeating: "d", count: 32)
        let registry = try await Self.registry(store)
        _ = try await Self.register(registry, id, labels: ["zone": "a"], peer: nil)
        _ = try await registry.update(id, availability: nil, addLabels: ["tier": "web"], removeLabels: [])
        do {
            _ = try await registry.update(id, availability: nil, addLabels: ["x": "1"], removeLabels: ["zone"])
            Issue.record("an agent's label was removed")
        } catch let error as BerthError {
            #expect(error.message.contains("is the agent's own (berth-agent --label zone=a)") && error.message.contains("engine.labels.zone"), "\(error.message)")
        }
        let node = try await registry.get(id)
        #expect(node.operatorLabels == ["tier": "web"] && node.agentLabels == ["zone": "a"], "nothing changed: \(node)")
        await #expect(throws: BerthError.self) { try await registry.update(id, availability: nil, addLabels: [:], removeLabels: ["nosuch"]) }
    }

    @Test("ca revoke lists serials; the revocation list reads them when the file changes; ca rotate keeps the holder and revokes the old serial")
    func revocation() throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let ca = directory.appendingPathComponent("ca").path
        try ClusterCA.initialize(directory: ca)
        let node = directory.appendingPathComponent("node").path
        let first = try ClusterCA.issue(caDirectory: ca, name: "node1", role: .node, ipAddresses: ["10.0.0.5"], outputDirectory: node)
        let list = RevocationList(path: ClusterCA.revocationFile(ca))
        #expect(list.serials.isEmpty, "no file: nothing revoked")
        let peer = PeerIdentity(role: "node", name: first.nodeID ?? "", serial: first.serial)
        #expect(list.refusal(peer) == nil)
        let rotated = try ClusterCA.rotate(caDirectory: ca, certificateDirectory: node).issued
        #expect(rotated.nodeID == first.nodeID && rotated.name == "node1" && rotated.serial != first.serial)
        #expect(try ClusterCA.inspect(certificateDirectory: node).ipAddresses == ["10.0.0.5"])
        #expect(list.refusal(peer)?.contains("is revoked") == true, "the old serial is revoked")
        #expect(list.refusal(PeerIdentity(role: "node", name: "", serial: rotated.serial)) == nil)
        // Serials given by hand, once each; leading zeros do not matter.
        try ClusterCA.revoke(caDirectory: ca, ["00ABCDEF", "abcdef"])
        #expect(list.serials.contains("abcdef") && list.serials.count == 2)
        #expect(throws: BerthError.self) { try ClusterCA.revoke(caDirectory: ca, ["not a serial"]) }
        #expect(RevocationList.parse("# comment\n0a1b revoked\n\n  \nzz\n") == ["a1b"])
    }

    @Test("a second holder of the data directory's lock is told who holds it")
    func lock() throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("lock").path
        let first = try ProcessLock(path: path, holder: "berth-controller pid 1")
        do {
            _ = try ProcessLock(path: path, holder: "berth-controller pid 2")
            Issue.record("two holders")
        } catch let held as ProcessLock.Held {
            #expect(held.holder == "berth-controller pid 1")
        }
        _ = first
    }
}
