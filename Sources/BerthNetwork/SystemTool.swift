import BerthLinux
import BerthModel
import Foundation

/// A command of the host's networking packages (iproute2's `ip`, nftables'
/// `nft`), found once in the usual directories and run to completion.
struct SystemTool: Sendable {
    let name: String
    let path: String?
    /// What is said when the command is missing: who provides it and what needs it.
    let missing: String

    init(_ name: String, missing: String) {
        self.name = name
        self.missing = missing
        path = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Runs the command and returns what it printed.
    ///
    /// - Throws: `BerthError.unavailable` when it is missing; `internal`
    ///   with its arguments and its stderr when it fails.
    @discardableResult
    func run(_ arguments: [String]) throws -> String {
        guard let path else { throw BerthError(.unavailable, missing) }
        let result = try Processes.runBlocking(path, arguments, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], timeout: .seconds(30))
        guard result.status == 0 else {
            throw BerthError(.internal, "\(name) \(arguments.joined(separator: " ")): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return result.stdout
    }
}
