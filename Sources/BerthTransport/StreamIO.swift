import GRPCCore
import NIOCore
import Synchronization

/// What a stream's bridge asks of its connection: the connection runs on an
/// event loop, the stream's handler runs in a task.
protocol StreamIOOwner: AnyObject, Sendable {
    /// The stream has parts to send; drain it on the event loop soon.
    func streamNeedsFlush(_ key: Int)
    /// The stream's reader caught up; return the held-back window to the peer.
    func streamNeedsCredit(_ key: Int)
}

/// Sizes that decide when a stream pushes back.
struct StreamWatermarks: Sendable {
    /// Inbound: complete messages the reader has not taken, in bytes, above
    /// which the peer's window is no longer replenished.
    var inboundHigh: Int = 256 * 1024
    var inboundLow: Int = 64 * 1024
    /// Outbound: bytes written but not yet taken by nghttp2, above which a
    /// writer waits.
    var outboundHigh: Int = 256 * 1024
    var outboundLow: Int = 64 * 1024
}

/// The bridge between one HTTP/2 stream, which lives on an event loop, and
/// the task that handles it: an inbound queue the task reads and an outbound
/// queue the task writes, each bounded, each with backpressure.
final class StreamIO<Inbound: Sendable, Outbound: Sendable>: Sendable {
    private enum InboundEnd {
        case finished
        case failed(any Error)
    }

    private struct State {
        var inbound = CircularBuffer<(Inbound, Int)>()
        var inboundQueuedBytes = 0
        var inboundEnd: InboundEnd?
        var reader: CheckedContinuation<Inbound?, any Error>?
        var readerCancelled = false
        var deferredCredit = 0
        var creditRequested = false

        var outbound = CircularBuffer<Outbound>()
        var outboundQueuedBytes = 0
        var outboundFinished = false
        var outboundError: (any Error)?
        var writer: CheckedContinuation<Void, any Error>?
        var flushRequested = false

        var cancelled = false
        var released = false
        var cancellation: ServerContext.RPCCancellationHandle?
    }

    private enum ReadStep {
        case value(Inbound, Bool)
        case end
        case failed(any Error)
        case wait
    }

    let key: Int
    let watermarks: StreamWatermarks
    private weak let owner: (any StreamIOOwner)?
    private let state = Mutex(State())
    private let sizeOf: @Sendable (Outbound) -> Int

    init(key: Int, owner: any StreamIOOwner, watermarks: StreamWatermarks, sizeOf: @escaping @Sendable (Outbound) -> Int) {
        self.key = key
        self.owner = owner
        self.watermarks = watermarks
        self.sizeOf = sizeOf
    }

    // MARK: Event-loop side, inbound

    /// Queues a part for the reader (or hands it to a waiting reader).
    func deliver(_ part: Inbound, bytes: Int) {
        let reader: CheckedContinuation<Inbound?, any Error>? = state.withLock { s in
            if s.inboundEnd != nil { return nil }
            if let reader = s.reader, s.inbound.isEmpty {
                s.reader = nil
                return reader
            }
            s.inbound.append((part, bytes))
            s.inboundQueuedBytes += bytes
            return nil
        }
        reader?.resume(returning: part)
    }

    /// Decides whether `bytes` of DATA may be credited back to the peer now.
    /// When the reader is behind, the bytes are held until it catches up.
    func creditNow(_ bytes: Int) -> Bool {
        state.withLock { s in
            if s.inboundQueuedBytes < watermarks.inboundHigh || s.inboundEnd != nil {
                return true
            }
            s.deferredCredit += bytes
            return false
        }
    }

    /// Takes the credit held back for a slow reader.
    func takeDeferredCredit() -> Int {
        state.withLock { s in
            let credit = s.deferredCredit
            s.deferredCredit = 0
            s.creditRequested = false
            return credit
        }
    }

    /// The peer finished sending; the reader sees the end after what is queued.
    func finishInbound() {
        let reader: CheckedContinuation<Inbound?, any Error>? = state.withLock { s in
            if s.inboundEnd == nil { s.inboundEnd = .finished }
            if s.inbound.isEmpty, let reader = s.reader {
                s.reader = nil
                return reader
            }
            return nil
        }
        reader?.resume(returning: nil)
    }

    // MARK: Event-loop side, outbound

    /// Takes everything the writer queued since the last call.
    func takeOutbound() -> (parts: CircularBuffer<Outbound>, finished: Bool) {
        state.withLock { s in
            s.flushRequested = false
            let parts = s.outbound
            s.outbound = CircularBuffer()
            return (parts, s.outboundFinished)
        }
    }

    /// nghttp2 has taken `bytes` of what the writer wrote; a waiting writer
    /// may go on once the queue is low again.
    func outboundSent(_ bytes: Int) {
        guard bytes > 0 else { return }
        let writer: CheckedContinuation<Void, any Error>? = state.withLock { s in
            s.outboundQueuedBytes -= bytes
            if s.outboundQueuedBytes <= watermarks.outboundLow, let writer = s.writer {
                s.writer = nil
                return writer
            }
            return nil
        }
        writer?.resume()
    }

    // MARK: Either side

    /// Ends the stream with an error: the reader sees it after nothing more,
    /// writes fail with it, and the RPC is cancelled.
    func fail(_ error: any Error, cancelRPC: Bool = true) {
        let (reader, writer, handle) = state.withLock { s -> (CheckedContinuation<Inbound?, any Error>?, CheckedContinuation<Void, any Error>?, ServerContext.RPCCancellationHandle?) in
            if s.inboundEnd == nil {
                // A stream that ended cleanly keeps what it queued; one that
                // breaks off drops it, and the reader sees the error next.
                s.inboundEnd = .failed(error)
                s.inbound.removeAll()
                s.inboundQueuedBytes = 0
            }
            if s.outboundError == nil { s.outboundError = error }
            let reader = s.reader
            s.reader = nil
            let writer = s.writer
            s.writer = nil
            var handle: ServerContext.RPCCancellationHandle?
            if cancelRPC && !s.cancelled {
                s.cancelled = true
                handle = s.cancellation
            }
            return (reader, writer, handle)
        }
        reader?.resume(throwing: error)
        writer?.resume(throwing: error)
        handle?.cancel()
    }

    /// Makes later writes fail with `error`, leaving the inbound side alone
    /// (the peer has answered and wants no more).
    func failOutbound(_ error: any Error) {
        let writer: CheckedContinuation<Void, any Error>? = state.withLock { s in
            if s.outboundError == nil { s.outboundError = error }
            let writer = s.writer
            s.writer = nil
            return writer
        }
        writer?.resume(throwing: error)
    }

    /// Client: the call is over on the task side; the connection resets the
    /// stream if it is still open.
    func release() {
        let flush: Bool = state.withLock { s in
            s.released = true
            if s.outboundError == nil { s.outboundError = RPCError(code: .cancelled, message: "the call is over") }
            let flush = !s.flushRequested
            s.flushRequested = true
            return flush
        }
        if flush { owner?.streamNeedsFlush(key) }
    }

    /// True once `release` ran.
    var isReleased: Bool { state.withLock { $0.released } }

    /// True once the inbound side ended (normally or not).
    var inboundEnded: Bool { state.withLock { $0.inboundEnd != nil } }

    /// Server: ties the RPC's cancellation handle to this stream. A stream
    /// reset before the handler started cancels the handle at once.
    func attach(_ handle: ServerContext.RPCCancellationHandle) {
        let cancelNow = state.withLock { s in
            s.cancellation = handle
            return s.cancelled
        }
        if cancelNow { handle.cancel() }
    }

    // MARK: Task side

    /// The next inbound part, nil at the end.
    ///
    /// - Throws: the error the stream failed with, or `CancellationError`.
    func next() async throws -> Inbound? {
        let step: ReadStep = state.withLock { s in
            if let (part, bytes) = s.inbound.popFirst() {
                s.inboundQueuedBytes -= bytes
                var wantCredit = false
                if s.deferredCredit > 0 && !s.creditRequested && s.inboundQueuedBytes <= watermarks.inboundLow {
                    s.creditRequested = true
                    wantCredit = true
                }
                return .value(part, wantCredit)
            }
            switch s.inboundEnd {
            case .finished: return .end
            case .failed(let error): return .failed(error)
            case nil: return .wait
            }
        }
        switch step {
        case .value(let part, let wantCredit):
            if wantCredit { owner?.streamNeedsCredit(key) }
            return part
        case .end:
            return nil
        case .failed(let error):
            throw error
        case .wait:
            return try await waitForInbound()
        }
    }

    private func waitForInbound() async throws -> Inbound? {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Inbound?, any Error>) in
                let now: ReadStep = state.withLock { s in
                    if s.readerCancelled {
                        return .failed(CancellationError())
                    }
                    if let (part, bytes) = s.inbound.popFirst() {
                        s.inboundQueuedBytes -= bytes
                        return .value(part, false)
                    }
                    switch s.inboundEnd {
                    case .finished: return .end
                    case .failed(let error): return .failed(error)
                    case nil:
                        s.reader = continuation
                        return .wait
                    }
                }
                switch now {
                case .value(let part, _): continuation.resume(returning: part)
                case .end: continuation.resume(returning: nil)
                case .failed(let error): continuation.resume(throwing: error)
                case .wait: break
                }
            }
        } onCancel: {
            let reader = state.withLock { s in
                s.readerCancelled = true
                let reader = s.reader
                s.reader = nil
                return reader
            }
            reader?.resume(throwing: CancellationError())
        }
    }

    /// Queues a part for the peer; waits while too much is queued.
    ///
    /// - Throws: the error the stream failed with (reset, deadline), or
    ///   `CancellationError` while waiting.
    func write(_ part: Outbound) async throws {
        let bytes = sizeOf(part)
        let (error, flush, wait): ((any Error)?, Bool, Bool) = state.withLock { s in
            if let error = s.outboundError { return (error, false, false) }
            if s.outboundFinished {
                return (RPCError(code: .internalError, message: "write after the stream was finished"), false, false)
            }
            s.outbound.append(part)
            s.outboundQueuedBytes += bytes
            let flush = !s.flushRequested
            s.flushRequested = true
            return (nil, flush, s.outboundQueuedBytes > watermarks.outboundHigh)
        }
        if let error { throw error }
        if flush { owner?.streamNeedsFlush(key) }
        if wait { try await waitForSpace() }
    }

    private func waitForSpace() async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let result: Result<Void, any Error>? = state.withLock { s in
                    if let error = s.outboundError { return .failure(error) }
                    if s.outboundQueuedBytes <= watermarks.outboundLow { return .success(()) }
                    // A cancellation that came before this point found no
                    // writer to resume: see it here, under the same lock.
                    if Task.isCancelled { return .failure(CancellationError()) }
                    s.writer = continuation
                    return nil
                }
                if let result { continuation.resume(with: result) }
            }
        } onCancel: {
            let writer = state.withLock { s in
                let writer = s.writer
                s.writer = nil
                return writer
            }
            writer?.resume(throwing: CancellationError())
        }
    }

    /// The writer is done; `error` non-nil means it gave up (the stream is reset).
    func finishOutbound(error: (any Error)? = nil) {
        let flush: Bool = state.withLock { s in
            if s.outboundFinished { return false }
            s.outboundFinished = true
            if let error, s.outboundError == nil { s.outboundError = error }
            let flush = !s.flushRequested
            s.flushRequested = true
            return flush
        }
        if flush { owner?.streamNeedsFlush(key) }
    }

    /// True once `finishOutbound` ran with an error.
    var outboundFailed: Bool {
        state.withLock { $0.outboundFinished && $0.outboundError != nil }
    }
}

/// The inbound side of a `StreamIO` as an `AsyncSequence`.
struct StreamInbound<Inbound: Sendable, Outbound: Sendable>: AsyncSequence, Sendable {
    typealias Element = Inbound
    let io: StreamIO<Inbound, Outbound>

    struct AsyncIterator: AsyncIteratorProtocol {
        let io: StreamIO<Inbound, Outbound>
        mutating func next() async throws -> Inbound? { try await io.next() }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(io: io) }
}

/// The outbound side of a `StreamIO` as a GRPCCore writer.
struct StreamOutbound<Inbound: Sendable, Outbound: Sendable>: ClosableRPCWriterProtocol {
    typealias Element = Outbound
    let io: StreamIO<Inbound, Outbound>

    func write(_ element: Outbound) async throws { try await io.write(element) }

    func write(contentsOf elements: some Sequence<Outbound>) async throws {
        for element in elements { try await io.write(element) }
    }

    func finish() async { io.finishOutbound() }

    func finish(throwing error: any Error) async { io.finishOutbound(error: error) }
}
