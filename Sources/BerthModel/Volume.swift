import FoundationEssentials

/// A volume: a directory the agent keeps for containers, outliving them.
public struct Volume: Codable, Sendable, Hashable, Identifiable {
    public var name: String
    /// Made for one container (`-v /path`, an image's VOLUME): removed with
    /// it by `rm -v` and `run --rm`.
    public var anonymous: Bool
    public var labels: [String: String]
    public var createdAt: Date
    /// Where the data lives on the host.
    public var mountpoint: String

    public var id: String { name }

    public init(name: String, anonymous: Bool, labels: [String: String] = [:], createdAt: Date, mountpoint: String) {
        self.name = name
        self.anonymous = anonymous
        self.labels = labels
        self.createdAt = createdAt
        self.mountpoint = mountpoint
    }
}
