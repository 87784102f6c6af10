import Testing
@testable import GatehouseACME

@Suite struct ACMESchedulerTests {
    let t0: Int64 = 1_800_000_000
    let day: Int64 = 86_400

    func domain(_ id: String, rsa: Bool = false) -> ACMEDomain {
        ACMEDomain(id: id, names: [id, "www." + id], wantsRSA: rsa)
    }

    func scheduler(maxInFlight: Int = 4, budget: Int = 300, window: Int64 = 10_800, seed: UInt64 = 1) -> ACMEScheduler {
        ACMEScheduler(configuration: .init(maxInFlight: maxInFlight, orderBudget: budget, budgetWindow: window),
                      random: SeededRandom(seed: seed))
    }

    func orders(_ decision: ACMEScheduler.Decision) -> [String] {
        decision.actions.compactMap { if case .order(let d) = $0 { d.id } else { nil } }
    }

    func saves(_ decision: ACMEScheduler.Decision) -> [String: Backoff] {
        var out: [String: Backoff] = [:]
        for case .saveBackoff(let id, let backoff) in decision.actions { out[id] = backoff }
        return out
    }

    func cert(_ notBefore: Int64, days: Int64 = 90) -> ACMECertificateInfo {
        ACMECertificateInfo(notBefore: notBefore, notAfter: notBefore + days * day)
    }

    @Test func firstCertificatesOrderedAtOnce() {
        var s = scheduler()
        let d = s.domainsChanged([.init(domain("a.example", rsa: true)), .init(domain("b.example"))], now: t0)
        #expect(orders(d) == ["a.example", "b.example"])
        #expect(d.actions.first == .order(domain("a.example", rsa: true)))
        #expect(d.nextWakeup == nil)
        #expect(s.inFlightCount == 2)
        #expect(s.status("a.example", now: t0)?.state == .waitingFirst)
        #expect(s.status("a.example", now: t0)?.inFlight == true)
        // Nothing more while they run.
        #expect(s.tick(now: t0 + 10).actions.isEmpty)
        #expect(s.counters.started == 2)
    }

    @Test func successSchedulesRenewal() {
        var s = scheduler()
        _ = s.domainsChanged([.init(domain("a.example"))], now: t0)
        let d = s.orderSucceeded("a.example", certificate: cert(t0), now: t0 + 30)
        #expect(d.actions.isEmpty)
        let status = s.status("a.example", now: t0 + 30)!
        #expect(status.state == .valid && !status.inFlight)
        #expect(status.notAfter == t0 + 90 * day && status.expiresIn == 90 * day - 30)
        let renewal = status.renewalTime!
        #expect(renewal >= t0 + 60 * day - 90 * day / 20 && renewal <= t0 + 60 * day)
        #expect(d.nextWakeup == renewal)
        #expect(s.tick(now: renewal - 1).actions.isEmpty)
        #expect(s.status("a.example", now: renewal)?.state == .renewing)
        #expect(orders(s.tick(now: renewal)) == ["a.example"])
        #expect(s.status("a.example", now: renewal)?.inFlight == true)
        #expect(s.counters.succeeded == 1 && s.counters.started == 2)
    }

    @Test func ariWindowChoosesRenewal() {
        var s = scheduler()
        let window = RenewalWindow(start: t0 + 10 * day, end: t0 + 11 * day)
        let c = ACMECertificateInfo(notBefore: t0, notAfter: t0 + 90 * day, window: window)
        let d = s.domainsChanged([.init(domain("a.example"), certificate: c)], now: t0)
        #expect(d.actions.isEmpty)
        let renewal = s.status("a.example", now: t0)!.renewalTime!
        #expect(renewal >= window.start && renewal <= window.end)
        #expect(d.nextWakeup == renewal)
    }

    /// RFC 9773: a window the CA suggests later moves the renewal into it
    /// (a CA revoking early says "renew now"); not while an order runs.
    @Test func renewalInfoMovesTheRenewalIntoTheWindow() {
        var s = scheduler()
        _ = s.domainsChanged([.init(domain("a.example"))], now: t0)
        _ = s.orderSucceeded("a.example", certificate: cert(t0), now: t0)
        let now = t0 + 10 * day
        let d = s.renewalInfo("a.example", window: RenewalWindow(start: now - 100, end: now - 1), now: now)
        #expect(orders(d) == ["a.example"], "a window in the past means renew now")
        // While that order runs, a window is ignored.
        _ = s.renewalInfo("a.example", window: RenewalWindow(start: now + day, end: now + 2 * day), now: now)
        #expect(s.status("a.example", now: now)?.inFlight == true)
        _ = s.orderSucceeded("a.example", certificate: cert(now), now: now)
        let window = RenewalWindow(start: now + 20 * day, end: now + 21 * day)
        let next = s.renewalInfo("a.example", window: window, now: now)
        let renewal = s.status("a.example", now: now)!.renewalTime!
        #expect(renewal >= window.start && renewal <= window.end)
        #expect(next.nextWakeup == renewal)
        // A time the caller chose wins (seeded by the serial, so a fleet agrees).
        _ = s.renewalInfo("a.example", window: window, renewalTime: window.start + 5, now: now)
        #expect(s.status("a.example", now: now)?.renewalTime == window.start + 5)
    }

    @Test func failureBacksOff() {
        var s = scheduler()
        _ = s.domainsChanged([.init(domain("a.example"))], now: t0)
        let d = s.orderFailed("a.example", retryAfter: nil, rateLimited: false, detail: "dns: NXDOMAIN", now: t0 + 5)
        let saved = saves(d)["a.example"]!
        #expect(saved.failures == 1 && saved.lastError == "dns: NXDOMAIN")
        #expect(saved.nextAttempt > t0 + 5 && saved.nextAttempt <= t0 + 65)
        #expect(d.nextWakeup == saved.nextAttempt)
        #expect(orders(d).isEmpty)
        let status = s.status("a.example", now: t0 + 6)!
        #expect(status.state == .backoff && status.failures == 1 && status.lastError == "dns: NXDOMAIN")
        #expect(status.nextAttempt == saved.nextAttempt)
        #expect(s.tick(now: saved.nextAttempt - 1).actions.isEmpty)
        #expect(orders(s.tick(now: saved.nextAttempt)) == ["a.example"])
        // Second failure: twice as long; rateLimited without Retry-After: an hour.
        let second = saves(s.orderFailed("a.example", retryAfter: nil, rateLimited: true, detail: "too many", now: t0 + 100))["a.example"]!
        #expect(second.failures == 2 && second.nextAttempt == t0 + 100 + 3600)
        #expect(orders(s.tick(now: t0 + 3700)) == ["a.example"])
        // Retry-After longer than the backoff wins.
        let third = saves(s.orderFailed("a.example", retryAfter: 7200, rateLimited: false, detail: "later", now: t0 + 3800))["a.example"]!
        #expect(third.nextAttempt == t0 + 3800 + 7200)
        #expect(orders(s.tick(now: t0 + 11_000)) == ["a.example"])
        // Success clears the file.
        let ok = s.orderSucceeded("a.example", certificate: cert(t0 + 11_000), now: t0 + 11_010)
        #expect(saves(ok) == ["a.example": .none])
        #expect(s.status("a.example", now: t0 + 11_010)?.failures == 0)
        #expect(s.counters.failed == 3 && s.counters.rateLimited == 1 && s.counters.succeeded == 1)
    }

    /// A backoff loaded from storage at start holds the domain back.
    @Test func loadedBackoffHolds() {
        var s = scheduler()
        let backoff = Backoff(failures: 3, lastError: "x", lastFailure: t0 - 10, nextAttempt: t0 + 200)
        let d = s.domainsChanged([.init(domain("a.example"), backoff: backoff), .init(domain("b.example"))], now: t0)
        #expect(orders(d) == ["b.example"])
        #expect(d.nextWakeup == t0 + 200)
        #expect(s.status("a.example", now: t0)?.state == .backoff)
        #expect(orders(s.tick(now: t0 + 200)) == ["a.example"])
    }

    @Test func inFlightBound() {
        var s = scheduler(maxInFlight: 3)
        let ids = (0 ..< 10).map { "d\($0).example" }
        var d = s.domainsChanged(ids.map { .init(domain($0)) }, now: t0)
        #expect(orders(d) == ["d0.example", "d1.example", "d2.example"])
        #expect(d.nextWakeup == nil)
        #expect(s.tick(now: t0 + 1).actions.isEmpty)
        d = s.orderSucceeded("d1.example", certificate: cert(t0), now: t0 + 2)
        #expect(orders(d) == ["d3.example"])
        d = s.orderFailed("d0.example", retryAfter: nil, rateLimited: false, detail: "x", now: t0 + 3)
        #expect(orders(d) == ["d4.example"])
        #expect(s.inFlightCount == 3)
        #expect(s.stateCounts(now: t0 + 3) == [.waitingFirst: 8, .valid: 1, .backoff: 1])
    }

    /// At most `orderBudget` orders start in any window; the wakeup is
    /// when the oldest leaves it.
    @Test func newOrderBudget() {
        var s = scheduler(maxInFlight: 100, budget: 5, window: 1000)
        let ids = (0 ..< 12).map { "d\($0).example" }
        var d = s.domainsChanged(ids.map { .init(domain($0)) }, now: t0)
        #expect(orders(d).count == 5)
        #expect(d.nextWakeup == t0 + 1000)
        #expect(s.budgetLeft(now: t0) == 0)
        for id in orders(d) { d = s.orderSucceeded(id, certificate: cert(t0), now: t0 + 10) }
        #expect(orders(d).isEmpty)
        #expect(d.nextWakeup == t0 + 1000)
        #expect(s.tick(now: t0 + 999).actions.isEmpty)
        d = s.tick(now: t0 + 1000)
        #expect(orders(d).count == 5)
    }

    /// The window slides: each order frees its place 1000 s after it started.
    @Test func budgetWindowSlides() {
        var s = scheduler(maxInFlight: 1, budget: 2, window: 1000)
        var d = s.domainsChanged((0 ..< 5).map { .init(domain("d\($0).example")) }, now: t0)
        #expect(orders(d) == ["d0.example"])
        d = s.orderSucceeded("d0.example", certificate: cert(t0), now: t0 + 100)
        #expect(orders(d) == ["d1.example"])
        d = s.orderSucceeded("d1.example", certificate: cert(t0), now: t0 + 200)
        #expect(orders(d).isEmpty && d.nextWakeup == t0 + 1000)
        d = s.tick(now: t0 + 1000)
        #expect(orders(d) == ["d2.example"])
        d = s.orderSucceeded("d2.example", certificate: cert(t0), now: t0 + 1010)
        #expect(orders(d).isEmpty && d.nextWakeup == t0 + 1100)
        #expect(orders(s.tick(now: t0 + 1099)).isEmpty)
        #expect(orders(s.tick(now: t0 + 1100)) == ["d3.example"])
        #expect(s.budgetLeft(now: t0 + 1100) == 0)
    }

    /// Defaults: 4 at a time, 300 per 3 hours (Let's Encrypt's new-order limit).
    @Test func defaults() {
        let c = ACMEScheduler.Configuration()
        #expect(c.maxInFlight == 4 && c.orderBudget == 300 && c.budgetWindow == 10_800)
    }

    /// Domains without a certificate first, then renewals by expiry.
    @Test func ordering() {
        var s = scheduler(maxInFlight: 1)
        let late = ACMECertificateInfo(notBefore: t0 - 80 * day, notAfter: t0 + 10 * day)
        let soon = ACMECertificateInfo(notBefore: t0 - 85 * day, notAfter: t0 + 5 * day)
        var d = s.domainsChanged([.init(domain("late.example"), certificate: late), .init(domain("soon.example"), certificate: soon),
                                  .init(domain("new.example"))], now: t0)
        #expect(orders(d) == ["new.example"])
        d = s.orderSucceeded("new.example", certificate: cert(t0), now: t0 + 1)
        #expect(orders(d) == ["soon.example"])
        d = s.orderSucceeded("soon.example", certificate: cert(t0), now: t0 + 2)
        #expect(orders(d) == ["late.example"])
    }

    @Test func lockBusyRetriesLaterWithoutFailure() {
        var s = ACMEScheduler(configuration: .init(maxInFlight: 4, orderBudget: 2, budgetWindow: 1000, lockBusyRetry: 300),
                              random: SeededRandom(seed: 1))
        var d = s.domainsChanged([.init(domain("a.example"))], now: t0)
        #expect(s.budgetLeft(now: t0) == 1)
        d = s.orderLockBusy("a.example", now: t0 + 1)
        // No order placed: the budget has it back, and no backoff.
        #expect(s.budgetLeft(now: t0 + 1) == 2)
        #expect(d.actions.isEmpty && d.nextWakeup == t0 + 301)
        #expect(s.status("a.example", now: t0 + 1)?.failures == 0)
        #expect(s.status("a.example", now: t0 + 1)?.nextAttempt == t0 + 301)
        #expect(orders(s.tick(now: t0 + 301)) == ["a.example"])
        #expect(s.counters.lockBusy == 1)
    }

    /// Another instance got the certificate: the order ends without an
    /// order placed; a newer certificate moves the renewal, an older not.
    @Test func certificateFoundElsewhere() {
        var s = scheduler(budget: 10)
        _ = s.domainsChanged([.init(domain("a.example")), .init(domain("b.example"), certificate: cert(t0 - 10 * day))], now: t0)
        #expect(s.budgetLeft(now: t0) == 9)
        var d = s.certificateFound("a.example", certificate: cert(t0), now: t0 + 1)
        #expect(d.actions.isEmpty)
        #expect(s.budgetLeft(now: t0 + 1) == 10)
        #expect(s.status("a.example", now: t0 + 1)?.state == .valid)
        #expect(s.counters.foundElsewhere == 1)
        let before = s.status("b.example", now: t0)!.renewalTime!
        d = s.certificateFound("b.example", certificate: cert(t0 - 20 * day), now: t0 + 2)
        #expect(s.status("b.example", now: t0 + 2)?.renewalTime == before)
        d = s.certificateFound("b.example", certificate: cert(t0), now: t0 + 3)
        #expect(s.status("b.example", now: t0 + 3)!.renewalTime! >= t0 + 55 * day)
        #expect(s.status("b.example", now: t0 + 3)?.notAfter == t0 + 90 * day)
    }

    /// A reload keeps what is known of unchanged domains, forgets removed
    /// ones (their order still counts until it ends) and orders a domain
    /// whose names changed at once.
    @Test func domainsChangedKeepsState() {
        var s = scheduler(maxInFlight: 2)
        var d = s.domainsChanged([.init(domain("a.example")), .init(domain("b.example"))], now: t0)
        #expect(orders(d) == ["a.example", "b.example"])
        d = s.orderSucceeded("a.example", certificate: cert(t0), now: t0 + 1)
        let renewal = s.status("a.example", now: t0 + 1)!.renewalTime
        // b removed while ordering; c added. The in-flight bound still counts b.
        d = s.domainsChanged([.init(domain("a.example"), certificate: cert(t0 - 80 * day)), .init(domain("c.example")),
                              .init(domain("e.example"))], now: t0 + 2)
        #expect(orders(d) == ["c.example"])
        #expect(s.status("a.example", now: t0 + 2)?.renewalTime == renewal) // kept, not the input's older certificate
        #expect(s.status("b.example", now: t0 + 2) == nil)
        #expect(s.domainCount == 3)
        // b's result is ignored but frees its slot.
        d = s.orderFailed("b.example", retryAfter: nil, rateLimited: false, detail: "x", now: t0 + 3)
        #expect(saves(d).isEmpty)
        #expect(orders(d) == ["e.example"])
        // a's names change: a new certificate now, ahead of renewals.
        _ = s.orderSucceeded("c.example", certificate: cert(t0), now: t0 + 4)
        d = s.domainsChanged([.init(ACMEDomain(id: "a.example", names: ["a.example", "api.a.example"])), .init(domain("c.example")),
                              .init(domain("e.example"))], now: t0 + 5)
        #expect(orders(d) == ["a.example"])
        #expect(d.actions.first == .order(ACMEDomain(id: "a.example", names: ["a.example", "api.a.example"])))
        #expect(s.status("a.example", now: t0 + 5)?.state == .renewing)
        _ = s.orderSucceeded("a.example", certificate: cert(t0 + 5), now: t0 + 6)
        #expect(s.status("a.example", now: t0 + 6)?.state == .valid)
        // Duplicates in the input: the first wins.
        _ = s.domainsChanged([.init(domain("x.example")), .init(domain("x.example"))], now: t0 + 7)
        #expect(s.domainCount == 1)
    }

    /// Results for domains not being ordered change nothing.
    @Test func strayResultsIgnored() {
        var s = scheduler()
        _ = s.domainsChanged([.init(domain("a.example"), certificate: cert(t0))], now: t0)
        var d = s.orderSucceeded("a.example", certificate: cert(t0 + day), now: t0 + 1)
        #expect(d.actions.isEmpty)
        d = s.orderFailed("a.example", retryAfter: nil, rateLimited: false, detail: "x", now: t0 + 1)
        #expect(d.actions.isEmpty)
        _ = s.orderLockBusy("nobody.example", now: t0 + 1)
        #expect(s.counters == ACMEScheduler.Counters())
        #expect(s.status("a.example", now: t0 + 1)?.notAfter == t0 + 90 * day)
    }

    /// 100,000 domains whose certificates were all issued in the same
    /// second renew over hours (4.5 days for 90-day certificates), not in
    /// one minute, and only `maxInFlight` orders start at a time.
    @Test func renewalsSpreadOut() {
        for days: Int64 in [6, 90] {
            var s = scheduler(seed: UInt64(days))
            let inputs = (0 ..< 100_000).map { ACMEScheduler.Input(domain("d\($0).example"), certificate: cert(t0, days: days)) }
            let d = s.domainsChanged(inputs, now: t0)
            #expect(d.actions.isEmpty)
            let times = s.status(now: t0).map { $0.renewalTime! }
            let spread = times.max()! - times.min()!
            #expect(spread > days * day / 20 - 3600, "\(spread)")
            var perMinute: [Int64: Int] = [:]
            for t in times { perMinute[t / 60, default: 0] += 1 }
            // 6-day certificates: 432 minutes, about 231 each; 90-day: about 15.
            #expect(perMinute.values.max()! < (days == 6 ? 330 : 40), "\(perMinute.values.max()!)")
            #expect(d.nextWakeup == times.min())
            // The earliest second has a few at most.
            let earliest = times.min()!
            let first = orders(s.tick(now: earliest)).count
            #expect(first == min(4, times.count { $0 == earliest }))
            _ = s.tick(now: times.max()!)
            #expect(s.inFlightCount == 4)
        }
    }

    @Test func statusList() {
        var s = scheduler(maxInFlight: 1)
        _ = s.domainsChanged([.init(domain("b.example")), .init(domain("a.example"), certificate: cert(t0 - 100 * day))], now: t0)
        let list = s.status(now: t0)
        #expect(list.map(\.id) == ["a.example", "b.example"])
        // An expired certificate renews first... after first certificates.
        #expect(list[0].state == .renewing && list[0].expiresIn == -10 * day && !list[0].inFlight)
        #expect(list[1].state == .waitingFirst && list[1].inFlight && list[1].notAfter == nil && list[1].renewalTime == nil)
        #expect(ACMEScheduler.State.waitingFirst.rawValue == "waiting-first")
    }
}
