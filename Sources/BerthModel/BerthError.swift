/// The one error type Berth's domain speaks.
///
/// A `BerthError` says what failed in words a person can act on (`message`),
/// classifies it with a `code` that maps to a gRPC status in exactly one place
/// (`BerthAPI`), and may carry the lower-level `cause` as text.
public struct BerthError: Error, Codable, Sendable, Hashable, CustomStringConvertible {
    /// A classification of failures that can grow without breaking callers.
    public struct Code: RawRepresentable, Codable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        /// The request itself is malformed: a bad size, an unknown flag value.
        public static let invalidArgument = Code(rawValue: "invalid_argument")
        /// The named object does not exist.
        public static let notFound = Code(rawValue: "not_found")
        /// An object with that name or ID exists already.
        public static let alreadyExists = Code(rawValue: "already_exists")
        /// The object is not in a state that allows the operation (for example
        /// unpausing a running container).
        public static let failedPrecondition = Code(rawValue: "failed_precondition")
        /// A limit was reached: message size, concurrent streams, disk.
        public static let resourceExhausted = Code(rawValue: "resource_exhausted")
        /// The caller is not allowed to do this.
        public static let permissionDenied = Code(rawValue: "permission_denied")
        /// The operation ran out of time.
        public static let deadlineExceeded = Code(rawValue: "deadline_exceeded")
        /// The operation was cancelled.
        public static let cancelled = Code(rawValue: "cancelled")
        /// A peer or a kernel feature is not reachable now; retrying may help.
        public static let unavailable = Code(rawValue: "unavailable")
        /// The request names a position past what exists (a revision in the future).
        public static let outOfRange = Code(rawValue: "out_of_range")
        /// The operation is not implemented by this build or on this host.
        public static let unimplemented = Code(rawValue: "unimplemented")
        /// An invariant inside Berth broke; this is a bug or a damaged host.
        public static let `internal` = Code(rawValue: "internal")

        public var description: String { rawValue }
    }

    /// What kind of failure this is.
    public var code: Code
    /// What failed, for a person.
    public var message: String
    /// The lower-level failure, if any, as text.
    public var cause: String?
    /// Where to ask instead, if anywhere: a controller that does not lead
    /// names the address of the one that does.
    public var redirect: String?

    /// Creates an error.
    public init(_ code: Code, _ message: String, cause: String? = nil, redirect: String? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
        self.redirect = redirect
    }

    /// Creates an error that wraps a lower-level one.
    public init(_ code: Code, _ message: String, underlying: any Error) {
        self.init(code, message, cause: String(describing: underlying))
    }

    public var description: String {
        if let cause { return "\(message): \(cause)" }
        return message
    }
}

extension BerthError {
    /// `invalid_argument` with a message.
    public static func invalid(_ message: String) -> BerthError { BerthError(.invalidArgument, message) }
    /// `not_found` for a kind of object and the name the caller used.
    public static func notFound(_ kind: String, _ name: String) -> BerthError {
        BerthError(.notFound, "no such \(kind): \(name)")
    }
}
