import BerthTransport
import GRPCCore
import Testing
import BerthTesting

@Suite("gRPC over nghttp2: calls", .timeLimit(.minutes(5)))
struct CallTests {
    static let raw = (RawSerializer(), RawDeserializer())

    @Test("unary echo", arguments: TransportHarness.Kind.allCases)
    func unaryEcho(kind: TransportHarness.Kind) async throws {
        try await TransportHarness.withServerAndClient(kind, services: [EchoService(probe: EchoProbe())]) { client, _, _ in
            let reply = try await client.unary(
                request: ClientRequest(message: Array("hello".utf8)), descriptor: Echo.get,
                serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
            ) { try $0.message }
            #expect(reply == Array("hello".utf8))
            // An empty message is a message too.
            let empty = try await client.unary(
                request: ClientRequest(message: []), descriptor: Echo.get,
                serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
            ) { try $0.message }
            #expect(empty == [])
        }
    }

    @Test("client streaming", arguments: TransportHarness.Kind.allCases)
    func clientStreaming(kind: TransportHarness.Kind) async throws {
        try await TransportHarness.withServerAndClient(kind, services: [EchoService(probe: EchoProbe())]) { client, _, _ in
            let reply = try await client.clientStreaming(
                request: StreamingClientRequest { writer in
                    for i in 0..<100 { try await writer.write([UInt8(i)]) }
                },
                descriptor: Echo.collect, serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
            ) { try $0.message }
            #expect(reply == (0..<100).map { UInt8($0) })
        }
    }

    @Test("server streaming delivers every message in order", arguments: TransportHarness.Kind.allCases)
    func serverStreaming(kind: TransportHarness.Kind) async throws {
        try await TransportHarness.withServerAndClient(kind, services: [EchoService(probe: EchoProbe())]) { client, _, _ in
            let (count, size) = (500, 3000)
            let request = ClientRequest(message: bigEndian(count) + bigEndian(size))
            let received = try await client.serverStreaming(
                request: request, descriptor: Echo.expand, serializer: RawSerializer(), deserializer: RawDeserializer(),
                options: .defaults
            ) { response in
                var seen: [UInt8] = []
                for try await message in response.messages {
                    #expect(message.count == size)
                    seen.append(message[0])
                }
                return seen
            }
            #expect(received == (0..<count).map { UInt8(truncatingIfNeeded: $0) })
        }
    }

    @Test("bidirectional streaming with trailers", arguments: TransportHarness.Kind.allCases)
    func bidirectional(kind: TransportHarness.Kind) async throws {
        try await TransportHarness.withServerAndClient(kind, services: [EchoService(probe: EchoProbe())]) { client, _, _ in
            let (messages, trailer) = try await client.bidirectionalStreaming(
                request: StreamingClientRequest { writer in
                    for i in 0..<50 { try await writer.write(Array("m\(i)".utf8)) }
                },
                descriptor: Echo.update, serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
            ) { response in
                var all: [String] = []
                var trailer = ""
                for try await part in try response.accepted.get().bodyParts {
                    switch part {
                    case .message(let message): all.append(String(decoding: message, as: UTF8.self))
                    case .trailingMetadata(let metadata): trailer = metadata[stringValues: "echo-trailer"].first { _ in true } ?? ""
                    }
                }
                return (all, trailer)
            }
            #expect(messages == (0..<50).map { "m\($0)" })
            #expect(trailer == "done")
        }
    }

    @Test("metadata travels both ways, binary values included")
    func metadata() async throws {
        let probe = EchoProbe()
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: probe)]) { client, _, _ in
            var metadata: Metadata = ["x-plain": "value one"]
            metadata.addBinary([0, 255, 10, 13], forKey: "x-data-bin")
            let response = try await client.unary(
                request: ClientRequest(message: [], metadata: metadata), descriptor: Echo.metadata,
                serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
            ) { $0 }
            #expect(Array(response.metadata[stringValues: "echo-x-plain"]) == ["value one"])
            #expect(Array(response.trailingMetadata[stringValues: "echo-x-plain"]) == ["value one"])
            // The server saw the binary value decoded (re-encoded by the probe as base64).
            #expect(probe.seen.contains("x-data-bin=AP8KDQ=="))
        }
    }

    @Test("status codes and messages arrive intact, including non-ASCII and binary trailers")
    func errorStatus() async throws {
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())]) { client, _, _ in
            let message = "no such container: wéb % 100 ✓\nline two"
            do {
                _ = try await client.unary(
                    request: ClientRequest(message: Array("5:\(message)".utf8)), descriptor: Echo.fail,
                    serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                ) { try $0.message }
                Issue.record("expected an error")
            } catch let error as RPCError {
                #expect(error.code == .notFound)
                #expect(error.message == message)
                #expect(Array(error.metadata[binaryValues: "failure-bin"]) == [[0, 1, 2, 255]])
            }
        }
    }

    @Test("an unknown method answers UNIMPLEMENTED")
    func unknownMethod() async throws {
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())]) { client, _, _ in
            await #expect(throws: RPCError.self) {
                _ = try await client.unary(
                    request: ClientRequest(message: []), descriptor: Echo.unknown,
                    serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                ) { try $0.message }
            }
            do {
                _ = try await client.unary(
                    request: ClientRequest(message: []), descriptor: Echo.unknown,
                    serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                ) { try $0.message }
            } catch let error as RPCError {
                #expect(error.code == .unimplemented)
            }
        }
    }

    @Test("many concurrent calls on one connection")
    func concurrentCalls() async throws {
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())]) { client, _, _ in
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<500 {
                    group.addTask {
                        let payload = Array("call-\(i)".utf8)
                        let reply = try await client.unary(
                            request: ClientRequest(message: payload), descriptor: Echo.get,
                            serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                        ) { try $0.message }
                        return reply == payload
                    }
                }
                var ok = 0
                for try await result in group where result { ok += 1 }
                #expect(ok == 500)
            }
        }
    }
}

func bigEndian(_ value: Int) -> [UInt8] {
    [UInt8(value >> 24 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
}
