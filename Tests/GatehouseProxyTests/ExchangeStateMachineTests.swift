import Testing
import GatehouseConfig
@testable import GatehouseProxy

/// The exchange's own decisions, as an HTTP/2 stream sees them (no
/// connection around it): outcomes, phases and timers.
@Suite struct ExchangeStateMachineTests {
    typealias X = ExchangeStateMachine
    static let t = TimeoutSettings(handshake: 10, requestHeader: 5, idle: 60, backendConnect: 2, backendResponse: 30, drain: 30)
    static let get = X.Request(idempotent: true, hadBody: false, upgrade: false)
    static let post = X.Request(idempotent: false, hadBody: true, upgrade: false)

    @Test func phasesFollowConnectBodyAndResponse() {
        var x = X(Self.post, requestBodyDone: false, connected: false, now: 0)
        #expect(x.phase == .backendConnect)
        #expect(x.deadline(Self.t) == 2)
        x.backendConnected(now: 1)
        #expect(x.phase == .body)
        x.bodyDone(now: 2)
        #expect(x.phase == .backendResponse)
        #expect(x.deadline(Self.t) == 32)
        x.responseHead(backendKeepAlive: true, backendUntilClose: false, now: 3)
        #expect(x.phase == .responding)
        #expect(x.responseDone() == .finish(reuseBackend: true))
        #expect(x.isDone)
        #expect(x.responseDone() == .none, "once")
    }

    @Test func timersAnswer502Or504BeforeTheResponseAndAbortAfter() {
        var connect = X(Self.get, requestBodyDone: true, connected: false, now: 0)
        #expect(connect.timerFired(now: 1.9, Self.t) == nil)
        #expect(connect.timerFired(now: 2, Self.t) == .fail(status: 502))
        var waiting = X(Self.get, requestBodyDone: true, connected: true, now: 0)
        waiting.progress(now: 20)
        #expect(waiting.timerFired(now: 49, Self.t) == nil)
        #expect(waiting.timerFired(now: 50, Self.t) == .fail(status: 504))
        var streaming = X(Self.get, requestBodyDone: true, connected: true, now: 0)
        streaming.responseHead(backendKeepAlive: true, backendUntilClose: false, now: 1)
        #expect(streaming.timerFired(now: 31, Self.t) == .abort)
        var body = X(Self.post, requestBodyDone: false, connected: true, now: 0)
        #expect(body.timerFired(now: 60, Self.t) == .abort, "a stalled upload")
    }

    @Test func oneRetryOnlyForAStaleIdempotentBodilessRequest() {
        var x = X(Self.get, requestBodyDone: true, connected: true, now: 0)
        #expect(x.backendFailed(eof: true, reused: true, now: 1) == .retry)
        #expect(x.phase == .backendConnect)
        #expect(x.backendFailed(eof: true, reused: true, now: 2) == .fail(status: 502))

        var post = X(Self.post, requestBodyDone: true, connected: true, now: 0)
        #expect(post.backendFailed(eof: true, reused: true, now: 1) == .fail(status: 502))
        var seen = X(Self.get, requestBodyDone: true, connected: true, now: 0)
        seen.responseBytesArrived()
        #expect(seen.backendFailed(eof: true, reused: true, now: 1) == .fail(status: 502))
    }

    @Test func failuresAfterTheResponseStartedAreAborts() {
        var x = X(Self.get, requestBodyDone: true, connected: true, now: 0)
        x.responseHead(backendKeepAlive: true, backendUntilClose: false, now: 1)
        #expect(x.responseFailed() == .abort)
        var eof = X(Self.get, requestBodyDone: true, connected: true, now: 0)
        eof.responseHead(backendKeepAlive: true, backendUntilClose: false, now: 1)
        #expect(eof.backendFailed(eof: true, reused: false, now: 2) == .abort)
        var untilClose = X(Self.get, requestBodyDone: true, connected: true, now: 0)
        untilClose.responseHead(backendKeepAlive: false, backendUntilClose: true, now: 1)
        #expect(untilClose.backendFailed(eof: true, reused: false, now: 2) == .finish(reuseBackend: false))
    }

    @Test func backendIsReusedOnlyAfterACompleteExchange() {
        var early = X(Self.post, requestBodyDone: false, connected: true, now: 0)
        early.responseHead(backendKeepAlive: true, backendUntilClose: false, now: 1)
        #expect(early.responseDone() == .finish(reuseBackend: false), "the backend still expects body bytes")
        var closes = X(Self.get, requestBodyDone: true, connected: true, now: 0)
        closes.responseHead(backendKeepAlive: false, backendUntilClose: false, now: 1)
        #expect(closes.responseDone() == .finish(reuseBackend: false))
        var refusedUpgrade = X(X.Request(idempotent: true, hadBody: false, upgrade: true), requestBodyDone: true, connected: true, now: 0)
        refusedUpgrade.responseHead(backendKeepAlive: true, backendUntilClose: false, now: 1)
        #expect(refusedUpgrade.responseDone() == .finish(reuseBackend: false))
    }

    @Test func tunnelOnlyAfterAnUpgradeAndItsEndIsAFinish() {
        var plain = X(Self.get, requestBodyDone: true, connected: true, now: 0)
        #expect(plain.switchingProtocols(now: 1) == .fail(status: 502))
        var x = X(X.Request(idempotent: true, hadBody: false, upgrade: true), requestBodyDone: true, connected: true, now: 0)
        #expect(x.switchingProtocols(now: 1) == .none)
        #expect(x.phase == .tunnel)
        #expect(x.switchingProtocols(now: 2) == .abort, "a second 101 after the switch")
        var y = X(X.Request(idempotent: true, hadBody: false, upgrade: true), requestBodyDone: true, connected: true, now: 0)
        _ = y.switchingProtocols(now: 1)
        #expect(y.backendFailed(eof: true, reused: false, now: 5) == .finish(reuseBackend: false))
    }

    @Test func aResponseStalledOnTheClientIsTimedByIdle() {
        // A zero-window HTTP/2 client, a slow HTTP/1.1 reader: not the backend's fault.
        let t = TimeoutSettings(handshake: 10, requestHeader: 5, idle: 4, backendConnect: 2, backendResponse: 30, drain: 30)
        var x = X(Self.get, requestBodyDone: true, connected: true, now: 0)
        x.responseHead(backendKeepAlive: true, backendUntilClose: false, now: 1)
        #expect(x.deadline(t) == 31)
        x.clientBackpressure(true)
        #expect(x.deadline(t) == 5)
        #expect(x.timerFired(now: 5, t) == .abort, "reset, never ended as if complete")
        var y = X(Self.get, requestBodyDone: true, connected: true, now: 0)
        y.responseHead(backendKeepAlive: true, backendUntilClose: false, now: 1)
        y.clientBackpressure(true)
        y.clientBackpressure(false)
        #expect(y.deadline(t) == 31, "the client read: the backend is timed again")
    }

    @Test func bodyErrorsAndCancel() {
        var x = X(Self.post, requestBodyDone: false, connected: true, now: 0)
        #expect(x.bodyFailed(status: 413) == .fail(status: 413))
        #expect(x.isDone)
        var c = X(Self.get, requestBodyDone: true, connected: true, now: 0)
        c.cancel()
        #expect(c.backendFailed(eof: false, reused: false, now: 1) == .none)
        #expect(c.timerFired(now: 100, Self.t) == X.Outcome.none)
    }
}
