import BerthModel
import SwiftProtobuf

extension EtcdClient {
    /// Bytes of a request kept free of operations: the transaction's own
    /// framing and the raft request etcd wraps it in before it measures it.
    static let requestOverhead = 1024

    /// Splits `operations` into transactions etcd takes: each with at most
    /// `maxOperations` operations and, with `conditions` (which every batch
    /// carries), at most `maxBytes` encoded; a batch never writes one key
    /// twice (etcd refuses that). The order is kept: batch after batch,
    /// each in the order given.
    ///
    /// - Throws: `BerthError` `.resourceExhausted` when one operation alone
    ///   (with the conditions) is larger than `maxBytes`.
    public static func batches(
        _ operations: [EtcdOperation], conditions: [EtcdCondition] = [], maxOperations: Int = maxOperationsPerTxn, maxBytes: Int = maxRequestBytes
    ) throws -> [[EtcdOperation]] {
        let fixed = try conditions.reduce(requestOverhead) { $0 + fieldSize(try $1.proto.serializedBytes() as [UInt8]) }
        let budget = maxBytes - fixed
        var batches: [[EtcdOperation]] = []
        var current: [EtcdOperation] = []
        var size = 0
        for operation in operations {
            let bytes = fieldSize(try operation.proto.serializedBytes() as [UInt8])
            guard bytes <= budget else {
                throw BerthError(
                    .resourceExhausted,
                    "\(operation.key) is \(bytes) bytes encoded\(conditions.isEmpty ? "" : " with the transaction's conditions"); "
                        + "etcd takes at most \(maxBytes) bytes in one request (--max-request-bytes)")
            }
            if !current.isEmpty && (current.count >= maxOperations || size + bytes > budget || current.contains(where: { $0.conflicts(with: operation) })) {
                batches.append(current)
                current = []
                size = 0
            }
            current.append(operation)
            size += bytes
        }
        if !current.isEmpty { batches.append(current) }
        return batches
    }

    /// The bytes a repeated message field takes: tag, length, message.
    private static func fieldSize(_ message: [UInt8]) -> Int {
        var length = message.count
        var varint = 1
        while length >= 0x80 {
            length >>= 7
            varint += 1
        }
        return 1 + varint + message.count
    }
}

extension EtcdOperation {
    /// Whether etcd refuses the two in one branch: two puts of one key, or a
    /// put of a key a delete covers ("duplicate key given in txn request").
    func conflicts(with other: EtcdOperation) -> Bool {
        switch (self, other) {
        case (.put(let a, _, _), .put(let b, _, _)): a == b
        case (.put(let key, _, _), .delete(let deleted)), (.delete(let deleted), .put(let key, _, _)): key == deleted
        case (.put(let key, _, _), .deletePrefix(let prefix)), (.deletePrefix(let prefix), .put(let key, _, _)): key.utf8.starts(with: prefix.utf8)
        default: false
        }
    }
}
