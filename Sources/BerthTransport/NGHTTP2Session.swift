import CNghttp2
import NIOCore

/// A header field as the wire carries it.
struct HeaderField {
    var name: String
    var value: String

    init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// What nghttp2 reports while it parses a peer's bytes. Every call happens
/// on the connection's event loop, inside `NGHTTP2Session.receive`.
protocol NGHTTP2SessionDelegate: AnyObject {
    /// A HEADERS frame starts on a stream (a new request, a response, trailers).
    func session(beginHeadersOn streamID: Int32, category: nghttp2_headers_category)
    /// One header field; return false to reset the stream.
    func session(header name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>, on streamID: Int32) -> Bool
    /// All of a HEADERS block has arrived.
    func session(headersCompleteOn streamID: Int32, category: nghttp2_headers_category, endStream: Bool)
    /// Bytes of a DATA frame.
    func session(data: UnsafeRawBufferPointer, on streamID: Int32)
    /// The peer closed its side of a stream with a DATA frame.
    func session(endStreamOn streamID: Int32)
    /// The stream is gone; `errorCode` is 0 for a normal close.
    func session(streamClosed streamID: Int32, errorCode: UInt32)
    /// The peer sent GOAWAY.
    func session(goAwayWithLastStreamID lastStreamID: Int32, errorCode: UInt32)
    /// This side sent a frame that ended its half of a stream.
    func session(sentEndStreamOn streamID: Int32)
    /// This side sent GOAWAY with an error code (`debugData` says why, when
    /// nghttp2 says).
    func session(sentGoAwayWithError errorCode: UInt32, debugData: String)
    /// An acknowledgement of our PING with this payload.
    func session(pingAcknowledged payload: UInt64)
    /// nghttp2 wants DATA for a stream: copy at most `buffer.count` bytes,
    /// return how many, or `NGHTTP2_ERR_DEFERRED` when nothing is ready yet.
    /// Set `eof` when the body is complete; `trailers` (if any) go out after it.
    func session(readDataFor streamID: Int32, into buffer: UnsafeMutableRawBufferPointer, eof: inout Bool, trailers: inout [HeaderField]?) -> Int
}

/// Settings and limits of one HTTP/2 session.
struct NGHTTP2SessionSettings {
    var maxConcurrentStreams: UInt32
    var initialStreamWindow: UInt32
    var connectionWindow: Int32
    var maxHeaderListSize: UInt32
    var maxFrameSize: UInt32 = 16_384
    /// RST_STREAM rate limit for servers: a burst, then tokens per second.
    var resetBurst: UInt64 = 1000
    var resetRate: UInt64 = 33
}

/// An nghttp2 session driven by memory buffers: bytes from the socket go in
/// through `receive`, bytes for the socket come out through `drainOutput`.
/// The owner calls everything on one event loop.
final class NGHTTP2Session {
    enum Role { case client, server }

    private(set) var raw: OpaquePointer?
    unowned let delegate: any NGHTTP2SessionDelegate
    let role: Role

    init(role: Role, settings: NGHTTP2SessionSettings, delegate: any NGHTTP2SessionDelegate) throws {
        self.role = role
        self.delegate = delegate

        var callbacks: OpaquePointer?
        guard nghttp2_session_callbacks_new(&callbacks) == 0, let callbacks else {
            throw TransportError.nghttp2("nghttp2_session_callbacks_new", NGHTTP2_ERR_NOMEM.rawValue)
        }
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, onBeginHeaders)
        nghttp2_session_callbacks_set_on_header_callback(callbacks, onHeader)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, onFrameRecv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, onDataChunkRecv)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, onStreamClose)
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, onFrameSend)

        var option: OpaquePointer?
        guard nghttp2_option_new(&option) == 0, let option else {
            throw TransportError.nghttp2("nghttp2_option_new", NGHTTP2_ERR_NOMEM.rawValue)
        }
        defer { nghttp2_option_del(option) }
        // The owner decides when received bytes count as consumed: flow control
        // follows what the application has actually taken.
        nghttp2_option_set_no_auto_window_update(option, 1)
        nghttp2_option_set_max_send_header_block_length(option, 64 * 1024)
        if role == .server {
            nghttp2_option_set_stream_reset_rate_limit(option, settings.resetBurst, settings.resetRate)
        }
        nghttp2_option_set_max_continuations(option, 8)

        let userData = Unmanaged.passUnretained(self).toOpaque()
        var session: OpaquePointer?
        let rc: Int32
        switch role {
        case .server: rc = nghttp2_session_server_new2(&session, callbacks, userData, option)
        case .client: rc = nghttp2_session_client_new2(&session, callbacks, userData, option)
        }
        guard rc == 0, let session else { throw TransportError.nghttp2("nghttp2_session_new", rc) }
        self.raw = session

        var entries: [nghttp2_settings_entry] = [
            .init(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: settings.maxConcurrentStreams),
            .init(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: settings.initialStreamWindow),
            .init(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: settings.maxHeaderListSize),
            .init(settings_id: Int32(NGHTTP2_SETTINGS_MAX_FRAME_SIZE.rawValue), value: settings.maxFrameSize),
        ]
        if role == .client {
            entries.append(.init(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0))
        }
        try check("nghttp2_submit_settings", nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &entries, entries.count))
        if settings.connectionWindow > 65_535 {
            try check(
                "nghttp2_session_set_local_window_size",
                nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, settings.connectionWindow))
        }
    }

    deinit {
        if let raw { nghttp2_session_del(raw) }
    }

    private func check(_ operation: String, _ rc: Int32) throws {
        if rc != 0 { throw TransportError.nghttp2(operation, rc) }
    }

    // MARK: - Input and output

    /// Feeds bytes from the peer; delegate calls happen before this returns.
    ///
    /// - Throws: `TransportError.nghttp2` when the peer broke the protocol;
    ///   nghttp2 has then queued a GOAWAY that `drainOutput` will produce.
    func receive(_ buffer: ByteBuffer) throws {
        guard let raw else { return }
        let rc = buffer.withUnsafeReadableBytes { bytes -> Int in
            guard let base = bytes.baseAddress else { return 0 }
            return nghttp2_session_mem_recv(raw, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        }
        if rc < 0 { throw TransportError.nghttp2("nghttp2_session_mem_recv", Int32(rc)) }
    }

    /// Appends every frame nghttp2 has ready to `out`, up to about `limit` bytes.
    ///
    /// - Returns: false when nghttp2 reported a fatal error.
    @discardableResult
    func drainOutput(into out: inout ByteBuffer, limit: Int = .max) -> Bool {
        guard let raw else { return false }
        while out.readableBytes < limit {
            var pointer: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(raw, &pointer)
            if n < 0 { return false }
            if n == 0 { break }
            if let pointer {
                out.writeBytes(UnsafeRawBufferPointer(start: pointer, count: n))
            }
        }
        return true
    }

    /// True while nghttp2 still expects to read or write; false once a GOAWAY
    /// exchange (or an error) has ended the session.
    var isAlive: Bool {
        guard let raw else { return false }
        return nghttp2_session_want_read(raw) != 0 || nghttp2_session_want_write(raw) != 0
    }

    var wantsWrite: Bool {
        guard let raw else { return false }
        return nghttp2_session_want_write(raw) != 0
    }

    // MARK: - Submissions

    private func withHeaders<R>(_ headers: [HeaderField], _ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
        // nghttp2 copies names and values during submit, so the storage only
        // has to live for the call.
        var storage: [UInt8] = []
        storage.reserveCapacity(headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count })
        var offsets: [(Int, Int, Int, Int)] = []
        offsets.reserveCapacity(headers.count)
        for h in headers {
            let nameStart = storage.count
            storage.append(contentsOf: h.name.utf8)
            let valueStart = storage.count
            storage.append(contentsOf: h.value.utf8)
            offsets.append((nameStart, valueStart - nameStart, valueStart, storage.count - valueStart))
        }
        if storage.isEmpty { storage.append(0) }
        return storage.withUnsafeMutableBufferPointer { bytes in
            let base = bytes.baseAddress!
            let nva = offsets.map { o in
                nghttp2_nv(
                    name: base + o.0, value: base + o.2, namelen: o.1, valuelen: o.3,
                    flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
            }
            return nva.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
        }
    }

    private func dataProvider() -> nghttp2_data_provider {
        nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: readData)
    }

    /// Server: response headers; `hasBody` attaches the data source, else the
    /// HEADERS frame ends the stream.
    func submitResponse(streamID: Int32, headers: [HeaderField], hasBody: Bool) -> Int32 {
        guard let raw else { return NGHTTP2_ERR_INVALID_STATE.rawValue }
        return withHeaders(headers) { nva, count in
            if hasBody {
                var provider = dataProvider()
                return nghttp2_submit_response(raw, streamID, nva, count, &provider)
            }
            return nghttp2_submit_response(raw, streamID, nva, count, nil)
        }
    }

    /// Client: opens a stream; returns its ID, or a negative nghttp2 error.
    func submitRequest(headers: [HeaderField]) -> Int32 {
        guard let raw else { return NGHTTP2_ERR_INVALID_STATE.rawValue }
        return withHeaders(headers) { nva, count in
            var provider = dataProvider()
            return nghttp2_submit_request(raw, nil, nva, count, &provider, nil)
        }
    }

    func submitTrailers(streamID: Int32, headers: [HeaderField]) -> Int32 {
        guard let raw else { return NGHTTP2_ERR_INVALID_STATE.rawValue }
        return withHeaders(headers) { nva, count in
            nghttp2_submit_trailer(raw, streamID, nva, count)
        }
    }

    /// Asks nghttp2 to call the data source again for a deferred stream.
    func resumeData(streamID: Int32) {
        guard let raw else { return }
        _ = nghttp2_session_resume_data(raw, streamID)
    }

    func submitReset(streamID: Int32, errorCode: UInt32) {
        guard let raw else { return }
        _ = nghttp2_submit_rst_stream(raw, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, errorCode)
    }

    /// Returns `bytes` of a stream's receive window to the peer.
    func consume(streamID: Int32, bytes: Int) {
        guard let raw, bytes > 0 else { return }
        _ = nghttp2_session_consume_stream(raw, streamID, bytes)
    }

    /// Returns `bytes` of the connection's receive window to the peer.
    func consumeConnection(bytes: Int) {
        guard let raw, bytes > 0 else { return }
        _ = nghttp2_session_consume_connection(raw, bytes)
    }

    /// Server: the first GOAWAY of a graceful shutdown, announcing it.
    func submitShutdownNotice() {
        guard let raw else { return }
        _ = nghttp2_submit_shutdown_notice(raw)
    }

    /// GOAWAY naming the last stream this side will process.
    func submitGoAway(lastStreamID: Int32? = nil, errorCode: UInt32, debug: String = "") {
        guard let raw else { return }
        let last = lastStreamID ?? nghttp2_session_get_last_proc_stream_id(raw)
        var bytes = Array(debug.utf8)
        _ = nghttp2_submit_goaway(raw, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, errorCode, &bytes, bytes.count)
    }

    func submitPing(payload: UInt64) {
        guard let raw else { return }
        var data = payload.bigEndian
        withUnsafeBytes(of: &data) { bytes in
            _ = nghttp2_submit_ping(raw, UInt8(NGHTTP2_FLAG_NONE.rawValue), bytes.baseAddress?.assumingMemoryBound(to: UInt8.self))
        }
    }

    /// The highest stream ID this side has seen and handled.
    var lastProcessedStreamID: Int32 {
        guard let raw else { return 0 }
        return nghttp2_session_get_last_proc_stream_id(raw)
    }

    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS.
    var remoteMaxConcurrentStreams: UInt32 {
        guard let raw else { return 0 }
        return nghttp2_session_get_remote_settings(raw, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
    }

    static var libraryVersion: String {
        guard let info = nghttp2_version(0), let text = info.pointee.version_str else { return "unknown" }
        return String(cString: text)
    }

    /// The name of an HTTP/2 error code, for messages (`CANCEL`, `REFUSED_STREAM`).
    static func errorName(_ code: UInt32) -> String {
        switch code {
        case 0x0: return "NO_ERROR"
        case 0x1: return "PROTOCOL_ERROR"
        case 0x2: return "INTERNAL_ERROR"
        case 0x3: return "FLOW_CONTROL_ERROR"
        case 0x4: return "SETTINGS_TIMEOUT"
        case 0x5: return "STREAM_CLOSED"
        case 0x6: return "FRAME_SIZE_ERROR"
        case 0x7: return "REFUSED_STREAM"
        case 0x8: return "CANCEL"
        case 0x9: return "COMPRESSION_ERROR"
        case 0xA: return "CONNECT_ERROR"
        case 0xB: return "ENHANCE_YOUR_CALM"
        case 0xC: return "INADEQUATE_SECURITY"
        case 0xD: return "HTTP_1_1_REQUIRED"
        default: return "0x" + String(code, radix: 16)
        }
    }
}

// MARK: - C callbacks

@inline(__always)
private func session(_ userData: UnsafeMutableRawPointer?) -> NGHTTP2Session {
    Unmanaged<NGHTTP2Session>.fromOpaque(userData!).takeUnretainedValue()
}

private let onBeginHeaders: nghttp2_on_begin_headers_callback = { _, frame, userData in
    guard let frame else { return 0 }
    let s = session(userData)
    s.delegate.session(beginHeadersOn: frame.pointee.hd.stream_id, category: frame.pointee.headers.cat)
    return 0
}

private let onHeader: nghttp2_on_header_callback = { _, frame, name, nameLength, value, valueLength, _, userData in
    guard let frame else { return 0 }
    let s = session(userData)
    let ok = s.delegate.session(
        header: UnsafeBufferPointer(start: name, count: nameLength),
        value: UnsafeBufferPointer(start: value, count: valueLength),
        on: frame.pointee.hd.stream_id)
    return ok ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue
}

private let onFrameRecv: nghttp2_on_frame_recv_callback = { _, frame, userData in
    guard let frame else { return 0 }
    let s = session(userData)
    let hd = frame.pointee.hd
    let endStream = hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
    switch UInt32(hd.type) {
    case NGHTTP2_HEADERS.rawValue:
        s.delegate.session(headersCompleteOn: hd.stream_id, category: frame.pointee.headers.cat, endStream: endStream)
    case NGHTTP2_DATA.rawValue:
        if endStream { s.delegate.session(endStreamOn: hd.stream_id) }
    case NGHTTP2_GOAWAY.rawValue:
        s.delegate.session(goAwayWithLastStreamID: frame.pointee.goaway.last_stream_id, errorCode: frame.pointee.goaway.error_code)
    case NGHTTP2_PING.rawValue:
        if hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0 {
            let payload = withUnsafeBytes(of: frame.pointee.ping.opaque_data) { $0.loadUnaligned(as: UInt64.self) }
            s.delegate.session(pingAcknowledged: UInt64(bigEndian: payload))
        }
    default:
        break
    }
    return 0
}

private let onFrameSend: nghttp2_on_frame_send_callback = { _, frame, userData in
    guard let frame else { return 0 }
    let hd = frame.pointee.hd
    let type = UInt32(hd.type)
    if (type == NGHTTP2_HEADERS.rawValue || type == NGHTTP2_DATA.rawValue),
        hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
    {
        session(userData).delegate.session(sentEndStreamOn: hd.stream_id)
    }
    if type == NGHTTP2_GOAWAY.rawValue, frame.pointee.goaway.error_code != NGHTTP2_NO_ERROR.rawValue {
        let goaway = frame.pointee.goaway
        let debug = goaway.opaque_data.map { String(decoding: UnsafeBufferPointer(start: $0, count: goaway.opaque_data_len), as: UTF8.self) } ?? ""
        session(userData).delegate.session(sentGoAwayWithError: goaway.error_code, debugData: debug)
    }
    return 0
}

private let onDataChunkRecv: nghttp2_on_data_chunk_recv_callback = { _, _, streamID, data, length, userData in
    let s = session(userData)
    s.delegate.session(data: UnsafeRawBufferPointer(start: data, count: length), on: streamID)
    return 0
}

private let onStreamClose: nghttp2_on_stream_close_callback = { _, streamID, errorCode, userData in
    let s = session(userData)
    s.delegate.session(streamClosed: streamID, errorCode: errorCode)
    return 0
}

private let readData: nghttp2_data_source_read_callback = { raw, streamID, buffer, length, flags, _, userData in
    let s = session(userData)
    var eof = false
    var trailers: [HeaderField]?
    let n = s.delegate.session(
        readDataFor: streamID, into: UnsafeMutableRawBufferPointer(start: buffer, count: length),
        eof: &eof, trailers: &trailers)
    if n < 0 { return n }
    if eof, let flags {
        flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
        if let trailers {
            flags.pointee |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
            let rc = s.submitTrailers(streamID: streamID, headers: trailers)
            if rc != 0 { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
        }
    }
    return n
}
