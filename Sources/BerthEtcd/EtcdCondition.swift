/// A comparison a transaction makes on one key before it chooses its branch.
///
/// A key that does not exist has create revision, modification revision
/// and version 0, so `.absent(key)` is `createRevision == 0`.
public struct EtcdCondition: Sendable, Hashable {
    /// What of the key is compared, and with what.
    public enum Target: Sendable, Hashable {
        /// The revision that created the key.
        case createRevision(Int64)
        /// The revision of the key's last change.
        case modRevision(Int64)
        /// The number of writes since the key was created.
        case version(Int64)
        /// The key's value, byte for byte.
        case value([UInt8])
    }

    /// How the key's field is compared with the target's operand.
    public enum Comparison: Sendable, Hashable {
        /// The field equals the operand.
        case equal
        /// The field differs from the operand.
        case notEqual
        /// The field is less than the operand (values: byte-wise).
        case less
        /// The field is greater than the operand (values: byte-wise).
        case greater
    }

    /// The key compared.
    public var key: String
    /// The field and the operand.
    public var target: Target
    /// The comparison; the key's field is on the left.
    public var comparison: Comparison

    /// Creates a condition: `key`'s field `comparison` the target's operand.
    public init(_ key: String, _ target: Target, _ comparison: Comparison = .equal) {
        self.key = key
        self.target = target
        self.comparison = comparison
    }

    /// The key exists with this create revision: it is the same key, not
    /// one deleted and made again (an election key's term is this).
    public static func created(_ key: String, at revision: Int64) -> EtcdCondition {
        EtcdCondition(key, .createRevision(revision))
    }

    /// The key does not exist.
    public static func absent(_ key: String) -> EtcdCondition {
        EtcdCondition(key, .createRevision(0))
    }

    /// The key exists.
    public static func present(_ key: String) -> EtcdCondition {
        EtcdCondition(key, .createRevision(0), .greater)
    }

    /// The key was last changed at this revision: nobody wrote it since it was read.
    public static func unchanged(_ key: String, since revision: Int64) -> EtcdCondition {
        EtcdCondition(key, .modRevision(revision))
    }

    /// The key's value is exactly `value`.
    public static func value(_ key: String, is value: [UInt8]) -> EtcdCondition {
        EtcdCondition(key, .value(value))
    }
}
