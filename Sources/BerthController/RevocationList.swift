public import BerthTransport
import Foundation
import Synchronization

/// The serial numbers of revoked certificates, from a file that
/// `berth-controller ca revoke` writes: one hex serial at the start of each
/// line, `#` for comments. Read again whenever the file changes; a missing
/// file is an empty list. The controller checks it at every TLS handshake
/// and on every call (a connection made before a revocation ends there).
public final class RevocationList: Sendable {
    public let path: String
    private struct State {
        var stamp: String = ""
        var serials: Set<String> = []
    }
    private let state = Mutex(State())

    public init(path: String) {
        self.path = path
    }

    /// The file's parse: serials in lowercase hex without leading zeros.
    static func parse(_ text: String) -> Set<String> {
        var serials: Set<String> = []
        for line in text.split(separator: "\n") {
            guard let first = line.split(separator: " ").first, !first.hasPrefix("#") else { continue }
            let digits = first.lowercased().drop { $0 == "0" }
            if !digits.isEmpty, digits.allSatisfy(\.isHexDigit) { serials.insert(String(digits)) }
        }
        return serials
    }

    /// The serials as the file says now.
    public var serials: Set<String> {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        let stamp = "\(attributes?[.systemFileNumber] ?? "-") \(attributes?[.size] ?? "-") \(attributes?[.modificationDate] ?? "-")"
        if let cached = state.withLock({ $0.stamp == stamp ? $0.serials : nil }) { return cached }
        let serials = (try? String(contentsOfFile: path, encoding: .utf8)).map(Self.parse) ?? []
        state.withLock { $0 = State(stamp: stamp, serials: serials) }
        return serials
    }

    /// Why `peer` is refused, nil when its certificate is not revoked.
    public func refusal(_ peer: PeerIdentity) -> String? {
        serials.contains(peer.serial) ? "certificate \(peer.name) (serial \(peer.serial)) is revoked" : nil
    }
}
