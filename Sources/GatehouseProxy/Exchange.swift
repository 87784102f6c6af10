import CLibevent
import GatehouseHTTP

/// Who an exchange reports to: the client side (today the HTTP/1.1
/// connection; an HTTP/2 stream next). Each call comes from a backend event;
/// the trampoline then calls `flushOutput()`.
protocol ExchangeOwner: AnyObject {
    func exchangeConnected(_ exchange: Exchange)
    /// The backend took what was queued (below the low watermark).
    func exchangeWritable(_ exchange: Exchange)
    /// Response bytes arrived.
    func exchangeReadable(_ exchange: Exchange)
    /// The backend closed (`eof`), reset, or could not be reached.
    func exchangeFailed(_ exchange: Exchange, eof: Bool)
    /// What this turn queued for the client leaves now.
    func flushOutput()
}

/// One request proxied to one backend response: the upstream head, the
/// backend connection, both bodies and the response head parser. It does not
/// know whether the client speaks HTTP/1.1 or HTTP/2 (like h2o's proxied
/// request, apart from its connection): the client side says where request
/// body bytes come from and where response bytes go. Its lifecycle decisions
/// (retry, reuse, keep-alive) are the connection state machine's.
///
/// Pooled with its request state: `begin` readies it for a request, `end`
/// lets go of the backend and the owner; its buffers stay allocated.
final class Exchange {
    private(set) var route: ProxyRuntime.Route?
    private(set) var method: Method = .get
    private(set) var backend: BackendConnection?
    /// Rendered once per request and kept until the response starts, so a
    /// request that hit a stale pooled connection can be sent again.
    let upstreamHead = ByteBuffer()
    var responseParser: ResponseHeadParser
    private(set) var requestBody: BodyState = .done
    private(set) var responseBody: BodyState = .done
    /// Chunked from the backend and chunked to the client (else decoded).
    private var reframeResponse = false
    /// When the upstream head was sent (the access log's backend time).
    private(set) var backendStarted = 0.0
    /// The owner's name for it (an HTTP/2 stream id).
    var tag: Int32 = 0
    /// Set by `begin`, cleared by `end`: the cycle with the owner lasts one request.
    private var owner: ExchangeOwner?

    init(limits: HTTPLimits) {
        responseParser = ResponseHeadParser(limits: limits)
    }

    var active: Bool { route != nil }
    var requestBodyDone: Bool { requestBody.isDone }

    /// Readies the exchange for a request whose upstream head is in `upstreamHead`.
    func begin(route: ProxyRuntime.Route, method: Method, requestBody: BodyState, owner: ExchangeOwner) {
        self.route = route
        self.method = method
        self.requestBody = requestBody
        self.owner = owner
        responseBody = .done
        reframeResponse = false
        responseParser.reset()
    }

    // MARK: - Backend connection

    /// Takes a pooled connection to the route's backend, or opens one
    /// (`fresh`: always a new one, for the retry). False if none could be made.
    func connect(worker: Worker, fresh: Bool) -> Bool {
        guard let route else { return false }
        var conn: BackendConnection?
        if !fresh { conn = worker.pool.take(route.poolKey, now: monotonicNow()) }
        if conn == nil, let address = route.backend {
            conn = BackendConnection.connect(base: worker.base, to: address, poolKey: route.poolKey)
        }
        dropBackend()
        guard let conn else { return false }
        conn.exchange = self
        backend = conn
        sendHead()
        return true
    }

    /// The backend as configured, for log lines.
    var backendName: String { route.map { "\($0.domain.backend)" } ?? "-" }

    var backendConnected: Bool { backend?.connected ?? false }
    var backendReused: Bool { backend?.reused ?? false }

    private func sendHead() {
        guard let backend else { return }
        let head = upstreamHead.bytes
        evbuffer_add(backend.output, head.baseAddress, head.count)
        backendStarted = preciseNow()
        backend.send()
    }

    private func dropBackend() {
        backend?.close()
        backend = nil
    }

    /// The exchange is over: the backend goes back to `pool` (nil: it is
    /// closed, as after any failure); the owner is let go.
    func end(returningTo pool: BackendPool?) {
        if let backend {
            self.backend = nil
            if let pool, !backend.closed {
                backend.resumeRead()
                pool.put(backend, now: monotonicNow())
            } else {
                backend.close()
            }
        }
        route = nil
        owner = nil
    }

    /// The client left an upgraded connection: what it sent reaches the
    /// backend, which then closes (within `timeout` seconds).
    func endTunnelFromClient(timeout: Double) {
        let backend = self.backend
        self.backend = nil
        backend?.closeAfterFlush(timeout: timeout)
        route = nil
        owner = nil
    }

    func pauseBackendRead(_ paused: Bool) {
        if paused { backend?.pauseRead() } else { backend?.resumeRead() }
    }

    /// Bytes queued for the backend and not yet written.
    var backendOutputLength: Int { backend?.output.evLength ?? 0 }

    // MARK: - Request body

    /// Moves what `src` holds of the request body to the backend, as chunked
    /// when it arrived chunked (sizes re-rendered, extensions dropped).
    /// Returns the result and how many bytes were taken from `src`.
    func pumpRequestBody(from src: OpaquePointer) -> (BodyState.PumpResult, taken: Int) {
        guard let backend else { return (.needMore, 0) }
        let before = src.evLength
        let result = requestBody.pump(from: src, to: backend.output, reframe: true)
        backend.send()
        return (result, before - src.evLength)
    }

    /// An HTTP/2 DATA payload for the backend: as is after a Content-Length,
    /// as one chunk when the upstream request is chunked (RFC 9112 §7.1).
    func sendRequestBody(_ data: UnsafeRawBufferPointer, chunked: Bool) {
        guard let backend, data.count > 0 else { return }
        if chunked {
            var sink = EvbufferSink(buffer: backend.output)
            writeChunkHeader(size: UInt64(data.count), into: &sink)
            sink.write(data)
            writeChunkDataEnd(into: &sink)
        } else {
            evbuffer_add(backend.output, data.baseAddress, data.count)
        }
        backend.send()
    }

    /// The HTTP/2 request body ended (END_STREAM): a chunked one gets its last chunk.
    func endRequestBody(chunked: Bool) {
        guard let backend else { return }
        if chunked {
            var sink = EvbufferSink(buffer: backend.output)
            writeLastChunk(into: &sink)
            backend.send()
        }
    }

    // MARK: - Response

    enum ResponseHeadRead {
        case incomplete
        case tooLarge
        case invalid(HTTPParseError)
        /// A head; its bytes are valid until `consumeResponseHead`.
        case head(ResponseHead, UnsafeRawBufferPointer)
    }

    /// Parses the response head from what the backend sent so far.
    func readResponseHead(maxHeaderBytes: Int) -> ResponseHeadRead {
        guard let backend else { return .incomplete }
        let bytes = Evbuffer.front(backend.input, max: maxHeaderBytes + 1)
        guard bytes.count > 0 else { return .incomplete }
        switch responseParser.parse(bytes, requestMethod: method) {
        case .incomplete: return bytes.count > maxHeaderBytes ? .tooLarge : .incomplete
        case .error(let error): return .invalid(error)
        case .complete(let head): return .head(head, bytes)
        }
    }

    var hasResponseBytes: Bool { (backend?.input.evLength ?? 0) > 0 }

    /// The head was handled: its bytes leave the backend's input. For a final
    /// response, `body` is how its body arrives and `reframe` whether a
    /// chunked body stays chunked for the client.
    func consumeResponseHead(_ head: ResponseHead, body: BodyState?, reframe: Bool) {
        guard let backend else { return }
        evbuffer_drain(backend.input, head.headLength)
        responseParser.reset()
        if let body {
            responseBody = body
            reframeResponse = reframe
        }
    }

    /// Moves what the backend sent of the response body to `dst`. Returns the
    /// result and how many bytes `dst` gained.
    func pumpResponseBody(to dst: OpaquePointer) -> (BodyState.PumpResult, added: Int) {
        guard let backend else { return (.needMore, 0) }
        let before = dst.evLength
        let result = responseBody.pump(from: backend.input, to: dst, reframe: reframeResponse)
        return (result, dst.evLength - before)
    }

    /// A tunnel: bytes move untouched both ways (RFC 9110 §15.2.2). Returns
    /// how many went each way.
    func pumpTunnel(client input: OpaquePointer, client output: OpaquePointer) -> (toBackend: Int, toClient: Int) {
        guard let backend else { return (0, 0) }
        let up = input.evLength
        if up > 0 {
            _ = Evbuffer.move(from: input, to: backend.output, count: up)
            backend.send()
        }
        let down = backend.input.evLength
        if down > 0 { _ = Evbuffer.move(from: backend.input, to: output, count: down) }
        return (up, down)
    }

    // MARK: - Backend events (from BackendConnection)

    func backendEvent(_ b: BackendConnection, _ event: BackendEvent) {
        guard b === backend, let owner else {
            // A stale report (the exchange moved on): the connection is not ours.
            if event == .failed(eof: true) || event == .failed(eof: false) { b.close() }
            return
        }
        switch event {
        case .connected: owner.exchangeConnected(self)
        case .writable: owner.exchangeWritable(self)
        case .readable: owner.exchangeReadable(self)
        case .failed(let eof):
            // The owner may still read what arrived before the EOF; whatever it
            // decides next (`end`, `connect(fresh:)`) closes this connection.
            owner.exchangeFailed(self, eof: eof)
        }
    }

    /// The owner, for the trampoline's flush after a backend event.
    var currentOwner: ExchangeOwner? { owner }
}

enum BackendEvent: Equatable {
    case connected, writable, readable
    case failed(eof: Bool)
}
