public import BerthController
import BerthEtcd
import BerthModel
import BerthTransport
import Foundation
import Logging

/// The controller's stores, for tests that must pass on each: SQLite in a
/// scratch directory, and etcd (one real member, `/usr/bin/etcd`).
public enum StoreKind: String, Sendable, CaseIterable, CustomStringConvertible {
    case sqlite
    case etcd

    public var description: String { rawValue }
}

/// A scratch store of one kind; `close()` removes what it made.
public final class TestStore: Sendable {
    public let kind: StoreKind
    public let store: any ControllerStore
    /// The etcd member (etcd only).
    public let etcd: EtcdProcesses?
    /// The client of the etcd member (etcd only).
    public let client: EtcdClient?
    private let directory: URL?

    /// - Throws: when the store cannot be made (etcd missing or not starting).
    public init(_ kind: StoreKind) async throws {
        self.kind = kind
        switch kind {
        case .sqlite:
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-store-test-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            self.directory = directory
            store = try SQLiteControllerStore(path: directory.appendingPathComponent("controller.db").path)
            etcd = nil
            client = nil
        case .etcd:
            let etcd = try await EtcdProcesses(count: 1)
            let client = etcd.client()
            self.etcd = etcd
            self.client = client
            directory = nil
            store = EtcdControllerStore(client: client, fence: nil)
        }
    }

    public func close() {
        client?.close()
        etcd?.stop()
        if let directory { try? FileManager.default.removeItem(at: directory) }
    }
}
