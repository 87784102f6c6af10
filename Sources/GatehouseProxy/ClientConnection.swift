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

/// One client connection, from accept to close: the single state object the
/// callbacks (in lifecycle order below) operate on. It keeps the runtime it
/// was accepted under, so a reload never changes a connection in flight.
final class ClientConnection {
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

    private var clock: ConnectionClock
    private var state: State = .handshake
    /// The request in progress (parsers, exchange, access record), nil while
    /// idle: taken from the worker's pool at a request's first byte.
    private var request: RequestState?
    /// Balanced in `close()`: the connection owns itself while open.
    private var retained: Unmanaged<ClientConnection>?
    /// Reading from the backend is paused until the client drains its output.
    private var backendReadPaused = false
    /// Reading from the client is paused until the backend drains its output.
    private var clientReadPaused = false

    /// The exchange of the request in progress.
    private var exchange: Exchange? {
        get { request?.exchange }
        set { request?.exchange = newValue }
    }

    /// Its access log entry (only with an access log).
    private var record: AccessRecord? {
        get { request?.record }
        set { request?.record = newValue }
    }

    enum State: Equatable {
        case handshake
        case readingHead
        case forwarding
        /// Upgraded after the backend's 101: raw bytes both ways until either closes.
        case tunnel
        /// Final response queued: the transport flushes it, says goodbye, then closes.
        case closing
        case closed
    }

    /// The request in flight and its response. A class: the code below reads
    /// and updates it many times per request, and copying a 560-byte struct
    /// with its references retained cost more than one allocation.
    final class Exchange {
        let method: Method
        let clientVersion: HTTPVersion
        let requestKeepAlive: Bool
        let route: ProxyRuntime.Route
        var requestBody: BodyState
        let requestHadBody: Bool
        var backend: BackendConnection?
        /// The upstream head, kept until the response starts so a request that
        /// hit a stale pooled connection can be retried once.
        var upstreamHead: [UInt8]
        var retried = false
        var response: ResponseState = .awaitingHead
        var responseBody: BodyState = .done
        /// Chunked from the backend and chunked to the client (else decoded raw).
        var reframeChunks = false
        var clientKeepAlive = false
        var backendReusable = false
        var responseStarted = false
        /// Some response bytes arrived (a retry would no longer be safe).
        var responseBytesSeen = false
        /// Upgrade and Connection: upgrade were forwarded (RFC 9110 §7.8).
        var upgradeRequested = false

        init(method: Method, clientVersion: HTTPVersion, requestKeepAlive: Bool, route: ProxyRuntime.Route,
             requestBody: BodyState, requestHadBody: Bool, upstreamHead: [UInt8]) {
            self.method = method
            self.clientVersion = clientVersion
            self.requestKeepAlive = requestKeepAlive
            self.route = route
            self.requestBody = requestBody
            self.requestHadBody = requestHadBody
            self.upstreamHead = upstreamHead
        }
    }

    enum ResponseState { case awaitingHead, body, done }

    init(worker: Worker, runtime: ProxyRuntime, listener: ListenerSettings, fd: Int32, clientAddress: [UInt8],
         capKey: [UInt8]?) throws(AcceptError) {
        self.worker = worker
        self.capKey = capKey
        self.runtime = runtime
        self.listener = listener
        self.clientAddress = clientAddress
        let now = monotonicNow()
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
        self.clock = ConnectionClock(phase: ssl == nil ? .firstRequest : .handshake, now: now)
        self.state = ssl == nil ? .readingHead : .handshake
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
        if report.contains(.handshakeDone), state == .handshake {
            handshakeCompleted()
            // The first request is timed from here.
            state = .readingHead
            enter(.firstRequest)
        }
        if report.contains(.readable), transport.isOpen { clientReadable() }
        if report.contains(.writable), transport.isOpen { clientWritable() }
        if report.contains(.peerGone) || transport.phase == .closed {
            if state == .tunnel, transport.isOpen, let backend = exchange?.backend {
                // The client ended the upgraded connection: what it sent
                // still reaches the backend, then that side closes too.
                pumpTunnel()
                exchange?.backend = nil
                backend.closeAfterFlush(timeout: runtime.snapshot.timeouts.idle)
                return beginClosing()
            }
            // The client is gone. Abort whatever is in flight; the backend
            // connection cannot be reused mid-exchange.
            if state != .closing { close() }
        }
    }

    /// Ends every entry point (socket, timer, backend, drain): what this turn
    /// queued for the client is written in the loop iteration that produced
    /// it, and reading resumes if this turn made room in the input.
    func flushOutput() {
        guard state != .closed, transport.isOpen else { return }
        transport.inputConsumed()
        // A flush that makes room may let a paused backend fill the output again.
        while state != .closed, transport.isOpen, transport.outputLength > 0 {
            let report = transport.flush()
            handle(report)
            guard report.contains(.writable) else { return }
        }
    }

    // MARK: - Lifecycle: request head

    func clientReadable() {
        switch state {
        case .readingHead:
            readHead()
        case .forwarding:
            if exchange?.requestBody.isDone == false { pumpRequestBody() }
            // Otherwise pipelined bytes wait for the current response.
        case .tunnel:
            pumpTunnel()
        case .handshake, .closing, .closed:
            break
        }
    }

    private func readHead() {
        while state == .readingHead {
            let available = input.evLength
            guard available > 0 else { return }
            if clock.phase == .idle || clock.phase == .firstRequest { enter(.head) }
            let current = request ?? worker.takeRequestState(limits: runtime.limits)
            request = current
            let bytes = Evbuffer.front(input, max: runtime.limits.maxHeaderBytes + 1)
            switch current.parser.parse(bytes) {
            case .incomplete:
                return
            case .error(let error):
                logRejected(error)
                beginRecord(nil, bytes)
                respondLocally(status: error.status, close: true)
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
            finishLocal(head, bytes: bytes, status: status, close: status == 421 || hasBody || !head.keepAlive)
            return
        case .notRedirected:
            noteACMELookalike(head, bytes, path)
            finishLocal(head, bytes: bytes, status: 404, close: hasBody || !head.keepAlive)
            return
        case .redirect:
            // The router redirects only a Host some domain claims.
            guard let hostName else { return finishLocal(head, bytes: bytes, status: 404, close: true) }
            noteACMELookalike(head, bytes, path)
            var sink = EvbufferSink(buffer: output)
            let keepAlive = head.keepAlive && !hasBody && !worker.draining
            worker.stats.countResponse(status: 301)
            let before = output.evLength
            writeRedirect(host: hostName, httpsPort: listener.httpsPort, path: path, keepAlive: keepAlive, into: &sink)
            recordHead(status: 301, since: before)
            finishRecord()
            evbuffer_drain(input, head.headLength)
            request?.parser.reset()
            if keepAlive { goIdle() } else { beginClosing() }
            return
        }

        let route = runtime.routes[routeID]
        if case .contentLength(let n) = head.framing, let max = route.domain.maxBodyBytes, n > max {
            finishLocal(head, bytes: bytes, status: 413, close: true)
            return
        }

        guard let current = request else { return }
        // The upstream head is rendered once; kept for a possible retry.
        current.upstreamHead.bytes.removeAll(keepingCapacity: true)
        // Only a bodiless upgrade request is passed on: the tunnel then starts
        // on a clean message boundary.
        let upgrade = head.wantsUpgrade && head.framing == .none
        var primaryName = route.domain.primaryName
        primaryName.withUTF8 { name in
            clientAddress.withUnsafeBytes { client in
                writeUpstreamRequestHead(head, in: bytes, clientAddress: client, scheme: listener.scheme, upgrade: upgrade,
                                         defaultHost: UnsafeRawBufferPointer(name), into: &current.upstreamHead)
            }
        }
        let ex = Exchange(method: head.methodKind, clientVersion: head.version, requestKeepAlive: head.keepAlive,
                          route: route, requestBody: BodyState(request: head.framing, limits: runtime.limits,
                                                               maxBodyBytes: route.domain.maxBodyBytes),
                          requestHadBody: hasBody && head.framing != .contentLength(0),
                          upstreamHead: current.upstreamHead.bytes)
        current.responseParser.reset()
        ex.upgradeRequested = upgrade
        let expectContinue = head.expectContinue && hasBody
        evbuffer_drain(input, head.headLength)
        request?.parser.reset()
        state = .forwarding

        guard let backend = acquireBackend(route) else {
            worker.stats.add(.backendConnectErrors)
            exchange = ex
            failExchange(status: 502, reason: "cannot connect to backend \(route.domain.backend)")
            return
        }
        ex.backend = backend
        exchange = ex
        current.backendStarted = preciseNow()
        sendUpstreamHead(to: backend)
        if expectContinue {
            // RFC 9110 §10.1.1: we ask for the body ourselves; the backend never
            // sees Expect (it is stripped with the hop-by-hop fields).
            var sink = EvbufferSink(buffer: output)
            writeContinue(into: &sink)
        }
        enter(backend.connected ? (ex.requestBody.isDone ? .backendResponse : .body) : .backendConnect)
        pumpRequestBody()
    }

    /// Answers a request Gatehouse handles itself; the body (if any) is not read,
    /// so such answers close the connection when one was sent.
    private func finishLocal(_ head: RequestHead, bytes: UnsafeRawBufferPointer, status: Int, close: Bool) {
        evbuffer_drain(input, head.headLength)
        request?.parser.reset()
        respondLocally(status: status, close: close || head.framing != .none || !head.keepAlive)
    }

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

    private func acquireBackend(_ route: ProxyRuntime.Route) -> BackendConnection? {
        if let pooled = worker.pool.take(route.poolKey, now: monotonicNow()) {
            pooled.client = self
            return pooled
        }
        guard let address = route.backend else { return nil }
        let conn = BackendConnection.connect(base: worker.base, to: address, poolKey: route.poolKey)
        conn?.client = self
        return conn
    }

    private func sendUpstreamHead(to backend: BackendConnection) {
        guard let ex = exchange else { return }
        ex.upstreamHead.withUnsafeBytes { raw in
            _ = evbuffer_add(backend.output, raw.baseAddress, raw.count)
        }
        backend.send()
    }

    // MARK: - Lifecycle: request body

    private func pumpRequestBody() {
        guard let ex = exchange, let backend = ex.backend, !ex.requestBody.isDone else { return }
        let before = input.evLength
        let result = ex.requestBody.pump(from: input, to: backend.output, reframe: true)
        backend.send()
        record?.bytesIn += UInt64(before - input.evLength)
        exchange = ex
        switch result {
        case .progress, .needMore:
            clock.progress(now: monotonicNow())
            if backend.output.evLength > ProxyBuffers.writeHighWater { pauseClientRead() }
        case .done:
            clock.progress(now: monotonicNow())
            if clock.phase == .body { enter(.backendResponse) }
        case .error(let error):
            logRejected(error)
            if ex.responseStarted {
                abortExchange()
                close()
            } else {
                failExchange(status: error.status, reason: nil)
            }
        case .closedEarly:
            break
        }
    }

    private func pauseClientRead() {
        guard !clientReadPaused else { return }
        clientReadPaused = true
        transport.pauseReading()
    }

    private func resumeClientRead() {
        guard clientReadPaused else { return }
        clientReadPaused = false
        transport.resumeReading()
    }

    // MARK: - Lifecycle: backend

    func backendConnected(_ backend: BackendConnection) {
        guard let ex = exchange, ex.backend === backend, clock.phase == .backendConnect else { return }
        enter(ex.requestBody.isDone ? .backendResponse : .body)
    }

    func backendWritable(_ backend: BackendConnection) {
        // Output drained: take more of the request body.
        guard exchange?.backend === backend else { return }
        if state == .tunnel {
            pumpTunnel()
            return
        }
        resumeClientRead()
        pumpRequestBody()
    }

    func backendFailed(_ backend: BackendConnection, eof: Bool) {
        guard var ex = exchange, ex.backend === backend else {
            backend.close()
            return
        }
        if state == .tunnel {
            // The backend ended the upgraded connection: deliver what it sent, then close.
            pumpTunnel()
            beginClosing()
            return
        }
        if ex.response == .body, case .untilClose = ex.responseBody, eof {
            // Close-delimited response: EOF is its end.
            pumpResponse(from: backend)
            ex = exchange ?? ex
            ex.responseBody = .done
            exchange = ex
            finishResponse()
            return
        }
        backend.close()
        ex.backend = nil
        exchange = ex
        if !ex.responseStarted {
            // A pooled connection the backend had closed: retry once on a fresh
            // one if nothing of the body was sent (RFC 9110 §9.2.2).
            if backend.reused, !ex.retried, ex.method.isIdempotent, ex.requestBody.isDone,
               !ex.requestHadBody, !ex.responseBytesSeen,
               let fresh = acquireFresh(ex.route) {
                ex.retried = true
                ex.backend = fresh
                exchange = ex
                sendUpstreamHead(to: fresh)
                enter(.backendConnect)
                return
            }
            worker.stats.add(backend.connected ? .backendResetErrors : .backendConnectErrors)
            failExchange(status: 502, reason: backend.connected
                ? "backend \(ex.route.domain.backend) closed the connection before responding"
                : "cannot connect to backend \(ex.route.domain.backend)")
        } else {
            // Mid-body: the client's response is truncated; closing is the only honest signal.
            Log.warning("backend \(ex.route.domain.backend) closed mid-response")
            exchange = nil
            close()
        }
    }

    private func acquireFresh(_ route: ProxyRuntime.Route) -> BackendConnection? {
        guard let address = route.backend,
              let conn = BackendConnection.connect(base: worker.base, to: address, poolKey: route.poolKey) else { return nil }
        conn.client = self
        return conn
    }

    // MARK: - Lifecycle: response

    func backendReadable(_ backend: BackendConnection) {
        guard exchange?.backend === backend else { return }
        if state == .tunnel {
            pumpTunnel()
        } else {
            pumpResponse(from: backend)
        }
    }

    private func pumpResponse(from backend: BackendConnection) {
        while let ex = exchange, ex.backend === backend {
            switch ex.response {
            case .awaitingHead:
                let bytes = Evbuffer.front(backend.input, max: runtime.limits.maxHeaderBytes + 1)
                guard bytes.count > 0 else { return }
                ex.responseBytesSeen = true
                guard let current = request else { return }
                let result = current.responseParser.parse(bytes, requestMethod: ex.method)
                exchange = ex
                switch result {
                case .incomplete:
                    if bytes.count > runtime.limits.maxHeaderBytes {
                        failExchange(status: 502, reason: "backend response head too large")
                    }
                    return
                case .error(let error):
                    failExchange(status: 502, reason: "invalid response from backend \(ex.route.domain.backend): \(error)")
                    return
                case .complete(let head):
                    startResponse(head, bytes: bytes, backend: backend)
                }
            case .body:
                let before = output.evLength
                let result = ex.responseBody.pump(from: backend.input, to: output, reframe: ex.reframeChunks)
                record?.bytesOut += UInt64(output.evLength - before)
                exchange = ex
                switch result {
                case .progress, .needMore:
                    clock.progress(now: monotonicNow())
                    if output.evLength > ProxyBuffers.writeHighWater { pauseBackendRead(backend) }
                    return
                case .done:
                    finishResponse()
                case .error(let error):
                    Log.warning("invalid response body from backend \(ex.route.domain.backend): \(error)")
                    abortExchange()
                    close()
                    return
                case .closedEarly:
                    return
                }
            case .done:
                return
            }
        }
    }

    private func startResponse(_ head: ResponseHead, bytes: UnsafeRawBufferPointer, backend: BackendConnection) {
        guard let ex = exchange else { return }
        if (100..<200).contains(head.status) {
            // RFC 9110 §15.2: interim responses pass through; 101 cannot, since
            // Upgrade is never forwarded.
            if head.status == 101 {
                guard ex.upgradeRequested else {
                    failExchange(status: 502, reason: "backend switched protocols without an Upgrade request")
                    return
                }
                startTunnel(head, bytes: bytes, backend: backend)
                return
            }
            // An HTTP/1.0 client cannot take one (RFC 9110 §15.2): dropped.
            if ex.clientVersion == .http11 {
                var sink = EvbufferSink(buffer: output)
                writeInterimResponseHead(head, in: bytes, into: &sink)
            }
            evbuffer_drain(backend.input, head.headLength)
            request?.responseParser.reset()
            exchange = ex
            return
        }
        worker.stats.countResponse(status: head.status)
        let clientFraming: BodyFraming
        switch head.framing {
        case .none:
            clientFraming = .none
            ex.responseBody = .done
        case .contentLength(let n):
            clientFraming = .contentLength(n)
            ex.responseBody = n == 0 ? .done : .length(n)
        case .chunked:
            ex.reframeChunks = ex.clientVersion == .http11
            clientFraming = ex.reframeChunks ? .chunked : .untilClose
            ex.responseBody = .chunked(ChunkedDecoder(limits: runtime.limits))
        case .untilClose:
            clientFraming = .untilClose
            ex.responseBody = .untilClose
        }
        ex.clientKeepAlive = ex.requestKeepAlive && clientFraming != .untilClose
            && ex.requestBody.isDone && !worker.draining
        // A refused upgrade keeps HTTP framing, but the backend may have half
        // switched: its connection is not reused.
        ex.backendReusable = head.keepAlive && head.framing != .untilClose && !ex.upgradeRequested
        ex.response = .body
        ex.responseStarted = true
        ex.upstreamHead = []
        var sink = EvbufferSink(buffer: output)
        let before = output.evLength
        ex.route.hsts.withOptionalBytes(enabled: listener.scheme == .https) { hsts in
            writeClientResponseHead(head, in: bytes, framing: clientFraming, keepAlive: ex.clientKeepAlive,
                                    clientVersion: ex.clientVersion, hsts: hsts,
                                    upgradeInsecureRequests: listener.scheme == .https && ex.route.domain.upgradeInsecureRequests,
                                    into: &sink)
        }
        let backendSeconds = preciseNow() - (request?.backendStarted ?? 0)
        worker.stats.observeBackend(seconds: backendSeconds)
        recordHead(status: head.status, since: before, backendSeconds: backendSeconds)
        evbuffer_drain(backend.input, head.headLength)
        exchange = ex
        enter(.responding)
    }

    private func finishResponse() {
        guard let ex = exchange else { return }
        exchange = nil
        finishRecord()
        if let backend = ex.backend {
            if ex.backendReusable, ex.requestBody.isDone, !backend.closed {
                resumeBackendRead(backend)
                worker.pool.put(backend, now: monotonicNow())
            } else {
                backend.close()
            }
        }
        resumeClientRead()
        // Draining: a response that started before SIGTERM promised
        // keep-alive, but the connection still ends with it.
        guard ex.clientKeepAlive, state == .forwarding, !worker.draining else {
            beginClosing()
            return
        }
        state = .readingHead
        goIdle()
        // Pipelined requests already buffered are answered in order.
        if input.evLength > 0 { readHead() }
    }

    // MARK: - Lifecycle: upgraded tunnel

    /// RFC 9110 §15.2.2: after the 101 both connections carry the new protocol;
    /// bytes move between the evbuffers untouched until either side closes.
    private func startTunnel(_ head: ResponseHead, bytes: UnsafeRawBufferPointer, backend: BackendConnection) {
        guard let ex = exchange else { return }
        worker.stats.countResponse(status: 101)
        var sink = EvbufferSink(buffer: output)
        let before = output.evLength
        ex.route.hsts.withOptionalBytes(enabled: listener.scheme == .https) { hsts in
            writeSwitchingProtocolsHead(head, in: bytes, hsts: hsts, into: &sink)
        }
        evbuffer_drain(backend.input, head.headLength)
        recordHead(status: 101, since: before, backendSeconds: preciseNow() - (request?.backendStarted ?? 0))
        ex.responseStarted = true
        ex.backendReusable = false
        ex.upstreamHead = []
        exchange = ex
        state = .tunnel
        enter(.tunnel)
        pumpTunnel()
    }

    private func pumpTunnel() {
        guard state == .tunnel, let backend = exchange?.backend else { return }
        var moved = false
        let fromClient = input.evLength
        if fromClient > 0 {
            _ = Evbuffer.move(from: input, to: backend.output, count: fromClient)
            backend.send()
            record?.bytesIn += UInt64(fromClient)
            moved = true
        }
        let fromBackend = backend.input.evLength
        if fromBackend > 0 {
            _ = Evbuffer.move(from: backend.input, to: output, count: fromBackend)
            record?.bytesOut += UInt64(fromBackend)
            moved = true
        }
        if moved { clock.progress(now: monotonicNow()) }
        // Backpressure both ways, as for bodies.
        if backend.output.evLength > ProxyBuffers.writeHighWater { pauseClientRead() } else { resumeClientRead() }
        if output.evLength > ProxyBuffers.writeHighWater { pauseBackendRead(backend) } else { resumeBackendRead(backend) }
    }

    private func pauseBackendRead(_ backend: BackendConnection) {
        guard !backendReadPaused else { return }
        backendReadPaused = true
        backend.pauseRead()
    }

    private func resumeBackendRead(_ backend: BackendConnection) {
        guard backendReadPaused else { return }
        backendReadPaused = false
        backend.resumeRead()
    }

    /// A flush left at most the low watermark in the output: a backend paused
    /// for this client may go on.
    private func clientWritable() {
        if state == .tunnel {
            pumpTunnel()
        } else if let backend = exchange?.backend, backendReadPaused, output.evLength <= ProxyBuffers.writeLowWater {
            resumeBackendRead(backend)
            pumpResponse(from: backend)
        }
    }

    // MARK: - Errors and local responses

    /// The exchange failed before any response byte went to the client.
    private func failExchange(status: Int, reason: String?) {
        if let reason { Log.warning("\(status): \(reason)") }
        abortExchange()
        respondLocally(status: status, close: true)
    }

    private func respondLocally(status: Int, close requested: Bool) {
        // While draining, every response is the connection's last.
        let close = requested || worker.draining
        worker.stats.countResponse(status: status)
        var sink = EvbufferSink(buffer: output)
        let route = listener.scheme == .https ? localRoute() : nil
        let before = output.evLength
        let hsts: [UInt8]? = route?.hsts
        hsts.withOptionalBytes(enabled: true) { hsts in
            writeErrorResponse(status: status, hsts: hsts, close: close,
                               upgradeInsecureRequests: route?.domain.upgradeInsecureRequests ?? false, into: &sink)
        }
        recordHead(status: status, since: before)
        finishRecord()
        if close {
            beginClosing()
        } else {
            state = .readingHead
            goIdle()
        }
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
        if let backend = exchange?.backend { backend.close() }
        exchange = nil
    }

    /// The graceful end: the queued response is flushed, then close_notify
    /// and FIN; with a request body left unread (or pipelined bytes), the
    /// transport lingers so the client reads the answer before any RST.
    private func beginClosing() {
        guard state != .closed, state != .closing else { return }
        let unread = exchange.map { !$0.requestBody.isDone } ?? false
        abortExchange()
        state = .closing
        clientReadPaused = false
        enter(.closing)
        flushOutput()
        handle(transport.shutdown(linger: unread || transport.inputLength > 0))
    }

    /// Between requests: the request state goes back to the worker's pool,
    /// so an idle keep-alive connection holds none.
    private func goIdle() {
        enter(.idle)
        releaseRequestState()
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
        guard state != .closed else { return }
        state = .closed
        finishRecord()
        abortExchange()
        releaseRequestState()
        event_free(timer)
        transport.abort()
        worker.connectionClosed(self)
        let r = retained
        retained = nil
        r?.release()
    }

    /// SIGTERM: a keep-alive connection between requests (it was served)
    /// closes now, with close_notify. Every other one is in flight: one in its
    /// handshake or before its first request may already carry a request a
    /// TCP balancer cannot retry, so it is served, with `Connection: close`.
    func drain() {
        if state == .readingHead, clock.phase == .idle, transport.inputLength == 0 { beginClosing() }
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

    private func enter(_ phase: ConnectionClock.Phase) {
        clock.enter(phase, now: monotonicNow())
        armTimer()
    }

    private func armTimer() {
        var tv = timeval(seconds: clock.deadline(runtime.snapshot.timeouts) - monotonicNow())
        event_add(timer, &tv)
    }

    func timerFired() {
        guard state != .closed else { return }
        guard let expiry = clock.expiry(now: monotonicNow(), runtime.snapshot.timeouts) else {
            armTimer()
            return
        }
        defer { flushOutput() }
        switch expiry {
        case .close:
            if state == .handshake { worker.stats.countHandshakeFailure(.aborted) }
            // Nothing in flight: a polite goodbye. A stalled transfer or flush: abort.
            if clock.phase == .idle || clock.phase == .firstRequest { beginClosing() } else { close() }
        case .respond(let status):
            if exchange?.responseStarted == true {
                abortExchange()
                close()
            } else {
                if status == 408 {
                    Self.headTimeoutLog.write("request head timeout from \(String(decoding: self.clientAddress, as: UTF8.self))")
                } else {
                    worker.stats.add(status == 504 ? .backendTimeouts : .backendConnectErrors)
                }
                failExchange(status: status, reason: status == 408 ? nil : "backend timeout (\(clock.phase))")
            }
        }
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
    var responseParser: ResponseHeadParser
    var upstreamHead = ByteArraySink()
    var exchange: ClientConnection.Exchange?
    var record: AccessRecord?
    var recordStarted = 0.0
    var backendStarted = 0.0

    init(limits: HTTPLimits) {
        parser = RequestHeadParser(limits: limits)
        responseParser = ResponseHeadParser(limits: limits)
    }

    /// Ready for another connection's request.
    func reset() {
        parser.reset()
        responseParser.reset()
        exchange = nil
        record = nil
    }
}

/// Renders into a Swift array (used once per request for the upstream head,
/// which must survive until a possible retry).
struct ByteArraySink: ByteSink {
    var bytes: [UInt8] = []
    init() { bytes.reserveCapacity(1024) }
    mutating func write(_ b: UnsafeRawBufferPointer) { bytes.append(contentsOf: b) }
}

extension Optional where Wrapped == [UInt8] {
    func withOptionalBytes<R>(enabled: Bool, _ body: (UnsafeRawBufferPointer?) -> R) -> R {
        guard enabled, let bytes = self else { return body(nil) }
        return bytes.withUnsafeBytes { body($0) }
    }
}

