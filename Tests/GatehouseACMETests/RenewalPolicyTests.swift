import Testing
@testable import GatehouseACME

@Suite struct RenewalPolicyTests {
    let day: Int64 = 86_400
    let issued: Int64 = 1_800_000_000

    @Test func twoThirdsOfTheLifetime() {
        #expect(RenewalPolicy.target(notBefore: issued, notAfter: issued + 90 * day) == issued + 60 * day)
        #expect(RenewalPolicy.target(notBefore: issued, notAfter: issued + 6 * day) == issued + 4 * day)
    }

    /// Without ARI the choice spans [2/3 − 1/20, 2/3] of the lifetime: the
    /// generator's lowest and highest values reach both ends.
    @Test func jitterWindowBounds() {
        for lifetime in [6 * day, 90 * day] {
            var low = ConstantRandom.lowest, high = ConstantRandom.highest
            let a = RenewalPolicy.renewalTime(notBefore: issued, notAfter: issued + lifetime, now: issued, using: &low)
            let b = RenewalPolicy.renewalTime(notBefore: issued, notAfter: issued + lifetime, now: issued, using: &high)
            #expect(a == issued + lifetime * 2 / 3 - lifetime / 20)
            #expect(b == issued + lifetime * 2 / 3)
        }
        // 4.5 days of jitter for 90-day certificates, 7.2 hours for 6-day ones.
        #expect(90 * day / RenewalPolicy.jitterDivisor == 388_800)
        #expect(6 * day / RenewalPolicy.jitterDivisor == 25_920)
    }

    /// 100,000 certificates issued in the same second renew spread over
    /// the window (7.2 hours for 6-day certificates), not in one minute.
    @Test func jitterSpread() {
        var random = SeededRandom(seed: 1)
        let lifetime = 6 * day
        var perMinute: [Int64: Int] = [:]
        var earliest = Int64.max, latest = Int64.min
        for _ in 0 ..< 100_000 {
            let t = RenewalPolicy.renewalTime(notBefore: issued, notAfter: issued + lifetime, now: issued, using: &random)
            perMinute[t / 60, default: 0] += 1
            earliest = min(earliest, t)
            latest = max(latest, t)
        }
        #expect(latest - earliest > 7 * 3600)
        // 432 minutes share 100,000: about 231 each.
        #expect(perMinute.count >= 430)
        #expect(perMinute.values.max()! < 330, "\(perMinute.values.max()!)")
    }

    @Test func ariWindowIsUsed() {
        var random = SeededRandom(seed: 2)
        let window = RenewalWindow(start: issued + 10 * day, end: issued + 11 * day)
        var seen = Set<Int64>()
        for _ in 0 ..< 1000 {
            let t = RenewalPolicy.renewalTime(notBefore: issued, notAfter: issued + 90 * day, window: window, now: issued, using: &random)
            #expect(t >= window.start && t <= window.end)
            seen.insert(t / 3600)
        }
        // Uniform over the day: every hour of it gets some.
        #expect(seen.count == 24)
    }

    /// RFC 9773 §4.2: a window already past means now; one already open
    /// never yields a time before now.
    @Test func ariWindowInThePast() {
        var random = SeededRandom(seed: 3)
        let now = issued + 50 * day
        let past = RenewalWindow(start: issued + 10 * day, end: issued + 11 * day)
        #expect(RenewalPolicy.renewalTime(notBefore: issued, notAfter: issued + 90 * day, window: past, now: now, using: &random) == now)
        let open = RenewalWindow(start: now - day, end: now + day)
        for _ in 0 ..< 100 {
            let t = RenewalPolicy.renewalTime(notBefore: issued, notAfter: issued + 90 * day, window: open, now: now, using: &random)
            #expect(t >= now && t <= now + day)
        }
    }

    /// An ARI window reaching past the safety margin (the last tenth of the
    /// lifetime) or past notAfter is cut at the margin.
    @Test func ariWindowCutAtSafetyMargin() {
        var high = ConstantRandom.highest
        let window = RenewalWindow(start: issued + 80 * day, end: issued + 100 * day)
        let t = RenewalPolicy.renewalTime(notBefore: issued, notAfter: issued + 90 * day, window: window, now: issued, using: &high)
        #expect(t == issued + 81 * day)
        // A window wholly inside the margin becomes the margin's start.
        let late = RenewalWindow(start: issued + 85 * day, end: issued + 88 * day)
        var low = ConstantRandom.lowest
        #expect(RenewalPolicy.renewalTime(notBefore: issued, notAfter: issued + 90 * day, window: late, now: issued, using: &low)
            == issued + 81 * day)
    }

    @Test func malformedInputs() {
        var random = SeededRandom(seed: 4)
        // No lifetime: renew now.
        #expect(RenewalPolicy.renewalTime(notBefore: issued, notAfter: issued, now: issued + 5, using: &random) == issued + 5)
        #expect(RenewalPolicy.renewalTime(notBefore: issued, notAfter: issued - 10, now: issued + 5, using: &random) == issued + 5)
        // A window ending before it starts is ignored.
        let backwards = RenewalWindow(start: issued + 11 * day, end: issued + 10 * day)
        let t = RenewalPolicy.renewalTime(notBefore: issued, notAfter: issued + 90 * day, window: backwards, now: issued, using: &random)
        #expect(t >= issued + 60 * day - 90 * day / 20 && t <= issued + 60 * day)
        // A tiny lifetime stays within it.
        for _ in 0 ..< 100 {
            let t = RenewalPolicy.renewalTime(notBefore: issued, notAfter: issued + 3, now: issued, using: &random)
            #expect(t >= issued && t <= issued + 3)
        }
    }

    @Test func dueAndExpiry() {
        #expect(RenewalPolicy.isDue(renewalTime: 100, now: 100))
        #expect(RenewalPolicy.isDue(renewalTime: 99, now: 100))
        #expect(!RenewalPolicy.isDue(renewalTime: 101, now: 100))
        #expect(RenewalPolicy.secondsUntilExpiry(notAfter: 1000, now: 400) == 600)
        #expect(RenewalPolicy.secondsUntilExpiry(notAfter: 1000, now: 1400) == -400)
    }
}
