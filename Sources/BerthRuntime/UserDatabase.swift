public import BerthModel
import BerthLinux

/// /etc/passwd and /etc/group of an image, read from its layers (top first)
/// without following any link out of them.
public struct UserDatabase: Sendable {
    struct PasswdEntry: Sendable { var name: String; var uid: UInt32; var gid: UInt32; var home: String }
    struct GroupEntry: Sendable { var name: String; var gid: UInt32; var members: [String] }

    let users: [PasswdEntry]
    let groups: [GroupEntry]

    /// Reads the image's files; a missing file means no entries.
    public init(layers: [String]) {
        self.init(passwd: Self.read("etc/passwd", layers: layers), group: Self.read("etc/group", layers: layers))
    }

    /// The entries of these files' texts.
    public init(passwd: String, group: String) {
        users = passwd.split(separator: "\n").compactMap { line in
            let f = line.split(separator: ":", omittingEmptySubsequences: false)
            guard f.count >= 7, let uid = UInt32(f[2]), let gid = UInt32(f[3]) else { return nil }
            return PasswdEntry(name: String(f[0]), uid: uid, gid: gid, home: String(f[5]))
        }
        groups = group.split(separator: "\n").compactMap { line in
            let f = line.split(separator: ":", omittingEmptySubsequences: false)
            guard f.count >= 4, let gid = UInt32(f[2]) else { return nil }
            return GroupEntry(name: String(f[0]), gid: gid, members: f[3].split(separator: ",").map(String.init))
        }
    }

    static func read(_ path: String, layers: [String]) -> String {
        for layer in layers {
            guard let root = try? RootedDirectory(path: layer), let found = try? root.fileKind(of: path) else { continue }
            if found == .characterDevice { return "" }  // whited out in this layer
            guard found == .regular || found == .symlink,
                let text = try? FileIO.read("\(layer)/\(path)", limit: 1 << 20)
            else { continue }
            return text
        }
        return ""
    }

    /// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`, or empty for root).
    ///
    /// - Throws: `BerthError.invalidArgument` for a name the image does not know.
    public func resolve(_ user: String) throws -> ProcessUser {
        let parts = user.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let userPart = parts.first ?? ""
        var result = ProcessUser(uid: 0, gid: 0)
        var name: String?
        if userPart.isEmpty {
            let root = users.first { $0.uid == 0 }
            result.home = root?.home ?? "/root"
            name = root?.name ?? "root"
        } else if let uid = UInt32(userPart) {
            result.uid = uid
            if let entry = users.first(where: { $0.uid == uid }) {
                result.gid = entry.gid
                result.home = entry.home
                name = entry.name
            }
        } else {
            guard let entry = users.first(where: { $0.name == userPart }) else {
                throw BerthError.invalid("unable to find user \(userPart): no matching entries in the image's /etc/passwd")
            }
            result.uid = entry.uid
            result.gid = entry.gid
            result.home = entry.home
            name = entry.name
        }
        if parts.count == 2 {
            let group = parts[1]
            if let gid = UInt32(group) {
                result.gid = gid
            } else if let entry = groups.first(where: { $0.name == group }) {
                result.gid = entry.gid
            } else {
                throw BerthError.invalid("unable to find group \(group): no matching entries in the image's /etc/group")
            }
        }
        if let name {
            result.additionalGroups = groups.filter { $0.members.contains(name) && $0.gid != result.gid }.map(\.gid)
        }
        return result
    }
}
