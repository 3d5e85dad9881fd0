/// The identity a container's process runs as.
public struct ProcessUser: Codable, Sendable, Hashable {
    public var uid: UInt32
    public var gid: UInt32
    public var additionalGroups: [UInt32]
    public var home: String

    public init(uid: UInt32, gid: UInt32, additionalGroups: [UInt32] = [], home: String = "/") {
        self.uid = uid
        self.gid = gid
        self.additionalGroups = additionalGroups
        self.home = home
    }
}

/// The seccomp filter a container's processes get.
public enum SeccompChoice: Codable, Sendable, Hashable {
    /// Berth's default profile (docker's).
    case defaultProfile
    /// None (`--security-opt seccomp=unconfined`).
    case unconfined
    /// A profile in docker's format, as the file said at admission (kept,
    /// as docker keeps it: a later change of the file changes nothing).
    case profile(json: String)
}

/// What admission decided for a container's process, kept with its record:
/// every start runs what was admitted, nothing is worked out twice.
public struct AdmittedProcess: Codable, Sendable, Hashable {
    /// The whole command line: the image's entrypoint and command as the
    /// container's own settings override them.
    public var command: [String]
    public var user: ProcessUser
    /// The bounding set (bit n: capability n).
    public var capabilities: UInt64
    public var seccomp: SeccompChoice

    public init(command: [String], user: ProcessUser, capabilities: UInt64, seccomp: SeccompChoice) {
        self.command = command
        self.user = user
        self.capabilities = capabilities
        self.seccomp = seccomp
    }
}
