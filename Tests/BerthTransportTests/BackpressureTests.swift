import BerthTransport
import GRPCCore
import Testing
import BerthTesting

/// A slow reader on either side holds the writer back through HTTP/2 flow
/// control; nothing buffers without bound.
@Suite("gRPC over nghttp2: flow control and backpressure", .timeLimit(.minutes(5)))
struct BackpressureTests {
    /// 64 KiB messages the writer may be ahead of the reader: the peer's
    /// stream window (1 MiB), the reader's queue (256 KiB) and the writer's
    /// queue (256 KiB), plus what sits in socket buffers.
    static let bound = 48

    @Test("a slow client reader holds back a fast server writer")
    func slowClient() async throws {
        let probe = EchoProbe()
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: probe)]) { client, _, _ in
            try await client.serverStreaming(
                request: ClientRequest(message: []), descriptor: Echo.flood,
                serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
            ) { response in
                var read = 0
                for try await _ in response.messages {
                    read += 1
                    if read == 10 { break }
                }
                // Give the server every chance to run ahead.
                try await Task.sleep(for: .milliseconds(500))
                let ahead = probe.writtenCount - read
                #expect(ahead < Self.bound, "the server wrote \(probe.writtenCount) while the client read \(read)")
                #expect(ahead > 0)
            }
        }
    }

    @Test("a slow server reader holds back a fast client writer")
    func slowServer() async throws {
        let probe = EchoProbe()
        let written = EchoProbe()
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: probe)]) { client, _, _ in
            let call = Task {
                try await client.clientStreaming(
                    request: StreamingClientRequest { writer in
                        let chunk = [UInt8](repeating: 0xCD, count: 64 * 1024)
                        for _ in 0..<10_000 {
                            try await writer.write(chunk)
                            written.wrote()
                        }
                    },
                    descriptor: Echo.slowSink, serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                ) { _ in () }
            }
            let deadline = ContinuousClock.now + .seconds(30)
            while probe.readCount == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            // Give the client every chance to run ahead of the slow reader.
            try await Task.sleep(for: .milliseconds(700))
            let ahead = written.writtenCount - probe.readCount
            call.cancel()
            _ = try? await call.value
            #expect(probe.readCount > 0)
            #expect(ahead < Self.bound, "the client wrote \(written.writtenCount) while the server read \(probe.readCount)")
        }
    }
}
