/// One key in etcd as it stands at a revision.
public struct EtcdKeyValue: Sendable, Hashable {
    /// The key (Berth's keys are UTF-8 paths such as `/berth/nodes/ID`).
    public var key: String
    /// The value, as stored.
    public var value: [UInt8]
    /// The revision that created the key; 0 for a key that does not exist.
    public var createRevision: Int64
    /// The revision of the last change to the key.
    public var modRevision: Int64
    /// How many times the key was written since it was created (1 after the first put).
    public var version: Int64
    /// The lease the key is attached to; 0 when none.
    public var lease: Int64

    /// Creates a key-value pair.
    public init(key: String, value: [UInt8], createRevision: Int64, modRevision: Int64, version: Int64, lease: Int64 = 0) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }
}
