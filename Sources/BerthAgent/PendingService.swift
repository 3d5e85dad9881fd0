public import GRPCCore
import BerthModel

/// Answers every method of a service that this agent does not implement yet
/// with UNIMPLEMENTED and a message saying so, rather than pretending.
public struct PendingService: RegistrableRPCService {
    public let methods: [MethodDescriptor]
    public let reason: String

    /// - Parameters:
    ///   - methods: the generated descriptors of the service.
    ///   - reason: the end of the message, e.g. "containers arrive in a later release".
    public init(methods: [MethodDescriptor], reason: String) {
        self.methods = methods
        self.reason = reason
    }

    public func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        for method in methods {
            let message = "\(method.fullyQualifiedMethod) is not implemented by this agent: \(reason)"
            router.registerHandler(forMethod: method, deserializer: IgnoringDeserializer(), serializer: NothingSerializer()) {
                request, _ in
                for try await _ in request.messages {}
                throw BerthError(.unimplemented, message)
            }
        }
    }

    private struct IgnoringDeserializer: MessageDeserializer {
        func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> Int { serializedMessageBytes.count }
    }

    private struct NothingSerializer: MessageSerializer {
        func serialize<Bytes: GRPCContiguousBytes>(_ message: Int) throws -> Bytes { Bytes([]) }
    }
}
