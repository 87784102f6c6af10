#if canImport(Glibc)
import Glibc
#endif
import CLibevent
import COpenSSL
import CShims
import GatehouseConfig
import GatehouseHTTP
import GatehouseLog
import GatehouseTLS

/// One client connection, from accept to close: the single object the
/// callbacks (in lifecycle order below) operate on, and today its HTTP/1.1
/// codec. Its transport moves bytes; its state machine decides what happens
/// next (this class only carries out its actions); each request is an
/// `Exchange` with one backend. It keeps the runtime it was accepted under,
/// so a reload never changes a connection in flight.
final class ClientConnection: ExchangeOwner {
    unowned let worker: Worker
    let runtime: ProxyRuntime
    let listener: ListenerSettings
    /// The socket (and the SSL) and their I/O; the HTTP logic below only
    /// sees its two evbuffers and its reports.
    private let transport: ClientTransport
    /// Valid while the transport is open (it frees the SSL when it closes).
    let ssl: OpaquePointer?
    private let timer: OpaquePointer
    let clientAddress: [UInt8]
    /// What the per-client cap counted this connection under (nil: no cap).
    let capKey: [UInt8]?

    private var machine: ConnectionStateMachine
    /// The request in progress (parser, exchange, access record), nil while
    /// idle: taken from the worker's pool at a request's first byte.
    private var request: RequestState?
    /// Balanced in `close()`: the connection owns itself while open.
    private var retained: Unmanaged<ClientConnection>?
    /// The HTTP/2 codec, when ALPN chose h2; else this class is the HTTP/1.1 codec.
    private var h2: H2Connection?
    /// The deadline the timer is armed for (HTTP/2 re-arms only when earlier).
    private var armedDeadline = Double.infinity
    /// HTTP/2: one flush after every backend event of this loop iteration,
    /// so responses that arrive together leave in one TLS record and write.
    private var flushEvent: OpaquePointer?
    private var flushScheduled = false
    /// HTTP/2: when the client last took bytes (or nothing waited for it),
    /// and how much waited after the last flush. Output that no byte of
    /// leaves for `idle` seconds (a client that stopped reading its socket)
    /// aborts the connection.
    private var h2WriteProgress = 0.0
    private var h2PendingAfterFlush = 0

    /// The exchange of the request in progress, while it has one.
    private var exchange: Exchange? {
        guard let ex = request?.exchange, ex.active else { return nil }
        return ex
    }

    /// Its access log entry (only with an access log).
    private var record: AccessRecord? {
        get { request?.record }
        set { request?.record = newValue }
    }

    init(worker: Worker, runtime: ProxyRuntime, listener: ListenerSettings, fd: Int32, clientAddress: [UInt8],
         capKey: [UInt8]?) throws(AcceptError) {
        self.worker = worker
        self.capKey = capKey
        self.runtime = runtime
        self.listener = listener
        self.clientAddress = clientAddress
        // The events' argument is `self`, which exists only once every stored
        // property does: they are made with a placeholder, then pointed at `self`.
        let placeholder = UnsafeMutableRawPointer(bitPattern: 1)!
        guard let timer = event_new(worker.base, -1, 0, Callbacks.clientTimer, nil) else {
            Glibc.close(fd)
            throw AcceptError.resources
        }
        var ssl: OpaquePointer?
        if listener.scheme == .https {
            ssl = runtime.tls.makeSSL(fallbackProfile: listener.sniFallbackProfile)
            if ssl == nil {
                event_free(timer)
                Glibc.close(fd)
                throw AcceptError.tls
            }
        }
        do {
            transport = try ClientTransport(base: worker.base, fd: fd, ssl: ssl, context: placeholder)
        } catch {
            event_free(timer)
            throw error == .tls ? AcceptError.tls : AcceptError.resources
        }
        self.ssl = ssl
        self.timer = timer
        machine = ConnectionStateMachine(tls: ssl != nil, draining: worker.draining,
                                         timeouts: runtime.snapshot.timeouts, now: monotonicNow())
        let retained = Unmanaged.passRetained(self)
        self.retained = retained
        event_assign(timer, worker.base, -1, 0, Callbacks.clientTimer, retained.toOpaque())
        transport.attach(context: retained.toOpaque())
        transport.start()
        armTimer()
    }

    /// The fd belongs to the connection from `init` on: it is closed on failure too.
    enum AcceptError: Error { case tls, resources }

    private var input: OpaquePointer { transport.input }
    private var output: OpaquePointer { transport.output }
    private var isOpen: Bool { retained != nil }

    // MARK: - Lifecycle: socket events

    /// The socket was readable or writable (or a lingering close timed out).
    func socketReady(_ what: Int16) {
        handle(transport.ready(what))
        flushOutput()
    }

    private func handle(_ report: TransportReport) {
        if report.contains(.closed) { return close() }
        if report.contains(.handshakeFailed) {
            handshakeFailed()
            return close()
        }
        if report.contains(.handshakeDone), machine.phase == .handshake {
            handshakeCompleted()
            // The first request is timed from here.
            machine.handshakeDone(now: monotonicNow())
            if let ssl, TLSServer.isACMEValidation(ssl) {
                // RFC 8737 §3: the handshake was the whole answer; no HTTP follows.
                worker.stats.add(.acmeValidationHandshakes)
                return execute(.close(linger: false))
            }
            if let ssl, TLSServer.negotiatedHTTP2(ssl) { startHTTP2() }
        }
        if let h2 {
            if report.contains(.readable), transport.isOpen { readHTTP2(h2) }
        } else {
            if report.contains(.readable), transport.isOpen { clientReadable() }
            if report.contains(.writable), transport.isOpen { clientWritable() }
        }
        if report.contains(.peerGone) || transport.phase == .closed {
            // A tunnel first delivers what the client sent before it left.
            if machine.phase == .tunnel { pumpTunnel() }
            perform(machine.clientGone(transportOpen: transport.isOpen, now: monotonicNow()))
        }
    }

    /// Ends every entry point (socket, timer, backend, drain): what this turn
    /// queued for the client is written in the loop iteration that produced
    /// it, reading resumes if this turn made room in the input, and the timer
    /// follows the phase.
    func flushOutput() {
        guard isOpen else { return }
        if let h2 { return flushHTTP2(h2) }
        if transport.isOpen {
            transport.inputConsumed()
            // A flush that makes room may let a paused backend fill the output again.
            while isOpen, transport.isOpen, transport.outputLength > 0 {
                let report = transport.flush()
                handle(report)
                guard report.contains(.writable) else { break }
            }
        }
        if isOpen, machine.timerStale { armTimer() }
    }

    // MARK: - HTTP/2

    private func startHTTP2() {
        guard let codec = H2Connection(connection: self),
              let event = event_new(worker.base, -1, 0, Callbacks.clientFlush, retained?.toOpaque()) else { return close() }
        worker.stats.add(.connectionsHTTP2)
        flushEvent = event
        h2 = codec
        machine.startMultiplexing(now: monotonicNow())
        if machine.draining { codec.drain() }
    }

    /// Backend events queue the flush instead of writing at once: libevent
    /// runs an event activated now after the ones already active.
    func scheduleFlush() {
        guard let flushEvent, !flushScheduled else { return }
        flushScheduled = true
        event_active(flushEvent, 0, 0)
    }

    func flushFired() {
        flushScheduled = false
        flushOutput()
    }

    private func readHTTP2(_ h2: H2Connection) {
        if !h2.readable(input) {
            // A protocol error or too many glitches: GOAWAY is queued; the
            // connection ends once it is sent.
            h2.terminate()
        }
    }

    /// Frames queued in this turn leave now, as few TLS records as fit; the
    /// connection closes once both sides are done (GOAWAY) or drained idle.
    private func flushHTTP2(_ h2: H2Connection) {
        let now = monotonicNow()
        // Bytes left since the last flush (the transport writes on EV_WRITE too).
        if transport.outputLength < h2PendingAfterFlush { h2WriteProgress = now }
        while isOpen, transport.isOpen {
            transport.inputConsumed()
            h2.pumpWaiting()
            guard h2.produce(into: output) else { return close() }
            guard transport.outputLength > 0 else { break }
            let before = transport.outputLength
            let report = transport.flush()
            if transport.outputLength < before { h2WriteProgress = now }
            handle(report)
            // The socket is full: EV_WRITE brings us back.
            guard report.contains(.writable), transport.outputLength == 0 else { break }
        }
        guard isOpen else { return }
        if transport.isOpen, transport.outputLength == 0, h2.finished || h2.closable {
            return perform(machine.multiplexingEnded(now: monotonicNow()))
        }
        // Frames that cannot leave (the client stopped reading its socket)
        // are timed by `idle`, whatever the streams wait for.
        h2PendingAfterFlush = transport.outputLength
        if h2PendingAfterFlush == 0 { h2WriteProgress = now }
        let deadline = min(h2.deadline(), h2WriteStallDeadline)
        if deadline < armedDeadline { armTimer(at: deadline) }
    }

    private var h2WriteStallDeadline: Double {
        h2PendingAfterFlush > 0 ? h2WriteProgress + runtime.snapshot.timeouts.idle : .infinity
    }

    // MARK: - Lifecycle: request head (the HTTP/1.1 codec)

    private func clientReadable() {
        if machine.readsHeads {
            readHead()
        } else if machine.forwarding {
            // Pipelined bytes after a complete body wait for the current response.
            pumpRequestBody()
        } else if machine.phase == .tunnel {
            pumpTunnel()
        }
    }

    private func readHead() {
        while machine.readsHeads, isOpen {
            guard transport.inputLength > 0 else { return }
            machine.headStarted(now: monotonicNow())
            let current = request ?? worker.takeRequestState(limits: runtime.limits)
            request = current
            let bytes = Evbuffer.front(input, max: runtime.limits.maxHeaderBytes + 1)
            switch current.parser.parse(bytes) {
            case .incomplete:
                return
            case .error(let error):
                logRejected(error)
                beginRecord(nil, bytes)
                // Whatever follows an unparsable head is unread.
                respondLocally(status: error.status, close: true, unreadBody: true)
                return
            case .complete(let head):
                startRequest(head, bytes: bytes)
            }
        }
    }

    /// Parser rejections: one log line per second at most (the counter has them all).
    private static let rejectedLog = RateLimitedLog()
    private static let headTimeoutLog = RateLimitedLog()

    private func logRejected(_ error: HTTPParseError) {
        // The lines are built only when written (a flood is mostly suppressed).
        if error == .expectationFailed {
            worker.stats.refused(.expectation,
                                 "expectation: \(String(decoding: self.clientAddress, as: UTF8.self)): Expect other than 100-continue: 417")
            return
        }
        worker.stats.add(.requestsRejected)
        Self.rejectedLog.write("rejected request from \(String(decoding: self.clientAddress, as: UTF8.self)): \(error.status) \(error)")
    }

    private func startRequest(_ head: RequestHead, bytes: UnsafeRawBufferPointer) {
        worker.stats.add(.requestsHTTP1)
        beginRecord(head, bytes)
        let hostName = head.host.map { hostWithoutPort(bytes[span: $0]) }
        let hasBody = head.framing != .none
        let path = bytes[span: head.path]
        let handshakeDomain = ssl.flatMap { TLSServer.selectedDomain(of: $0) }

        let routeID: Int
        switch runtime.router.route(scheme: listener.scheme, handshakeDomain: handshakeDomain, host: hostName, path: path) {
        case .forward(let domain):
            routeID = domain
        case .refuse(let refusal):
            // 421 closes: the client should retry on a connection of its own
            // for that name (RFC 9110 §15.5.20).
            let status = refusal == .misdirected ? 421 : 404
            worker.stats.refused(refusal, "\(refusal.label): \(self.describe(head, bytes)): \(status)")
            return finishLocal(head, status: status, close: status == 421)
        case .notRedirected:
            noteACMELookalike(head, bytes, path)
            return finishLocal(head, status: 404, close: false)
        case .pendingCertificate:
            noteACMELookalike(head, bytes, path)
            return finishLocal(head, status: 503, close: false, retryAfter: Self.pendingRetryAfter)
        case .redirect:
            // The router redirects only a Host some domain claims.
            guard let hostName else { return finishLocal(head, status: 404, close: true) }
            noteACMELookalike(head, bytes, path)
            return finishAnswer(head, status: 301) { sink, end in
                writeRedirect(host: hostName, httpsPort: listener.httpsPort, path: path, keepAlive: end == .keepAlive, into: &sink)
            }
        case .acmeAnswer(let keyAuthorization):
            worker.stats.add(.acmeChallengesAnswered)
            return finishAnswer(head, status: 200) { sink, end in
                writeACMEChallengeAnswer(keyAuthorization, head: head.methodKind == .head, keepAlive: end == .keepAlive, into: &sink)
            }
        }

        let route = runtime.routes[routeID]
        if case .contentLength(let n) = head.framing, let max = route.domain.maxBodyBytes, n > max {
            return finishLocal(head, status: 413, close: true)
        }

        guard let current = request else { return }
        let ex = current.exchange
        // The upstream head is rendered once; the exchange keeps it for a possible retry.
        ex.upstreamHead.removeAll()
        // Only a bodiless upgrade request is passed on: the tunnel then starts
        // on a clean message boundary.
        let upgrade = head.wantsUpgrade && head.framing == .none
        var primaryName = route.domain.primaryName
        var sink = ByteBufferSink(buffer: ex.upstreamHead)
        primaryName.withUTF8 { name in
            clientAddress.withUnsafeBytes { client in
                writeUpstreamRequestHead(head, in: bytes, clientAddress: client, scheme: listener.scheme, upgrade: upgrade,
                                         defaultHost: UnsafeRawBufferPointer(name), into: &sink)
            }
        }
        ex.begin(route: route, method: head.methodKind,
                 requestBody: BodyState(request: head.framing, limits: runtime.limits, maxBodyBytes: route.domain.maxBodyBytes),
                 owner: self)
        current.clientVersion = head.version
        let expectContinue = head.expectContinue && hasBody
        evbuffer_drain(input, head.headLength)
        current.parser.reset()

        let facts = ExchangeStateMachine.Request(idempotent: head.methodKind.isIdempotent,
                                                 hadBody: hasBody && head.framing != .contentLength(0), upgrade: upgrade)
        let now = monotonicNow()
        guard ex.connect(worker: worker, fresh: false) else {
            machine.exchangeStarted(facts, keepAlive: head.keepAlive, requestBodyDone: ex.requestBodyDone, connected: false, now: now)
            worker.stats.add(.backendConnectErrors)
            Log.warning("502: cannot connect to backend \(route.domain.backend)")
            return perform(machine.backendUnavailable(now: now))
        }
        machine.exchangeStarted(facts, keepAlive: head.keepAlive, requestBodyDone: ex.requestBodyDone,
                                connected: ex.backendConnected, now: now)
        if expectContinue {
            // RFC 9110 §10.1.1: we ask for the body ourselves; the backend never
            // sees Expect (it is stripped with the hop-by-hop fields).
            Evbuffer.render(into: output) { writeContinue(into: &$0) }
        }
        pumpRequestBody()
    }

    /// A plain-HTTP answer Gatehouse renders itself (301, an http-01 token):
    /// an unread body ends the connection (its bytes are not a request).
    private func finishAnswer(_ head: RequestHead, status: Int,
                              _ render: (inout ReservedSpaceSink, ConnectionStateMachine.End) -> Void) {
        let hasBody = head.framing != .none
        let end = machine.localResponse(close: hasBody || !head.keepAlive, unreadBody: hasBody, now: monotonicNow())
        worker.stats.countResponse(status: status)
        let before = output.evLength
        Evbuffer.render(into: output) { render(&$0, end) }
        recordHead(status: status, since: before)
        finishRecord()
        evbuffer_drain(input, head.headLength)
        request?.parser.reset()
        execute(end)
    }

    /// Answers a request Gatehouse handles itself; the body (if any) is not
    /// read, so such answers close the connection when one was sent.
    private func finishLocal(_ head: RequestHead, status: Int, close: Bool, retryAfter: UInt64? = nil) {
        evbuffer_drain(input, head.headLength)
        request?.parser.reset()
        let hasBody = head.framing != .none
        respondLocally(status: status, close: close || hasBody || !head.keepAlive, unreadBody: hasBody, retryAfter: retryAfter)
    }

    /// Seconds a visitor of a domain waiting for its first certificate is
    /// asked to wait (an order usually completes within a minute).
    static let pendingRetryAfter: UInt64 = 60

    /// A path under the ACME prefix that is not a token was answered as an
    /// ordinary path: counted, since nothing legitimate sends one.
    private func noteACMELookalike(_ head: RequestHead, _ bytes: UnsafeRawBufferPointer, _ path: UnsafeRawBufferPointer) {
        guard RequestRouter.acmeChallenge(path) == .malformed else { return }
        worker.stats.refused(.acmePath, "acme_path: \(describe(head, bytes)) is not an ACME token; not passed through")
    }

    /// "client: METHOD target Host" for a refusal's log line (rate-limited,
    /// so this is built at most once per second per kind).
    private func describe(_ head: RequestHead, _ bytes: UnsafeRawBufferPointer) -> String {
        let host = head.host.map { String(decoding: bytes[span: $0], as: UTF8.self) } ?? "-"
        return "\(String(decoding: clientAddress, as: UTF8.self)): \(String(decoding: bytes[span: head.method], as: UTF8.self)) "
            + "\(String(decoding: bytes[span: head.target].prefix(200), as: UTF8.self)) Host \(host.prefix(200))"
    }

    // MARK: - Lifecycle: request body

    private func pumpRequestBody() {
        guard let ex = exchange, !ex.requestBodyDone else { return }
        let (result, taken) = ex.pumpRequestBody(from: input)
        record?.bytesIn += UInt64(taken)
        let now = monotonicNow()
        switch result {
        case .progress, .needMore:
            machine.progress(now: now)
            if ex.backendOutputLength > ProxyBuffers.writeHighWater { setClientReadPaused(true) }
        case .done:
            machine.progress(now: now)
            machine.requestBodyDone(now: now)
        case .error(let error):
            logRejected(error)
            perform(machine.requestBodyFailed(status: error.status, now: now))
        case .closedEarly:
            break
        }
    }

    private func setClientReadPaused(_ paused: Bool) {
        guard machine.pauseClientRead(paused) else { return }
        if paused { transport.pauseReading() } else { transport.resumeReading() }
    }

    private func setBackendReadPaused(_ paused: Bool) {
        guard machine.pauseBackendRead(paused) else { return }
        exchange?.pauseBackendRead(paused)
    }

    // MARK: - Lifecycle: backend (reported by the exchange)

    func exchangeConnected(_ exchange: Exchange) {
        machine.backendConnected(now: monotonicNow())
    }

    func exchangeWritable(_ exchange: Exchange) {
        // Output drained: take more of the request body.
        if machine.phase == .tunnel { return pumpTunnel() }
        setClientReadPaused(false)
        pumpRequestBody()
    }

    func exchangeReadable(_ exchange: Exchange) {
        if machine.phase == .tunnel { pumpTunnel() } else { pumpResponse() }
    }

    func exchangeFailed(_ ex: Exchange, eof: Bool) {
        // What arrived before the end is delivered first: the rest of a tunnel,
        // or a close-delimited body.
        if machine.phase == .tunnel {
            pumpTunnel()
        } else if eof, machine.exchange?.responseUntilClose == true {
            pumpResponse()
        }
        let connected = ex.backendConnected
        let backend = ex.backendName
        let action = machine.backendFailed(eof: eof, reused: ex.backendReused, now: monotonicNow())
        switch action {
        case .retry:
            guard ex.connect(worker: worker, fresh: true) else {
                worker.stats.add(.backendConnectErrors)
                Log.warning("502: cannot connect to backend \(backend)")
                return perform(machine.backendUnavailable(now: monotonicNow()))
            }
        case .respond:
            worker.stats.add(connected ? .backendResetErrors : .backendConnectErrors)
            Log.warning(connected ? "502: backend \(backend) closed the connection before responding"
                                  : "502: cannot connect to backend \(backend)")
        case .end(.abort):
            // Mid-body: the client's response is truncated; an abort is the only honest signal.
            Log.warning("backend \(backend) closed mid-response")
        default:
            break
        }
        perform(action)
    }

    // MARK: - Lifecycle: response

    private func pumpResponse() {
        while machine.forwarding, let ex = exchange {
            guard machine.exchange?.responseStarted == true else {
                guard ex.hasResponseBytes else { return }
                machine.responseBytesArrived()
                switch ex.readResponseHead(maxHeaderBytes: runtime.limits.maxHeaderBytes) {
                case .incomplete:
                    return
                case .tooLarge:
                    return responseFailed("backend \(ex.backendName): response head too large")
                case .invalid(let error):
                    return responseFailed("invalid response from backend \(ex.backendName): \(error)")
                case .head(let head, let bytes):
                    startResponse(head, bytes: bytes, ex)
                    continue
                }
            }
            let (result, added) = ex.pumpResponseBody(to: output)
            record?.bytesOut += UInt64(added)
            switch result {
            case .progress, .needMore:
                machine.progress(now: monotonicNow())
                if output.evLength > ProxyBuffers.writeHighWater { setBackendReadPaused(true) }
                return
            case .done:
                finishResponse()
            case .error(let error):
                return responseFailed("invalid response body from backend \(ex.backendName): \(error)")
            case .closedEarly:
                return
            }
        }
    }

    /// Before the response started: a 502; after: an abort.
    private func responseFailed(_ reason: String) {
        Log.warning(reason)
        perform(machine.responseFailed(now: monotonicNow()))
    }

    private func startResponse(_ head: ResponseHead, bytes: UnsafeRawBufferPointer, _ ex: Exchange) {
        guard let current = request else { return }
        if (100..<200).contains(head.status) {
            // RFC 9110 §15.2: interim responses pass through; 101 only after an
            // Upgrade was forwarded.
            if head.status == 101 { return startTunnel(head, bytes: bytes, ex) }
            // An HTTP/1.0 client cannot take one (RFC 9110 §15.2): dropped.
            if current.clientVersion == .http11 {
                Evbuffer.render(into: output) { writeInterimResponseHead(head, in: bytes, into: &$0) }
            }
            ex.consumeResponseHead(head, body: nil, reframe: false)
            return
        }
        worker.stats.countResponse(status: head.status)
        let clientFraming: BodyFraming
        let body: BodyState
        var reframe = false
        switch head.framing {
        case .none:
            clientFraming = .none
            body = .done
        case .contentLength(let n):
            clientFraming = .contentLength(n)
            body = n == 0 ? .done : .length(n)
        case .chunked:
            // An HTTP/1.0 client gets the decoded body, delimited by the close.
            reframe = current.clientVersion == .http11
            clientFraming = reframe ? .chunked : .untilClose
            body = .chunked(ChunkedDecoder(limits: runtime.limits))
        case .untilClose:
            clientFraming = .untilClose
            body = .untilClose
        }
        let now = monotonicNow()
        let keepAlive = machine.responseHead(clientUntilClose: clientFraming == .untilClose, backendKeepAlive: head.keepAlive,
                                             backendUntilClose: head.framing == .untilClose, now: now)
        let route = ex.route
        let before = output.evLength
        Evbuffer.render(into: output) { sink in
            route?.hsts.withOptionalBytes(enabled: listener.scheme == .https) { hsts in
                writeClientResponseHead(head, in: bytes, framing: clientFraming, keepAlive: keepAlive,
                                        clientVersion: current.clientVersion, hsts: hsts,
                                        upgradeInsecureRequests: listener.scheme == .https && route?.domain.upgradeInsecureRequests == true,
                                        into: &sink)
            }
        }
        let backendSeconds = preciseNow() - ex.backendStarted
        worker.stats.observeBackend(seconds: backendSeconds)
        recordHead(status: head.status, since: before, backendSeconds: backendSeconds)
        ex.consumeResponseHead(head, body: body, reframe: reframe)
    }

    private func finishResponse() {
        let action = machine.responseDone(now: monotonicNow())
        perform(action)
        // Pipelined requests already buffered are answered in order.
        if case .finish(_, .keepAlive) = action, transport.inputLength > 0 { readHead() }
    }

    // MARK: - Lifecycle: upgraded tunnel

    /// RFC 9110 §15.2.2: after the 101 both connections carry the new protocol;
    /// bytes move between the buffers untouched until either side closes.
    private func startTunnel(_ head: ResponseHead, bytes: UnsafeRawBufferPointer, _ ex: Exchange) {
        let action = machine.switchingProtocols(now: monotonicNow())
        guard action == .none else {
            Log.warning("502: backend \(ex.backendName) switched protocols without an Upgrade request")
            return perform(action)
        }
        worker.stats.countResponse(status: 101)
        let before = output.evLength
        Evbuffer.render(into: output) { sink in
            ex.route?.hsts.withOptionalBytes(enabled: listener.scheme == .https) { hsts in
                writeSwitchingProtocolsHead(head, in: bytes, hsts: hsts, into: &sink)
            }
        }
        recordHead(status: 101, since: before, backendSeconds: preciseNow() - ex.backendStarted)
        ex.consumeResponseHead(head, body: nil, reframe: false)
        pumpTunnel()
    }

    private func pumpTunnel() {
        guard machine.phase == .tunnel, let ex = exchange else { return }
        let moved = ex.pumpTunnel(client: input, client: output)
        record?.bytesIn += UInt64(moved.toBackend)
        record?.bytesOut += UInt64(moved.toClient)
        if moved.toBackend + moved.toClient > 0 { machine.progress(now: monotonicNow()) }
        // Backpressure both ways, as for bodies.
        setClientReadPaused(ex.backendOutputLength > ProxyBuffers.writeHighWater)
        setBackendReadPaused(output.evLength > ProxyBuffers.writeHighWater)
    }

    /// A flush left at most the low watermark in the output: a backend paused
    /// for this client may go on.
    private func clientWritable() {
        if machine.phase == .tunnel {
            pumpTunnel()
        } else if machine.backendReadPaused, exchange != nil, output.evLength <= ProxyBuffers.writeLowWater {
            setBackendReadPaused(false)
            pumpResponse()
        }
    }

    // MARK: - Actions

    /// Carries out what the state machine decided.
    private func perform(_ action: ConnectionStateMachine.Action) {
        switch action {
        case .none:
            break
        case .retry:
            // Carried out where the backend failed (`exchangeFailed`).
            break
        case .respond(let status, let end):
            writeLocalResponse(status: status, end: end)
        case .finish(let reuse, let end):
            finishRecord()
            setClientReadPaused(false)
            _ = machine.pauseBackendRead(false)
            exchange?.end(returningTo: reuse ? worker.pool : nil)
            execute(end)
        case .endTunnelFromClient:
            exchange?.endTunnelFromClient(timeout: runtime.snapshot.timeouts.idle)
            execute(.close(linger: false))
        case .end(let end):
            execute(end)
        }
    }

    private func execute(_ end: ConnectionStateMachine.End) {
        switch end {
        case .keepAlive:
            // Between requests the request state goes back to the worker's
            // pool, so an idle keep-alive connection holds none.
            releaseRequestState()
        case .close(let linger):
            // The graceful end: the queued response is flushed, then
            // close_notify and FIN; with a request body left unread (or
            // pipelined bytes), the transport lingers so the client reads the
            // answer before any RST.
            abortExchange()
            setClientReadPaused(false)
            flushOutput()
            guard isOpen, transport.isOpen else { return }
            handle(transport.shutdown(linger: linger || transport.inputLength > 0))
        case .abort:
            close()
        }
    }

    /// Gatehouse's own response (an error, a refusal), for the request in
    /// progress: its exchange's backend (if any) is dropped first.
    private func respondLocally(status: Int, close: Bool, unreadBody: Bool, retryAfter: UInt64? = nil) {
        let end = machine.localResponse(close: close, unreadBody: unreadBody, now: monotonicNow())
        writeLocalResponse(status: status, end: end, retryAfter: retryAfter)
    }

    private func writeLocalResponse(status: Int, end: ConnectionStateMachine.End, retryAfter: UInt64? = nil) {
        let route = listener.scheme == .https ? localRoute() : nil
        abortExchange()
        worker.stats.countResponse(status: status)
        let before = output.evLength
        let hsts: [UInt8]? = route?.hsts
        Evbuffer.render(into: output) { sink in
            hsts.withOptionalBytes(enabled: true) { hsts in
                writeErrorResponse(status: status, hsts: hsts, close: end != .keepAlive,
                                   upgradeInsecureRequests: route?.domain.upgradeInsecureRequests ?? false,
                                   retryAfter: retryAfter, into: &sink)
            }
        }
        recordHead(status: status, since: before)
        finishRecord()
        execute(end)
    }

    /// Whose policy (HSTS, CSP) Gatehouse's own HTTPS responses carry: the
    /// exchange's domain, else the handshake's.
    private func localRoute() -> ProxyRuntime.Route? {
        if let route = exchange?.route { return route }
        guard let ssl, let id = TLSServer.selectedDomain(of: ssl), id < runtime.routes.count else { return nil }
        return runtime.routes[id]
    }

    /// Drops the backend side of the current exchange without reusing it.
    private func abortExchange() {
        exchange?.end(returningTo: nil)
    }

    private func releaseRequestState() {
        guard let current = request else { return }
        request = nil
        worker.returnRequestState(current)
    }

    /// The last step, once: the transport is closed (aborted if it was still
    /// open: no close_notify, a plain connection reset), the connection leaves
    /// the worker and releases itself.
    func close() {
        guard let r = retained else { return }
        machine.closed()
        h2?.close()
        if let flushEvent { event_free(flushEvent) }
        flushEvent = nil
        finishRecord()
        abortExchange()
        releaseRequestState()
        event_free(timer)
        transport.abort()
        worker.connectionClosed(self)
        retained = nil
        r.release()
    }

    /// SIGTERM: an idle keep-alive connection closes now; the rest are served
    /// (see `ConnectionStateMachine.drain`).
    func drain() {
        perform(machine.drain(inputPending: transport.inputLength > 0, now: monotonicNow()))
        h2?.drain()
        flushOutput()
    }

    // MARK: - Access log

    /// Starts the access log entry of a request (head nil: it did not parse).
    private func beginRecord(_ head: RequestHead?, _ bytes: UnsafeRawBufferPointer) {
        guard worker.accessLog != nil else { return }
        var r = AccessRecord(start: wallClockNow(), client: clientAddress)
        if let ssl {
            r.sni = TLSServer.serverName(of: ssl)
            r.tlsVersion = Array(TLSServer.negotiatedVersion(of: ssl).utf8)
            r.cipher = Array(TLSServer.negotiatedCipher(of: ssl).utf8)
        }
        if let head {
            r.method = Array(bytes[span: head.method])
            r.target = Array(bytes[span: head.target])
            r.version = head.version
            if let host = head.host { r.host = Array(bytes[span: host]) }
            for field in head.headers where field.kind == .other {
                let name = bytes[span: field.name]
                if name.count == 10, asciiEqualIgnoringCase(name, "user-agent") {
                    r.userAgent = Array(bytes[span: field.value])
                } else if name.count == 7, asciiEqualIgnoringCase(name, "referer") {
                    r.referer = Array(bytes[span: field.value])
                }
            }
            r.bytesIn = UInt64(head.headLength)
        }
        record = r
        request?.recordStarted = preciseNow()
    }

    /// A response head (or whole local response) was just written to the
    /// client; `before` is the output length before it.
    private func recordHead(status: Int, since before: Int, backendSeconds: Double? = nil) {
        guard record != nil else { return }
        record?.status = status
        record?.bytesOut += UInt64(output.evLength - before)
        if let backendSeconds { record?.backendSeconds = backendSeconds }
    }

    private func finishRecord() {
        guard var r = record, let log = worker.accessLog else { return }
        record = nil
        r.totalSeconds = preciseNow() - (request?.recordStarted ?? 0)
        log.append(r)
    }

    // MARK: - Timers

    private func armTimer() { armTimer(at: machine.deadline) }

    private func armTimer(at deadline: Double) {
        var tv = timeval(seconds: deadline - monotonicNow())
        event_add(timer, &tv)
        armedDeadline = deadline
        machine.timerArmed()
    }

    func timerFired() {
        guard isOpen else { return }
        armedDeadline = .infinity
        if let h2 {
            let now = monotonicNow()
            // A client that reads nothing for `idle` seconds: nothing polite can reach it.
            if transport.outputLength > 0, transport.outputLength >= h2PendingAfterFlush, now >= h2WriteStallDeadline {
                return close()
            }
            // Per-stream timeouts, and the idle connection's: a polite GOAWAY.
            if h2.timerFired(now: now) { h2.drain() }
            return flushOutput()
        }
        let phase = machine.phase
        let action = machine.timerFired(now: monotonicNow())
        switch action {
        case .end(.abort) where phase == .handshake:
            worker.stats.countHandshakeFailure(.aborted)
        case .respond(let status, _) where status == 408:
            Self.headTimeoutLog.write("request head timeout from \(String(decoding: self.clientAddress, as: UTF8.self))")
        case .respond(let status, _):
            worker.stats.add(status == 504 ? .backendTimeouts : .backendConnectErrors)
            Log.warning("\(status): backend timeout (\(phase))")
        default:
            break
        }
        perform(action)
        flushOutput()
    }

    private func handshakeCompleted() {
        guard let ssl else { return }
        let version = TLSServer.protocolVersion(of: ssl)
        worker.stats.countHandshake(version: version)
        if let version, let id = TLSServer.selectedDomain(of: ssl), id < runtime.handshakes.count {
            runtime.handshakes[id].count(version)
        }
    }

    /// Counts a failed handshake by reason (the metrics operators use to see
    /// who still tries old TLS versions) and logs it at debug level.
    private func handshakeFailed() {
        guard let ssl else { return }
        let codes = transport.failureCodes
        let reason = HandshakeFailure.classify(reasons: HandshakeFailure.reasons(of: codes), refusal: TLSServer.refusal(of: ssl))
        worker.stats.countHandshakeFailure(reason)
        if Log.enabled(.debug) {
            var text = reason.rawValue
            if let code = codes.first(where: { $0 > 255 }) {
                var buf = [CChar](repeating: 0, count: 200)
                ERR_error_string_n(code, &buf, buf.count)
                text += " (" + String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + ")"
            }
            Log.debug("handshake failed from \(String(decoding: clientAddress, as: UTF8.self)): \(text)")
        }
    }
}

/// How a listener's connections behave.
struct ListenerSettings: Sendable {
    let scheme: Scheme
    /// For http listeners: the port written into 301 Locations.
    let httpsPort: UInt16
    /// For https listeners: the profile for clients that send no SNI.
    let sniFallbackProfile: TLSProfileName?
    /// A PROXY protocol header (v1 or v2) precedes every connection.
    let proxyProtocol: Bool
}

/// What one request needs while it is in flight: the parsers (their field
/// storage is kept, so a pooled state parses without allocating), the
/// upstream head, the exchange and its access record. Connections take one
/// from their worker's pool at a request's first byte and give it back when
/// they wait for the next (nginx frees its request pool the same way).
final class RequestState {
    var parser: RequestHeadParser
    /// Pooled with the parser: its upstream head buffer and response parser
    /// are reused too.
    let exchange: Exchange
    /// The HTTP/1.1 codec's: what the client's request line said.
    var clientVersion: HTTPVersion = .http11
    var record: AccessRecord?
    var recordStarted = 0.0

    init(limits: HTTPLimits) {
        parser = RequestHeadParser(limits: limits)
        exchange = Exchange(limits: limits)
    }

    /// Ready for another connection's request.
    func reset() {
        parser.reset()
        exchange.end(returningTo: nil)
        record = nil
    }
}

extension Optional where Wrapped == [UInt8] {
    func withOptionalBytes<R>(enabled: Bool, _ body: (UnsafeRawBufferPointer?) -> R) -> R {
        guard enabled, let bytes = self else { return body(nil) }
        return bytes.withUnsafeBytes { body($0) }
    }
}

