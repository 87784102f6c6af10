import GatehouseConfig

/// The lifecycle of one HTTP/1.1 client connection as a pure state machine:
/// events in, actions out. No sockets, no libevent, no OpenSSL:
/// `ClientConnection` feeds it what the transport, the codec and the exchange
/// report, and carries out what it answers. It owns the connection's phases
/// and their timeouts, keep-alive, the drain and the backpressure flags; the
/// request in flight is an `ExchangeStateMachine` inside it (the same an
/// HTTP/2 stream uses). Tested without sockets.
public struct ConnectionStateMachine: Sendable, Equatable {
    /// The connection's phase; while an exchange is in flight, the exchange's.
    public enum Phase: Sendable, Equatable {
        /// TLS handshake in progress.
        case handshake
        /// Connection ready (TLS done), no byte of the first request yet.
        case firstRequest
        /// Keep-alive: a request was served; waiting for the next one's first byte.
        case idle
        /// Reading a request head (slowloris guard: progress does not extend it).
        case head
        case backendConnect, body, backendResponse, responding, tunnel
        /// HTTP/2: streams carry the exchanges; the codec times them.
        case multiplexed
        /// The final response is queued: flush, close_notify, FIN.
        case closing
        case closed
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

    private enum Stage: Sendable, Equatable {
        case handshake, firstRequest, idle, head, exchange, multiplexed, closing, closed
    }

    private var stage: Stage
    /// The request in flight, from its routing to its response's end.
    public private(set) var exchange: ExchangeStateMachine?
    /// The request allows keep-alive (RFC 9112 §9.3).
    private var requestKeepAlive = false
    /// SIGTERM came: every response from now on is the connection's last.
    public private(set) var draining: Bool
    /// Reading from the client waits until the backend takes what was queued.
    public private(set) var clientReadPaused = false
    /// Reading from the backend waits until the client takes what was queued.
    public private(set) var backendReadPaused = false
    /// When the connection's own timer started counting (outside exchanges).
    private var since: Double
    /// The phase changed since the driver last armed its timer.
    public private(set) var timerStale = true
    public let timeouts: TimeoutSettings

    public init(tls: Bool, draining: Bool, timeouts: TimeoutSettings, now: Double) {
        stage = tls ? .handshake : .firstRequest
        self.draining = draining
        self.timeouts = timeouts
        since = now
    }

    // MARK: - Queries

    public var phase: Phase {
        switch stage {
        case .handshake: .handshake
        case .firstRequest: .firstRequest
        case .idle: .idle
        case .head: .head
        case .multiplexed: .multiplexed
        case .closing: .closing
        case .closed: .closed
        case .exchange:
            switch exchange?.phase {
            case .backendConnect: .backendConnect
            case .body: .body
            case .backendResponse: .backendResponse
            case .responding, .done, nil: .responding
            case .tunnel: .tunnel
            }
        }
    }

    /// Between requests or reading one: bytes from the client are request heads.
    public var readsHeads: Bool { stage == .firstRequest || stage == .idle || stage == .head }

    /// A request is with a backend (connecting, sending, awaiting or streaming its response).
    public var forwarding: Bool { stage == .exchange && exchange?.phase != .tunnel }

    public var isOpen: Bool { stage != .closed }

    /// When the running timer expires, unless bytes move. Head and handshake
    /// are totals, so trickling bytes cannot keep a connection forever.
    public var deadline: Double {
        switch stage {
        case .handshake: since + timeouts.handshake
        case .firstRequest, .head: since + timeouts.requestHeader
        case .idle, .multiplexed, .closing, .closed: since + timeouts.idle
        case .exchange: exchange.map { $0.deadline(timeouts) } ?? since + timeouts.idle
        }
    }

    // MARK: - Events: the client

    /// The driver armed its timer for `deadline`.
    public mutating func timerArmed() { timerStale = false }

    public mutating func handshakeDone(now: Double) {
        guard stage == .handshake else { return }
        enter(.firstRequest, now)
    }

    /// The first byte of a request head arrived: the head timer starts.
    public mutating func headStarted(now: Double) {
        if stage == .idle || stage == .firstRequest { enter(.head, now) }
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
        switch stage {
        case .exchange: exchange?.progress(now: now)
        case .closing, .multiplexed: since = now
        case .handshake, .firstRequest, .idle, .head, .closed: break
        }
    }

    /// The client closed or reset its side. `transportOpen`: only its
    /// sending side ended (a tunnel still delivers what it sent).
    public mutating func clientGone(transportOpen: Bool, now: Double) -> Action {
        if stage == .exchange, exchange?.phase == .tunnel, transportOpen {
            exchange = nil
            enter(.closing, now)
            return .endTunnelFromClient
        }
        if stage == .closing || stage == .closed { return .none }
        return abort()
    }

    /// SIGTERM: a keep-alive connection between requests (it was served)
    /// closes now. Every other one is in flight: one in its handshake or
    /// before its first request may already carry a request a TCP balancer
    /// cannot retry, so it is served, with `Connection: close`.
    public mutating func drain(inputPending: Bool, now: Double) -> Action {
        draining = true
        guard stage == .idle, !inputPending else { return .none }
        enter(.closing, now)
        return .end(.close(linger: false))
    }

    /// The timer fired. `.none` with `timerStale` set: not yet expired (bytes
    /// moved since it was armed), the driver arms it for the rest.
    public mutating func timerFired(now: Double) -> Action {
        switch stage {
        case .closed, .multiplexed:
            // HTTP/2 streams and the idle connection are timed by the codec.
            return .none
        case .exchange:
            let t = timeouts
            guard let fired = onExchange({ $0.timerFired(now: now, t) }), let outcome = fired else {
                timerStale = true
                return .none
            }
            return apply(outcome, now)
        default:
            break
        }
        guard now >= deadline else {
            timerStale = true
            return .none
        }
        switch stage {
        case .firstRequest, .idle:
            // Nothing in flight: a polite goodbye.
            enter(.closing, now)
            return .end(.close(linger: false))
        case .head:
            // RFC 9110 §15.5.9; what follows an incomplete head is unread.
            enter(.closing, now)
            return .respond(status: 408, end: .close(linger: true))
        default:
            // A stalled handshake or final flush: nothing honest to add.
            return abort()
        }
    }

    public mutating func handshakeFailed() { closed() }

    /// ALPN chose h2 (RFC 9113 §3.2): from now on the HTTP/2 codec carries
    /// the requests, each stream an `ExchangeStateMachine` of its own.
    public mutating func startMultiplexing(now: Double) {
        guard stage == .firstRequest else { return }
        enter(.multiplexed, now)
    }

    /// The HTTP/2 codec is done (GOAWAY exchanged, or idle): a graceful close.
    public mutating func multiplexingEnded(now: Double) -> Action {
        guard stage == .multiplexed else { return .none }
        enter(.closing, now)
        return .end(.close(linger: false))
    }

    /// The connection is gone (the driver closed the transport).
    public mutating func closed() {
        stage = .closed
        exchange = nil
    }

    // MARK: - Events: the exchange

    /// A request was routed to a backend. `connected`: the backend connection
    /// came from the pool, already open.
    public mutating func exchangeStarted(_ request: ExchangeStateMachine.Request, keepAlive: Bool, requestBodyDone: Bool,
                                         connected: Bool, now: Double) {
        exchange = ExchangeStateMachine(request, requestBodyDone: requestBodyDone, connected: connected, now: now)
        requestKeepAlive = keepAlive
        enter(.exchange, now)
    }

    /// No backend connection could be made (the first, or the retry).
    public mutating func backendUnavailable(now: Double) -> Action { apply(.fail(status: 502), now) }

    public mutating func backendConnected(now: Double) { onExchange { $0.backendConnected(now: now) } }

    public mutating func requestBodyDone(now: Double) { onExchange { $0.bodyDone(now: now) } }

    /// The request body broke its framing (400) or the size limit (413).
    public mutating func requestBodyFailed(status: Int, now: Double) -> Action {
        apply(onExchange { $0.bodyFailed(status: status) } ?? .fail(status: status), now)
    }

    public mutating func responseBytesArrived() { exchange?.responseBytesArrived() }

    /// The backend's response was invalid: its head (a 502) or its body (an abort).
    public mutating func responseFailed(now: Double) -> Action {
        apply(onExchange { $0.responseFailed() } ?? .fail(status: 502), now)
    }

    /// The backend's final response head. `clientUntilClose`: the body sent to
    /// the client ends with the connection; `backendKeepAlive` and
    /// `backendUntilClose`: what the backend's head said. Returns whether the
    /// client connection stays open after this response (its `Connection` field).
    public mutating func responseHead(clientUntilClose: Bool, backendKeepAlive: Bool, backendUntilClose: Bool,
                                      now: Double) -> Bool {
        guard exchange != nil else { return false }
        onExchange { $0.responseHead(backendKeepAlive: backendKeepAlive, backendUntilClose: backendUntilClose, now: now) }
        requestKeepAlive = requestKeepAlive && !clientUntilClose && exchange?.requestBodyDone == true && !draining
        return requestKeepAlive
    }

    /// A 101 (RFC 9110 §15.2.2). Allowed only after an Upgrade was forwarded.
    public mutating func switchingProtocols(now: Double) -> Action {
        let outcome = onExchange { $0.switchingProtocols(now: now) } ?? .fail(status: 502)
        // After the switch the connection never carries HTTP/1.1 again.
        if outcome == .none { requestKeepAlive = false }
        return apply(outcome, now)
    }

    /// The response's last byte was queued for the client.
    public mutating func responseDone(now: Double) -> Action {
        apply(onExchange { $0.responseDone() } ?? .none, now)
    }

    /// The backend closed, reset or failed to connect. `eof`: an orderly
    /// close; `reused`: the connection came from the pool.
    public mutating func backendFailed(eof: Bool, reused: Bool, now: Double) -> Action {
        apply(onExchange { $0.backendFailed(eof: eof, reused: reused, now: now) } ?? .none, now)
    }

    // MARK: - Backpressure

    /// Returns whether the flag changed (the driver then tells the transport).
    public mutating func pauseClientRead(_ paused: Bool) -> Bool {
        guard clientReadPaused != paused else { return false }
        clientReadPaused = paused
        return true
    }

    /// The backend waits for the client (paused) or goes on. While it waits,
    /// a stalled response is the client's and `idle` times it.
    public mutating func pauseBackendRead(_ paused: Bool) -> Bool {
        guard backendReadPaused != paused else { return false }
        backendReadPaused = paused
        onExchange { $0.clientBackpressure(paused) }
        timerStale = true
        return true
    }

    // MARK: - Transitions

    private mutating func enter(_ next: Stage, _ now: Double) {
        stage = next
        since = now
        timerStale = true
    }

    /// Runs an exchange event; a phase change re-arms the timer.
    @discardableResult
    private mutating func onExchange<R>(_ event: (inout ExchangeStateMachine) -> R) -> R? {
        guard stage == .exchange, var ex = exchange else { return nil }
        let before = ex.phase
        exchange = nil          // no copy-on-write while it changes
        let result = event(&ex)
        if ex.phase != before { timerStale = true }
        exchange = ex
        return result
    }

    /// What an exchange outcome means for the connection.
    private mutating func apply(_ outcome: ExchangeStateMachine.Outcome, _ now: Double) -> Action {
        switch outcome {
        case .none:
            return .none
        case .retry:
            return .retry
        case .fail(let status):
            // The request's framing can no longer be trusted: the answer closes.
            let unread = exchange.map { !$0.requestBodyDone } ?? false
            exchange = nil
            enter(.closing, now)
            return .respond(status: status, end: .close(linger: unread))
        case .abort:
            return abort()
        case .finish(let reuse):
            let bodyDone = exchange?.requestBodyDone ?? true
            exchange = nil
            // Draining: a response that started before SIGTERM promised
            // keep-alive, but the connection still ends with it.
            guard requestKeepAlive, !draining else {
                enter(.closing, now)
                return .finish(reuseBackend: reuse, end: .close(linger: !bodyDone))
            }
            enter(.idle, now)
            return .finish(reuseBackend: reuse, end: .keepAlive)
        }
    }

    private mutating func abort() -> Action {
        closed()
        return .end(.abort)
    }
}
