import BerthLinux

/// Unpacks an image layer (a tar stream) into a directory without letting
/// any entry reach outside it: names with `..` are refused, every path is
/// resolved beneath the directory by the kernel (so a symlink planted by an
/// earlier entry cannot redirect a later write), hard links resolve inside
/// the layer only, and overlay whiteouts become what overlayfs expects.
public struct LayerUnpacker {
    public struct Options: Sendable {
        /// Create character and block devices from the layer. Off by default:
        /// device nodes are skipped with a warning.
        public var allowDeviceNodes = false
        public init() {}
    }

    /// What an unpack did.
    public struct Report: Sendable {
        public var entries = 0
        public var bytes: Int64 = 0
        public var warnings: [String] = []
    }

    /// A layer that tries to do what a layer may not.
    public struct HostileEntry: Error, Sendable, CustomStringConvertible {
        public var name: String
        public var reason: String
        public var description: String { "layer entry \"\(name)\": \(reason)" }
    }

    /// The cleaned, relative form of an entry name; throws for `..`.
    static func clean(_ name: String) throws -> String {
        var parts: [Substring] = []
        for part in name.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." { throw HostileEntry(name: name, reason: "the name climbs out of the layer with \"..\"") }
            parts.append(part)
        }
        return parts.joined(separator: "/")
    }

    /// Unpacks every entry of `reader` into `directory` (which must exist).
    ///
    /// - Throws: `TarError` for a malformed archive, `HostileEntry` for an
    ///   entry that tries to leave the layer, `SystemError` for the kernel's
    ///   refusals. The caller discards the directory on any error.
    public static func unpack<S: ByteSource>(_ reader: inout TarReader<S>, into directory: String, options: Options = Options()) throws -> Report {
        let root = try RootedDirectory(path: directory)
        var report = Report()
        var directories: [(String, TarEntry)] = []
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        while let entry = try reader.next() {
            report.entries += 1
            let path = try clean(entry.name)
            if path.isEmpty { continue }  // the layer's root itself
            let (parent, base) = RootedDirectory.split(path)
            let parentPath = parent == "." ? "" : parent
            // Anything but a regular file may change directories: the parent
            // kept open for consecutive files is dropped.
            if entry.kind != .file || base.hasPrefix(".wh.") { root.forgetParent() }

            if base == ".wh..wh..opq" {
                try root.createDirectories(parentPath)
                try root.setXattr(parentPath.isEmpty ? "." : parentPath, name: "trusted.overlay.opaque", value: Array("y".utf8))
                continue
            }
            if base.hasPrefix(".wh..wh.") { continue }  // aufs bookkeeping
            if base.hasPrefix(".wh.") {
                let hidden = String(base.dropFirst(4))
                guard !hidden.isEmpty, hidden != ".", hidden != ".." else {
                    throw HostileEntry(name: entry.name, reason: "a whiteout must name a file")
                }
                let target = parentPath.isEmpty ? hidden : parentPath + "/" + hidden
                try root.makeNode(target, kind: .characterDevice, permissions: 0, major: 0, minor: 0)
                continue
            }

            var mode: FileMode? = FileMode(entry.mode & 0o7777)
            if entry.kind == .file {
                // Regular files, most of a layer: written and finished through
                // their descriptor, in a parent resolved once per directory.
                let fd = try root.createFileInCachedParent(path, mode: 0o600)
                defer { Descriptor(fd).close() }
                var left = entry.size
                while left > 0 {
                    let n = try buffer.withUnsafeMutableBytes { try reader.readData(into: $0) }
                    if n == 0 { break }
                    try buffer.withUnsafeBytes { try writeAll(fd, UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                    left -= Int64(n)
                }
                report.bytes += entry.size
                let display = "\(directory)/\(path)"
                try RootedDirectory.setAttributes(fd: fd, display: display, uid: entry.uid, gid: entry.gid, mode: FileMode(entry.mode & 0o7777), mtime: entry.mtime)
                try applyXattrs(entry, path: path, report: &report) { name, value in
                    try RootedDirectory.setXattr(fd: fd, display: display, name: name, value: value)
                }
                continue
            }
            switch entry.kind {
            case .directory:
                try root.makeDirectory(path, mode: 0o755)
                directories.append((path, entry))
                continue
            case .file:
                continue  // above
            case .symlink:
                try root.symlink(path, target: entry.linkName)
                mode = nil
            case .hardlink:
                let existing = try clean(entry.linkName)
                guard !existing.isEmpty else { throw HostileEntry(name: entry.name, reason: "a hard link to the layer's root") }
                do {
                    try root.hardlink(path, to: existing)
                } catch let error as SystemError where error.code == .noEntry {
                    throw HostileEntry(name: entry.name, reason: "hard link to \"\(entry.linkName)\", which is not in this layer")
                }
                continue  // a link shares its target's attributes
            case .characterDevice, .blockDevice:
                guard options.allowDeviceNodes else {
                    report.warnings.append("skipped device node \(path) (\(entry.devMajor):\(entry.devMinor))")
                    continue
                }
                let kind: FileKind = entry.kind == .characterDevice ? .characterDevice : .blockDevice
                try root.makeNode(path, kind: kind, permissions: 0o600, major: entry.devMajor, minor: entry.devMinor)
            case .fifo:
                try root.makeNode(path, kind: .fifo, permissions: 0o600, major: 0, minor: 0)
            }
            try root.setAttributes(path, uid: entry.uid, gid: entry.gid, mode: mode, mtime: entry.mtime)
            try applyXattrs(entry, path: path, report: &report) { try root.setXattr(path, name: $0, value: $1) }
        }
        // Directory times last: adding children changed them.
        for (path, entry) in directories.reversed() {
            try root.setAttributes(path, uid: entry.uid, gid: entry.gid, mode: FileMode(entry.mode & 0o7777), mtime: entry.mtime)
            try applyXattrs(entry, path: path, report: &report) { try root.setXattr(path, name: $0, value: $1) }
        }
        return report
    }

    /// Sets the entry's extended attributes with `set`; `trusted.*` (overlay's
    /// own markers among them) are never taken from a layer.
    private static func applyXattrs(
        _ entry: TarEntry, path: String, report: inout Report, set: (String, [UInt8]) throws -> Void
    ) throws {
        for (name, value) in entry.xattrs.sorted(by: { $0.key < $1.key }) {
            guard name.hasPrefix("user.") || name.hasPrefix("security.") else {
                report.warnings.append("ignored extended attribute \(name) on \(path)")
                continue
            }
            try set(name, value)
        }
    }
}
