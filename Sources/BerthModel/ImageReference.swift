/// A reference to an image as people write it (`busybox`, `busybox:1.36`,
/// `registry.local:5000/team/app@sha256:…`), normalized the way docker does:
/// no registry means docker.io, and a one-word docker.io name lives under
/// `library/`.
public struct ImageReference: Sendable, Hashable, Codable, CustomStringConvertible {
    public static let defaultRegistry = "docker.io"

    public var registry: String
    public var repository: String
    /// Nil only when a digest pins the image.
    public var tag: String?
    /// `sha256:…` when given.
    public var digest: String?

    public init(registry: String, repository: String, tag: String?, digest: String? = nil) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    /// - Throws: `BerthError.invalidArgument` saying which part is malformed.
    public init(parsing text: String) throws {
        let invalid = { (why: String) in BerthError.invalid("image reference \"\(text)\": \(why)") }
        var rest = Substring(text)
        guard !rest.isEmpty else { throw invalid("empty") }
        var digest: String?
        if let at = rest.firstIndex(of: "@") {
            let d = String(rest[rest.index(after: at)...])
            guard d.hasPrefix("sha256:"), d.count == 71, d.dropFirst(7).allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
                throw invalid("the digest must be sha256: and 64 lowercase hex digits")
            }
            digest = d
            rest = rest[..<at]
        }
        var tag: String?
        if let colon = rest.lastIndex(of: ":"), !rest[rest.index(after: colon)...].contains("/") {
            let t = String(rest[rest.index(after: colon)...])
            guard !t.isEmpty, t.count <= 128, let first = t.first, first.isLetter || first.isNumber || first == "_",
                t.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-") })
            else { throw invalid("the tag \"\(t)\" may hold letters, digits, '_', '.' and '-' (at most 128)") }
            tag = t
            rest = rest[..<colon]
        }
        var components = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var registry = Self.defaultRegistry
        if components.count > 1, let first = components.first,
            first.contains(".") || first.contains(":") || first == "localhost" || first.contains(where: \.isUppercase)
        {
            registry = first
            components.removeFirst()
        }
        guard !components.isEmpty else { throw invalid("no repository name") }
        for c in components {
            guard Self.isValidComponent(c) else {
                throw invalid("\"\(c)\" is not a valid name component (lowercase letters, digits, and . _ - between them)")
            }
        }
        if registry == Self.defaultRegistry && components.count == 1 { components.insert("library", at: 0) }
        self.init(registry: registry, repository: components.joined(separator: "/"), tag: tag ?? (digest == nil ? "latest" : nil), digest: digest)
    }

    static func isValidComponent(_ c: String) -> Bool {
        guard let first = c.first, let last = c.last, !c.isEmpty,
            first.isASCII, first.isLowercase || first.isNumber, last.isASCII, last.isLowercase || last.isNumber
        else { return false }
        var previousSeparator = false
        for ch in c {
            let separator = ch == "." || ch == "_" || ch == "-"
            if !(ch.isASCII && (ch.isLowercase || ch.isNumber || separator)) { return false }
            if separator && previousSeparator && ch != "_" { return false }
            previousSeparator = separator
        }
        return true
    }

    /// `docker.io/library/busybox:latest`.
    public var canonical: String {
        var text = "\(registry)/\(repository)"
        if let tag { text += ":\(tag)" }
        if let digest { text += "@\(digest)" }
        return text
    }

    /// The short form docker shows: `busybox:latest`, `team/app:1`.
    public var familiar: String {
        var name = "\(registry)/\(repository)"
        if registry == Self.defaultRegistry {
            name = repository.hasPrefix("library/") ? String(repository.dropFirst(8)) : repository
        }
        if let tag { name += ":\(tag)" }
        if let digest { name += "@\(digest)" }
        return name
    }

    public var description: String { familiar }

    public init(from decoder: any Decoder) throws {
        try self.init(parsing: decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(canonical)
    }
}
