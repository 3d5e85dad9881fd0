public import BerthModel
import BerthTransport

/// What this build of Berth is.
public enum BuildInfo {
    public static let version = "0.1.0"
    public static let apiVersion = "v1"

    public static var swiftVersion: String {
        #if compiler(>=6.4)
        return "6.4+"
        #elseif compiler(>=6.3)
        return "6.3"
        #elseif compiler(>=6.2)
        return "6.2"
        #else
        return "6.1"
        #endif
    }

    public static func versionInfo(architecture: String) -> VersionInfo {
        VersionInfo(
            version: version, apiVersion: apiVersion, gitCommit: gitCommit, swiftVersion: swiftVersion,
            nghttp2Version: NGHTTP2Info.version, os: "linux", architecture: architecture)
    }

    /// The source revision; a build from a plain checkout does not record it.
    public static let gitCommit = "unknown"
}
