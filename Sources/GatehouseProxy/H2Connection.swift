import CLibevent
import GatehouseConfig
import GatehouseHTTP
import GatehouseLog
import GatehouseTLS

/// The HTTP/2 codec of one client connection (RFC 9113): libnghttp2 does the
/// framing, HPACK and flow control; each stream is one `Exchange` to the
/// domain's backend over HTTP/1.1, under the same routing and limits as an
/// HTTP/1.1 request. Bytes come from and go to the connection's transport;
/// frames queued during one turn of the event loop leave in one flush.
final class H2Connection: ExchangeOwner {
    unowned let connection: ClientConnection
    /// Outlives every connection on it.
    private unowned(unsafe) let worker: Worker
    private let runtime: ProxyRuntime
    private var session: H2Session!
    private var streams: [Int32: H2Stream] = [:]
    private var goawaySent = false
    private var terminated = false
    /// Since when the connection has had no stream and no frame: the idle
    /// timer counts from here.
    private var idleSince: Double
    /// The read failed on a flood nghttp2 detected.
    private var abuse = false
    /// A response stream's buffer holds at most this much before its
    /// backend waits (the client's flow-control window does the rest).
    static let streamBufferHighWater = 256 * 1024
    static let streamBufferLowWater = 64 * 1024
    /// SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §6.5.2): what nginx and
    /// HAProxy advertise.
    static let maxConcurrentStreams: UInt32 = 100
    /// Per-stream receive window: how much of a request body a client may
    /// send before the backend took it.
    static let streamWindow: UInt32 = 256 * 1024
    static let connectionWindow: Int32 = 1 << 20
    /// Reusable header block for responses.
    private var block = H2FieldBlock()
    /// Counts of what costs us and not the client (MadeYouReset,
    /// CVE-2025-8671; Rapid Reset, CVE-2023-44487): protocol errors and resets.
    private var glitches = GlitchCounter()
    private static let protocolLog = RateLimitedLog()

    /// Streams finished on this connection, ready for the next ones: their
    /// builder, exchange and buffers are reused.
    private var spareStreams: [H2Stream] = []
    private static let maxSpareStreams = 16
    /// The stream the last callback was about (nghttp2 reports a header
    /// block field by field).
    private var recent: H2Stream?
    /// Requests accepted during the current read, started once all of it is
    /// processed: a stream the same read resets (Rapid Reset) or contradicts
    /// (DATA beyond its content-length) never reaches a backend.
    private var pendingStarts: [H2Stream] = []
    /// Some stream's buffer drained below the low watermark (see `pumpWaiting`).
    private var pumpWanted = false

    init?(connection: ClientConnection) {
        self.connection = connection
        worker = connection.worker
        runtime = connection.runtime
        idleSince = monotonicNow()
        let settings = H2Session.Settings(maxConcurrentStreams: Self.maxConcurrentStreams, initialWindowSize: Self.streamWindow,
                                          maxHeaderListSize: UInt32(connection.runtime.limits.maxHeaderBytes),
                                          connectionWindow: Self.connectionWindow)
        guard let made = H2Session(owner: self, settings: settings) else { return nil }
        session = made
    }


    // MARK: - Input and output

    /// Feeds what the transport read to nghttp2. False: the connection is
    /// beyond repair (a protocol error, a flood); its GOAWAY is queued.
    func readable(_ input: OpaquePointer) -> Bool {
        guard !terminated else {
            // Nothing more is read once the connection is ending.
            evbuffer_drain(input, input.evLength)
            return true
        }
        idleSince = monotonicNow()
        while input.evLength > 0 {
            let bytes = Evbuffer.front(input, max: 16 * 1024)
            switch session.receive(bytes) {
            case .consumed(let n):
                evbuffer_drain(input, n)
            case .failed(let flood, let reason):
                // Floods (SETTINGS, PING, RST_STREAM, CONTINUATION) are
                // abuse, not mistakes: ENHANCE_YOUR_CALM (RFC 9113 §7).
                abuse = flood
                Self.protocolLog.write("HTTP/2 connection from \(String(decoding: self.connection.clientAddress, as: UTF8.self)) closed: \(reason)")
                return false
            }
        }
        startPending()
        return !glitches.exceeded
    }

    /// Moves what nghttp2 has to send into the transport's output; stops at
    /// the high watermark (the flush makes room and asks again).
    func produce(into output: OpaquePointer) -> Bool {
        session.send(into: output, limit: ProxyBuffers.writeHighWater)
    }

    /// Neither side has anything more to say (after GOAWAY, or an error).
    var finished: Bool { session.finished }

    /// GOAWAY went out and no stream is left.
    var closable: Bool { goawaySent && streams.isEmpty }

    /// Ends the connection with GOAWAY: ENHANCE_YOUR_CALM past the glitch
    /// limit, else the error nghttp2 found (it queued its own GOAWAY then).
    func terminate() {
        goawaySent = true
        terminated = true
        let calm = glitches.exceeded || abuse
        if calm { worker.stats.add(.http2Calm) }
        session.terminate(calm ? .enhanceYourCalm : .protocolError)
        for stream in streams.values {
            stream.exchange?.end(returningTo: nil)
            stream.exchange = nil
            stream.machine = nil
        }
    }

    // MARK: - Lifecycle

    /// SIGTERM: GOAWAY with the last stream we took (RFC 9113 §6.8); streams
    /// in flight finish, later ones are refused by nghttp2.
    func drain() {
        guard !goawaySent else { return }
        goawaySent = true
        session.goaway()
    }

    /// The connection is closing: every exchange's backend is dropped.
    func close() {
        for stream in streams.values { stream.exchange?.end(returningTo: nil) }
        streams.removeAll()
    }

    /// The earliest time a stream's timer or the connection's idle timer runs out.
    func deadline() -> Double {
        let t = runtime.snapshot.timeouts
        var next = streams.isEmpty ? idleSince + t.idle : Double.infinity
        // A reset stream waits only for its RST_STREAM to be written.
        for stream in streams.values where !stream.resetSent {
            next = min(next, stream.deadline(t))
        }
        return next
    }

    /// Returns true when the connection itself timed out (no streams, idle).
    func timerFired(now: Double) -> Bool {
        let t = runtime.snapshot.timeouts
        if streams.isEmpty { return now >= idleSince + t.idle }
        for stream in Array(streams.values) where !stream.resetSent {
            if var machine = stream.machine {
                guard let outcome = machine.timerFired(now: now, t) else { continue }
                stream.machine = machine
                if case .fail(let status) = outcome {
                    worker.stats.add(status == 504 ? .backendTimeouts : .backendConnectErrors)
                    Log.warning("\(status): backend timeout on stream \(stream.id)")
                }
                apply(outcome, stream)
            } else if now >= stream.deadline(t) {
                // Headers that never end, a body nobody reads (a zero window):
                // reset, never ended as if complete.
                reset(stream, .cancel)
            }
        }
        return false
    }

    // MARK: - Events from nghttp2 (through H2Callbacks)

    func beginHeaders(_ streamID: Int32, trailers: Bool) {
        if !trailers {
            let stream: H2Stream
            if let spare = spareStreams.popLast() {
                spare.reuse(id: streamID, now: monotonicNow())
                stream = spare
            } else {
                stream = H2Stream(id: streamID, limits: runtime.limits, now: monotonicNow())
            }
            streams[streamID] = stream
            recent = stream
        } else if let stream = lookup(streamID) {
            stream.builder.beginTrailers()
        }
    }

    func header(_ streamID: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        guard let stream = lookup(streamID) else { return }
        stream.builder.add(name: name, value: value)
    }

    private func lookup(_ streamID: Int32) -> H2Stream? {
        if let recent, recent.id == streamID { return recent }
        let stream = streams[streamID]
        recent = stream
        return stream
    }

    /// A complete header block: the request's, or its trailers.
    func headersReceived(_ streamID: Int32, endStream: Bool) {
        guard let stream = lookup(streamID) else { return }
        if stream.requestStarted {
            // Trailers (RFC 9113 §8.1): validated, then dropped.
            if stream.builder.finishTrailers(endStream: endStream) != nil { return refuseMalformed(stream) }
            if endStream { requestBodyEnded(stream) }
        } else {
            startRequest(stream, endStream: endStream)
        }
    }

    /// A DATA frame with END_STREAM.
    func bodyEnded(_ streamID: Int32) {
        if let stream = lookup(streamID) { requestBodyEnded(stream) }
    }

    func dataReceived(_ streamID: Int32, _ data: UnsafeRawBufferPointer) {
        guard let stream = lookup(streamID) else {
            // A stream we reset: its window still counts for the connection.
            session.consumeConnection(data.count)
            return
        }
        guard !stream.answered else {
            // Refused or answered locally: the rest of the body is read and dropped.
            session.consume(streamID, data.count)
            return
        }
        stream.received += UInt64(data.count)
        if let limit = stream.contentLength, stream.received > limit {
            // RFC 9113 §8.1.1: more DATA than content-length is malformed.
            return refuseMalformed(stream)
        }
        if let max = stream.maxBody, stream.received > max {
            return failStream(stream, status: 413)
        }
        stream.lastProgress = monotonicNow()
        guard let ex = stream.exchange else {
            // The exchange ended (its backend answered early): dropped too.
            session.consume(streamID, data.count)
            return
        }
        stream.unconsumed += data.count
        forwardBody(stream, ex, data)
        stream.machine?.progress(now: stream.lastProgress)
        if !stream.startPending { acknowledgeBody(stream, ex) }
    }

    /// Returns flow-control credit (WINDOW_UPDATE) for body bytes the backend
    /// took: at most a window per stream waits in Gatehouse.
    private func acknowledgeBody(_ stream: H2Stream, _ ex: Exchange) {
        guard stream.unconsumed > 0, ex.backendOutputLength <= ProxyBuffers.writeHighWater else { return }
        session.consume(stream.id, stream.unconsumed)
        stream.unconsumed = 0
    }

    func streamClosed(_ streamID: Int32, errorCode: UInt32) {
        guard let stream = streams.removeValue(forKey: streamID) else { return }
        if recent === stream { recent = nil }
        if streams.isEmpty { idleSince = monotonicNow() }
        defer { if spareStreams.count < Self.maxSpareStreams { spareStreams.append(stream) } }
        if errorCode != H2Session.ErrorCode.noError.rawValue, stream.exchange != nil {
            // Reset by the client while its exchange was in flight (Rapid
            // Reset opens and cancels streams in a loop).
            glitches.count(.clientReset, now: monotonicNow())
        }
        if let ex = stream.exchange {
            stream.machine?.cancel()
            ex.end(returningTo: nil)
            stream.exchange = nil
        }
        finishRecord(stream)
    }

    func invalidFrame() { glitches.count(.protocolError, now: monotonicNow()) }

    /// A GOAWAY went out: one with an error is logged (nghttp2 ends some
    /// connections on its own, e.g. past SETTINGS_MAX_CONCURRENT_STREAMS).
    func goawaySent(errorCode: UInt32) {
        goawaySent = true
        guard errorCode != H2Session.ErrorCode.noError.rawValue else { return }
        Self.protocolLog.write("HTTP/2 connection from \(String(decoding: self.connection.clientAddress, as: UTF8.self)) ended: GOAWAY \(H2Session.describe(errorCode: errorCode))")
    }

    /// nghttp2 asks for response body bytes for `streamID`.
    func readResponseBody(_ streamID: Int32, into buffer: UnsafeMutableRawBufferPointer) -> H2Session.BodyChunk {
        guard let stream = lookup(streamID), let body = stream.responseBody else { return .end(0) }
        let n = Int(evbuffer_remove(body, buffer.baseAddress, buffer.count))
        if n > 0 {
            stream.record?.bytesOut += UInt64(n)
            stream.lastProgress = monotonicNow()
            stream.machine?.progress(now: stream.lastProgress)
        }
        if body.evLength == 0, stream.responseComplete { return .end(max(n, 0)) }
        if n <= 0 {
            stream.deferred = true
            return .deferred
        }
        // Room again: a backend paused for this stream goes on.
        if stream.backendPaused, body.evLength <= Self.streamBufferLowWater, let ex = stream.exchange {
            stream.backendPaused = false
            stream.machine?.clientBackpressure(false)
            ex.pauseBackendRead(false)
            stream.wantsPump = true
            pumpWanted = true
        }
        return .bytes(n)
    }

    /// After a turn of nghttp2 output: streams whose buffer drained pump their backend again.
    func pumpWaiting() {
        guard pumpWanted else { return }
        pumpWanted = false
        for stream in Array(streams.values) where stream.wantsPump {
            stream.wantsPump = false
            if let ex = stream.exchange { pumpResponse(stream, ex) }
        }
    }

    // MARK: - Requests

    private func startRequest(_ stream: H2Stream, endStream: Bool) {
        stream.requestStarted = true
        worker.stats.add(.requestsHTTP2)
        let request: H2Request
        switch stream.builder.finish(endStream: endStream, connectProtocolEnabled: true) {
        case .failure(let error):
            logRefused(stream, error.reason)
            switch error.disposition {
            case .protocolError: return refuseMalformed(stream)
            case .respond(let status): return respondLocally(stream, status: status)
            }
        case .success(let r):
            request = r
        }
        beginRecord(stream, request)
        let arena = stream.builder.arena
        let routeID: Int? = arena.withUnsafeBytes { bytes in
            let host = hostWithoutPort(bytes[span: request.authority])
            let handshakeDomain = connection.ssl.flatMap { TLSServer.selectedDomain(of: $0) }
            switch runtime.router.route(scheme: .https, handshakeDomain: handshakeDomain, host: host, path: bytes[span: request.path]) {
            case .forward(let domain):
                return domain
            case .refuse(let refusal):
                let status = refusal == .misdirected ? 421 : 404
                worker.stats.refused(refusal, "\(refusal.label): \(String(decoding: self.connection.clientAddress, as: UTF8.self)): HTTP/2 stream \(stream.id) for \(String(decoding: host.prefix(200), as: UTF8.self)): \(status)")
                stream.localStatus = status
                return nil
            case .redirect, .notRedirected, .pendingCertificate, .acmeAnswer:
                // Plain-HTTP decisions; HTTP/2 runs over TLS only.
                stream.localStatus = 404
                return nil
            }
        }
        guard let routeID else { return respondLocally(stream, status: stream.localStatus) }
        let route = runtime.routes[routeID]
        stream.route = route
        stream.maxBody = route.domain.maxBodyBytes
        if let n = request.contentLength, let max = route.domain.maxBodyBytes, n > max {
            return respondLocally(stream, status: 413)
        }
        stream.contentLength = request.contentLength
        stream.chunkedUpstream = request.framing == .chunked

        let ex = stream.takeExchange(limits: runtime.limits)
        ex.upstreamHead.removeAll()
        ex.tag = stream.id
        var sink = ByteBufferSink(buffer: ex.upstreamHead)
        // RFC 8441: a WebSocket becomes an HTTP/1.1 Upgrade with a key of ours.
        stream.webSocketKey = request.isWebSocket ? WebSocketKey.random() : nil
        connection.clientAddress.withUnsafeBytes { client in
            writeUpstreamRequestHead(stream.builder, clientAddress: client, webSocketKey: stream.webSocketKey, into: &sink)
        }
        ex.begin(route: route, method: request.isWebSocket ? .get : request.methodKind, requestBody: .done, owner: self)
        stream.exchange = ex
        stream.facts = ExchangeStateMachine.Request(idempotent: request.methodKind.isIdempotent && !request.isWebSocket,
                                                    hadBody: !endStream, upgrade: request.isWebSocket)
        stream.endStreamSeen = endStream
        // "content-length: 0" without END_STREAM: the head alone is a complete
        // request, so it waits until END_STREAM confirms there is no body.
        stream.waitsForEnd = request.contentLength == 0 && !endStream
        stream.startPending = true
        pendingStarts.append(stream)
    }

    /// Starts the requests of the read just processed (see `pendingStarts`).
    private func startPending() {
        guard !pendingStarts.isEmpty else { return }
        let now = monotonicNow()
        var waiting: [H2Stream] = []
        for stream in pendingStarts where stream.startPending && !stream.answered && streams[stream.id] === stream {
            if stream.waitsForEnd && !stream.endStreamSeen {
                waiting.append(stream)
                continue
            }
            start(stream, now: now)
        }
        pendingStarts = waiting
    }

    private func start(_ stream: H2Stream, now: Double) {
        guard let ex = stream.exchange, let facts = stream.facts else { return }
        stream.startPending = false
        let bodyDone = stream.endStreamSeen
        guard ex.connect(worker: worker, fresh: false) else {
            stream.machine = ExchangeStateMachine(facts, requestBodyDone: bodyDone, connected: false, now: now)
            worker.stats.add(.backendConnectErrors)
            Log.warning("502: cannot connect to backend \(ex.backendName)")
            return failStream(stream, status: 502)
        }
        stream.machine = ExchangeStateMachine(facts, requestBodyDone: bodyDone, connected: ex.backendConnected, now: now)
        // What arrived while the start waited.
        if let pending = stream.pendingBody, pending.evLength > 0 {
            let bytes = Evbuffer.front(pending, max: pending.evLength)
            ex.sendRequestBody(bytes, chunked: stream.chunkedUpstream)
            evbuffer_drain(pending, bytes.count)
        }
        if bodyDone, stream.chunkedUpstream { ex.endRequestBody(chunked: true) }
        acknowledgeBody(stream, ex)
    }

    /// Request body bytes on their way to the backend. With a content-length
    /// the last byte waits for END_STREAM: until then more DATA could still
    /// prove the request malformed, and the backend must not have it whole.
    private func forwardBody(_ stream: H2Stream, _ ex: Exchange, _ data: UnsafeRawBufferPointer) {
        var data = data
        if let limit = stream.contentLength, stream.received == limit, !stream.endStreamSeen, data.count > 0 {
            stream.heldByte = data[data.count - 1]
            data = UnsafeRawBufferPointer(rebasing: data[..<(data.count - 1)])
        }
        guard data.count > 0 else { return }
        if stream.startPending {
            let pending = stream.makePendingBody()
            evbuffer_add(pending, data.baseAddress, data.count)
        } else {
            ex.sendRequestBody(data, chunked: stream.chunkedUpstream)
        }
    }

    private func requestBodyEnded(_ stream: H2Stream) {
        guard !stream.answered else { return }
        if let limit = stream.contentLength, stream.received != limit {
            // RFC 9113 §8.1.1: less DATA than content-length.
            return refuseMalformed(stream)
        }
        stream.endStreamSeen = true
        if let held = stream.heldByte, let ex = stream.exchange {
            stream.heldByte = nil
            withUnsafeBytes(of: held) { forwardBody(stream, ex, $0) }
        }
        // A start still pending takes the end of the body with it.
        if stream.startPending { return }
        if stream.machine?.phase == .tunnel, let ex = stream.exchange {
            // The client ended its side of a WebSocket: what it sent reaches
            // the backend, which then closes; the stream ends too.
            ex.endTunnelFromClient(timeout: runtime.snapshot.timeouts.idle)
            stream.exchange = nil
            stream.machine = nil
            stream.responseComplete = true
            return resumeData(stream)
        }
        guard let ex = stream.exchange, var machine = stream.machine, !machine.requestBodyDone else { return }
        ex.endRequestBody(chunked: stream.chunkedUpstream)
        machine.bodyDone(now: monotonicNow())
        stream.machine = machine
    }

    // MARK: - Exchange reports

    func exchangeConnected(_ exchange: Exchange) {
        guard let stream = streams[exchange.tag] else { return }
        stream.machine?.backendConnected(now: monotonicNow())
    }

    func exchangeWritable(_ exchange: Exchange) {
        guard let stream = streams[exchange.tag] else { return }
        acknowledgeBody(stream, exchange)
    }

    func exchangeReadable(_ exchange: Exchange) {
        guard let stream = streams[exchange.tag] else { return }
        pumpResponse(stream, exchange)
    }

    func exchangeFailed(_ exchange: Exchange, eof: Bool) {
        guard let stream = streams[exchange.tag], stream.exchange === exchange, stream.machine != nil else {
            exchange.end(returningTo: nil)
            return
        }
        // A close-delimited body or a tunnel ends with the EOF: what arrived goes first.
        if eof, stream.machine?.responseUntilClose == true || stream.machine?.phase == .tunnel {
            pumpResponse(stream, exchange)
        }
        guard stream.exchange === exchange, var machine = stream.machine else { return }
        let connected = exchange.backendConnected
        let outcome = machine.backendFailed(eof: eof, reused: exchange.backendReused, now: monotonicNow())
        stream.machine = machine
        switch outcome {
        case .retry:
            guard exchange.connect(worker: worker, fresh: true) else {
                worker.stats.add(.backendConnectErrors)
                Log.warning("502: cannot connect to backend \(exchange.backendName)")
                return failStream(stream, status: 502)
            }
            return
        case .fail:
            worker.stats.add(connected ? .backendResetErrors : .backendConnectErrors)
            Log.warning(connected ? "502: backend \(exchange.backendName) closed the connection before responding"
                                  : "502: cannot connect to backend \(exchange.backendName)")
        case .abort:
            Log.warning("backend \(exchange.backendName) closed mid-response")
        default:
            break
        }
        apply(outcome, stream)
    }

    func flushOutput() { connection.scheduleFlush() }

    // MARK: - Responses

    private func pumpResponse(_ stream: H2Stream, _ ex: Exchange) {
        while let machine = stream.machine, !machine.isDone, stream.exchange === ex {
            if !machine.responseStarted {
                guard ex.hasResponseBytes else { return }
                stream.machine?.responseBytesArrived()
                switch ex.readResponseHead(maxHeaderBytes: runtime.limits.maxHeaderBytes) {
                case .incomplete:
                    return
                case .tooLarge:
                    Log.warning("backend \(ex.backendName): response head too large")
                    return apply(.fail(status: 502), stream)
                case .invalid(let error):
                    Log.warning("invalid response from backend \(ex.backendName): \(error)")
                    return apply(.fail(status: 502), stream)
                case .head(let head, let bytes):
                    startResponse(stream, ex, head, bytes)
                    continue
                }
            }
            guard let body = stream.responseBody else { return }
            let (result, _) = ex.pumpResponseBody(to: body)
            switch result {
            case .progress, .needMore:
                stream.machine?.progress(now: monotonicNow())
                if body.evLength > Self.streamBufferHighWater, !stream.backendPaused {
                    stream.backendPaused = true
                    stream.machine?.clientBackpressure(true)
                    ex.pauseBackendRead(true)
                }
                resumeData(stream)
                return
            case .done:
                stream.responseComplete = true
                resumeData(stream)
                return update(stream) { $0.responseDone() }
            case .error(let error):
                Log.warning("invalid response body from backend \(ex.backendName): \(error)")
                return update(stream) { $0.responseFailed() }
            case .closedEarly:
                return
            }
        }
    }

    private func startResponse(_ stream: H2Stream, _ ex: Exchange, _ head: ResponseHead, _ bytes: UnsafeRawBufferPointer) {
        let https = true
        let route = stream.route
        if (100..<200).contains(head.status) {
            // RFC 9113 §8.1: interim responses pass as HEADERS; 101 cannot
            // happen (no Upgrade is forwarded from HTTP/2).
            if head.status == 101 { return startTunnel(stream, ex, head, bytes) }
            makeH2ResponseFields(head, in: bytes, hsts: nil, upgradeInsecureRequests: false, into: &block)
            submitHeaders(stream, final: false, withBody: false)
            ex.consumeResponseHead(head, body: nil, reframe: false)
            return
        }
        worker.stats.countResponse(status: head.status)
        let body: BodyState
        switch head.framing {
        case .none: body = .done
        case .contentLength(let n): body = n == 0 ? .done : .length(n)
        case .chunked: body = .chunked(ChunkedDecoder(limits: runtime.limits))
        case .untilClose: body = .untilClose
        }
        stream.machine?.responseHead(backendKeepAlive: head.keepAlive, backendUntilClose: head.framing == .untilClose,
                                     now: monotonicNow())
        let hsts: [UInt8]? = route?.hsts
        hsts.withOptionalBytes(enabled: https) { hsts in
            makeH2ResponseFields(head, in: bytes, hsts: hsts, upgradeInsecureRequests: route?.domain.upgradeInsecureRequests == true,
                                 into: &block)
        }
        let backendSeconds = preciseNow() - ex.backendStarted
        worker.stats.observeBackend(seconds: backendSeconds)
        stream.record?.status = head.status
        stream.record?.backendSeconds = backendSeconds
        ex.consumeResponseHead(head, body: body, reframe: false)
        if body.isDone {
            stream.responseComplete = true
            submitHeaders(stream, final: true, withBody: false)
            update(stream) { $0.responseDone() }
        } else {
            _ = stream.makeResponseBody()
            submitHeaders(stream, final: true, withBody: true)
        }
    }

    /// RFC 8441 §5: the backend's 101 becomes a 200 on the stream, whose DATA
    /// frames then carry the WebSocket both ways until either side ends.
    private func startTunnel(_ stream: H2Stream, _ ex: Exchange, _ head: ResponseHead, _ bytes: UnsafeRawBufferPointer) {
        let accepted = stream.webSocketKey.map { key in
            head.headers.contains { field in
                asciiEqualIgnoringCase(bytes[span: field.name], "sec-websocket-accept")
                    && key.acceptMatches(bytes[span: field.value])
            }
        } ?? false
        guard accepted, var machine = stream.machine, machine.switchingProtocols(now: monotonicNow()) == .none else {
            Log.warning("502: backend \(ex.backendName) switched protocols without a matching WebSocket upgrade")
            return apply(.fail(status: 502), stream)
        }
        stream.machine = machine
        worker.stats.countResponse(status: 200)
        let route = stream.route
        let hsts: [UInt8]? = route?.hsts
        hsts.withOptionalBytes(enabled: true) { hsts in
            makeH2ResponseFields(head, in: bytes, hsts: hsts, upgradeInsecureRequests: false, webSocket: true, into: &block)
        }
        stream.record?.status = 101
        stream.record?.backendSeconds = preciseNow() - ex.backendStarted
        ex.consumeResponseHead(head, body: .untilClose, reframe: false)
        _ = stream.makeResponseBody()
        submitHeaders(stream, final: true, withBody: true)
        // Body bytes the client sent before the 200 went to the backend already.
        acknowledgeBody(stream, ex)
    }

    /// Submits `block` on the stream: a final response (with or without a
    /// body from `readResponseBody`) or interim HEADERS.
    private func submitHeaders(_ stream: H2Stream, final: Bool, withBody: Bool) {
        session.submit(stream.id, block, withBody: withBody, interim: !final)
    }

    private func resumeData(_ stream: H2Stream) {
        guard stream.deferred else { return }
        stream.deferred = false
        session.resume(stream.id)
    }

    /// Runs an exchange event on the stream's machine and carries out its outcome.
    private func update(_ stream: H2Stream, _ event: (inout ExchangeStateMachine) -> ExchangeStateMachine.Outcome) {
        guard var machine = stream.machine else { return }
        let outcome = event(&machine)
        stream.machine = machine
        apply(outcome, stream)
    }

    /// Carries out an exchange outcome on its stream.
    private func apply(_ outcome: ExchangeStateMachine.Outcome, _ stream: H2Stream) {
        switch outcome {
        case .none, .retry:
            break
        case .fail(let status):
            failStream(stream, status: status)
        case .abort:
            // RFC 9113 §8.1: a truncated response is a reset stream, never an END_STREAM.
            reset(stream, .internalError)
        case .finish(let reuse):
            stream.exchange?.end(returningTo: reuse ? worker.pool : nil)
            stream.exchange = nil
            stream.machine = nil
            // The backend's side is complete: END_STREAM once the buffer drains.
            stream.responseComplete = true
            resumeData(stream)
            if stream.unconsumed > 0 {
                session.consume(stream.id, stream.unconsumed)
                stream.unconsumed = 0
            }
        }
    }

    /// Before any response byte: Gatehouse's own answer; the backend is dropped.
    private func failStream(_ stream: H2Stream, status: Int) {
        stream.exchange?.end(returningTo: nil)
        stream.exchange = nil
        stream.machine = nil
        respondLocally(stream, status: status)
    }

    private func respondLocally(_ stream: H2Stream, status: Int) {
        guard !stream.answered else { return }
        stream.answered = true
        worker.stats.countResponse(status: status)
        let route = stream.route ?? handshakeRoute()
        let hsts: [UInt8]? = route?.hsts
        hsts.withOptionalBytes(enabled: true) { hsts in
            makeH2ErrorFields(status: status, hsts: hsts, upgradeInsecureRequests: route?.domain.upgradeInsecureRequests == true,
                              extra: status == 405 ? ("allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH") : nil,
                              into: &block)
        }
        let body = stream.makeResponseBody()
        evbuffer_drain(body, body.evLength)
        var sink = EvbufferSink(buffer: body)
        writeErrorBody(status: status, into: &sink)
        stream.responseComplete = true
        stream.record?.status = status
        submitHeaders(stream, final: true, withBody: true)
    }

    private func handshakeRoute() -> ProxyRuntime.Route? {
        guard let ssl = connection.ssl, let id = TLSServer.selectedDomain(of: ssl), id < runtime.routes.count else { return nil }
        return runtime.routes[id]
    }

    /// RFC 9113 §8.1.1: a malformed request is a stream error PROTOCOL_ERROR.
    private func refuseMalformed(_ stream: H2Stream) {
        worker.stats.add(.requestsRejected)
        glitches.count(.protocolError, now: monotonicNow())
        reset(stream, .protocolError)
    }

    private func reset(_ stream: H2Stream, _ code: H2Session.ErrorCode) {
        guard !stream.resetSent else { return }
        stream.resetSent = true
        stream.answered = true
        stream.exchange?.end(returningTo: nil)
        stream.exchange = nil
        stream.machine = nil
        glitches.count(.serverReset, now: monotonicNow())
        worker.stats.add(.http2StreamsReset)
        session.reset(stream.id, code)
    }

    private func logRefused(_ stream: H2Stream, _ reason: StaticString) {
        worker.stats.add(.requestsRejected)
        Self.protocolLog.write("refused HTTP/2 stream \(stream.id) from \(String(decoding: self.connection.clientAddress, as: UTF8.self)): \(reason)")
    }

    // MARK: - Access log

    private func beginRecord(_ stream: H2Stream, _ request: H2Request) {
        guard worker.accessLog != nil else { return }
        var r = AccessRecord(start: wallClockNow(), client: connection.clientAddress)
        if let ssl = connection.ssl {
            r.sni = TLSServer.serverName(of: ssl)
            r.tlsVersion = Array(TLSServer.negotiatedVersion(of: ssl).utf8)
            r.cipher = Array(TLSServer.negotiatedCipher(of: ssl).utf8)
        }
        r.stream = stream.id
        stream.builder.arena.withUnsafeBytes { bytes in
            r.method = Array(bytes[span: request.method])
            r.target = Array(bytes[span: request.path])
            r.host = Array(bytes[span: request.authority])
            for field in stream.builder.fields {
                let name = bytes[span: field.name]
                if name.elementsEqual("user-agent".utf8) {
                    r.userAgent = Array(bytes[span: field.value])
                } else if name.elementsEqual("referer".utf8) {
                    r.referer = Array(bytes[span: field.value])
                }
            }
        }
        stream.record = r
        stream.recordStarted = preciseNow()
    }

    private func finishRecord(_ stream: H2Stream) {
        guard var r = stream.record, let log = worker.accessLog else { return }
        stream.record = nil
        r.bytesIn = stream.received
        r.totalSeconds = preciseNow() - stream.recordStarted
        log.append(r)
    }
}

/// One HTTP/2 stream: its request as it arrives, its exchange, its response body.
final class H2Stream {
    private(set) var id: Int32
    private(set) var opened: Double
    private var spareExchange: Exchange?
    var builder: H2RequestBuilder
    var requestStarted = false
    var route: ProxyRuntime.Route?
    var machine: ExchangeStateMachine?
    var exchange: Exchange?
    var chunkedUpstream = false
    var contentLength: UInt64?
    var maxBody: UInt64?
    /// Request body bytes received.
    var received: UInt64 = 0
    /// Received but not yet acknowledged with WINDOW_UPDATE.
    var unconsumed = 0
    /// Decoded response body waiting for DATA frames.
    var responseBody: OpaquePointer?
    var responseComplete = false
    /// nghttp2 was told to wait for more body (`.deferred`).
    var deferred = false
    var backendPaused = false
    var wantsPump = false
    var localStatus = 0
    /// Set between the request's HEADERS and its start after the read.
    var startPending = false
    var waitsForEnd = false
    var facts: ExchangeStateMachine.Request?
    var endStreamSeen = false
    /// The content-length body's last byte, held until END_STREAM.
    var heldByte: UInt8?
    /// Body bytes that arrived before the start.
    var pendingBody: OpaquePointer?
    /// The Sec-WebSocket-Key sent upstream for an RFC 8441 WebSocket.
    var webSocketKey: WebSocketKey?
    /// Gatehouse answered it itself or reset it: what still arrives is dropped.
    var answered = false
    /// RST_STREAM is queued: the stream only waits for nghttp2 to write it.
    var resetSent = false
    /// Body bytes last moved either way (a stalled stream is reset after `idle`).
    var lastProgress: Double
    var record: AccessRecord?
    var recordStarted = 0.0

    init(id: Int32, limits: HTTPLimits, now: Double) {
        self.id = id
        opened = now
        lastProgress = now
        builder = H2RequestBuilder(limits: limits)
    }

    /// A finished stream readied for a new one (its storage is kept).
    func reuse(id: Int32, now: Double) {
        self.id = id
        opened = now
        lastProgress = now
        builder.reset()
        requestStarted = false
        route = nil
        machine = nil
        exchange = nil
        chunkedUpstream = false
        contentLength = nil
        maxBody = nil
        received = 0
        unconsumed = 0
        if let responseBody { evbuffer_drain(responseBody, responseBody.evLength) }
        responseComplete = false
        deferred = false
        backendPaused = false
        wantsPump = false
        localStatus = 0
        startPending = false
        waitsForEnd = false
        facts = nil
        endStreamSeen = false
        heldByte = nil
        if let pendingBody { evbuffer_drain(pendingBody, pendingBody.evLength) }
        answered = false
        resetSent = false
        webSocketKey = nil
        record = nil
    }

    /// The response body's buffer, made on first use and kept for reuse.
    func makeResponseBody() -> OpaquePointer {
        if let responseBody { return responseBody }
        let buffer = evbuffer_new()!
        responseBody = buffer
        return buffer
    }

    /// The exchange, kept with the stream for reuse.
    func takeExchange(limits: HTTPLimits) -> Exchange {
        if let spareExchange, spareExchange.responseParser.limits == limits { return spareExchange }
        let made = Exchange(limits: limits)
        spareExchange = made
        return made
    }

    deinit {
        responseBody.map { evbuffer_free($0) }
        pendingBody.map { evbuffer_free($0) }
    }

    func makePendingBody() -> OpaquePointer {
        if let pendingBody { return pendingBody }
        let buffer = evbuffer_new()!
        pendingBody = buffer
        return buffer
    }

    func deadline(_ t: TimeoutSettings) -> Double {
        if let machine { return machine.deadline(t) }
        // A header block must end within request_header; after that, bytes
        // must move (a local answer or a finished exchange's body draining).
        return requestStarted ? lastProgress + t.idle : opened + t.requestHeader
    }
}

extension WebSocketKey {
    /// 16 bytes from the system's CSPRNG (RFC 6455 §4.1: a random nonce).
    static func random() -> WebSocketKey {
        var generator = SystemRandomNumberGenerator()
        let words = (generator.next() as UInt64, generator.next() as UInt64)
        return Swift.withUnsafeBytes(of: words) { WebSocketKey(random: $0) }
    }
}
