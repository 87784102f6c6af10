import GatehouseConfig

/// One exchange's lifecycle (one request to one backend response) as a pure
/// state machine, the same for an HTTP/1.1 connection and an HTTP/2 stream:
/// its phases and their timeouts, the one retry on a fresh connection, whether
/// the backend connection may be reused, and what a failure means. The
/// client side decides what the outcome means for its connection.
public struct ExchangeStateMachine: Sendable, Equatable {
    public enum Phase: Sendable, Equatable {
        /// Connecting to the backend (a request body may already be queued).
        case backendConnect
        /// Sending the request body.
        case body
        /// Request sent, waiting for the backend's response head.
        case backendResponse
        /// Streaming the response body.
        case responding
        /// Upgraded (RFC 9110 §15.2.2): bytes flow both ways; inactivity ends it.
        case tunnel
        case done
    }

    public enum Outcome: Sendable, Equatable {
        case none
        /// Send the same request once more, on a fresh backend connection.
        case retry
        /// Before the response started: the client gets this status from
        /// Gatehouse; the backend connection is dropped.
        case fail(status: Int)
        /// The response is complete; the backend goes back to the pool or not.
        case finish(reuseBackend: Bool)
        /// After the response started: only a truncation is honest (RFC 9112
        /// §9.8; RST_STREAM in HTTP/2); the backend connection is dropped.
        case abort
    }

    /// What the request said.
    public struct Request: Sendable, Equatable {
        /// A retry on a fresh connection is allowed only for these (RFC 9110 §9.2.2).
        public var idempotent: Bool
        /// The request carried a body (so it cannot be replayed).
        public var hadBody: Bool
        /// Upgrade was forwarded (RFC 9110 §7.8): a 101 is expected.
        public var upgrade: Bool

        public init(idempotent: Bool, hadBody: Bool, upgrade: Bool) {
            self.idempotent = idempotent
            self.hadBody = hadBody
            self.upgrade = upgrade
        }
    }

    public let request: Request
    public private(set) var phase: Phase
    public private(set) var requestBodyDone: Bool
    public private(set) var responseStarted = false
    /// Some response bytes arrived (a retry would no longer be safe).
    public private(set) var responseBytesSeen = false
    /// The backend's body ends with its EOF (RFC 9112 §6.3, rule 8).
    public private(set) var responseUntilClose = false
    public private(set) var retried = false
    public private(set) var backendReusable = false
    /// The response waits for the client to read what is queued: the stall
    /// is the client's, timed by `idle`, not `backend_response`.
    public private(set) var waitingOnClient = false
    /// When the running timer started counting (or bytes last moved).
    public private(set) var since: Double

    /// `connected`: the backend connection came from the pool, already open.
    public init(_ request: Request, requestBodyDone: Bool, connected: Bool, now: Double) {
        self.request = request
        self.requestBodyDone = requestBodyDone
        phase = connected ? (requestBodyDone ? .backendResponse : .body) : .backendConnect
        since = now
    }

    /// How long the current phase may last without progress (connect: in all).
    public func limit(_ t: TimeoutSettings) -> Double {
        switch phase {
        case .backendConnect: t.backendConnect
        case .body, .tunnel, .done: t.idle
        case .backendResponse: t.backendResponse
        case .responding: waitingOnClient ? t.idle : t.backendResponse
        }
    }

    public func deadline(_ t: TimeoutSettings) -> Double { since + limit(t) }

    public var isDone: Bool { phase == .done }

    // MARK: - Events

    public mutating func backendConnected(now: Double) {
        guard phase == .backendConnect else { return }
        enter(requestBodyDone ? .backendResponse : .body, now)
    }

    /// Bytes moved: inactivity timers restart; the connect timer does not.
    public mutating func progress(now: Double) {
        if phase != .backendConnect { since = now }
    }

    /// The client side's buffer for this response filled (true) or drained.
    public mutating func clientBackpressure(_ waiting: Bool) { waitingOnClient = waiting }

    public mutating func bodyDone(now: Double) {
        requestBodyDone = true
        if phase == .body { enter(.backendResponse, now) }
    }

    /// The request body broke its framing (400) or the size limit (413).
    public mutating func bodyFailed(status: Int) -> Outcome { fail(status) }

    public mutating func responseBytesArrived() { responseBytesSeen = true }

    /// The backend's final response head.
    public mutating func responseHead(backendKeepAlive: Bool, backendUntilClose: Bool, now: Double) {
        guard !isDone else { return }
        // A refused upgrade keeps HTTP framing, but the backend may have half
        // switched: its connection is not reused.
        backendReusable = backendKeepAlive && !backendUntilClose && !request.upgrade
        responseUntilClose = backendUntilClose
        responseStarted = true
        enter(.responding, now)
    }

    /// A 101, allowed only after an Upgrade was forwarded.
    public mutating func switchingProtocols(now: Double) -> Outcome {
        guard request.upgrade, !responseStarted, !isDone else { return fail(502) }
        responseStarted = true
        backendReusable = false
        enter(.tunnel, now)
        return .none
    }

    /// The response's last byte was handed to the client side.
    public mutating func responseDone() -> Outcome {
        guard !isDone else { return .none }
        phase = .done
        return .finish(reuseBackend: backendReusable && requestBodyDone)
    }

    /// The backend's response was invalid: its head (502) or its body (abort).
    public mutating func responseFailed() -> Outcome { fail(502) }

    /// The backend closed, reset or could not be reached. `eof`: an orderly
    /// close; `reused`: the connection came from the pool.
    public mutating func backendFailed(eof: Bool, reused: Bool, now: Double) -> Outcome {
        switch phase {
        case .done:
            return .none
        case .tunnel:
            // The backend ended the upgraded connection: what it sent is delivered.
            phase = .done
            return .finish(reuseBackend: false)
        default:
            break
        }
        if responseStarted {
            // A close-delimited body ends with EOF; any other body is truncated.
            return eof && responseUntilClose ? responseDone() : fail(502)
        }
        // A pooled connection the backend had closed: once more on a fresh one
        // if nothing of the request can have been processed (RFC 9110 §9.2.2).
        if reused, !retried, request.idempotent, requestBodyDone, !request.hadBody, !responseBytesSeen {
            retried = true
            enter(.backendConnect, now)
            return .retry
        }
        return fail(502)
    }

    /// The timer fired; nil while the deadline has not passed (bytes moved
    /// since it was armed: the driver re-arms for the rest).
    public mutating func timerFired(now: Double, _ t: TimeoutSettings) -> Outcome? {
        guard !isDone else { return Outcome.none }
        guard now >= deadline(t) else { return nil }
        switch phase {
        case .backendConnect: return fail(502)
        case .backendResponse: return fail(504)   // RFC 9110 §15.6.5
        case .body, .responding, .tunnel, .done:
            // A stalled transfer: nothing honest to add.
            phase = .done
            return .abort
        }
    }

    /// The client went away (or reset the stream): the backend is dropped.
    public mutating func cancel() { phase = .done }

    // MARK: - Transitions

    private mutating func enter(_ next: Phase, _ now: Double) {
        phase = next
        since = now
    }

    /// Before the response started: a status of Gatehouse's; after, an abort.
    private mutating func fail(_ status: Int) -> Outcome {
        let started = responseStarted
        phase = .done
        return started ? .abort : .fail(status: status)
    }
}
