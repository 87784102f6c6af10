import GatehouseConfig

/// The timeouts of one client connection as a pure state machine: which timer
/// runs in each phase, whether progress restarts it, and what expiry means.
/// Driven from libevent by `ClientConnection`; tested without sockets.
public struct ConnectionClock: Sendable, Equatable {
    public enum Phase: Sendable, Equatable {
        /// TLS handshake in progress.
        case handshake
        /// Connection ready (TLS done), no byte of the first request yet.
        case firstRequest
        /// Keep-alive: waiting for the first byte of the next request.
        case idle
        /// Reading a request head (slowloris guard: progress does not extend it).
        case head
        /// Receiving a request body.
        case body
        /// Connecting to the backend.
        case backendConnect
        /// Request sent, waiting for the backend's response head.
        case backendResponse
        /// Streaming the response body.
        case responding
        /// Flushing a final response before closing.
        case closing
        /// Upgraded (WebSocket): bytes flow both ways; inactivity closes.
        case tunnel
    }

    public enum Expiry: Sendable, Equatable {
        /// Close without a response (nothing useful can be said).
        case close
        /// Answer with this status, then close.
        case respond(Int)
    }

    public private(set) var phase: Phase
    /// When the running timer started counting.
    public private(set) var since: Double

    public init(phase: Phase, now: Double) {
        self.phase = phase
        self.since = now
    }

    public mutating func enter(_ phase: Phase, now: Double) {
        self.phase = phase
        self.since = now
    }

    /// Bytes moved. Inactivity timers restart; the head and handshake timers
    /// are totals, so trickling bytes cannot keep a connection forever.
    public mutating func progress(now: Double) {
        switch phase {
        case .body, .backendResponse, .responding, .closing, .tunnel: since = now
        case .handshake, .firstRequest, .idle, .head, .backendConnect: break
        }
    }

    public func limit(_ t: TimeoutSettings) -> Double {
        switch phase {
        case .handshake: t.handshake
        case .firstRequest: t.requestHeader
        case .idle: t.idle
        case .head: t.requestHeader
        case .body: t.idle
        case .backendConnect: t.backendConnect
        case .backendResponse: t.backendResponse
        case .responding: t.backendResponse
        case .closing: t.idle
        case .tunnel: t.idle
        }
    }

    public func deadline(_ t: TimeoutSettings) -> Double { since + limit(t) }

    /// nil while the deadline has not passed (the driver re-arms for the rest).
    public func expiry(now: Double, _ t: TimeoutSettings) -> Expiry? {
        guard now >= deadline(t) else { return nil }
        switch phase {
        case .head: return .respond(408)            // RFC 9110 §15.5.9
        case .backendConnect: return .respond(502)
        case .backendResponse: return .respond(504) // RFC 9110 §15.6.5
        case .handshake, .firstRequest, .idle, .body, .responding, .closing, .tunnel: return .close
        }
    }
}
