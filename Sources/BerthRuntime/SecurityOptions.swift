import BerthModel
import Crypto
import Foundation

/// `--security-opt` values Berth understands.
public struct SecurityOptions: Sendable {
    public enum Seccomp: Sendable, Hashable {
        case defaultProfile
        case unconfined
        case file(String)
    }

    public var seccomp: Seccomp = .defaultProfile

    /// Names the profile's content, for caching its compiled form.
    public var profileKey: String {
        switch seccomp {
        case .defaultProfile: return "default"
        case .unconfined: return "unconfined"
        case .file(let path):
            let data = (try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data()
            return "file-" + SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        }
    }

    /// - Throws: `BerthError.invalidArgument` for an option Berth does not know.
    public init(_ options: [String]) throws {
        for option in options {
            let parts = option.split(separator: option.contains("=") ? "=" : ":", maxSplits: 1).map(String.init)
            switch (parts.first, parts.count) {
            case ("seccomp", 2):
                seccomp = parts[1] == "unconfined" ? .unconfined : .file(parts[1])
                if case .file(let path) = seccomp { _ = try SeccompProfile.load(path: path) }
            case ("no-new-privileges", _):
                if parts.count == 2 && parts[1] == "false" {
                    throw BerthError.invalid("--security-opt no-new-privileges=false: Berth always sets no_new_privs")
                }
            default:
                throw BerthError.invalid("--security-opt \"\(option)\": supported are seccomp=unconfined, seccomp=PROFILE.json and no-new-privileges")
            }
        }
    }

    public func seccompProfile() throws -> SeccompProfile? {
        switch seccomp {
        case .defaultProfile: return .default
        case .unconfined: return nil
        case .file(let path): return try SeccompProfile.load(path: path)
        }
    }
}
