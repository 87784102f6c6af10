/// An `acme = true` domain as the scheduler sees it.
public struct ACMEDomain: Sendable, Hashable {
    /// The primary name: the domain's id and storage directory.
    public var id: String
    /// Every name the certificate covers, the primary one included.
    public var names: [String]
    /// An RSA certificate is wanted besides the ECDSA one.
    public var wantsRSA: Bool

    public init(id: String, names: [String], wantsRSA: Bool = false) {
        self.id = id
        self.names = names
        self.wantsRSA = wantsRSA
    }
}

/// A certificate the scheduler knows of: its validity and, when the CA
/// said, its ARI window. With RSA too, the one expiring first.
public struct ACMECertificateInfo: Sendable, Equatable {
    public var notBefore: Int64
    public var notAfter: Int64
    public var window: RenewalWindow?
    /// The renewal time when the caller chose it (drawn from a generator
    /// seeded by the certificate's serial, every instance of a fleet and
    /// `acme status` agree on it); nil: the scheduler draws one.
    public var renewalTime: Int64?

    public init(notBefore: Int64, notAfter: Int64, window: RenewalWindow? = nil, renewalTime: Int64? = nil) {
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.window = window
        self.renewalTime = renewalTime
    }
}

/// When each domain is ordered: a state machine with no I/O and no clock.
/// The ACME thread feeds it events with the time and carries out the
/// actions it returns (orders, backoff files), then sleeps until
/// `nextWakeup` or the next event, and calls `tick`.
///
/// Orders are bounded twice: at most `maxInFlight` at a time, and at most
/// `orderBudget` started in any `budgetWindow` seconds (Let's Encrypt: 300
/// new orders per account per 3 hours). Domains without a certificate go
/// first, then renewals by expiry.
public struct ACMEScheduler {
    public struct Configuration: Sendable, Equatable {
        public var maxInFlight: Int
        public var orderBudget: Int
        public var budgetWindow: Int64
        /// When another instance holds the domain's lock: look again after
        /// this long (it will have finished or its lock expired by then,
        /// and its certificate is picked up with `certificateFound`).
        public var lockBusyRetry: Int64

        public init(maxInFlight: Int = 4, orderBudget: Int = 300, budgetWindow: Int64 = 10_800, lockBusyRetry: Int64 = 300) {
            self.maxInFlight = max(1, maxInFlight)
            self.orderBudget = max(1, orderBudget)
            self.budgetWindow = max(1, budgetWindow)
            self.lockBusyRetry = max(1, lockBusyRetry)
        }
    }

    public enum Action: Sendable, Equatable {
        /// Order (or renew) this domain's certificates: take its lock,
        /// then report `orderSucceeded`, `orderFailed`, `certificateFound`
        /// or `orderLockBusy`.
        case order(ACMEDomain)
        /// Persist this backoff (`Backoff.save`; none removes the file).
        case saveBackoff(id: String, Backoff)
    }

    /// A configured domain and what storage holds for it.
    public struct Input: Sendable, Equatable {
        public var domain: ACMEDomain
        public var certificate: ACMECertificateInfo?
        public var backoff: Backoff

        public init(_ domain: ACMEDomain, certificate: ACMECertificateInfo? = nil, backoff: Backoff = .none) {
            self.domain = domain
            self.certificate = certificate
            self.backoff = backoff
        }
    }

    public struct Decision: Sendable, Equatable {
        public var actions: [Action]
        /// When to call `tick` if no event comes first; nil: only on events.
        public var nextWakeup: Int64?
    }

    /// Orders by outcome, for metrics.
    public struct Counters: Sendable, Equatable {
        public var started = 0
        public var succeeded = 0
        public var failed = 0
        public var rateLimited = 0
        public var lockBusy = 0
        public var foundElsewhere = 0
    }

    public enum State: String, Sendable, Equatable {
        case waitingFirst = "waiting-first"
        case valid
        case renewing
        case backoff
    }

    /// One domain, for `gatehouse acme status`.
    public struct Status: Sendable, Equatable {
        public var id: String
        public var state: State
        public var inFlight: Bool
        public var notAfter: Int64?
        /// Seconds until expiry; negative once expired.
        public var expiresIn: Int64?
        public var renewalTime: Int64?
        /// When the next order may start (backoff or lock busy); nil: none.
        public var nextAttempt: Int64?
        public var failures: Int
        public var lastError: String?
    }

    struct Entry {
        var domain: ACMEDomain
        var certificate: ACMECertificateInfo?
        var renewalTime: Int64?
        var backoff: Backoff
        /// After `orderLockBusy`: not before this time, no failure counted.
        var notBefore: Int64 = 0
        /// Names changed since the certificate was issued: order at once.
        var reissue = false
    }

    public let configuration: Configuration
    private var random: any RandomNumberGenerator
    private var entries: [String: Entry] = [:]
    /// Domains being ordered; a removed domain stays here until its result.
    private var inFlight: Set<String> = []
    /// Start times of orders within the budget window, oldest first.
    private var started: [Int64] = []
    /// Each order under way's start, to refund the budget if none was placed.
    private var startedAt: [String: Int64] = [:]
    public private(set) var counters = Counters()

    public init(configuration: Configuration = Configuration(), random: any RandomNumberGenerator = SystemRandomNumberGenerator()) {
        self.configuration = configuration
        self.random = random
    }

    // MARK: - Events

    /// The configured domains, at start and on each reload: new ones come
    /// with what storage holds for them; ones already known keep their
    /// state (a changed name list means a new certificate at once);
    /// ones gone are forgotten (an order under way finishes, unrecorded).
    public mutating func domainsChanged(_ domains: [Input], now: Int64) -> Decision {
        var next: [String: Entry] = [:]
        for input in domains where next[input.domain.id] == nil {
            let domain = input.domain
            if var entry = entries[domain.id] {
                if entry.domain.names != domain.names || entry.domain.wantsRSA != domain.wantsRSA {
                    entry.reissue = entry.certificate != nil
                }
                entry.domain = domain
                next[domain.id] = entry
            } else {
                var entry = Entry(domain: domain, certificate: nil, renewalTime: nil, backoff: input.backoff)
                if let certificate = input.certificate { setCertificate(&entry, certificate, now: now) }
                next[domain.id] = entry
            }
        }
        entries = next
        return schedule(now: now)
    }

    /// The order started by `.order` produced a certificate.
    public mutating func orderSucceeded(_ id: String, certificate: ACMECertificateInfo, now: Int64) -> Decision {
        guard finish(id) else { return schedule(now: now) }
        counters.succeeded += 1
        var actions: [Action] = []
        if var entry = entries[id] {
            setCertificate(&entry, certificate, now: now)
            entry.reissue = false
            if !entry.backoff.isNone {
                entry.backoff.recordSuccess()
                actions.append(.saveBackoff(id: id, .none))
            }
            entries[id] = entry
        }
        return schedule(now: now, actions)
    }

    /// The order failed: back off (RFC 8555 §6.6: Retry-After; §6.7:
    /// rateLimited). `retryAfter` in seconds, as ACMERequestError has it.
    public mutating func orderFailed(_ id: String, retryAfter: Int?, rateLimited: Bool, detail: String, now: Int64) -> Decision {
        guard finish(id) else { return schedule(now: now) }
        counters.failed += 1
        if rateLimited { counters.rateLimited += 1 }
        var actions: [Action] = []
        if var entry = entries[id] {
            entry.backoff.recordFailure(now: now, retryAfter: retryAfter, rateLimited: rateLimited, detail: detail, using: &random)
            actions.append(.saveBackoff(id: id, entry.backoff))
            entries[id] = entry
        }
        return schedule(now: now, actions)
    }

    /// Another instance holds the domain's lock: no order was placed, the
    /// budget gets it back, and the domain is looked at again later.
    public mutating func orderLockBusy(_ id: String, now: Int64) -> Decision {
        refund(id)
        guard finish(id) else { return schedule(now: now) }
        counters.lockBusy += 1
        let retry = now + configuration.lockBusyRetry
        entries[id]?.notBefore = retry
        return schedule(now: now)
    }

    /// A certificate newer than the one known appeared in storage (another
    /// instance renewed it, or ours found it under the lock instead of
    /// ordering). Ends an order under way; the instance that obtained it
    /// has cleared the shared backoff file.
    public mutating func certificateFound(_ id: String, certificate: ACMECertificateInfo, now: Int64) -> Decision {
        let wasInFlight = inFlight.contains(id)
        if wasInFlight {
            counters.foundElsewhere += 1
            // Nothing was ordered.
            refund(id)
            _ = finish(id)
        }
        if var entry = entries[id], wasInFlight || entry.certificate.map({ certificate.notBefore > $0.notBefore }) ?? true {
            setCertificate(&entry, certificate, now: now)
            entry.reissue = false
            entry.backoff = .none
            entry.notBefore = 0
            entries[id] = entry
        }
        return schedule(now: now)
    }

    /// RFC 9773 §4.2: the CA suggested a renewal window for the current
    /// certificate; the renewal time moves into it (`renewalTime` when the
    /// caller chose one). Ignored while an order is under way.
    public mutating func renewalInfo(_ id: String, window: RenewalWindow, renewalTime: Int64? = nil, now: Int64) -> Decision {
        if !inFlight.contains(id), var entry = entries[id], var certificate = entry.certificate {
            certificate.window = window
            certificate.renewalTime = renewalTime
            setCertificate(&entry, certificate, now: now)
            entries[id] = entry
        }
        return schedule(now: now)
    }

    /// The timer set by `nextWakeup` fired.
    public mutating func tick(now: Int64) -> Decision {
        schedule(now: now)
    }

    // MARK: - Reading

    public var domainCount: Int { entries.count }
    public var inFlightCount: Int { inFlight.count }

    /// Orders that may still start in the budget window at `now`.
    public func budgetLeft(now: Int64) -> Int {
        configuration.orderBudget - started.count(where: { $0 > now - configuration.budgetWindow })
    }

    public func status(_ id: String, now: Int64) -> Status? {
        entries[id].map { status($0, now: now) }
    }

    /// Every domain, by id.
    public func status(now: Int64) -> [Status] {
        entries.values.map { status($0, now: now) }.sorted { $0.id < $1.id }
    }

    /// How many domains are in each state, for metrics.
    public func stateCounts(now: Int64) -> [State: Int] {
        var counts: [State: Int] = [:]
        for entry in entries.values { counts[status(entry, now: now).state, default: 0] += 1 }
        return counts
    }

    // MARK: - Scheduling

    /// Ends the order under way for `id`; false if there was none.
    private mutating func finish(_ id: String) -> Bool {
        startedAt[id] = nil
        return inFlight.remove(id) != nil
    }

    /// Gives the order's budget back, if it is still in the window.
    private mutating func refund(_ id: String) {
        if let time = startedAt[id], let i = started.lastIndex(of: time) { started.remove(at: i) }
    }

    private mutating func setCertificate(_ entry: inout Entry, _ certificate: ACMECertificateInfo, now: Int64) {
        entry.certificate = certificate
        entry.renewalTime = certificate.renewalTime
            ?? RenewalPolicy.renewalTime(notBefore: certificate.notBefore, notAfter: certificate.notAfter,
                                         window: certificate.window, now: now, using: &random)
    }

    /// When the entry may be ordered next (ignoring the two bounds).
    private func eligible(_ entry: Entry) -> Int64 {
        var time = max(entry.backoff.nextAttempt, entry.notBefore)
        if entry.certificate != nil, !entry.reissue, let renewal = entry.renewalTime {
            time = max(time, renewal)
        }
        return time
    }

    private func isFirst(_ entry: Entry) -> Bool { entry.certificate == nil || entry.reissue }

    private func status(_ entry: Entry, now: Int64) -> Status {
        let id = entry.domain.id
        let ordering = inFlight.contains(id)
        let state: State
        if !ordering, entry.backoff.isWaiting(now: now) {
            state = .backoff
        } else if isFirst(entry) {
            state = entry.certificate == nil ? .waitingFirst : .renewing
        } else if ordering || entry.renewalTime.map({ $0 <= now }) ?? false {
            state = .renewing
        } else {
            state = .valid
        }
        let wait = max(entry.backoff.nextAttempt, entry.notBefore)
        return Status(id: id, state: state, inFlight: ordering, notAfter: entry.certificate?.notAfter,
                      expiresIn: entry.certificate.map { RenewalPolicy.secondsUntilExpiry(notAfter: $0.notAfter, now: now) },
                      renewalTime: entry.renewalTime, nextAttempt: wait > now ? wait : nil,
                      failures: entry.backoff.failures, lastError: entry.backoff.lastError)
    }

    private mutating func schedule(now: Int64, _ actions: [Action] = []) -> Decision {
        var actions = actions
        let window = configuration.budgetWindow
        if let keep = started.firstIndex(where: { $0 > now - window }) {
            started.removeFirst(keep)
        } else {
            started.removeAll()
        }

        // Due domains, first certificates first, then the soonest expiry.
        var due: [Entry] = []
        var wakeup: Int64?
        for entry in entries.values where !inFlight.contains(entry.domain.id) {
            let time = eligible(entry)
            if time <= now {
                due.append(entry)
            } else {
                wakeup = min(wakeup ?? time, time)
            }
        }
        due.sort { a, b in
            let (fa, fb) = (isFirst(a), isFirst(b))
            if fa != fb { return fa }
            let (ea, eb) = (a.certificate?.notAfter ?? 0, b.certificate?.notAfter ?? 0)
            if ea != eb { return ea < eb }
            return a.domain.id < b.domain.id
        }

        var waitingForBudget = false
        for entry in due {
            guard inFlight.count < configuration.maxInFlight else { break } // an order's end is an event
            guard started.count < configuration.orderBudget else {
                waitingForBudget = true
                break
            }
            inFlight.insert(entry.domain.id)
            started.append(now)
            startedAt[entry.domain.id] = now
            counters.started += 1
            actions.append(.order(entry.domain))
        }
        if waitingForBudget, let oldest = started.first {
            // The oldest order leaves the window then.
            let free = oldest + window
            wakeup = min(wakeup ?? free, free)
        }
        return Decision(actions: actions, nextWakeup: wakeup)
    }
}
