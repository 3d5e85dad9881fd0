import FoundationEssentials
import SwiftProtobuf

// Berth's etcd values to and from the generated messages: the only place
// that knows both.

extension EtcdKeyValue {
    init(proto: Mvccpb_KeyValue) {
        self.init(
            key: String(decoding: proto.key, as: UTF8.self), value: Array(proto.value), createRevision: proto.createRevision,
            modRevision: proto.modRevision, version: proto.version, lease: proto.lease)
    }
}

extension EtcdEvent {
    init(proto: Mvccpb_Event) {
        switch proto.type {
        case .delete:
            self = .delete(key: String(decoding: proto.kv.key, as: UTF8.self), modRevision: proto.kv.modRevision)
        case .put, .UNRECOGNIZED:
            self = .put(EtcdKeyValue(proto: proto.kv))
        }
    }
}

extension EtcdCondition {
    var proto: Etcdserverpb_Compare {
        var compare = Etcdserverpb_Compare()
        compare.key = Data(key.utf8)
        switch comparison {
        case .equal: compare.result = .equal
        case .notEqual: compare.result = .notEqual
        case .less: compare.result = .less
        case .greater: compare.result = .greater
        }
        switch target {
        case .createRevision(let revision):
            compare.target = .create
            compare.createRevision = revision
        case .modRevision(let revision):
            compare.target = .mod
            compare.modRevision = revision
        case .version(let version):
            compare.target = .version
            compare.version = version
        case .value(let value):
            compare.target = .value
            compare.value = Data(value)
        }
        return compare
    }
}

extension EtcdOperation {
    var proto: Etcdserverpb_RequestOp {
        var op = Etcdserverpb_RequestOp()
        switch self {
        case .put(let key, let value, let lease):
            op.requestPut = .with {
                $0.key = Data(key.utf8)
                $0.value = Data(value)
                $0.lease = lease
            }
        case .delete(let key):
            op.requestDeleteRange = .with { ($0.key, $0.rangeEnd) = EtcdKeys.span(key, prefix: false) }
        case .deletePrefix(let prefix):
            op.requestDeleteRange = .with { ($0.key, $0.rangeEnd) = EtcdKeys.span(prefix, prefix: true) }
        case .get(let key):
            op.requestRange = .with { ($0.key, $0.rangeEnd) = EtcdKeys.span(key, prefix: false) }
        case .getPrefix(let prefix):
            op.requestRange = .with { ($0.key, $0.rangeEnd) = EtcdKeys.span(prefix, prefix: true) }
        }
        return op
    }
}

extension EtcdTxnResult {
    init(proto: Etcdserverpb_TxnResponse) {
        var ranges: [[EtcdKeyValue]] = []
        for response in proto.responses {
            if case .responseRange(let range) = response.response {
                ranges.append(range.kvs.map(EtcdKeyValue.init(proto:)))
            }
        }
        self.init(succeeded: proto.succeeded, revision: proto.header.revision, ranges: ranges)
    }
}

/// Key ranges as etcd spells them: `[key, end)`.
enum EtcdKeys {
    /// The end of the range of keys that start with `prefix`: the prefix with
    /// its last byte below 0xff incremented (and what follows dropped); `[0]`
    /// (no end) when there is none, as for an empty prefix.
    static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xff {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]
    }

    /// `[key, end)` for every key that starts with `prefix`; for an empty
    /// prefix, every key (`[\0, \0)` in etcd's terms).
    static func prefixRange(_ prefix: String) -> (key: [UInt8], end: [UInt8]) {
        let bytes = Array(prefix.utf8)
        return (bytes.isEmpty ? [0] : bytes, prefixEnd(bytes))
    }

    /// A request's `key` and `range_end`: `key` alone (no end), or with
    /// `prefix` every key under it.
    static func span(_ key: String, prefix: Bool) -> (key: Data, end: Data) {
        guard prefix else { return (Data(key.utf8), Data()) }
        let (start, end) = prefixRange(key)
        return (Data(start), Data(end))
    }
}
