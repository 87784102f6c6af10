import CLibevent
import CNghttp2

/// The C edge of the proxy: every libevent callback, and the Unmanaged
/// context pointers they carry. Each trampoline keeps its object alive for the
/// duration of the call, since the handler may close (and release) it.
enum Callbacks {
    // MARK: client connections (context: the ClientConnection, retained while open)

    static let clientIO: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, what, ctx in
        let c = Unmanaged<ClientConnection>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(c) { c.socketReady(what) }
    }
    static let clientTimer: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, ctx in
        let c = Unmanaged<ClientConnection>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(c) { c.timerFired() }
    }
    static let clientFlush: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, ctx in
        let c = Unmanaged<ClientConnection>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(c) { c.flushFired() }
    }

    // MARK: the client socket BIO (data: the ClientTransport, which owns the SSL that owns the BIO)

    static let bioRead: @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>?) -> Int32 = { bio, buffer, count, done in
        guard let bio, let buffer, let done else { return 0 }
        return SocketBIO.read(bio, buffer, count, &done.pointee)
    }
    static let bioWrite: @convention(c) (OpaquePointer?, UnsafePointer<CChar>?, Int, UnsafeMutablePointer<Int>?) -> Int32 = { bio, buffer, count, done in
        guard let bio, let buffer, let done else { return 0 }
        return SocketBIO.write(bio, buffer, count, &done.pointee)
    }
    static let bioControl: @convention(c) (OpaquePointer?, Int32, Int, UnsafeMutableRawPointer?) -> Int = { _, command, _, _ in
        SocketBIO.control(command)
    }

    // MARK: backend connections (context: the BackendConnection, owned by its client or the pool)

    static let backendIO: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, what, ctx in
        let b = Unmanaged<BackendConnection>.fromOpaque(ctx!).takeUnretainedValue()
        // What the client's side queued in this turn leaves now.
        let owner = b.exchange?.currentOwner
        withExtendedLifetime(b) { b.ready(what) }
        owner?.flushOutput()
    }

    // MARK: listeners (context: the Listener, owned by its worker)

    static let accept: @convention(c) (OpaquePointer?, Int32, UnsafeMutablePointer<sockaddr>?, Int32, UnsafeMutableRawPointer?) -> Void = { _, fd, address, _, ctx in
        let l = Unmanaged<Listener>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(l) { l.accepted(fd: fd, address: address) }
    }
    static let proxyHeader: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, what, ctx in
        let r = Unmanaged<ProxyHeaderReader>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(r) { r.fired(timedOut: what & Int16(EV_TIMEOUT) != 0) }
    }
    static let acceptError: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Void = { _, ctx in
        let l = Unmanaged<Listener>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(l) { l.acceptFailed() }
    }

    // MARK: worker events (context: the Worker)

    static let workerTick: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, ctx in
        let w = Unmanaged<Worker>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(w) { w.tick() }
    }
    static let workerGraceOver: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, ctx in
        let w = Unmanaged<Worker>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(w) { w.closeListeners() }
    }

}

/// The C edge of the HTTP/2 codec: every libnghttp2 callback, turned into
/// Swift values for the session's H2Connection (its user data, unretained:
/// nghttp2 calls back only from inside our own calls into it).
enum H2Callbacks {
    static func install(on callbacks: OpaquePointer) {
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, beginHeaders)
        nghttp2_session_callbacks_set_on_header_callback(callbacks, header)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, frameReceived)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, dataChunk)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, streamClosed)
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks, invalidFrame)
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, frameSent)
    }

    private static func owner(_ userData: UnsafeMutableRawPointer?) -> H2Connection {
        Unmanaged<H2Connection>.fromOpaque(userData!).takeUnretainedValue()
    }

    private static func isHeaders(_ frame: UnsafePointer<nghttp2_frame>) -> Bool {
        frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue)
    }

    private static let beginHeaders: nghttp2_on_begin_headers_callback = { _, frame, userData in
        guard let frame, isHeaders(frame) else { return 0 }
        owner(userData).beginHeaders(frame.pointee.hd.stream_id, trailers: frame.pointee.headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0
    }

    private static let header: nghttp2_on_header_callback = { _, frame, name, nameLength, value, valueLength, _, userData in
        guard let frame, isHeaders(frame) else { return 0 }
        owner(userData).header(frame.pointee.hd.stream_id, name: UnsafeRawBufferPointer(start: name, count: nameLength),
                               value: UnsafeRawBufferPointer(start: value, count: valueLength))
        return 0
    }

    /// A complete header block, or the END_STREAM of a DATA frame.
    private static let frameReceived: nghttp2_on_frame_recv_callback = { _, frame, userData in
        guard let frame else { return 0 }
        let endStream = frame.pointee.hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        switch UInt32(frame.pointee.hd.type) {
        case NGHTTP2_HEADERS.rawValue: owner(userData).headersReceived(frame.pointee.hd.stream_id, endStream: endStream)
        case NGHTTP2_DATA.rawValue where endStream: owner(userData).bodyEnded(frame.pointee.hd.stream_id)
        default: break
        }
        return 0
    }

    private static let dataChunk: nghttp2_on_data_chunk_recv_callback = { _, _, streamID, data, length, userData in
        owner(userData).dataReceived(streamID, UnsafeRawBufferPointer(start: data, count: length))
        return 0
    }

    private static let streamClosed: nghttp2_on_stream_close_callback = { _, streamID, errorCode, userData in
        owner(userData).streamClosed(streamID, errorCode: errorCode)
        return 0
    }

    private static let invalidFrame: nghttp2_on_invalid_frame_recv_callback = { _, _, _, userData in
        owner(userData).invalidFrame()
        return 0
    }

    private static let frameSent: nghttp2_on_frame_send_callback = { _, frame, userData in
        guard let frame, frame.pointee.hd.type == UInt8(NGHTTP2_GOAWAY.rawValue) else { return 0 }
        owner(userData).goawaySent(errorCode: frame.pointee.goaway.error_code)
        return 0
    }

    static let readBody: nghttp2_data_source_read_callback = { _, streamID, buffer, length, flags, _, userData in
        guard let buffer, let flags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
        switch owner(userData).readResponseBody(streamID, into: UnsafeMutableRawBufferPointer(start: buffer, count: length)) {
        case .bytes(let n):
            return n
        case .deferred:
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        case .end(let n):
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            return n
        }
    }
}
