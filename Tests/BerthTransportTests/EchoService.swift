import Foundation
import GRPCCore
import Synchronization

/// Messages as raw bytes, so the transport is tested without protobuf.
struct RawSerializer: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
}

struct RawDeserializer: MessageDeserializer {
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
        serializedMessageBytes.withUnsafeBytes { Array($0) }
    }
}

/// Records what handlers saw, for tests to check from outside.
final class EchoProbe: Sendable {
    private let state = Mutex<(cancelled: Int, started: Int, metadata: [String])>((0, 0, []))
    private let counters = Mutex<(written: Int, read: Int)>((0, 0))

    func wrote() { counters.withLock { $0.written += 1 } }
    func read() { counters.withLock { $0.read += 1 } }
    var writtenCount: Int { counters.withLock { $0.written } }
    var readCount: Int { counters.withLock { $0.read } }

    func started() { state.withLock { $0.started += 1 } }
    func cancelled() { state.withLock { $0.cancelled += 1 } }
    func saw(_ value: String) { state.withLock { $0.metadata.append(value) } }
    var cancelledCount: Int { state.withLock { $0.cancelled } }
    var startedCount: Int { state.withLock { $0.started } }
    var seen: [String] { state.withLock { $0.metadata } }
}

enum Echo {
    static let service = ServiceDescriptor(fullyQualifiedService: "berth.test.Echo")
    static let get = MethodDescriptor(service: service, method: "Get")
    static let collect = MethodDescriptor(service: service, method: "Collect")
    static let expand = MethodDescriptor(service: service, method: "Expand")
    static let update = MethodDescriptor(service: service, method: "Update")
    static let hang = MethodDescriptor(service: service, method: "Hang")
    static let fail = MethodDescriptor(service: service, method: "Fail")
    static let metadata = MethodDescriptor(service: service, method: "Metadata")
    static let unknown = MethodDescriptor(service: service, method: "DoesNotExist")
    static let flood = MethodDescriptor(service: service, method: "Flood")
    static let slowSink = MethodDescriptor(service: service, method: "SlowSink")
    static let follow = MethodDescriptor(service: service, method: "Follow")
    static let stubborn = MethodDescriptor(service: service, method: "Stubborn")
}

/// A service with one method of each kind, written against GRPCCore alone.
struct EchoService: RegistrableRPCService {
    let probe: EchoProbe

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        router.registerHandler(forMethod: Echo.get, deserializer: RawDeserializer(), serializer: RawSerializer()) { request, _ in
            var collected: [[UInt8]] = []
            for try await message in request.messages { collected.append(message) }
            guard collected.count == 1 else {
                throw RPCError(code: .invalidArgument, message: "expected one message, got \(collected.count)")
            }
            return StreamingServerResponse(single: ServerResponse(message: collected[0]))
        }
        router.registerHandler(forMethod: Echo.collect, deserializer: RawDeserializer(), serializer: RawSerializer()) { request, _ in
            var all: [UInt8] = []
            for try await message in request.messages { all += message }
            return StreamingServerResponse(single: ServerResponse(message: all))
        }
        // Request: [count (UInt32 BE), size (UInt32 BE)] → count messages of size bytes.
        router.registerHandler(forMethod: Echo.expand, deserializer: RawDeserializer(), serializer: RawSerializer()) { request, _ in
            var first: [UInt8] = []
            for try await message in request.messages { first = message }
            let count = first.prefix(4).reduce(0) { $0 << 8 | Int($1) }
            let size = first.dropFirst(4).prefix(4).reduce(0) { $0 << 8 | Int($1) }
            return StreamingServerResponse { writer in
                for i in 0..<count {
                    try await writer.write([UInt8](repeating: UInt8(truncatingIfNeeded: i), count: size))
                }
                return [:]
            }
        }
        router.registerHandler(forMethod: Echo.update, deserializer: RawDeserializer(), serializer: RawSerializer()) { request, _ in
            StreamingServerResponse { writer in
                for try await message in request.messages { try await writer.write(message) }
                return ["echo-trailer": "done"]
            }
        }
        // Waits until the RPC is cancelled (by the client, a deadline or shutdown).
        let probe = self.probe
        router.registerHandler(forMethod: Echo.hang, deserializer: RawDeserializer(), serializer: RawSerializer()) { request, context in
            probe.started()
            for try await _ in request.messages {}
            do {
                try await context.cancellation.cancelled
            } catch {}
            probe.cancelled()
            throw RPCError(code: .cancelled, message: "cancelled")
        }
        // Request: UTF-8 "CODE:MESSAGE".
        router.registerHandler(forMethod: Echo.fail, deserializer: RawDeserializer(), serializer: RawSerializer()) { request, _ in
            var first: [UInt8] = []
            for try await message in request.messages { first = message }
            let text = String(decoding: first, as: UTF8.self)
            let parts = text.split(separator: ":", maxSplits: 1)
            let code = RPCError.Code(Status.Code(rawValue: Int(parts[0]) ?? 2) ?? .unknown) ?? .unknown
            throw RPCError(code: code, message: parts.count > 1 ? String(parts[1]) : "", metadata: ["failure-bin": .binary([0, 1, 2, 255])])
        }
        // Writes 64 KiB messages as fast as the transport lets it, counting them.
        router.registerHandler(forMethod: Echo.flood, deserializer: RawDeserializer(), serializer: RawSerializer()) { request, _ in
            for try await _ in request.messages {}
            return StreamingServerResponse { writer in
                let chunk = [UInt8](repeating: 0xAB, count: 64 * 1024)
                for _ in 0..<100_000 {
                    try await writer.write(chunk)
                    probe.wrote()
                }
                return [:]
            }
        }
        // Writes one message, then waits for more to say, as a follower
        // does: it heeds its task's cancellation only, not the RPC's.
        router.registerHandler(forMethod: Echo.follow, deserializer: RawDeserializer(), serializer: RawSerializer()) { request, _ in
            for try await _ in request.messages {}
            return StreamingServerResponse { writer in
                probe.started()
                try await writer.write([1])
                do {
                    try await Task.sleep(for: .seconds(3600))
                } catch {
                    probe.cancelled()
                    throw error
                }
                return [:]
            }
        }
        // Answers after as many milliseconds as its request says (UInt16 BE),
        // heeding no cancellation: a handler that waits on something that
        // must finish (a write to a store) before it can answer.
        router.registerHandler(forMethod: Echo.stubborn, deserializer: RawDeserializer(), serializer: RawSerializer()) { request, _ in
            var first: [UInt8] = []
            for try await message in request.messages { first = message }
            let milliseconds = first.prefix(2).reduce(0) { $0 << 8 | Int($1) }
            probe.started()
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                Thread.detachNewThread {
                    Thread.sleep(forTimeInterval: Double(milliseconds) / 1000)
                    done.resume()
                }
            }
            probe.cancelled()
            return StreamingServerResponse(single: ServerResponse(message: first))
        }
        // Reads one message every 100 ms, counting them.
        router.registerHandler(forMethod: Echo.slowSink, deserializer: RawDeserializer(), serializer: RawSerializer()) { request, _ in
            for try await _ in request.messages {
                probe.read()
                try await Task.sleep(for: .milliseconds(100))
            }
            return StreamingServerResponse(single: ServerResponse(message: []))
        }
        router.registerHandler(forMethod: Echo.metadata, deserializer: RawDeserializer(), serializer: RawSerializer()) { request, _ in
            for try await _ in request.messages {}
            var response = Metadata()
            for (key, value) in request.metadata where key.hasPrefix("x-") {
                response.addString(value.encoded(), forKey: "echo-" + key)
                probe.saw("\(key)=\(value.encoded())")
            }
            if let timeout = request.metadata[stringValues: "grpc-timeout"].first(where: { _ in true }) {
                probe.saw("grpc-timeout=\(timeout)")
            }
            let trailers = response
            return StreamingServerResponse(
                single: ServerResponse(message: [1], metadata: response, trailingMetadata: trailers))
        }
    }
}
