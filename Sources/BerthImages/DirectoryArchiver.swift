import BerthLinux
import Glibc

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
                let fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
                guard fd >= 0 else { throw SystemError("open", path: full, errno: errno) }
                defer { close(fd) }
                var left = st.size
                var buffer = [UInt8](repeating: 0, count: 256 * 1024)
                while left > 0 {
                    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, min($0.count, Int(left))) }
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw SystemError("read", path: full, errno: errno)
                    }
                    if n == 0 { throw SystemError("read (the file shrank while being archived)", path: full, errno: EIO) }
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
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
        defer {
            close(fd)
            unlink(path)
        }
        var writer = TarWriter { bytes in try bytes.withUnsafeBytes { try writeAll(fd, $0) } }
        try DirectoryArchiver.archive(source, into: &writer)
        guard lseek(fd, 0, SEEK_SET) == 0 else { throw SystemError("lseek", path: path, errno: errno) }
        var reader = TarReader(FileByteSource(fd: fd))
        _ = try LayerUnpacker.unpack(&reader, into: destination)
    }
}
