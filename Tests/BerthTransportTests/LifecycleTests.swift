import BerthTesting
import BerthTransport
import GRPCCore
import Synchronization
import Testing

@Suite("gRPC over nghttp2: deadlines, cancellation, limits, shutdown", .timeLimit(.minutes(5)))
struct LifecycleTests {
    @Test("a grpc-timeout deadline ends the call with DEADLINE_EXCEEDED and cancels the handler")
    func deadline() async throws {
        let probe = EchoProbe()
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: probe)]) { client, _, _ in
            var options = CallOptions.defaults
            options.timeout = .milliseconds(200)
            let start = ContinuousClock.now
            do {
                _ = try await client.unary(
                    request: ClientRequest(message: []), descriptor: Echo.hang,
                    serializer: RawSerializer(), deserializer: RawDeserializer(), options: options
                ) { try $0.message }
                Issue.record("expected DEADLINE_EXCEEDED")
            } catch let error as RPCError {
                #expect(error.code == .deadlineExceeded)
            }
            // The call ended because of its deadline, not the handler (which never returns).
            #expect(ContinuousClock.now - start < .seconds(60))
            // The server side noticed too: its handler, if it got to start
            // before the reset arrived, was cancelled; none is left running.
            let deadline = ContinuousClock.now + .seconds(30)
            while probe.cancelledCount < probe.startedCount && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(probe.cancelledCount == probe.startedCount)
        }
    }

    @Test("the server enforces grpc-timeout itself, even for a client that keeps waiting")
    func serverSideDeadline() async throws {
        let probe = EchoProbe()
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: probe)]) { _, _, address in
            guard case .tcp(_, let port) = address else { return }
            let raw = try await RawHTTP2Client(port: port)
            defer { Task { await raw.close() } }
            let id = try await raw.grpcRequest(path: "/berth.test.Echo/Hang", extra: [("grpc-timeout", "150m")], body: [0, 0, 0, 0, 0])
            let answered = await raw.wait(timeout: .seconds(30)) { $0.streams[id]?.header("grpc-status") != nil }
            #expect(answered)
            #expect(raw.observed.streams[id]?.header("grpc-status") == "4")
            // A handler that got to start before the deadline was cancelled by it.
            let deadline = ContinuousClock.now + .seconds(30)
            while probe.cancelledCount < probe.startedCount && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(probe.cancelledCount == probe.startedCount)
        }
    }

    @Test("a call past its deadline while its handler cannot stop: the client's call ends at the deadline, and so does the client, whenever the handler ends")
    func deadlineOverStubbornHandler() async throws {
        let probe = EchoProbe()
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: probe)]) { _, _, address in
            for handlerTakes in [1_500, 4_000] {
                let began = ContinuousClock.now
                try await withGRPCClient(transport: NGHTTP2ClientTransport(config: .init(address: address))) { client in
                    var options = CallOptions.defaults
                    options.timeout = .milliseconds(300)
                    do {
                        _ = try await client.unary(
                            request: ClientRequest(message: [UInt8(handlerTakes >> 8), UInt8(handlerTakes & 0xff)]), descriptor: Echo.stubborn,
                            serializer: RawSerializer(), deserializer: RawDeserializer(), options: options
                        ) { try $0.message }
                        Issue.record("expected DEADLINE_EXCEEDED")
                    } catch let error as RPCError {
                        #expect(error.code == .deadlineExceeded)
                    }
                    #expect(ContinuousClock.now - began < .seconds(1), "the call ends at its deadline")
                }
                let took = ContinuousClock.now - began
                #expect(took < .milliseconds(handlerTakes) + .seconds(2), "the client closed \(took) after the call began (its handler took \(handlerTakes) ms)")
            }
        }
    }

    @Test("a call cancelled while its handler cannot stop ends at once", arguments: [0, 1, 5, 20, 100, 300])
    func cancelOverStubbornHandler(_ after: Int) async throws {
        let probe = EchoProbe()
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: probe)]) { client, _, _ in
            for _ in 0..<5 {
                let call = Task {
                    try await client.unary(
                        request: ClientRequest(message: [0x0f, 0xa0]), descriptor: Echo.stubborn,
                        serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                    ) { try $0.message }
                }
                try await Task.sleep(for: .milliseconds(after))
                let began = ContinuousClock.now
                call.cancel()
                _ = await call.result
                #expect(ContinuousClock.now - began < .seconds(1), "cancelled after \(after) ms, the call took \(ContinuousClock.now - began) to end")
            }
        }
    }

    @Test("a client cancelling a call resets the stream and cancels the server handler")
    func clientCancellation() async throws {
        let probe = EchoProbe()
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: probe)]) { client, _, _ in
            let call = Task {
                try await client.unary(
                    request: ClientRequest(message: []), descriptor: Echo.hang,
                    serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                ) { try $0.message }
            }
            var deadline = ContinuousClock.now + .seconds(30)
            while probe.startedCount == 0 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            call.cancel()
            await #expect(throws: (any Error).self) { try await call.value }
            deadline = ContinuousClock.now + .seconds(30)
            while probe.cancelledCount == 0 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(probe.cancelledCount == 1)
        }
    }

    @Test("cancelling a bidirectional call whose request producer still waits ends the call")
    func bidirectionalCancellation() async throws {
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())]) { client, _, _ in
            let echoed = Mutex(0)
            let call = Task {
                try await client.bidirectionalStreaming(
                    request: StreamingClientRequest { writer in
                        try await writer.write(Array("first".utf8))
                        try await Task.sleep(for: .seconds(600))
                    },
                    descriptor: Echo.update, serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                ) { response in
                    for try await _ in response.messages { echoed.withLock { $0 += 1 } }
                }
            }
            let deadline = ContinuousClock.now + .seconds(30)
            while echoed.withLock({ $0 }) == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            #expect(echoed.withLock { $0 } == 1)
            let start = ContinuousClock.now
            call.cancel()
            // Whichever comes first: the call's end, or 60 s. The producer
            // would wait 600 s: a call that ends at all was cancelled (on a
            // host saturated by other suites this has taken 10 s).
            let elapsed = await withTaskGroup(of: Duration?.self) { group in
                group.addTask {
                    _ = try? await call.value
                    return ContinuousClock.now - start
                }
                group.addTask {
                    try? await Task.sleep(for: .seconds(60))
                    return nil
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first
            }
            #expect(elapsed.map { $0 < .seconds(30) } == true, "the cancelled call ended after \(String(describing: elapsed))")
        }
    }

    @Test("a server resetting a stream fails the client's call")
    func serverReset() async throws {
        // A message over the server's limit makes the server end the call.
        var limits = TransportLimits()
        limits.maxReceiveMessageSize = 1024
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())], limits: limits) { client, _, _ in
            do {
                _ = try await client.unary(
                    request: ClientRequest(message: [UInt8](repeating: 7, count: 4096)), descriptor: Echo.get,
                    serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                ) { try $0.message }
                Issue.record("expected RESOURCE_EXHAUSTED")
            } catch let error as RPCError {
                #expect(error.code == .resourceExhausted)
                #expect(error.message.contains("4096 bytes"))
            }
            // The connection is still good for the next call.
            let reply = try await client.unary(
                request: ClientRequest(message: [1, 2, 3]), descriptor: Echo.get,
                serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
            ) { try $0.message }
            #expect(reply == [1, 2, 3])
        }
    }

    @Test("messages up to 4 MiB pass by default; a larger response is refused by the client")
    func defaultMessageLimit() async throws {
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())]) { client, _, _ in
            let big = [UInt8](repeating: 42, count: 4 * 1024 * 1024)
            let reply = try await client.unary(
                request: ClientRequest(message: big), descriptor: Echo.get,
                serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
            ) { try $0.message }
            #expect(reply.count == big.count)
            // One byte more is refused.
            await #expect(throws: RPCError.self) {
                _ = try await client.unary(
                    request: ClientRequest(message: big + [1]), descriptor: Echo.get,
                    serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                ) { try $0.message }
            }
        }
        var clientLimits = TransportLimits()
        clientLimits.maxReceiveMessageSize = 100
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: EchoProbe())], clientLimits: clientLimits) {
            client, _, _ in
            do {
                _ = try await client.unary(
                    request: ClientRequest(message: [UInt8](repeating: 1, count: 200)), descriptor: Echo.get,
                    serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                ) { try $0.message }
                Issue.record("expected RESOURCE_EXHAUSTED")
            } catch let error as RPCError {
                #expect(error.code == .resourceExhausted)
            }
        }
    }

    @Test("graceful shutdown lets in-flight calls finish and refuses new ones")
    func gracefulShutdown() async throws {
        let probe = EchoProbe()
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: probe)]) { client, server, address in
            // A long server stream in flight…
            let progress = EchoProbe()
            let inflight = Task {
                try await client.serverStreaming(
                    request: ClientRequest(message: bigEndian(2000) + bigEndian(1000)), descriptor: Echo.expand,
                    serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                ) { response in
                    var n = 0
                    for try await _ in response.messages {
                        n += 1
                        progress.read()
                        if n % 200 == 0 { try await Task.sleep(for: .milliseconds(5)) }
                    }
                    return n
                }
            }
            let deadline = ContinuousClock.now + .seconds(30)
            while progress.readCount == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            server.beginGracefulShutdown()
            // …finishes completely.
            let count = try await inflight.value
            #expect(count == 2000)
            // A new connection is refused once the listener is closed.
            guard case .tcp(_, let port) = address else { return }
            await #expect(throws: (any Error).self) { _ = try await RawHTTP2Client(port: port) }
        }
    }

    @Test("past the shutdown grace, calls still open end with UNAVAILABLE, their handlers are cancelled and the server stops")
    func shutdownGrace() async throws {
        let probe = EchoProbe()
        let start = ContinuousClock.now
        try await TransportHarness.withServerAndClient(services: [EchoService(probe: probe)], shutdownGrace: .milliseconds(300)) { client, server, _ in
            // A follower that never ends by itself, and a call that waits for its RPC's cancellation.
            let follower = Task {
                try await client.serverStreaming(
                    request: ClientRequest(message: []), descriptor: Echo.follow,
                    serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                ) { response in
                    var count = 0
                    for try await _ in response.messages { count += 1 }
                    return count
                }
            }
            let hanging = Task {
                try await client.unary(
                    request: ClientRequest(message: []), descriptor: Echo.hang,
                    serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
                ) { try $0.message }
            }
            let deadline = ContinuousClock.now + .seconds(30)
            while probe.startedCount < 2 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            try #require(probe.startedCount == 2)
            let shutdown = ContinuousClock.now
            server.beginGracefulShutdown()
            func expectShutdownStatus(_ call: () async throws -> Void) async {
                do {
                    try await call()
                    Issue.record("a call open at shutdown ended without an error")
                } catch let error as RPCError {
                    #expect(error.code == .unavailable)
                    #expect(error.message == NGHTTP2ServerTransport.shutdownMessage)
                } catch {
                    Issue.record("a call open at shutdown failed with \(error)")
                }
            }
            await expectShutdownStatus { _ = try await follower.value }
            await expectShutdownStatus { _ = try await hanging.value }
            let ended = ContinuousClock.now - shutdown
            #expect(ended >= .milliseconds(300) && ended < .seconds(10), "the calls ended \(ended) after the shutdown began")
            let cancelled = ContinuousClock.now + .seconds(30)
            while probe.cancelledCount < 2 && ContinuousClock.now < cancelled { try await Task.sleep(for: .milliseconds(5)) }
            #expect(probe.cancelledCount == 2)
        }
        // The harness returns once the server has stopped.
        #expect(ContinuousClock.now - start < .seconds(60))
    }
}
