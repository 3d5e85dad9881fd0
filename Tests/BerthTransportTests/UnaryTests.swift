import BerthTransport
import GRPCCore
import Testing

@Suite("gRPC over nghttp2: calls")
struct CallTests {
    @Test("unary echo", arguments: TransportHarness.Kind.allCases)
    func unaryEcho(kind: TransportHarness.Kind) async throws {
        try await TransportHarness.withServerAndClient(kind, services: [EchoService(probe: EchoProbe())]) { client, _, _ in
            let reply = try await client.unary(
                request: ClientRequest(message: Array("hello".utf8)), descriptor: Echo.get,
                serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
            ) { try $0.message }
            #expect(reply == Array("hello".utf8))
        }
    }
}
