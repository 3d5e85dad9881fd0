import FoundationEssentials
public import GRPCCore
import Synchronization

/// The serial numbers of revoked certificates. The controller reads them
/// from a file that `berth-controller ca revoke` writes (one hex serial at
/// the start of each line, `#` for comments; read again whenever the file
/// changes; a missing file is an empty list); agents are handed them by the
/// controller with every heartbeat. Both refuse a revoked certificate at
/// the TLS handshake (`MutualTLS.admit`) and on every call
/// (`RevokedPeerInterceptor`), so that a connection made before the
/// revocation gets no further.
public final class RevocationList: Sendable {
    /// The file, nil for a list handed over by the controller.
    public let path: String?
    private struct State {
        var stamp: String = ""
        var fromFile: Set<String> = []
        var handed: Set<String> = []
    }
    private let state = Mutex(State())

    public init(path: String? = nil) {
        self.path = path
    }

    /// The file's parse: serials in lowercase hex without leading zeros.
    public static func parse(_ text: String) -> Set<String> {
        var serials: Set<String> = []
        for line in text.split(separator: "\n") {
            guard let first = line.split(separator: " ").first, !first.hasPrefix("#") else { continue }
            let digits = first.lowercased().drop { $0 == "0" }
            if !digits.isEmpty, digits.allSatisfy(\.isHexDigit) { serials.insert(String(digits)) }
        }
        return serials
    }

    /// The serials as the file says now, with those handed over.
    public var serials: Set<String> {
        guard let path else { return state.withLock { $0.handed } }
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        let stamp = "\(attributes?[.systemFileNumber] ?? "-") \(attributes?[.size] ?? "-") \(attributes?[.modificationDate] ?? "-")"
        if let cached = state.withLock({ $0.stamp == stamp ? $0.fromFile.union($0.handed) : nil }) { return cached }
        let data = FileManager.default.contents(atPath: path)
        let fromFile = data.map { Self.parse(String(decoding: $0, as: UTF8.self)) } ?? []
        return state.withLock { s in
            s.stamp = stamp
            s.fromFile = fromFile
            return fromFile.union(s.handed)
        }
    }

    /// Takes the serials the controller handed over (replacing the last ones).
    public func hand(_ serials: Set<String>) {
        state.withLock { $0.handed = serials }
    }

    /// Why `peer` is refused, nil when its certificate is not revoked.
    public func refusal(_ peer: PeerIdentity) -> String? {
        serials.contains(peer.serial) ? "certificate \(peer.name) (serial \(peer.serial)) is revoked" : nil
    }
}

/// Refuses, on every call, a TLS peer whose certificate was revoked after
/// its connection was made (UNAUTHENTICATED).
public struct RevokedPeerInterceptor: ServerInterceptor {
    let revoked: RevocationList?

    public init(revoked: RevocationList?) {
        self.revoked = revoked
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        if let revoked, let peer = PeerIdentity(metadata: request.metadata), let refusal = revoked.refusal(peer) {
            throw RPCError(code: .unauthenticated, message: refusal)
        }
        return try await next(request, context)
    }
}
