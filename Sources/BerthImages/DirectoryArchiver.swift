import BerthLinux

/// Writes a directory tree as a tar stream (sorted, hard links kept as
/// links, sockets skipped), for importing a root filesystem directory.
enum DirectoryArchiver {
    static func archive(_ directory: String, into writer: inout TarWriter) throws {
        var links: [String: String] = [:]
        try walk(directory, relative: "", writer: &writer, links: &links)
        try writer.finish()
    }

    private static func walk(_ base: String, relative: String, writer: inout TarWriter, links: inout [String: String]) throws {
        let dir = relative.isEmpty ? base : base + "/" + relative
        for name in try FileIO.list(dir).sorted() {
            let rel = relative.isEmpty ? name : relative + "/" + name
            let full = base + "/" + rel
            let st = try FileIO.status(full)
            var entry = TarEntry(name: rel, kind: .file, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtime)
            if st.isDirectory {
                entry.kind = .directory
                try writer.append(entry)
                try walk(base, relative: rel, writer: &writer, links: &links)
                continue
            }
            if st.isSocket { continue }
            if !st.isDirectory && st.links > 1 {
                let key = "\(st.device):\(st.inode)"
                if let first = links[key] {
                    entry.kind = .hardlink
                    entry.linkName = first
                    try writer.append(entry)
                    continue
                }
                links[key] = rel
            }
            if st.isSymlink {
                entry.kind = .symlink
                entry.linkName = try FileIO.readLink(full)
                try writer.append(entry)
            } else if st.isCharacterDevice || st.isBlockDevice {
                entry.kind = st.isCharacterDevice ? .characterDevice : .blockDevice
                entry.devMajor = st.rdevMajor
                entry.devMinor = st.rdevMinor
                try writer.append(entry)
            } else if st.isFIFO {
                entry.kind = .fifo
                try writer.append(entry)
            } else {
                entry.size = st.size
                try writer.appendHeader(entry)
                let file = try Descriptor.open(full, .noFollow)
                defer { file.close() }
                var left = st.size
                var buffer = [UInt8](repeating: 0, count: 256 * 1024)
                while left > 0 {
                    let n: Int
                    do {
                        n = try buffer.withUnsafeMutableBytes { try file.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<min($0.count, Int(left))])) }
                    } catch let error as SystemError {
                        throw SystemError("read", path: full, errno: error.errno)
                    }
                    if n == 0 { throw SystemError("read (the file shrank while being archived)", path: full, errno: Errno.io.rawValue) }
                    try writer.appendData(Array(buffer[0..<n]))
                    left -= Int64(n)
                }
                try writer.padData(size: st.size)
            }
        }
    }
}


/// Copies a directory tree with its owners, modes, times, links and
/// extended attributes, through a tar stream kept in a file under `scratch`.
public enum TreeCopy {
    public static func copy(from source: String, into destination: String, scratch: String) throws {
        let path = "\(scratch)/copy-\(UInt64.random(in: 0...UInt64.max)).tar"
        let file = try Descriptor.open(path, [.readWrite, .create, .exclusive], permissions: 0o600)
        defer {
            file.close()
            try? FileIO.removeFile(path)
        }
        var writer = TarWriter { bytes in try bytes.withUnsafeBytes { try file.write($0) } }
        try DirectoryArchiver.archive(source, into: &writer)
        try file.seek(to: 0)
        var reader = TarReader(FileByteSource(fd: file.raw))
        _ = try LayerUnpacker.unpack(&reader, into: destination)
    }
}
