import Testing
import GatehouseConfig
@testable import GatehouseProxy

@Suite struct ConnectionClockTests {
    let t = TimeoutSettings(handshake: 10, requestHeader: 5, idle: 60, backendConnect: 2, backendResponse: 30, drain: 30)

    @Test func handshakeExpiresIntoClose() {
        let c = ConnectionClock(phase: .handshake, now: 100)
        #expect(c.expiry(now: 109.9, t) == nil)
        #expect(c.expiry(now: 110, t) == .close)
    }

    @Test func headTimeoutIsTotalNotInactivity() {
        // Slowloris: bytes keep trickling in, the head deadline does not move.
        var c = ConnectionClock(phase: .head, now: 0)
        for second in 1...4 { c.progress(now: Double(second)) }
        #expect(c.deadline(t) == 5)
        #expect(c.expiry(now: 5, t) == .respond(408))
    }

    @Test func firstRequestSilenceClosesWithoutA408() {
        let c = ConnectionClock(phase: .firstRequest, now: 0)
        #expect(c.expiry(now: 5, t) == .close)
    }

    @Test func idleKeepAliveCloses() {
        let c = ConnectionClock(phase: .idle, now: 10)
        #expect(c.expiry(now: 69, t) == nil)
        #expect(c.expiry(now: 70, t) == .close)
    }

    @Test func bodyStallIsInactivity() {
        var c = ConnectionClock(phase: .body, now: 0)
        c.progress(now: 50)
        #expect(c.expiry(now: 100, t) == nil)
        #expect(c.expiry(now: 110, t) == .close)
    }

    @Test func backendConnectGives502AndIsNotExtendedByProgress() {
        var c = ConnectionClock(phase: .backendConnect, now: 0)
        c.progress(now: 1.5)
        #expect(c.expiry(now: 2, t) == .respond(502))
    }

    @Test func backendResponseGives504AfterLastProgress() {
        var c = ConnectionClock(phase: .backendResponse, now: 0)
        #expect(c.expiry(now: 29, t) == nil)
        c.progress(now: 29)
        #expect(c.expiry(now: 31, t) == nil)
        #expect(c.expiry(now: 59, t) == .respond(504))
    }

    @Test func respondingStallCloses() {
        var c = ConnectionClock(phase: .responding, now: 0)
        c.progress(now: 10)
        #expect(c.expiry(now: 40, t) == .close)
    }

    @Test func enteringAPhaseRestartsTheTimer() {
        var c = ConnectionClock(phase: .head, now: 0)
        c.enter(.backendResponse, now: 4)
        #expect(c.phase == .backendResponse)
        #expect(c.deadline(t) == 34)
    }
}

struct TunnelClockTests {
    @Test func tunnelClosesAfterIdleAndTrafficKeepsItOpen() {
        let t = TimeoutSettings(idle: 30)
        var clock = ConnectionClock(phase: .tunnel, now: 100)
        #expect(clock.expiry(now: 129, t) == nil)
        clock.progress(now: 129)
        #expect(clock.expiry(now: 158, t) == nil, "bytes in either direction restart the timer")
        #expect(clock.expiry(now: 159, t) == .close)
    }
}
