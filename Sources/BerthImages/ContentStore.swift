import BerthModel
import BerthLinux
import Crypto
import Foundation

/// A content digest: `sha256:` and 64 lowercase hex digits.
public struct Digest: Sendable, Hashable, Codable, CustomStringConvertible, Comparable {
    public var hex: String

    /// - Throws: `BerthError.invalidArgument` for anything but a sha256 digest.
    public init(_ text: String) throws {
        guard text.hasPrefix("sha256:") else {
            throw BerthError.invalid("digest \"\(text)\": only sha256 digests are supported")
        }
        let hex = String(text.dropFirst(7))
        guard hex.count == 64, hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            throw BerthError.invalid("digest \"\(text)\": expected sha256: and 64 lowercase hex digits")
        }
        self.hex = hex
    }

    init(hex: String) { self.hex = hex }

    /// The digest of `bytes`.
    public static func of(_ bytes: some DataProtocol) -> Digest {
        Digest(hex: SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined())
    }

    public var description: String { "sha256:\(hex)" }
    public var short: String { String(hex.prefix(12)) }
    public static func < (a: Digest, b: Digest) -> Bool { a.hex < b.hex }

    public init(from decoder: any Decoder) throws {
        try self.init(decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// Hashes bytes as they go by.
public struct DigestingHasher {
    private var hasher = SHA256()
    public private(set) var count: Int64 = 0
    public init() {}
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        hasher.update(bufferPointer: bytes)
        count += Int64(bytes.count)
    }
    public func finalize() -> Digest {
        Digest(hex: hasher.finalize().map { String(format: "%02x", $0) }.joined())
    }
}

/// Blobs addressed by their sha256, verified on write: `content/sha256/<hex>`.
/// A blob is written to `content/ingest/` and renamed into place only once
/// its digest is known (and matches what was expected), so a crash or a bad
/// download never leaves a wrong blob under a digest's name.
public struct ContentStore: Sendable {
    public let root: String

    /// - Throws: `SystemError` when the directories cannot be made.
    public init(root: String) throws {
        self.root = root
        try Directories.create("\(root)/sha256", mode: 0o700)
        try Directories.create("\(root)/ingest", mode: 0o700)
    }

    public func path(_ digest: Digest) -> String { "\(root)/sha256/\(digest.hex)" }

    public func contains(_ digest: Digest) -> Bool { FileIO.exists(path(digest)) }

    public func read(_ digest: Digest) throws -> Data {
        do {
            return try Data(contentsOf: URL(fileURLWithPath: path(digest)))
        } catch {
            throw BerthError.notFound("blob", digest.description)
        }
    }

    /// Stores bytes held in memory.
    ///
    /// - Throws: `BerthError.invalidArgument` when `expected` is given and differs.
    @discardableResult
    public func write(_ bytes: Data, expected: Digest? = nil) throws -> Digest {
        try ingesting(expected: expected) { writer in try bytes.withUnsafeBytes { try writer.append($0) } }
    }

    /// Stores a file's bytes; one already stored under `expected` is not copied again.
    ///
    /// - Throws: `BerthError.invalidArgument` for a file that cannot be read
    ///   or whose digest differs from `expected`.
    @discardableResult
    public func store(file path: String, expected: Digest? = nil) throws -> Digest {
        if let expected, contains(expected) { return expected }
        return try ingesting(expected: expected) { try $0.append(file: path) }
    }

    /// A blob written by `body`, committed, or thrown away if anything fails.
    private func ingesting(expected: Digest?, _ body: (BlobWriter) throws -> Void) throws -> Digest {
        let writer = try ingest()
        do {
            try body(writer)
            return try writer.commit(expected: expected)
        } catch {
            writer.abandon()
            throw error
        }
    }

    /// Starts writing a blob whose digest is computed as it is written.
    public func ingest() throws -> BlobWriter {
        try BlobWriter(store: self)
    }

    public func delete(_ digest: Digest) throws {
        try FileIO.removeFile(path(digest))
    }

    /// Every digest stored.
    public func all() throws -> [Digest] {
        try FileIO.list("\(root)/sha256").compactMap { try? Digest("sha256:" + $0) }
    }
}

/// One blob being written into a `ContentStore`.
public final class BlobWriter {
    let store: ContentStore
    let temporary: String
    private let handle: FileHandle
    private var hasher = DigestingHasher()
    private var done = false

    init(store: ContentStore) throws {
        self.store = store
        temporary = "\(store.root)/ingest/\(UUID().uuidString)"
        guard FileManager.default.createFile(atPath: temporary, contents: nil, attributes: [.posixPermissions: 0o600]),
            let handle = FileHandle(forWritingAtPath: temporary)
        else {
            throw BerthError(.internal, "cannot create \(temporary)")
        }
        self.handle = handle
    }

    public var bytesWritten: Int64 { hasher.count }

    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        hasher.update(bytes)
        do {
            try handle.write(contentsOf: Data(bytes))
        } catch {
            throw BerthError(.resourceExhausted, "cannot write \(temporary)", underlying: error)
        }
    }

    /// Appends a file's bytes.
    ///
    /// - Throws: `BerthError.invalidArgument` when the file cannot be read.
    public func append(file path: String) throws {
        let file: Descriptor
        do { file = try Descriptor.open(path) } catch { throw BerthError(.invalidArgument, "cannot read \(path)", underlying: error) }
        defer { file.close() }
        let fd = file.raw
        do {
            try FileByteSource(fd: fd).forEachChunk { try append($0) }
        } catch let error as SystemError {
            throw BerthError(.invalidArgument, "cannot read \(path)", underlying: error)
        }
    }

    /// Syncs the blob and moves it under its digest.
    ///
    /// - Throws: `BerthError.invalidArgument` when the digest is not the
    ///   expected one; the blob is discarded then.
    @discardableResult
    public func commit(expected: Digest? = nil) throws -> Digest {
        let digest = hasher.finalize()
        try handle.synchronize()
        try handle.close()
        done = true
        if let expected, expected != digest {
            try? FileIO.removeFile(temporary)
            throw BerthError.invalid("content digest mismatch: expected \(expected), got \(digest)")
        }
        if store.contains(digest) {
            try? FileIO.removeFile(temporary)
        } else {
            do { try FileIO.rename(temporary, to: store.path(digest)) } catch {
                throw BerthError(.internal, "cannot store blob \(digest)", underlying: error)
            }
        }
        return digest
    }

    /// Throws the partial blob away.
    public func abandon() {
        if !done {
            try? handle.close()
            done = true
        }
        try? FileIO.removeFile(temporary)
    }

    deinit {
        if !done { abandon() }
    }
}

/// A blob fetched for a known digest, kept in `ingest/<hex>.partial`
/// between attempts so that an interrupted download resumes where it
/// stopped. Its digest is checked at `commit`; a wrong blob is thrown away,
/// never stored. One writer at a time holds the file's lock.
public final class ResumableIngest {
    public let expected: Digest
    let store: ContentStore
    let path: String
    private let file: Descriptor
    private var hasher = DigestingHasher()

    /// Opens (or creates) the partial file and takes its lock.
    ///
    /// - Returns: nil when another pull holds the lock.
    public init?(store: ContentStore, expected: Digest) throws {
        self.store = store
        self.expected = expected
        self.path = "\(store.root)/ingest/\(expected.hex).partial"
        let file: Descriptor
        do { file = try Descriptor.open(path, [.readWrite, .create], permissions: 0o600) } catch {
            throw BerthError(.internal, "cannot open \(path)", underlying: error)
        }
        guard (try? file.lock(wait: false)) == true else {
            file.close()
            return nil
        }
        self.file = file
        // What an earlier attempt left is hashed again: the digest covers it too.
        do {
            try FileByteSource(fd: file.raw).forEachChunk { hasher.update($0) }
        } catch {
            throw BerthError(.internal, "cannot read \(path)", underlying: error)
        }
    }

    /// The bytes held, from this attempt and earlier ones.
    public var bytesHeld: Int64 { hasher.count }

    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        do {
            try file.write(bytes)
        } catch let error as SystemError {
            throw BerthError(error.code == .noSpace || error.code == .quotaExceeded ? .resourceExhausted : .internal, "cannot write \(path)", underlying: error)
        }
        hasher.update(bytes)
    }

    /// Starts again from nothing (the server ignored a range request).
    public func restart() throws {
        do {
            try file.truncate(to: 0)
            try file.seek(to: 0)
        } catch {
            throw BerthError(.internal, "cannot truncate \(path)", underlying: error)
        }
        hasher = DigestingHasher()
    }

    /// Throws away what is held: it cannot be the blob.
    public func discard() throws {
        try restart()
        try? FileIO.removeFile(path)
    }

    /// Verifies the digest, syncs, and moves the blob under its digest.
    ///
    /// - Throws: `BerthError.invalidArgument` when the content's digest is
    ///   not the expected one; the partial file is removed then.
    public func commit() throws {
        let digest = hasher.finalize()
        guard digest == expected else {
            try? discard()
            throw BerthError.invalid("content digest mismatch: expected \(expected), got \(digest) (\(hasher.count) bytes); the blob was discarded")
        }
        do { try file.sync() } catch { throw BerthError(.internal, "cannot sync \(path)", underlying: error) }
        do { try FileIO.rename(path, to: store.path(expected)) } catch {
            throw BerthError(.internal, "cannot store blob \(expected)", underlying: error)
        }
    }

    deinit {
        file.close()  // releases the lock; a partial file stays for the next attempt
    }
}
