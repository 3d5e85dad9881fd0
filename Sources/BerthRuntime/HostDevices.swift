public import BerthModel
public import BerthShimProtocol
import BerthLinux

/// The host's side of `--device`: the nodes a container gets, as the host
/// has them (type, numbers, mode, owner), and the rules that let the
/// container use them.
public enum HostDevices {
    /// Reads the host's nodes for `mappings`; a directory maps every node
    /// under it (as docker does for `--device /dev/snd`).
    ///
    /// - Throws: `BerthError.invalidArgument` for a path that is missing or
    ///   holds no device node.
    public static func resolve(_ mappings: [DeviceMapping]) throws -> (nodes: [ShimConfig.DeviceNode], rules: [DeviceRule]) {
        var nodes: [ShimConfig.DeviceNode] = []
        var rules: [DeviceRule] = []
        func add(_ host: String, at container: String, _ status: FileStatus, _ access: DeviceAccess) {
            let kind: DeviceRule.Kind = status.isBlockDevice ? .block : .character
            nodes.append(
                ShimConfig.DeviceNode(
                    path: container, type: kind.rawValue, major: status.rdevMajor, minor: status.rdevMinor, mode: status.mode & 0o7777,
                    uid: status.uid, gid: status.gid))
            rules.append(DeviceRule(kind, major: status.rdevMajor, minor: status.rdevMinor, access: access))
        }
        for mapping in mappings {
            let status: FileStatus
            do {
                status = try FileIO.statusFollowingLinks(mapping.hostPath)
            } catch let error as SystemError {
                throw BerthError.invalid("device \(mapping.hostPath): \(error.errnoName == "ENOENT" ? "no such file or directory" : "\(error)")")
            }
            if status.isCharacterDevice || status.isBlockDevice {
                add(mapping.hostPath, at: mapping.containerPath, status, mapping.access)
            } else if status.isDirectory {
                let before = nodes.count
                try walk(mapping.hostPath) { path, status in
                    add(path, at: mapping.containerPath + path.dropFirst(mapping.hostPath.count), status, mapping.access)
                }
                guard nodes.count > before else { throw BerthError.invalid("device \(mapping.hostPath): the directory holds no device node") }
            } else {
                throw BerthError.invalid("device \(mapping.hostPath): not a device node")
            }
        }
        return (nodes, rules)
    }

    /// Every character or block node under `directory` (symlinks not followed).
    private static func walk(_ directory: String, _ found: (String, FileStatus) throws -> Void) throws {
        let names: [String]
        do {
            names = try FileIO.list(directory).sorted()
        } catch {
            throw BerthError.invalid("device \(directory): \(error)")
        }
        for name in names {
            let path = "\(directory)/\(name)"
            guard let status = try? FileIO.status(path) else { continue }
            if status.isCharacterDevice || status.isBlockDevice {
                try found(path, status)
            } else if status.isDirectory {
                try walk(path, found)
            }
        }
    }
}
