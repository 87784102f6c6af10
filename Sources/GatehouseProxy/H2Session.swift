import CLibevent
import CNghttp2
import GatehouseHTTP

/// The libnghttp2 server session of one client connection: the C edge of
/// the HTTP/2 codec. What `H2Connection` asks of nghttp2 goes through here;
/// what nghttp2 reports comes back through `H2Callbacks` as Swift values.
final class H2Session {
    /// RFC 9113 §7 error codes Gatehouse sends.
    enum ErrorCode: UInt32 {
        case noError = 0x0, protocolError = 0x1, internalError = 0x2, refusedStream = 0x7, cancel = 0x8
        case enhanceYourCalm = 0xb
    }

    struct Settings {
        var maxConcurrentStreams: UInt32
        var initialWindowSize: UInt32
        var maxHeaderListSize: UInt32
        var connectionWindow: Int32
    }

    enum Received {
        case consumed(Int)
        /// A connection error; `flood`: one of nghttp2's abuse limits.
        case failed(flood: Bool, reason: String)
    }

    /// What the response body source gives nghttp2 for one DATA frame.
    enum BodyChunk {
        case bytes(Int)
        /// Nothing yet: `resume` when more arrives.
        case deferred
        /// The last `n` bytes of the body (0 allowed): END_STREAM.
        case end(Int)
    }

    private let session: OpaquePointer
    private var nva: [nghttp2_nv] = []

    init?(owner: H2Connection, settings: Settings) {
        var callbacks: OpaquePointer?
        guard nghttp2_session_callbacks_new(&callbacks) == 0, let callbacks else { return nil }
        defer { nghttp2_session_callbacks_del(callbacks) }
        H2Callbacks.install(on: callbacks)
        var option: OpaquePointer?
        guard nghttp2_option_new(&option) == 0, let option else { return nil }
        defer { nghttp2_option_del(option) }
        // Window updates follow what the backend took, not what arrived.
        nghttp2_option_set_no_auto_window_update(option, 1)
        // RFC 9113 §8 message rules are Gatehouse's own (GatehouseHTTP's
        // H2RequestBuilder, unit-tested and fuzzed): one place decides,
        // counts and logs what is refused.
        nghttp2_option_set_no_http_messaging(option, 1)
        // Rapid Reset: nghttp2's own token bucket on top of our glitch counter.
        nghttp2_option_set_stream_reset_rate_limit(option, 1000, 33)
        nghttp2_option_set_max_settings(option, 32)
        var made: OpaquePointer?
        // Unretained: nghttp2 calls back only from inside our calls into it,
        // and the owner owns this session.
        guard nghttp2_session_server_new2(&made, callbacks, Unmanaged.passUnretained(owner).toOpaque(), option) == 0,
              let made else { return nil }
        session = made
        var entries = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
                                   value: settings.maxConcurrentStreams),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                                   value: settings.initialWindowSize),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue),
                                   value: settings.maxHeaderListSize),
            // RFC 8441 §3: WebSockets over HTTP/2 (extended CONNECT).
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL.rawValue), value: 1),
        ]
        nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &entries, entries.count)
        nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, settings.connectionWindow)
    }

    deinit { nghttp2_session_del(session) }

    // MARK: - Bytes

    func receive(_ bytes: UnsafeRawBufferPointer) -> Received {
        let n = nghttp2_session_mem_recv(session, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
        guard n < 0 else { return .consumed(n) }
        let error = Int32(n)
        let flood = error == NGHTTP2_ERR_FLOODED.rawValue || error == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS.rawValue
            || error == NGHTTP2_ERR_TOO_MANY_SETTINGS.rawValue
        return .failed(flood: flood, reason: String(cString: nghttp2_strerror(error)))
    }

    /// Appends what nghttp2 has to send to `output`, up to about `limit`
    /// bytes buffered. False on a fatal session error.
    func send(into output: OpaquePointer, limit: Int) -> Bool {
        while output.evLength < limit {
            var data: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &data)
            if n < 0 { return false }
            guard n > 0, let data else { break }
            evbuffer_add(output, data, n)
        }
        return true
    }

    /// Neither side has anything more to say (after GOAWAY, or an error).
    var finished: Bool { nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 }

    // MARK: - Frames

    /// A final response (with a body the owner's source gives, or none) or,
    /// with `interim`, a 1xx HEADERS frame.
    func submit(_ streamID: Int32, _ block: H2FieldBlock, withBody: Bool, interim: Bool = false) {
        block.arena.withUnsafeBytes { raw in
            let base = UnsafeMutablePointer(mutating: raw.baseAddress!.assumingMemoryBound(to: UInt8.self))
            nva.removeAll(keepingCapacity: true)
            for f in block.fields {
                nva.append(nghttp2_nv(name: base + f.name.start, value: base + f.value.start,
                                      namelen: f.name.count, valuelen: f.value.count,
                                      flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
            }
            if interim {
                nghttp2_submit_headers(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, nil, nva, nva.count, nil)
            } else if withBody {
                var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: H2Callbacks.readBody)
                nghttp2_submit_response(session, streamID, nva, nva.count, &provider)
            } else {
                nghttp2_submit_response(session, streamID, nva, nva.count, nil)
            }
        }
    }

    /// More response body is ready for a stream whose source said `.deferred`.
    func resume(_ streamID: Int32) { nghttp2_session_resume_data(session, streamID) }

    func reset(_ streamID: Int32, _ code: ErrorCode) {
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, code.rawValue)
    }

    /// Flow control (RFC 9113 §6.9): `n` request body bytes were taken.
    func consume(_ streamID: Int32, _ n: Int) { nghttp2_session_consume(session, streamID, n) }

    /// Bytes of a stream nghttp2 no longer tracks still count for the connection.
    func consumeConnection(_ n: Int) { nghttp2_session_consume_connection(session, n) }

    /// GOAWAY NO_ERROR with the last stream taken (RFC 9113 §6.8).
    func goaway() {
        nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nghttp2_session_get_last_proc_stream_id(session),
                              ErrorCode.noError.rawValue, nil, 0)
    }

    /// GOAWAY with an error, then the session ends (a no-op if nghttp2 ended
    /// it on its own error already).
    func terminate(_ code: ErrorCode) { nghttp2_session_terminate_session(session, code.rawValue) }

    static func describe(errorCode: UInt32) -> String { String(cString: nghttp2_http2_strerror(errorCode)) }
}
