public import BerthModel
import BerthImages
import BerthLinux
import Foundation
import Synchronization

/// The agent's volumes: directories under `<root>/volumes/<name>/_data`,
/// recorded in the agent's database with an event for each create and
/// remove. A volume's data is only ever removed by removing the volume.
public final class VolumeStore: Sendable {
    public let root: String
    private let database: AgentDatabase
    private let lock = Mutex(())

    public init(root: String, database: AgentDatabase) throws {
        self.root = root
        self.database = database
        do {
            try Directories.create(root, mode: 0o701)
        } catch {
            throw BerthError(.internal, "cannot prepare the volume directory \(root)", underlying: error)
        }
    }

    public func dataPath(_ name: String) -> String { "\(root)/\(name)/_data" }

    public func list() throws -> [Volume] {
        try database.allVolumes().sorted { $0.name < $1.name }
    }

    /// - Throws: `BerthError.notFound`.
    public func get(_ name: String) throws -> Volume {
        guard let volume = try database.allVolumes().first(where: { $0.name == name }) else {
            throw BerthError.notFound("volume", name)
        }
        return volume
    }

    /// Creates a volume (a random name makes it anonymous), or returns the
    /// one that has the name already.
    ///
    /// - Returns: the volume and whether this call made it.
    @discardableResult
    public func create(_ name: String?, labels: [String: String] = [:], anonymous: Bool? = nil) throws -> (Volume, created: Bool) {
        if let name { try VolumeName.validate(name) }
        return try lock.withLock { _ in
            let chosen = name ?? RandomHex.make()
            if let existing = try database.allVolumes().first(where: { $0.name == chosen }) { return (existing, false) }
            let volume = Volume(
                name: chosen, anonymous: anonymous ?? (name == nil), labels: labels, createdAt: Date(), mountpoint: dataPath(chosen))
            do {
                try Directories.create("\(root)/\(chosen)", mode: 0o701)
                try Directories.create(volume.mountpoint, mode: 0o755)
                _ = try database.insert(volume, events: [.init(type: .volume, action: .create, actorID: chosen, attributes: ["driver": "local"])])
            } catch {
                try? RootedDirectory(path: root).remove(chosen)
                throw error
            }
            return (volume, true)
        }
    }

    /// Removes a volume and its data.
    ///
    /// - Parameter users: names of containers that use it; removal is refused while there are any.
    /// - Throws: `BerthError.notFound`, or `failedPrecondition` for a volume in use.
    public func remove(_ name: String, users: [String]) throws {
        try lock.withLock { _ in
            guard try database.allVolumes().contains(where: { $0.name == name }) else { throw BerthError.notFound("volume", name) }
            guard users.isEmpty else {
                throw BerthError(.failedPrecondition, "volume \(name) is in use by \(users.sorted().joined(separator: ", ")); remove those containers first")
            }
            _ = try database.delete(volume: name, events: [.init(type: .volume, action: .destroy, actorID: name)])
            try RootedDirectory(path: root).remove(name)
        }
    }

    /// Bytes a volume's data takes (allocated blocks).
    public func usage(_ name: String) -> Int64 {
        FileIO.diskUsage(dataPath(name))
    }

    /// Fills a new, empty volume with what the image has at `path`, as docker
    /// does on a volume's first use, owner and mode of the directory included.
    ///
    /// - Parameter layers: the image's layer directories, top first.
    public func populate(_ name: String, fromLayers layers: [String], at path: String) throws {
        let data = dataPath(name)
        guard (try? FileIO.list(data))?.isEmpty ?? false, !layers.isEmpty else { return }
        let view: String
        var mounted: String?
        if layers.count == 1 {
            view = layers[0]
        } else {
            // The image's merged view, read-only, for the time of the copy.
            let point = "\(root)/.populate-\(UInt32.random(in: 0...UInt32.max))"
            try Directories.create(point, mode: 0o700)
            do {
                try Mounts.overlay(lower: layers, at: point, readOnly: true)
            } catch {
                try? FileIO.removeDirectory(point)
                throw BerthError(.internal, "cannot mount the image to fill volume \(name)", underlying: error)
            }
            mounted = point
            view = point
        }
        defer {
            if let mounted {
                try? Mounts.unmount(mounted, detach: true)
                try? FileIO.removeDirectory(mounted)
            }
        }
        let source = view + (path.hasPrefix("/") ? path : "/" + path)
        guard let status = try? FileIO.status(source), status.isDirectory, !status.isSymlink else { return }
        try TreeCopy.copy(from: source, into: data, scratch: "\(root)/\(name)")
        do {
            try FileIO.setOwner(data, uid: status.uid, gid: status.gid)
            try FileIO.setPermissions(data, status.mode)
        } catch {
            throw BerthError(.internal, "cannot set the owner of volume \(name)", underlying: error)
        }
    }
}
