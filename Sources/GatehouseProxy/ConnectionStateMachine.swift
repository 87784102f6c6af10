import GatehouseConfig

/// The lifecycle of one client connection as a pure state machine: events in,
/// actions out. No sockets, no libevent, no OpenSSL: `ClientConnection` feeds
/// it what the transport, the codec and the exchange report, and carries out
/// what it answers. It owns the phases and their timeouts, the drain, the
/// backpressure flags, and what the exchange in flight may still do (retry
/// once, keep the client, reuse the backend). Tested without sockets.
public struct ConnectionStateMachine: Sendable, Equatable {
    public enum Phase: Sendable, Equatable {
        /// TLS handshake in progress.
        case handshake
        /// Connection ready (TLS done), no byte of the first request yet.
        case firstRequest
        /// Keep-alive: a request was served; waiting for the next one's first byte.
        case idle
        /// Reading a request head (slowloris guard: progress does not extend it).
        case head
        /// Connecting to the backend (a request body may already be queued).
        case backendConnect
        /// Sending the request body.
        case body
        /// Request sent, waiting for the backend's response head.
        case backendResponse
        /// Streaming the response body.
        case responding
        /// Upgraded (RFC 9110 §15.2.2): bytes flow both ways; inactivity closes.
        case tunnel
        /// The final response is queued: flush, close_notify, FIN.
        case closing
        case closed
    }

    /// What the request in flight said, and what has happened to it since.
    public struct Exchange: Sendable, Equatable {
        /// A retry on a fresh connection is allowed only for these (RFC 9110 §9.2.2).
        public var idempotent: Bool
        /// The client's request allows keep-alive (RFC 9112 §9.3).
        public var requestKeepAlive: Bool
        /// The request carried a body (so it cannot be replayed).
        public var requestHadBody: Bool
        /// Upgrade was forwarded (RFC 9110 §7.8): a 101 is expected.
        public var upgradeRequested: Bool
        public var requestBodyDone: Bool
        public var responseStarted = false
        /// Some response bytes arrived (a retry would no longer be safe).
        public var responseBytesSeen = false
        /// The backend's body ends with its EOF (RFC 9112 §6.3, rule 8).
        public var responseUntilClose = false
        public var retried = false
        public var clientKeepAlive = false
        public var backendReusable = false

        public init(idempotent: Bool, requestKeepAlive: Bool, requestHadBody: Bool, upgradeRequested: Bool,
                    requestBodyDone: Bool) {
            self.idempotent = idempotent
            self.requestKeepAlive = requestKeepAlive
            self.requestHadBody = requestHadBody
            self.upgradeRequested = upgradeRequested
            self.requestBodyDone = requestBodyDone
        }
    }

    /// How a connection goes on after a response.
    public enum End: Sendable, Equatable {
        /// Keep-alive: wait for the next request.
        case keepAlive
        /// Flush, close_notify, FIN. `linger`: a request body was left unread,
        /// so read and discard a bounded amount first, or the kernel's RST may
        /// destroy the response before the client reads it (RFC 9112 §9.6).
        case close(linger: Bool)
        /// No close_notify: the client must see a truncated response as
        /// truncated (RFC 9112 §9.8); the backend is not reused.
        case abort
    }

    public enum Action: Sendable, Equatable {
        case none
        /// Drop the exchange's backend, write Gatehouse's own response with this
        /// status (with `Connection: close` unless `end` is keep-alive), then `end`.
        case respond(status: Int, end: End)
        /// Send the same request once more, on a fresh backend connection.
        case retry
        /// The response is complete: the backend goes back to the pool (or is
        /// closed), then `end`.
        case finish(reuseBackend: Bool, end: End)
        /// The client ended an upgraded connection: what it sent still reaches
        /// the backend, which then closes; the client side closes gracefully.
        case endTunnelFromClient
        case end(End)
    }

    public private(set) var phase: Phase
    public private(set) var exchange: Exchange?
    /// SIGTERM came: every response from now on is the connection's last.
    public private(set) var draining: Bool
    /// Reading from the client waits until the backend takes what was queued.
    public private(set) var clientReadPaused = false
    /// Reading from the backend waits until the client takes what was queued.
    public private(set) var backendReadPaused = false
    /// When the running timer started counting (or bytes last moved).
    public private(set) var since: Double
    /// The phase changed since the driver last armed its timer.
    public private(set) var timerStale = true
    public let timeouts: TimeoutSettings

    public init(tls: Bool, draining: Bool, timeouts: TimeoutSettings, now: Double) {
        phase = tls ? .handshake : .firstRequest
        self.draining = draining
        self.timeouts = timeouts
        since = now
    }

    // MARK: - Queries

    /// Between requests or reading one: bytes from the client are request heads.
    public var readsHeads: Bool { phase == .firstRequest || phase == .idle || phase == .head }

    /// A request is with a backend (connecting, sending, awaiting or streaming its response).
    public var forwarding: Bool {
        switch phase {
        case .backendConnect, .body, .backendResponse, .responding: true
        default: false
        }
    }

    public var isOpen: Bool { phase != .closed }

    /// How long the current phase may last. Head and handshake are totals, so
    /// trickling bytes cannot keep a connection forever; the rest count
    /// inactivity (see `progress`).
    public var limit: Double {
        switch phase {
        case .handshake: timeouts.handshake
        case .firstRequest, .head: timeouts.requestHeader
        case .idle, .body, .closing, .tunnel, .closed: timeouts.idle
        case .backendConnect: timeouts.backendConnect
        case .backendResponse, .responding: timeouts.backendResponse
        }
    }

    public var deadline: Double { since + limit }

    // MARK: - Events: the client

    /// The driver armed its timer for `deadline`.
    public mutating func timerArmed() { timerStale = false }

    public mutating func handshakeDone(now: Double) {
        guard phase == .handshake else { return }
        enter(.firstRequest, now)
    }

    /// The first byte of a request head arrived: the head timer starts.
    public mutating func headStarted(now: Double) {
        if phase == .idle || phase == .firstRequest { enter(.head, now) }
    }

    /// Gatehouse answers a request itself (a refusal, a redirect, a parse
    /// error). `close`: the answer must end the connection; `unreadBody`: the
    /// request's body (if any) is left unread. Returns how the connection goes
    /// on, which the response's `Connection` field must say.
    public mutating func localResponse(close: Bool, unreadBody: Bool, now: Double) -> End {
        exchange = nil
        // While draining, every response is the connection's last.
        guard close || draining else {
            enter(.idle, now)
            return .keepAlive
        }
        enter(.closing, now)
        return .close(linger: unreadBody)
    }

    /// Bytes moved (a body either way, a tunnel, a flush while closing):
    /// inactivity timers restart; the head, handshake and connect timers do not.
    public mutating func progress(now: Double) {
        switch phase {
        case .body, .backendResponse, .responding, .closing, .tunnel: since = now
        case .handshake, .firstRequest, .idle, .head, .backendConnect, .closed: break
        }
    }

    /// The client closed or reset its side. `transportOpen`: only its
    /// sending side ended (a tunnel still delivers what it sent).
    public mutating func clientGone(transportOpen: Bool, now: Double) -> Action {
        switch phase {
        case .tunnel where transportOpen:
            exchange = nil
            enter(.closing, now)
            return .endTunnelFromClient
        case .closing, .closed:
            return .none
        default:
            return abort()
        }
    }

    /// SIGTERM: a keep-alive connection between requests (it was served)
    /// closes now. Every other one is in flight: one in its handshake or
    /// before its first request may already carry a request a TCP balancer
    /// cannot retry, so it is served, with `Connection: close`.
    public mutating func drain(inputPending: Bool, now: Double) -> Action {
        draining = true
        guard phase == .idle, !inputPending else { return .none }
        enter(.closing, now)
        return .end(.close(linger: false))
    }

    /// The timer fired. `.none` with `timerStale` set: not yet expired (bytes
    /// moved since it was armed), the driver arms it for the rest.
    public mutating func timerFired(now: Double) -> Action {
        guard phase != .closed else { return .none }
        guard now >= deadline else {
            timerStale = true
            return .none
        }
        switch phase {
        case .firstRequest, .idle:
            // Nothing in flight: a polite goodbye.
            enter(.closing, now)
            return .end(.close(linger: false))
        case .head:
            return fail(408, now)    // RFC 9110 §15.5.9
        case .backendConnect:
            return fail(502, now)
        case .backendResponse:
            return fail(504, now)    // RFC 9110 §15.6.5
        case .handshake, .body, .responding, .tunnel, .closing, .closed:
            // A stalled handshake, transfer or flush: nothing honest to add.
            return abort()
        }
    }

    public mutating func handshakeFailed() { closed() }

    /// The connection is gone (the driver closed the transport).
    public mutating func closed() {
        phase = .closed
        exchange = nil
    }

    // MARK: - Events: the exchange

    /// A request was routed to a backend. `connected`: the backend connection
    /// came from the pool, already open.
    public mutating func exchangeStarted(_ request: Exchange, connected: Bool, now: Double) {
        exchange = request
        enter(connected ? (request.requestBodyDone ? .backendResponse : .body) : .backendConnect, now)
    }

    /// No backend connection could be made (the first, or the retry).
    public mutating func backendUnavailable(now: Double) -> Action { fail(502, now) }

    public mutating func backendConnected(now: Double) {
        guard phase == .backendConnect, let ex = exchange else { return }
        enter(ex.requestBodyDone ? .backendResponse : .body, now)
    }

    public mutating func requestBodyDone(now: Double) {
        exchange?.requestBodyDone = true
        if phase == .body { enter(.backendResponse, now) }
    }

    /// The request body broke its framing (400) or the size limit (413).
    public mutating func requestBodyFailed(status: Int, now: Double) -> Action { fail(status, now) }

    public mutating func responseBytesArrived() { exchange?.responseBytesSeen = true }

    /// The backend's response was invalid: its head (a 502) or its body (an abort).
    public mutating func responseFailed(now: Double) -> Action { fail(502, now) }

    /// The backend's final response head. `clientUntilClose`: the body sent to
    /// the client ends with the connection; `backendKeepAlive` and
    /// `backendUntilClose`: what the backend's head said. Returns whether the
    /// client connection stays open after this response (its `Connection` field).
    public mutating func responseHead(clientUntilClose: Bool, backendKeepAlive: Bool, backendUntilClose: Bool,
                                      now: Double) -> Bool {
        guard var ex = exchange else { return false }
        ex.clientKeepAlive = ex.requestKeepAlive && !clientUntilClose && ex.requestBodyDone && !draining
        // A refused upgrade keeps HTTP framing, but the backend may have half
        // switched: its connection is not reused.
        ex.backendReusable = backendKeepAlive && !backendUntilClose && !ex.upgradeRequested
        ex.responseUntilClose = backendUntilClose
        ex.responseStarted = true
        exchange = ex
        enter(.responding, now)
        return ex.clientKeepAlive
    }

    /// A 101 (RFC 9110 §15.2.2). Allowed only after an Upgrade was forwarded.
    public mutating func switchingProtocols(now: Double) -> Action {
        guard var ex = exchange, ex.upgradeRequested, !ex.responseStarted else { return fail(502, now) }
        ex.responseStarted = true
        ex.backendReusable = false
        exchange = ex
        enter(.tunnel, now)
        return .none
    }

    /// The response's last byte was queued for the client.
    public mutating func responseDone(now: Double) -> Action {
        guard let ex = exchange else { return .none }
        exchange = nil
        let reuse = ex.backendReusable && ex.requestBodyDone
        // Draining: a response that started before SIGTERM promised
        // keep-alive, but the connection still ends with it.
        guard ex.clientKeepAlive, !draining else {
            enter(.closing, now)
            return .finish(reuseBackend: reuse, end: .close(linger: !ex.requestBodyDone))
        }
        enter(.idle, now)
        return .finish(reuseBackend: reuse, end: .keepAlive)
    }

    /// The backend closed, reset or failed to connect. `eof`: an orderly
    /// close; `reused`: the connection came from the pool.
    public mutating func backendFailed(eof: Bool, reused: Bool, now: Double) -> Action {
        guard let ex = exchange else { return .none }
        if phase == .tunnel {
            // The backend ended the upgraded connection: what it sent is
            // delivered, then the client side closes.
            exchange = nil
            enter(.closing, now)
            return .end(.close(linger: false))
        }
        if ex.responseStarted {
            // A close-delimited body ends with EOF; any other body is truncated.
            return eof && ex.responseUntilClose ? responseDone(now: now) : abort()
        }
        // A pooled connection the backend had closed: once more on a fresh one
        // if nothing of the request can have been processed (RFC 9110 §9.2.2).
        if reused, !ex.retried, ex.idempotent, ex.requestBodyDone, !ex.requestHadBody, !ex.responseBytesSeen {
            exchange?.retried = true
            enter(.backendConnect, now)
            return .retry
        }
        return fail(502, now)
    }

    // MARK: - Backpressure

    /// Returns whether the flag changed (the driver then tells the transport).
    public mutating func pauseClientRead(_ paused: Bool) -> Bool {
        guard clientReadPaused != paused else { return false }
        clientReadPaused = paused
        return true
    }

    public mutating func pauseBackendRead(_ paused: Bool) -> Bool {
        guard backendReadPaused != paused else { return false }
        backendReadPaused = paused
        return true
    }

    // MARK: - Transitions

    private mutating func enter(_ next: Phase, _ now: Double) {
        phase = next
        since = now
        timerStale = true
    }

    /// The exchange failed: before the response started, the client gets
    /// Gatehouse's answer and the connection closes (the request's framing
    /// can no longer be trusted); after, only an abort is honest.
    private mutating func fail(_ status: Int, _ now: Double) -> Action {
        if exchange?.responseStarted == true { return abort() }
        let unread = exchange.map { !$0.requestBodyDone } ?? (phase == .head)
        exchange = nil
        enter(.closing, now)
        return .respond(status: status, end: .close(linger: unread))
    }

    private mutating func abort() -> Action {
        closed()
        return .end(.abort)
    }
}
