import BerthTesting
import BerthTransport
import GRPCCore
import Testing

/// Bad input gets the right HTTP/2 or gRPC error, and the server goes on
/// serving everyone else.
@Suite("gRPC over nghttp2: hostile input", .timeLimit(.minutes(5)))
struct HostileInputTests {
    static func port(_ address: TransportAddress) -> Int {
        if case .tcp(_, let port) = address { return port }
        return 0
    }

    static func stillServes(_ client: GRPCClient<NGHTTP2ClientTransport>) async throws {
        let reply = try await client.unary(
            request: ClientRequest(message: [9]), descriptor: Echo.get,
            serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
        ) { try $0.message }
        #expect(reply == [9])
    }

    @Test("garbage bytes close the connection")
    func garbage() async throws {
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())]) { client, _, address in
            let raw = try await RawHTTP2Client(port: Self.port(address), http2: false)
            try await raw.sendRaw(Array("\u{0}\u{1}\u{2} this is not a protocol at all\r\n".utf8))
            #expect(await raw.wait { $0.connectionClosed })
            try await Self.stillServes(client)
        }
    }

    @Test("a valid preface followed by garbage frames gets GOAWAY(PROTOCOL_ERROR)")
    func garbageAfterPreface() async throws {
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())]) { client, _, address in
            let raw = try await RawHTTP2Client(port: Self.port(address), http2: false)
            let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
            // An empty SETTINGS, then DATA on stream 0: illegal.
            try await raw.sendRaw(
                preface + RawHTTP2Client.frame(type: 4, flags: 0, stream: 0, payload: [])
                    + RawHTTP2Client.frame(type: 0, flags: 0, stream: 0, payload: [1, 2, 3, 4]))
            #expect(await raw.wait { $0.connectionClosed })
            #expect(RawHTTP2Client.goAwayCode(in: raw.observed.rawReceived) == 1)
            try await Self.stillServes(client)
        }
    }

    @Test("a non-gRPC content-type gets HTTP 415")
    func contentType() async throws {
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())]) { client, _, address in
            let raw = try await RawHTTP2Client(port: Self.port(address))
            let id = try await raw.request(
                [(":method", "POST"), (":scheme", "http"), (":path", "/berth.test.Echo/Get"), (":authority", "x"),
                 ("content-type", "application/json")], body: Array("{}".utf8))
            #expect(await raw.wait { $0.streams[id]?.closed != nil })
            #expect(raw.observed.streams[id]?.header(":status") == "415")
            try await Self.stillServes(client)
        }
    }

    @Test("GET instead of POST gets HTTP 405")
    func wrongMethod() async throws {
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())]) { _, _, address in
            let raw = try await RawHTTP2Client(port: Self.port(address))
            let id = try await raw.request(
                [(":method", "GET"), (":scheme", "http"), (":path", "/berth.test.Echo/Get"), (":authority", "x"),
                 ("content-type", "application/grpc")])
            #expect(await raw.wait { $0.streams[id]?.closed != nil })
            #expect(raw.observed.streams[id]?.header(":status") == "405")
        }
    }

    @Test("a truncated length prefix ends the call with INTERNAL")
    func truncatedPrefix() async throws {
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())]) { client, _, address in
            let raw = try await RawHTTP2Client(port: Self.port(address))
            // Three bytes of a five-byte prefix, then the end of the stream.
            let id = try await raw.grpcRequest(path: "/berth.test.Echo/Get", body: [0, 0, 0])
            #expect(await raw.wait { $0.streams[id]?.closed != nil })
            #expect(raw.observed.streams[id]?.header("grpc-status") == "13")
            #expect(raw.observed.streams[id]?.header("grpc-message")?.contains("ended inside a message") == true)
            // A prefix that promises more bytes than arrive.
            let id2 = try await raw.grpcRequest(path: "/berth.test.Echo/Get", body: [0, 0, 0, 0, 10, 1, 2, 3])
            #expect(await raw.wait { $0.streams[id2]?.closed != nil })
            #expect(raw.observed.streams[id2]?.header("grpc-status") == "13")
            try await Self.stillServes(client)
        }
    }

    @Test("a 100 MiB message is refused with RESOURCE_EXHAUSTED before its body is read")
    func hugeMessage() async throws {
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())]) { client, _, address in
            let raw = try await RawHTTP2Client(port: Self.port(address))
            let length = 100 * 1024 * 1024
            let prefix: [UInt8] = [0, UInt8(length >> 24 & 0xFF), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
            let id = try await raw.grpcRequest(path: "/berth.test.Echo/Get", body: prefix + [UInt8](repeating: 1, count: 64 * 1024), endStream: false)
            #expect(await raw.wait { $0.streams[id]?.header("grpc-status") != nil })
            #expect(raw.observed.streams[id]?.header("grpc-status") == "8")
            #expect(raw.observed.streams[id]?.header("grpc-message")?.contains("104857600 bytes") == true)
            // The server stops the upload: the stream is closed, not drained.
            #expect(await raw.wait { $0.streams[id]?.closed != nil })
            try await Self.stillServes(client)
        }
    }

    @Test("a header list over the limit gets RESOURCE_EXHAUSTED; a CONTINUATION flood gets GOAWAY")
    func headerFlood() async throws {
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())]) { client, _, address in
            let raw = try await RawHTTP2Client(port: Self.port(address))
            let flood = (0..<600).map { ("x-flood-\($0)", String(repeating: "v", count: 40)) }
            let id = try await raw.grpcRequest(path: "/berth.test.Echo/Get", extra: flood, body: [0, 0, 0, 0, 0])
            #expect(await raw.wait { $0.streams[id]?.closed != nil })
            #expect(raw.observed.streams[id]?.header("grpc-status") == "8")

            // HEADERS without END_HEADERS, then CONTINUATION frames without end.
            let raw2 = try await RawHTTP2Client(port: Self.port(address), http2: false)
            var bytes = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, 4, 0, 0, 0, 0, 0]  // empty SETTINGS
            bytes += [0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82]  // HEADERS stream 1, no END_HEADERS, ":method GET"
            for _ in 0..<64 {
                bytes += [0, 0, 1, 9, 0, 0, 0, 0, 1, 0x84]  // CONTINUATION without END_HEADERS
            }
            // The server may end the connection before all of it is written.
            try? await raw2.sendRaw(bytes)
            #expect(await raw2.wait { $0.connectionClosed })
            try await Self.stillServes(client)
        }
    }

    @Test("thousands of streams opened and reset at once (rapid reset) end that connection only")
    func rapidReset() async throws {
        let probe = EchoProbe()
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: probe)]) { client, _, address in
            let raw = try await RawHTTP2Client(port: Self.port(address), http2: false)
            // The server ends the connection while the flood is still being written.
            try? await raw.sendRaw(RawHTTP2Client.rapidResetBytes(count: 5000, path: "/berth.test.Echo/Hang"))
            #expect(await raw.wait { $0.connectionClosed })
            // The reset-rate limit answers with GOAWAY and closes the connection.
            #expect(RawHTTP2Client.goAwayCode(in: raw.observed.rawReceived) != nil)
            // Handlers never ran for streams reset in the same read.
            #expect(probe.startedCount < 5000)
            try await Self.stillServes(client)
        }
    }

    @Test("HTTP/1.1 on the same listener answers /healthz and 404 elsewhere")
    func http1() async throws {
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())]) { client, _, address in
            let raw = try await RawHTTP2Client(port: Self.port(address), http2: false)
            try await raw.sendRaw(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
            #expect(await raw.wait { $0.connectionClosed })
            let text = String(decoding: raw.observed.rawReceived, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.1 200 OK"))
            #expect(text.contains("\r\n\r\nok\n"))
            #expect(text.contains("HTTP/1.1 404 Not Found"))
            try await Self.stillServes(client)
        }
    }
}

@Suite("gRPC over nghttp2: stream limits and resets", .timeLimit(.minutes(5)))
struct StreamLimitTests {
    @Test("streams beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused, the rest are served")
    func concurrentStreamLimit() async throws {
        var limits = TransportLimits()
        limits.maxConcurrentStreams = 10
        let probe = EchoProbe()
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: probe)], limits: limits) { client, _, address in
            guard case .tcp(_, let port) = address else { return }
            let raw = try await RawHTTP2Client(port: port, http2: false)
            // 15 requests that stay open (Hang waits for its end of stream).
            try await raw.sendRaw(RawHTTP2Client.openStreamsBytes(count: 15, path: "/berth.test.Echo/Hang"))
            let refused = await raw.wait {
                RawHTTP2Client.frames(in: $0.rawReceived).filter { $0.type == 3 }.count >= 5
            }
            #expect(refused, "the 5 streams over the limit are reset")
            let resets = RawHTTP2Client.frames(in: raw.observed.rawReceived).filter { $0.type == 3 }
            #expect(resets.allSatisfy { $0.stream > 19 }, "only streams after the first 10 are reset")
            let deadline = ContinuousClock.now + .seconds(30)
            while probe.startedCount < 10 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(probe.startedCount == 10)
            await raw.close()
            // Other connections are unaffected.
            try await HostileInputTests.stillServes(client)
        }
    }

    @Test("a stream reset by the server fails the client's call with a mapped status", arguments: [
        (UInt32(8), RPCError.Code.cancelled), (UInt32(7), .unavailable), (UInt32(11), .resourceExhausted), (UInt32(2), .internalError),
    ])
    func serverReset(errorCode: UInt32, expected: RPCError.Code) async throws {
        let server = try await ResettingHTTP2Server(errorCode: errorCode)
        let transport = NGHTTP2ClientTransport(config: .init(address: .tcp(host: "127.0.0.1", port: server.port)))
        do {
            try await withGRPCClient(transport: transport) { client in
                do {
                    _ = try await client.unary(
                        request: ClientRequest(message: [1]), descriptor: Echo.get,
                        serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                    ) { try $0.message }
                    Issue.record("expected the reset to fail the call")
                } catch let error as RPCError {
                    #expect(error.code == expected)
                    #expect(error.message.contains("the server reset the stream"))
                }
            }
        }
        await server.close()
    }

    @Test("a connection open during graceful shutdown receives GOAWAY(NO_ERROR)")
    func goAwayOnShutdown() async throws {
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())]) { _, server, address in
            guard case .tcp(_, let port) = address else { return }
            let raw = try await RawHTTP2Client(port: port)
            _ = try await raw.grpcRequest(path: "/berth.test.Echo/Get", body: [0, 0, 0, 0, 1, 7])
            #expect(await raw.wait { !$0.streams.isEmpty && $0.streams.values.allSatisfy { $0.closed != nil } })
            server.beginGracefulShutdown()
            #expect(await raw.wait { $0.goAway != nil })
            #expect(raw.observed.goAway?.errorCode == 0)
            #expect(await raw.wait { $0.connectionClosed })
        }
    }
}
