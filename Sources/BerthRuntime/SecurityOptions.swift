public import BerthModel
import Crypto
import Foundation

/// `--security-opt` values Berth understands.
public enum SecurityOptions {
    /// The seccomp filter `options` ask for.
    ///
    /// - Parameter readProfile: the text of a profile file (a host fact,
    ///   read when the container is admitted).
    /// - Throws: `BerthError.invalidArgument` for an option Berth does not
    ///   know, or a profile that cannot be read or is not docker's format.
    public static func seccomp(_ options: [String], readProfile: (String) throws -> String) throws -> SeccompChoice {
        var choice = SeccompChoice.defaultProfile
        for option in options {
            let parts = option.split(separator: option.contains("=") ? "=" : ":", maxSplits: 1).map(String.init)
            switch (parts.first, parts.count) {
            case ("seccomp", 2):
                if parts[1] == "unconfined" {
                    choice = .unconfined
                } else {
                    let json = try readProfile(parts[1])
                    _ = try SeccompProfile.parse(json, named: parts[1])
                    choice = .profile(json: json)
                }
            case ("no-new-privileges", _):
                if parts.count == 2 && parts[1] == "false" {
                    throw BerthError.invalid("--security-opt no-new-privileges=false: Berth always sets no_new_privs")
                }
            default:
                throw BerthError.invalid("--security-opt \"\(option)\": supported are seccomp=unconfined, seccomp=PROFILE.json and no-new-privileges")
            }
        }
        return choice
    }
}

extension SeccompChoice {
    /// Names the profile's content, for caching its compiled form.
    public var key: String {
        switch self {
        case .defaultProfile: return "default"
        case .unconfined: return "unconfined"
        case .profile(let json): return "file-" + SHA256.hash(data: Data(json.utf8)).map { String(format: "%02x", $0) }.joined()
        }
    }

    /// The profile to compile; nil for none.
    public func profile() throws -> SeccompProfile? {
        switch self {
        case .defaultProfile: return .default
        case .unconfined: return nil
        case .profile(let json): return try SeccompProfile.parse(json, named: "kept with the container")
        }
    }
}
