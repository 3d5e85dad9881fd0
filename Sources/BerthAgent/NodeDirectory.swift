public import BerthModel
import BerthLinux
import Foundation

/// The agent's identity and host facts, gathered once at start and refreshed
/// where they change (memory, counts).
public final class NodeDirectory: Sendable {
    public let probe: HostProbe
    public let id: String
    public let rootDir: String
    public let stateDir: String
    public let labels: [String: String]
    public let versionInfo: VersionInfo
    private let fixed: (hostname: String, kernel: String, os: String, mode: CgroupMode, cpus: Int)

    /// - Parameter certifiedID: the node ID in the agent's certificate: a
    ///   new node takes it, a node with another ID is refused.
    /// - Throws: `BerthError` when the node ID cannot be read or written, or
    ///   differs from `certifiedID`.
    public init(
        rootDir: String, stateDir: String, labels: [String: String] = [:], probe: HostProbe = HostProbe(), certifiedID: String? = nil
    ) throws {
        self.probe = probe
        self.rootDir = rootDir
        self.stateDir = stateDir
        self.labels = labels
        self.id = try Self.loadOrCreateID(at: "\(rootDir)/node-id", certifiedID: certifiedID)
        self.versionInfo = BuildInfo.versionInfo(architecture: probe.architecture)
        self.fixed = (probe.hostname, probe.kernelVersion, probe.operatingSystem, probe.cgroupMode, probe.cpus)
    }

    /// The host as of now.
    public func info(containers: ContainerCounts = ContainerCounts(), images: Int = 0) -> NodeInfo {
        let memory = probe.memory
        let capacity = NodeCapacity(cpus: fixed.cpus, memoryBytes: memory.total)
        return NodeInfo(
            id: id, hostname: fixed.hostname, kernelVersion: fixed.kernel, operatingSystem: fixed.os,
            architecture: probe.architecture, cgroupMode: fixed.mode, capacity: capacity, allocatable: capacity,
            labels: labels, containers: containers, images: images, rootDir: rootDir, stateDir: stateDir,
            version: versionInfo)
    }

    /// Reads the node ID kept under the root, or writes a new random one
    /// (atomically: a crash never leaves a half-written ID).
    static func loadOrCreateID(at path: String, certifiedID: String? = nil) throws -> String {
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            let id = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard id.count == 32, id.allSatisfy(\.isHexDigit) else {
                throw BerthError(.internal, "\(path) holds \"\(id.prefix(40))\", not a node ID; move it away to make a new one")
            }
            if let certifiedID, certifiedID != id {
                throw BerthError.invalid(
                    "this agent is node \(id) (\(path)), but its certificate is node \(certifiedID)'s: issue this node a certificate with berth-controller ca issue --role node --node-id \(id)")
            }
            return id
        }
        var generator = SystemRandomNumberGenerator()
        let id = certifiedID ?? (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        do {
            try AtomicFile.write(Array((id + "\n").utf8), to: path)
        } catch {
            throw BerthError(.internal, "cannot write the node ID to \(path)", underlying: error)
        }
        return id
    }
}

