import Testing
import GatehouseConfig
@testable import GatehouseProxy

/// Every transition of the client connection's state machine, without
/// sockets: events in, actions (and the phase and deadline) out.
@Suite struct ConnectionStateMachineTests {
    typealias Machine = ConnectionStateMachine
    static let t = TimeoutSettings(handshake: 10, requestHeader: 5, idle: 60, backendConnect: 2, backendResponse: 30, drain: 30)

    struct Request {
        var idempotent = true, keepAlive = true, body = false, upgrade = false
    }

    static func request(idempotent: Bool = true, keepAlive: Bool = true, body: Bool = false,
                        upgrade: Bool = false) -> Request {
        Request(idempotent: idempotent, keepAlive: keepAlive, body: body, upgrade: upgrade)
    }

    static func start(_ m: inout Machine, _ r: Request, connected: Bool, now: Double) {
        m.exchangeStarted(ExchangeStateMachine.Request(idempotent: r.idempotent, hadBody: r.body, upgrade: r.upgrade),
                          keepAlive: r.keepAlive, requestBodyDone: !r.body, connected: connected, now: now)
    }

    /// A TLS connection through its handshake and a request head, up to a
    /// routed exchange whose backend connection is open.
    static func forwarding(_ r: Request = request(), draining: Bool = false) -> Machine {
        var m = Machine(tls: true, draining: draining, timeouts: t, now: 0)
        m.handshakeDone(now: 1)
        m.headStarted(now: 2)
        start(&m, r, connected: true, now: 2)
        return m
    }

    // MARK: handshake and first request

    @Test func tlsStartsInHandshakeAndPlainInFirstRequest() {
        #expect(Machine(tls: true, draining: false, timeouts: Self.t, now: 0).phase == .handshake)
        #expect(Machine(tls: false, draining: false, timeouts: Self.t, now: 0).phase == .firstRequest)
    }

    @Test func handshakeTimeoutAbortsWithoutAResponse() {
        var m = Machine(tls: true, draining: false, timeouts: Self.t, now: 100)
        #expect(m.deadline == 110)
        #expect(m.timerFired(now: 109.9) == .none)
        #expect(m.timerStale, "fired early: the driver re-arms for the rest")
        #expect(m.timerFired(now: 110) == .end(.abort))
        #expect(m.phase == .closed)
    }

    @Test func handshakeDoneStartsTheFirstRequestTimer() {
        var m = Machine(tls: true, draining: false, timeouts: Self.t, now: 0)
        m.timerArmed()
        m.handshakeDone(now: 3)
        #expect(m.phase == .firstRequest)
        #expect(m.timerStale)
        #expect(m.deadline == 8)
        // A second report changes nothing.
        m.handshakeDone(now: 4)
        #expect(m.deadline == 8)
    }

    @Test func silenceBeforeTheFirstRequestClosesGracefullyWithoutA408() {
        var m = Machine(tls: false, draining: false, timeouts: Self.t, now: 0)
        #expect(m.timerFired(now: 5) == .end(.close(linger: false)))
        #expect(m.phase == .closing)
    }

    @Test func headTimeoutIsATotalAndAnswers408WithLinger() {
        // Slowloris: bytes keep trickling in, the head deadline does not move.
        var m = Machine(tls: false, draining: false, timeouts: Self.t, now: 0)
        m.headStarted(now: 1)
        #expect(m.phase == .head)
        for second in 2...5 {
            m.progress(now: Double(second))
            m.headStarted(now: Double(second))
        }
        #expect(m.deadline == 6)
        #expect(m.timerFired(now: 6) == .respond(status: 408, end: .close(linger: true)))
        #expect(m.phase == .closing)
    }

    // MARK: local responses (RFC 9112 §9.6 linger, drain)

    @Test func localResponseKeepsAliveOrClosesWithLingerForAnUnreadBody() {
        var m = Machine(tls: false, draining: false, timeouts: Self.t, now: 0)
        m.headStarted(now: 1)
        #expect(m.localResponse(close: false, unreadBody: false, now: 2) == .keepAlive)
        #expect(m.phase == .idle)
        #expect(m.deadline == 62)
        m.headStarted(now: 3)
        // A 413 before the body was read: the client must see it before any RST.
        #expect(m.localResponse(close: true, unreadBody: true, now: 4) == .close(linger: true))
        #expect(m.phase == .closing)
    }

    @Test func localResponseWhileDrainingCloses() {
        var m = Machine(tls: false, draining: true, timeouts: Self.t, now: 0)
        m.headStarted(now: 1)
        #expect(m.localResponse(close: false, unreadBody: false, now: 2) == .close(linger: false))
    }

    // MARK: exchange phases and timers

    @Test func exchangeEntersConnectBodyOrResponsePhases() {
        var m = Machine(tls: false, draining: false, timeouts: Self.t, now: 0)
        m.headStarted(now: 0)
        Self.start(&m, Self.request(body: true), connected: false, now: 1)
        #expect(m.phase == .backendConnect)
        #expect(m.forwarding && !m.readsHeads)
        m.backendConnected(now: 1.5)
        #expect(m.phase == .body)
        m.requestBodyDone(now: 2)
        #expect(m.phase == .backendResponse)
        #expect(m.exchange?.requestBodyDone == true)

        var pooled = Machine(tls: false, draining: false, timeouts: Self.t, now: 0)
        Self.start(&pooled, Self.request(), connected: true, now: 1)
        #expect(pooled.phase == .backendResponse)
    }

    @Test func bodyDoneWhileConnectingWaitsForTheConnection() {
        var m = Machine(tls: false, draining: false, timeouts: Self.t, now: 0)
        Self.start(&m, Self.request(body: true), connected: false, now: 1)
        m.requestBodyDone(now: 1.2)
        #expect(m.phase == .backendConnect, "the connect timer keeps running")
        m.backendConnected(now: 1.5)
        #expect(m.phase == .backendResponse)
    }

    @Test func connectTimeoutIs502AndProgressDoesNotExtendIt() {
        var m = Machine(tls: false, draining: false, timeouts: Self.t, now: 0)
        Self.start(&m, Self.request(), connected: false, now: 0)
        m.progress(now: 1.5)
        #expect(m.timerFired(now: 2) == .respond(status: 502, end: .close(linger: false)))
    }

    @Test func backendResponseTimeoutIs504AfterTheLastProgress() {
        var m = Self.forwarding()
        m.requestBodyDone(now: 2)
        #expect(m.timerFired(now: 31) == .none)
        m.progress(now: 31)
        #expect(m.timerFired(now: 33) == .none)
        #expect(m.timerFired(now: 61) == .respond(status: 504, end: .close(linger: false)))
    }

    @Test func bodyStallAbortsAndAnUnreadBodyLingersOnFailure() {
        var m = Self.forwarding(Self.request(body: true))
        #expect(m.phase == .body)
        m.progress(now: 50)
        #expect(m.timerFired(now: 100) == .none)
        #expect(m.timerFired(now: 110) == .end(.abort))

        var failed = Self.forwarding(Self.request(body: true))
        #expect(failed.requestBodyFailed(status: 413, now: 3) == .respond(status: 413, end: .close(linger: true)))
        #expect(failed.exchange == nil)
    }

    // MARK: responses

    @Test func responseKeepsTheClientAndPoolsTheBackend() {
        var m = Self.forwarding()
        let r1 = m.responseHead(clientUntilClose: false, backendKeepAlive: true, backendUntilClose: false, now: 3)
        #expect(r1)
        #expect(m.phase == .responding)
        #expect(m.responseDone(now: 4) == .finish(reuseBackend: true, end: .keepAlive))
        #expect(m.phase == .idle)
        #expect(m.exchange == nil)
    }

    @Test func closeDelimitedOrHTTP10ResponsesCloseTheClient() {
        var m = Self.forwarding()
        let r2 = m.responseHead(clientUntilClose: true, backendKeepAlive: true, backendUntilClose: false, now: 3)
        #expect(!r2)
        #expect(m.responseDone(now: 4) == .finish(reuseBackend: true, end: .close(linger: false)))

        var noKeepAlive = Self.forwarding(Self.request(keepAlive: false))
        let r3 = noKeepAlive.responseHead(clientUntilClose: false, backendKeepAlive: true, backendUntilClose: false, now: 3)
        #expect(!r3)
    }

    @Test func backendSaysCloseSoItIsNotPooled() {
        var m = Self.forwarding()
        _ = m.responseHead(clientUntilClose: false, backendKeepAlive: false, backendUntilClose: false, now: 3)
        #expect(m.responseDone(now: 4) == .finish(reuseBackend: false, end: .keepAlive))
    }

    @Test func earlyResponseBeforeTheBodyEndsClosesAndLingers() {
        // The backend answered (a 413 of its own, say) while the body was still coming.
        var m = Self.forwarding(Self.request(body: true))
        let r4 = m.responseHead(clientUntilClose: false, backendKeepAlive: true, backendUntilClose: false, now: 3)
        #expect(!r4)
        #expect(m.responseDone(now: 4) == .finish(reuseBackend: false, end: .close(linger: true)))
    }

    @Test func respondingStallAbortsSoTheClientSeesATruncation() {
        // RFC 9112 §9.8: no close_notify on a truncated response.
        var m = Self.forwarding()
        _ = m.responseHead(clientUntilClose: false, backendKeepAlive: true, backendUntilClose: false, now: 3)
        m.progress(now: 10)
        #expect(m.timerFired(now: 39) == .none)
        #expect(m.timerFired(now: 40) == .end(.abort))
        #expect(m.phase == .closed)
    }

    @Test func invalidResponseIs502BeforeTheHeadAndAnAbortAfter() {
        var before = Self.forwarding()
        #expect(before.responseFailed(now: 3) == .respond(status: 502, end: .close(linger: false)))
        var after = Self.forwarding()
        _ = after.responseHead(clientUntilClose: false, backendKeepAlive: true, backendUntilClose: false, now: 3)
        #expect(after.responseFailed(now: 4) == .end(.abort))
        // A body that broke after the response started, too.
        var body = Self.forwarding(Self.request(body: true))
        _ = body.responseHead(clientUntilClose: false, backendKeepAlive: true, backendUntilClose: false, now: 3)
        #expect(body.requestBodyFailed(status: 400, now: 4) == .end(.abort))
    }

    // MARK: backend failures and the one retry (RFC 9110 §9.2.2)

    @Test func stalePooledConnectionIsRetriedOnceForAnIdempotentBodilessRequest() {
        var m = Self.forwarding()
        #expect(m.backendFailed(eof: true, reused: true, now: 3) == .retry)
        #expect(m.phase == .backendConnect)
        #expect(m.exchange?.retried == true)
        // The fresh connection fails too: no second retry.
        #expect(m.backendFailed(eof: true, reused: false, now: 4) == .respond(status: 502, end: .close(linger: false)))
    }

    @Test func noRetryWhenTheRequestCouldHaveBeenProcessed() {
        var post = Self.forwarding(Self.request(idempotent: false))
        #expect(post.backendFailed(eof: true, reused: true, now: 3) == .respond(status: 502, end: .close(linger: false)))
        var withBody = Self.forwarding(Self.request(body: true))
        withBody.requestBodyDone(now: 2.5)
        #expect(withBody.backendFailed(eof: true, reused: true, now: 3) == .respond(status: 502, end: .close(linger: false)))
        var bytesSeen = Self.forwarding()
        bytesSeen.responseBytesArrived()
        #expect(bytesSeen.backendFailed(eof: true, reused: true, now: 3) == .respond(status: 502, end: .close(linger: false)))
        var fresh = Self.forwarding()
        #expect(fresh.backendFailed(eof: false, reused: false, now: 3) == .respond(status: 502, end: .close(linger: false)))
    }

    @Test func retryWithoutAFreshConnectionIs502() {
        var m = Self.forwarding()
        _ = m.backendFailed(eof: true, reused: true, now: 3)
        #expect(m.backendUnavailable(now: 3) == .respond(status: 502, end: .close(linger: false)))
    }

    @Test func eofEndsACloseDelimitedBodyButTruncatesAnyOther() {
        var untilClose = Self.forwarding()
        _ = untilClose.responseHead(clientUntilClose: true, backendKeepAlive: false, backendUntilClose: true, now: 3)
        #expect(untilClose.backendFailed(eof: true, reused: false, now: 4) == .finish(reuseBackend: false, end: .close(linger: false)))

        var length = Self.forwarding()
        _ = length.responseHead(clientUntilClose: false, backendKeepAlive: true, backendUntilClose: false, now: 3)
        #expect(length.backendFailed(eof: true, reused: false, now: 4) == .end(.abort))

        var reset = Self.forwarding()
        _ = reset.responseHead(clientUntilClose: true, backendKeepAlive: false, backendUntilClose: true, now: 3)
        #expect(reset.backendFailed(eof: false, reused: false, now: 4) == .end(.abort), "a reset is not an end")
    }

    @Test func clientGoneMidExchangeAborts() {
        var m = Self.forwarding()
        #expect(m.clientGone(transportOpen: false, now: 3) == .end(.abort))
        #expect(m.phase == .closed)
        var closing = Machine(tls: false, draining: false, timeouts: Self.t, now: 0)
        _ = closing.localResponse(close: true, unreadBody: false, now: 1)
        #expect(closing.clientGone(transportOpen: false, now: 2) == .none, "the transport ends its own close")
    }

    // MARK: tunnel (RFC 9110 §15.2.2)

    @Test func switchingProtocolsOnlyAfterAnUpgradeRequest() {
        var refused = Self.forwarding()
        #expect(refused.switchingProtocols(now: 3) == .respond(status: 502, end: .close(linger: false)))

        var m = Self.forwarding(Self.request(upgrade: true))
        #expect(m.switchingProtocols(now: 3) == .none)
        #expect(m.phase == .tunnel)
        #expect(m.exchange?.backendReusable == false)
    }

    @Test func tunnelIdlesOutAndTrafficKeepsItOpen() {
        var m = Self.forwarding(Self.request(upgrade: true))
        _ = m.switchingProtocols(now: 100)
        #expect(m.timerFired(now: 159) == .none)
        m.progress(now: 159)
        #expect(m.timerFired(now: 218) == .none, "bytes in either direction restart the timer")
        #expect(m.timerFired(now: 219) == .end(.abort))
    }

    @Test func tunnelClientEOFStillDeliversWhatItSent() {
        // The bug: a client EOF dropped bytes already queued for the backend.
        var m = Self.forwarding(Self.request(upgrade: true))
        _ = m.switchingProtocols(now: 3)
        #expect(m.clientGone(transportOpen: true, now: 4) == .endTunnelFromClient)
        #expect(m.phase == .closing)
    }

    @Test func tunnelBackendEOFClosesTheClientGracefully() {
        var m = Self.forwarding(Self.request(upgrade: true))
        _ = m.switchingProtocols(now: 3)
        #expect(m.backendFailed(eof: true, reused: false, now: 4) == .finish(reuseBackend: false, end: .close(linger: false)))
        #expect(m.phase == .closing)
    }

    @Test func refusedUpgradeDoesNotReuseTheBackend() {
        var m = Self.forwarding(Self.request(upgrade: true))
        _ = m.responseHead(clientUntilClose: false, backendKeepAlive: true, backendUntilClose: false, now: 3)
        #expect(m.responseDone(now: 4) == .finish(reuseBackend: false, end: .keepAlive))
    }

    // MARK: drain (SIGTERM)

    @Test func drainClosesAnIdleKeepAliveConnectionAtOnce() {
        var m = Self.forwarding()
        _ = m.responseHead(clientUntilClose: false, backendKeepAlive: true, backendUntilClose: false, now: 3)
        _ = m.responseDone(now: 4)
        #expect(m.drain(inputPending: false, now: 5) == .end(.close(linger: false)))
        #expect(m.phase == .closing)
    }

    @Test func drainServesAPipelinedRequestAlreadyBuffered() {
        var m = Machine(tls: false, draining: false, timeouts: Self.t, now: 0)
        _ = m.localResponse(close: false, unreadBody: false, now: 1)
        #expect(m.drain(inputPending: true, now: 2) == .none)
        #expect(m.phase == .idle)
    }

    @Test func drainServesConnectionsNotYetServed() {
        // The bug: a stop dropped connections in their handshake, PROXY header
        // or first request, which a TCP balancer has already forwarded.
        for setup in [Phase.handshake, .firstRequest, .head] {
            var m = Machine(tls: setup == .handshake, draining: false, timeouts: Self.t, now: 0)
            if setup == .head { m.headStarted(now: 1) }
            #expect(m.drain(inputPending: false, now: 2) == .none)
            #expect(m.phase == setup)
            #expect(m.draining)
        }
    }

    @Test func responseInFlightDuringDrainIsTheLast() {
        // Head already sent with keep-alive: the connection still closes after it.
        var m = Self.forwarding()
        let r5 = m.responseHead(clientUntilClose: false, backendKeepAlive: true, backendUntilClose: false, now: 3)
        #expect(r5)
        #expect(m.drain(inputPending: false, now: 4) == .none)
        #expect(m.responseDone(now: 5) == .finish(reuseBackend: true, end: .close(linger: false)))

        // Head not yet sent: it says Connection: close.
        var early = Self.forwarding()
        _ = early.drain(inputPending: false, now: 3)
        let r6 = early.responseHead(clientUntilClose: false, backendKeepAlive: true, backendUntilClose: false, now: 4)
        #expect(!r6)
    }

    @Test func connectionAcceptedDuringDrainIsServedOnceWithClose() {
        var m = Self.forwarding(draining: true)
        let r7 = m.responseHead(clientUntilClose: false, backendKeepAlive: true, backendUntilClose: false, now: 3)
        #expect(!r7)
        #expect(m.responseDone(now: 4) == .finish(reuseBackend: true, end: .close(linger: false)))
    }

    // MARK: backpressure and closing

    @Test func pauseFlagsReportOnlyChanges() {
        var m = Self.forwarding()
        let r8 = m.pauseClientRead(true)
        #expect(r8)
        let r9 = m.pauseClientRead(true)
        #expect(!r9)
        let r10 = m.pauseClientRead(false)
        #expect(r10)
        let r11 = m.pauseBackendRead(true)
        #expect(r11)
        let r12 = m.pauseBackendRead(true)
        #expect(!r12)
        #expect(m.backendReadPaused)
    }

    @Test func closingFlushStallAbortsAndClosedIgnoresEverything() {
        var m = Machine(tls: false, draining: false, timeouts: Self.t, now: 0)
        _ = m.localResponse(close: true, unreadBody: false, now: 1)
        m.progress(now: 30)
        #expect(m.timerFired(now: 89) == .none)
        #expect(m.timerFired(now: 90) == .end(.abort))
        #expect(m.timerFired(now: 500) == .none)
        #expect(m.backendFailed(eof: true, reused: true, now: 500) == .none)
        #expect(m.responseDone(now: 500) == .none)
        #expect(!m.isOpen)
    }

    typealias Phase = Machine.Phase
}
