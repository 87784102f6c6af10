import Testing
@testable import GatehouseProxy

@Suite struct GlitchCounterTests {
    @Test func aBurstPastTheLimitMarksTheConnectionForGood() {
        var g = GlitchCounter(limit: 3, window: 10)
        for i in 0..<3 { g.count(.clientReset, now: Double(i)) }
        #expect(!g.exceeded)
        g.count(.serverReset, now: 3)
        #expect(g.exceeded)
        g.count(.protocolError, now: 100)
        #expect(g.exceeded, "a later quiet window does not clear it")
    }

    @Test func aSlowTrickleUnderTheRateNeverTrips() {
        var g = GlitchCounter(limit: 3, window: 10)
        // 3 per 10 s window, for ten minutes: a browser cancelling now and then.
        for i in 0..<180 { g.count(.clientReset, now: Double(i) * 3.4) }
        #expect(!g.exceeded)
    }
}
