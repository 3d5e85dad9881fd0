import BerthLinux
import Logging

/// Where removed directories go: a rename into `<dir>` answers at once
/// whatever the size of a container's writable layer, and the files are
/// deleted in the background. Whatever a crash leaves here is deleted when
/// the agent starts again.
final class Trash: Sendable {
    let dir: String
    private let logger: Logger

    /// - Parameter dir: a directory on the same filesystem as everything
    ///   discarded into it (rename cannot cross filesystems).
    init(dir: String, logger: Logger) throws {
        self.dir = dir
        self.logger = logger
        try Directories.create(dir, mode: 0o700)
    }

    /// Moves `parent/name` into the trash and deletes it in the background.
    /// Nothing there is fine (it was removed already).
    ///
    /// - Throws: `SystemError` when the rename fails for another reason;
    ///   `parent/name` is untouched then.
    func discard(_ name: String, from parent: String) throws {
        let entry = "\(name).\(UInt64.random(in: 0...UInt64.max))"
        do {
            try FileIO.rename("\(parent)/\(name)", to: "\(dir)/\(entry)")
        } catch let error as SystemError where error.code == .noEntry {
            return
        }
        delete([entry])
    }

    /// Deletes everything in the trash (in the background).
    func empty() {
        delete((try? FileIO.list(dir)) ?? [])
    }

    private func delete(_ entries: [String]) {
        guard !entries.isEmpty else { return }
        let dir = self.dir
        let logger = self.logger
        Background.run {
            for entry in entries {
                do {
                    try RootedDirectory(path: dir).remove(entry)
                } catch {
                    logger.warning("cannot delete a removed directory", metadata: ["path": "\(dir)/\(entry)", "error": "\(error)"])
                }
            }
        }
    }
}
