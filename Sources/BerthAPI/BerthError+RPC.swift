public import BerthModel
public import GRPCCore

/// The one place where Berth's error codes become gRPC status codes.
extension BerthError: RPCErrorConvertible {
    public var rpcErrorCode: RPCError.Code {
        switch code {
        case .invalidArgument: return .invalidArgument
        case .notFound: return .notFound
        case .alreadyExists: return .alreadyExists
        case .failedPrecondition: return .failedPrecondition
        case .resourceExhausted: return .resourceExhausted
        case .permissionDenied: return .permissionDenied
        case .deadlineExceeded: return .deadlineExceeded
        case .cancelled: return .cancelled
        case .unavailable: return .unavailable
        case .unimplemented: return .unimplemented
        case .outOfRange: return .outOfRange
        case .internal: return .internalError
        default: return .unknown
        }
    }

    public var rpcErrorMessage: String { description }

    public var rpcErrorMetadata: Metadata {
        var metadata: Metadata = ["berth-error-code": .string(code.rawValue)]
        if let redirect { metadata.addString(redirect, forKey: "berth-redirect") }
        return metadata
    }
}

extension BerthError {
    /// The domain error an RPC failure stands for, as a client sees it: the
    /// code the server sent in `berth-error-code`, or one derived from the
    /// gRPC status.
    public init(_ error: RPCError) {
        if let raw = error.metadata[stringValues: "berth-error-code"].first(where: { _ in true }) {
            self.init(Code(rawValue: raw), error.message, redirect: error.metadata[stringValues: "berth-redirect"].first(where: { _ in true }))
            return
        }
        let code: Code
        switch error.code {
        case .invalidArgument: code = .invalidArgument
        case .outOfRange: code = .outOfRange
        case .notFound: code = .notFound
        case .alreadyExists: code = .alreadyExists
        case .failedPrecondition, .aborted: code = .failedPrecondition
        case .resourceExhausted: code = .resourceExhausted
        case .permissionDenied, .unauthenticated: code = .permissionDenied
        case .deadlineExceeded: code = .deadlineExceeded
        case .cancelled: code = .cancelled
        case .unavailable: code = .unavailable
        case .unimplemented: code = .unimplemented
        default: code = .internal
        }
        self.init(code, error.message)
    }
}
