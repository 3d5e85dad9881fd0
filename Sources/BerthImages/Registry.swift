import AsyncHTTPClient
import BerthModel
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// A user name and password for a registry (basic auth, or to obtain a
/// bearer token from the registry's token service).
public struct RegistryCredentials: Sendable, Equatable {
    public var username: String
    public var password: String
    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// The value of an `Authorization` header for basic auth.
    var basicAuthorization: String { "Basic " + Data("\(username):\(password)".utf8).base64EncodedString() }
}

/// A client for one pull from a registry, per the OCI distribution spec:
/// manifests and blobs over HTTPS (plain HTTP only for registries named
/// insecure or on loopback), anonymous access or the registry's
/// `WWW-Authenticate` challenge answered with a bearer token or basic auth,
/// redirects followed without carrying credentials to another host.
public final class RegistryClient: Sendable {
    public struct Options: Sendable {
        /// Registries (`host[:port]`) that may be reached over plain HTTP.
        public var insecureRegistries: Set<String> = []
        public var connectTimeout: TimeAmount = .seconds(10)
        /// How long a response may stall before the request fails.
        public var readTimeout: TimeAmount = .seconds(60)
        public init() {}
    }

    /// The manifest media types asked for, most wanted first.
    static let manifestTypes = [
        MediaType.ociIndex, MediaType.dockerManifestList, MediaType.ociManifest, MediaType.dockerManifest,
    ]
    /// Manifests and indexes larger than this are refused (the spec's own limit is 4 MiB).
    static let manifestLimit = 4 << 20

    public let registry: String
    public let repository: String
    private let credentials: RegistryCredentials?
    private let options: Options
    private let http: HTTPClient
    /// The Authorization header value that last worked.
    private let authorization = Mutex<String?>(nil)
    /// "https" or "http", once the registry has answered.
    private let scheme = Mutex<String?>(nil)

    private init(reference: ImageReference, credentials: RegistryCredentials?, options: Options) {
        self.registry = reference.registry
        self.repository = reference.repository
        self.credentials = credentials
        self.options = options
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: options.connectTimeout, read: options.readTimeout))
        configuration.decompression = .disabled
        self.http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    /// Runs `body` with a client whose connections are closed after it, whatever it returns or throws.
    public static func session<T: Sendable>(
        reference: ImageReference, credentials: RegistryCredentials?, options: Options, _ body: (RegistryClient) async throws -> T
    ) async throws -> T {
        let client = RegistryClient(reference: reference, credentials: credentials, options: options)
        do {
            let result = try await body(client)
            try? await client.http.shutdown()
            return result
        } catch {
            try? await client.http.shutdown()
            throw error
        }
    }

    /// The host the registry's API answers on (docker.io's is registry-1.docker.io).
    var apiHost: String { registry == ImageReference.defaultRegistry ? "registry-1.docker.io" : registry }

    /// Whether plain HTTP is allowed: a registry named insecure, or one on loopback.
    public static func allowsPlainHTTP(_ registry: String, insecure: Set<String>) -> Bool {
        if insecure.contains(registry) { return true }
        var host = Substring(registry)
        if host.hasPrefix("[") {
            host = host.dropFirst().prefix { $0 != "]" }
        } else if let colon = host.lastIndex(of: ":") {
            host = host[..<colon]
        }
        if host == "localhost" || host == "::1" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }

    // MARK: Manifests

    /// A manifest or index as the registry served it, verified against its digest.
    public struct Manifest: Sendable {
        public var bytes: [UInt8]
        public var mediaType: String
        public var digest: Digest
    }

    /// Fetches a manifest or index by tag or digest. A digest reference is
    /// verified against the bytes; a tag's bytes are verified against the
    /// registry's Docker-Content-Digest header when it sends one.
    public func manifest(_ reference: String) async throws -> Manifest {
        var request = HTTPClientRequest(url: "")
        request.headers.add(name: "Accept", value: Self.manifestTypes.joined(separator: ", "))
        let response = try await send(request, path: "/v2/\(repository)/manifests/\(reference)", what: "manifest \(reference)")
        let declared = response.headers.first(name: "Content-Length").flatMap(Int.init)
        if let declared, declared > Self.manifestLimit {
            throw BerthError.invalid("\(describe(reference)): the manifest is \(declared) bytes, more than the \(Self.manifestLimit) allowed")
        }
        let body: ByteBuffer
        do {
            body = try await response.body.collect(upTo: Self.manifestLimit)
        } catch is NIOTooManyBytesError {
            throw BerthError.invalid("\(describe(reference)): the manifest is larger than the \(Self.manifestLimit) bytes allowed")
        } catch {
            throw unreachable(error, "reading manifest \(reference)")
        }
        let bytes = Array(body.readableBytesView)
        let digest = Digest.of(bytes)
        if reference.hasPrefix("sha256:"), digest.description != reference {
            throw BerthError.invalid("\(describe(reference)): the registry sent a manifest whose digest is \(digest), not the one asked for")
        }
        if !reference.hasPrefix("sha256:"), let header = response.headers.first(name: "Docker-Content-Digest"),
            header.hasPrefix("sha256:"), header != digest.description
        {
            throw BerthError.invalid("\(describe(reference)): the manifest's digest is \(digest), but the registry says \(header)")
        }
        let contentType = response.headers.first(name: "Content-Type")?.split(separator: ";").first.map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        return Manifest(bytes: bytes, mediaType: contentType ?? "", digest: digest)
    }

    // MARK: Blobs

    /// Streams a blob into `ingest`, from where an earlier attempt stopped
    /// when the registry honours a range request. The digest is checked by
    /// the ingest's commit, not here.
    ///
    /// - Parameter progress: called with the bytes held so far.
    public func fetchBlob(
        _ digest: Digest, size: Int64, into ingest: ResumableIngest, progress: @Sendable (Int64) -> Void
    ) async throws {
        var request = HTTPClientRequest(url: "")
        let resumeFrom = ingest.bytesHeld
        if resumeFrom > 0 && resumeFrom < size {
            request.headers.add(name: "Range", value: "bytes=\(resumeFrom)-")
        }
        let response = try await send(request, path: "/v2/\(repository)/blobs/\(digest)", what: "blob \(digest.short)")
        if response.status == .ok && resumeFrom > 0 {
            try ingest.restart()  // the registry sent the whole blob again
        } else if response.status == .partialContent {
            let range = response.headers.first(name: "Content-Range") ?? ""
            guard range.hasPrefix("bytes \(resumeFrom)-") else {
                throw BerthError(.unavailable, "\(describe(digest.description)): the registry answered a range request with \"\(range)\"")
            }
        }
        progress(ingest.bytesHeld)
        do {
            for try await chunk in response.body {
                guard ingest.bytesHeld + Int64(chunk.readableBytes) <= size else {
                    try ingest.discard()
                    throw BerthError.invalid("\(describe(digest.description)): the registry sent more than the \(size) bytes the manifest gives")
                }
                try chunk.withUnsafeReadableBytes { try ingest.append($0) }
                progress(ingest.bytesHeld)
            }
        } catch let error as BerthError {
            throw error
        } catch {
            throw unreachable(error, "downloading blob \(digest.short) (\(ingest.bytesHeld) of \(size) bytes held; pulling again resumes)")
        }
        if ingest.bytesHeld < size {
            throw BerthError(
                .unavailable,
                "\(describe(digest.description)): the registry closed the download at \(ingest.bytesHeld) of \(size) bytes; pulling again resumes")
        }
    }

    /// Fetches a small blob (an image config) into memory and verifies it.
    public func smallBlob(_ digest: Digest, size: Int64) async throws -> [UInt8] {
        guard size <= Self.manifestLimit else {
            throw BerthError.invalid("\(describe(digest.description)): a config of \(size) bytes is more than the \(Self.manifestLimit) allowed")
        }
        let response = try await send(HTTPClientRequest(url: ""), path: "/v2/\(repository)/blobs/\(digest)", what: "blob \(digest.short)")
        let body: ByteBuffer
        do {
            body = try await response.body.collect(upTo: Self.manifestLimit)
        } catch {
            throw unreachable(error, "reading blob \(digest.short)")
        }
        let bytes = Array(body.readableBytesView)
        guard Digest.of(bytes) == digest else {
            throw BerthError.invalid("\(describe(digest.description)): the registry sent content whose digest is \(Digest.of(bytes)), not \(digest)")
        }
        return bytes
    }

    /// Checks that the registry accepts the credentials (what `login` does).
    public func checkLogin() async throws {
        _ = try await send(HTTPClientRequest(url: ""), path: "/v2/", what: "login", repositoryScope: false)
    }

    // MARK: Requests

    private func describe(_ what: String) -> String {
        "\(registry)/\(repository)\(what.hasPrefix("sha256:") ? "@" : ":")\(what)"
    }

    /// Sends a GET for `path`, answering an authentication challenge once and
    /// following redirects; returns a 200 or 206 response, or throws a clear error.
    private func send(
        _ template: HTTPClientRequest, path: String, what: String, repositoryScope: Bool = true
    ) async throws -> HTTPClientResponse {
        let scope = repositoryScope ? "repository:\(repository):pull" : nil
        var answeredChallenge = false
        while true {
            var request = template
            request.method = .GET
            request.url = try await url(path)
            if let authorization = authorization.withLock({ $0 }) {
                request.headers.replaceOrAdd(name: "Authorization", value: authorization)
            }
            let response = try await followingRedirects(request, what: what)
            switch response.status {
            case .ok, .partialContent:
                return response
            case .unauthorized where !answeredChallenge:
                answeredChallenge = true
                let challenge = response.headers.first(name: "WWW-Authenticate")
                _ = try? await response.body.collect(upTo: 64 * 1024)
                let answer = try await authenticate(challenge, scope: scope)
                authorization.withLock { $0 = answer }
            default:
                let detail = await Self.errorDetail(response)
                throw statusError(response.status, what: what, detail: detail)
            }
        }
    }

    private func url(_ path: String) async throws -> String {
        if let scheme = scheme.withLock({ $0 }) { return "\(scheme)://\(apiHost)\(path)" }
        // The first request settles the scheme. A registry allowed plain HTTP
        // is asked over HTTP first (a TLS handshake sent to a plain-HTTP
        // server can wait out the whole timeout); one that answers plain
        // HTTP with 400, or not at all, speaks HTTPS.
        if Self.allowsPlainHTTP(registry, insecure: options.insecureRegistries) {
            var probe = HTTPClientRequest(url: "http://\(apiHost)/v2/")
            probe.method = .GET
            if let response = try? await http.execute(probe, timeout: options.readTimeout) {
                _ = try? await response.body.collect(upTo: 64 * 1024)
                if response.status != .badRequest {
                    scheme.withLock { $0 = "http" }
                    return try await url(path)
                }
            }
        }
        do {
            var probe = HTTPClientRequest(url: "https://\(apiHost)/v2/")
            probe.method = .GET
            let response = try await http.execute(probe, timeout: options.readTimeout)
            _ = try? await response.body.collect(upTo: 64 * 1024)
        } catch {
            throw unreachable(
                error,
                Self.allowsPlainHTTP(registry, insecure: options.insecureRegistries)
                    ? "over HTTP or HTTPS" : "over HTTPS; plain HTTP is allowed only for registries on loopback or named with the agent's --insecure-registry")
        }
        scheme.withLock { $0 = "https" }
        return try await url(path)
    }

    private func followingRedirects(_ first: HTTPClientRequest, what: String) async throws -> HTTPClientResponse {
        var request = first
        let origin = URL(string: first.url)?.host
        for _ in 0..<6 {
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, timeout: options.readTimeout)
            } catch {
                throw unreachable(error, "fetching \(what)")
            }
            guard [.movedPermanently, .found, .seeOther, .temporaryRedirect, .permanentRedirect].contains(response.status),
                let location = response.headers.first(name: "Location"),
                let next = URL(string: location, relativeTo: URL(string: request.url))?.absoluteURL
            else { return response }
            _ = try? await response.body.collect(upTo: 64 * 1024)
            request.url = next.absoluteString
            // Credentials stay with the registry: a blob store elsewhere gets none.
            if next.host != origin { request.headers.remove(name: "Authorization") }
        }
        throw BerthError(.unavailable, "\(registry): too many redirects fetching \(what)")
    }

    /// The Authorization header that answers a challenge.
    private func authenticate(_ challenge: String?, scope: String?) async throws -> String {
        guard let challenge, let parsed = AuthChallenge(parsing: challenge) else {
            throw BerthError(.permissionDenied, "\(registry) requires authentication but sent no challenge Berth understands (\(challenge ?? "none"))")
        }
        switch parsed.scheme {
        case "basic":
            guard let credentials else {
                throw BerthError(.permissionDenied, "\(registry) requires a login: berth login \(registry)")
            }
            return credentials.basicAuthorization
        case "bearer":
            guard let realm = parsed.parameters["realm"], var components = URLComponents(string: realm),
                components.scheme == "https" || (components.scheme == "http" && Self.allowsPlainHTTP(components.host.map { h in components.port.map { "\(h):\($0)" } ?? h } ?? "", insecure: options.insecureRegistries))
            else {
                throw BerthError(.permissionDenied, "\(registry): the token service \(parsed.parameters["realm"] ?? "(none)") is not an HTTPS address")
            }
            var query = components.queryItems ?? []
            if let service = parsed.parameters["service"] { query.append(URLQueryItem(name: "service", value: service)) }
            if let wanted = parsed.parameters["scope"] ?? scope { query.append(URLQueryItem(name: "scope", value: wanted)) }
            components.queryItems = query
            var request = HTTPClientRequest(url: components.url?.absoluteString ?? realm)
            if let credentials {
                request.headers.add(name: "Authorization", value: credentials.basicAuthorization)
            }
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, timeout: options.readTimeout)
            } catch {
                throw unreachable(error, "asking the token service \(realm) for a token")
            }
            let body = try? await response.body.collect(upTo: 1 << 20)
            guard response.status == .ok else {
                if response.status == .unauthorized || response.status == .forbidden {
                    throw BerthError(
                        .permissionDenied,
                        "\(registry): the token service refused \(credentials == nil ? "anonymous access" : "the credentials of \(credentials!.username)") (HTTP \(response.status.code))")
                }
                throw BerthError(.unavailable, "\(registry): the token service answered HTTP \(response.status.code)")
            }
            struct Token: Decodable {
                var token: String?
                var access_token: String?
            }
            guard let body, let decoded = try? JSONDecoder().decode(Token.self, from: Data(body.readableBytesView)),
                let token = decoded.token ?? decoded.access_token, !token.isEmpty
            else {
                throw BerthError(.unavailable, "\(registry): the token service sent no token")
            }
            return "Bearer \(token)"
        default:
            throw BerthError(.permissionDenied, "\(registry) asks for \(parsed.scheme) authentication, which Berth does not speak")
        }
    }

    private func statusError(_ status: HTTPResponseStatus, what: String, detail: String) -> BerthError {
        let suffix = detail.isEmpty ? "" : ": \(detail)"
        switch status {
        case .unauthorized:
            return BerthError(
                .permissionDenied,
                "\(registry)/\(repository): access to \(what) denied (HTTP 401\(credentials == nil ? "; berth login \(registry) first if it is private" : ", wrong user name or password")\(suffix))")
        case .forbidden:
            return BerthError(.permissionDenied, "\(registry)/\(repository): access to \(what) denied (HTTP 403\(suffix))")
        case .notFound:
            return BerthError(.notFound, "\(registry)/\(repository): \(what) not found (HTTP 404\(suffix))")
        case .tooManyRequests:
            return BerthError(.resourceExhausted, "\(registry): too many requests (HTTP 429\(suffix))")
        default:
            return BerthError(.unavailable, "\(registry)/\(repository): the registry answered HTTP \(status.code) \(status.reasonPhrase) for \(what)\(suffix)")
        }
    }

    /// The first error message of a registry's error body, if it sent one.
    private static func errorDetail(_ response: HTTPClientResponse) async -> String {
        guard let body = try? await response.body.collect(upTo: 64 * 1024) else { return "" }
        struct Errors: Decodable {
            struct Entry: Decodable {
                var code: String?
                var message: String?
            }
            var errors: [Entry]?
        }
        guard let decoded = try? JSONDecoder().decode(Errors.self, from: Data(body.readableBytesView)),
            let first = decoded.errors?.first
        else { return "" }
        return [first.code, first.message].compactMap { $0 }.joined(separator: " ")
    }

    private func unreachable(_ error: any Error, _ doing: String) -> BerthError {
        if let error = error as? BerthError { return error }
        let text = String(describing: error)
        let reason =
            if text.contains("Connection refused") { "connection refused" }
            else if text.contains("connectTimeout") || text.contains("Timeout") || text.contains("timed out") { "timed out" }
            else if text.contains("remoteConnectionClosed") || text.contains("Connection reset") { "the registry closed the connection" }
            else if text.contains("NXDOMAIN") || text.contains("getaddrinfo") || text.contains("Name or service not known") { "the name does not resolve" }
            else { text }
        return BerthError(.unavailable, "cannot reach registry \(registry) (\(reason)) \(doing)")
    }
}

/// A `WWW-Authenticate` challenge: a scheme and its parameters.
struct AuthChallenge: Equatable {
    var scheme: String
    var parameters: [String: String]

    init(scheme: String, parameters: [String: String]) {
        self.scheme = scheme
        self.parameters = parameters
    }

    /// Parses `Bearer realm="…",service="…",scope="…"` (quoted values may hold commas).
    init?(parsing text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard let space = trimmed.firstIndex(where: { $0 == " " }) else {
            guard !trimmed.isEmpty else { return nil }
            scheme = trimmed.lowercased()
            parameters = [:]
            return
        }
        scheme = trimmed[..<space].lowercased()
        parameters = [:]
        var rest = trimmed[trimmed.index(after: space)...]
        while !rest.isEmpty {
            rest = rest.drop { $0 == " " || $0 == "," }
            guard let equals = rest.firstIndex(of: "=") else { break }
            let key = rest[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            rest = rest[rest.index(after: equals)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                var escaped = false
                var end = rest.endIndex
                for index in rest.indices {
                    let c = rest[index]
                    if escaped {
                        value.append(c)
                        escaped = false
                    } else if c == "\\" {
                        escaped = true
                    } else if c == "\"" {
                        end = index
                        break
                    } else {
                        value.append(c)
                    }
                }
                guard end != rest.endIndex else { return nil }  // an unterminated quote
                rest = rest[rest.index(after: end)...]
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = rest[..<end].trimmingCharacters(in: .whitespaces)
                rest = rest[end...]
            }
            parameters[key] = value
        }
    }
}
