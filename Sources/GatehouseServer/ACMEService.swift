#if canImport(Glibc)
import Glibc
#endif
import GatehouseACME
import GatehouseConfig
import GatehouseLog
import GatehouseTLS
import Synchronization

/// One `acme = true` domain file, as the ACME side sees it.
struct ACMESite: Sendable, Equatable {
    let file: String
    let domain: ACMEDomain
    /// ECDSA, and RSA as well for the legacy profile.
    let keyTypes: [ACMEStorage.KeyType]
    var name: String { domain.id }

    init(_ config: DomainConfig) {
        file = config.file
        keyTypes = ACMEFiles.keyTypes(config)
        domain = ACMEDomain(id: config.primaryName, names: config.names, wantsRSA: keyTypes.contains(.rsa))
    }

    static func all(_ snapshot: ConfigSnapshot) -> [ACMESite] {
        snapshot.domains.filter(\.acme).map(ACMESite.init)
    }
}

/// Obtains and renews the `acme = true` domains' certificates on threads of
/// its own; the event loops never wait for it (they only read what it wrote
/// to storage, when told a file changed). A coordinator thread owns the
/// schedule and scans storage; a few order threads, each with its own
/// libcurl client, run one order at a time.
final class ACMEService: @unchecked Sendable {
    // @unchecked: `inbox` and `report` are behind their mutexes; everything
    // else is touched only by the coordinator thread.

    private let certificates: ACMECertificates
    private let wake = ThreadSignal()
    private let inbox = Mutex(Inbox())
    private let report = Mutex(ACMEReport())
    private var coordinator: JoinableThread?

    struct Inbox {
        /// nil settings: `[acme]` was removed by a reload.
        var configuration: (settings: ACMESettings?, sites: [ACMESite])?
        var results: [OrderResult] = []
        var stopping = false
    }

    init(certificates: ACMECertificates) {
        self.certificates = certificates
    }

    /// Every ACME thread runs at this niceness: key generation, signing and
    /// PEM parsing yield to the event loops.
    static let niceness: Int32 = 10

    /// At start and on every reload (on the control thread): the coordinator
    /// picks the new domain list up at once.
    func configure(_ snapshot: ConfigSnapshot) {
        guard snapshot.acme != nil || coordinator != nil else { return }
        inbox.withLock { $0.configuration = (snapshot.acme, ACMESite.all(snapshot)) }
        if coordinator == nil {
            coordinator = JoinableThread(niceness: ACMEService.niceness) { [self] in run() }
        }
        wake.signal()
    }

    /// At SIGTERM: no new order starts (the listeners are closing, so its
    /// validations would fail and count against the CA's limits).
    func requestStop() {
        inbox.withLock { $0.stopping = true }
        wake.signal()
    }

    var stopRequested: Bool { inbox.withLock { $0.stopping } }

    /// Waits for the orders in flight, if any (bounded by the issuer's polls).
    func stop() {
        requestStop()
        coordinator?.join()
        coordinator = nil
    }

    /// For the metrics endpoint and the log; a copy.
    var status: ACMEReport { report.withLock { $0 } }

    // MARK: - The coordinator thread

    private func run() {
        var state: Coordinator?
        while true {
            let (configuration, results, stopping) = inbox.withLock { box in
                defer { box.configuration = nil; box.results.removeAll() }
                return (box.configuration, box.results, box.stopping)
            }
            if stopping { break }
            if let configuration {
                if let settings = configuration.settings, let current = state, current.settings.sameAccount(as: settings) {
                    current.reconfigure(sites: configuration.sites)
                } else {
                    state?.stop()
                    state = configuration.settings.map {
                        Coordinator(settings: $0, sites: configuration.sites, certificates: certificates, service: self)
                    }
                    if state == nil { report.withLock { $0 = ACMEReport() } }
                }
            }
            guard let coordinator = state else {
                wake.wait(seconds: 3600)
                continue
            }
            // An order of a coordinator a reload replaced reports to nobody.
            for result in results where result.generation == coordinator.generation { coordinator.finished(result) }
            let sleep = coordinator.step(now: Int64(time(nil)))
            report.withLock { $0 = coordinator.report(now: Int64(time(nil))) }
            wake.wait(seconds: sleep)
        }
        state?.stop()
    }

    /// From an order thread.
    fileprivate func deliver(_ result: OrderResult) {
        inbox.withLock { $0.results.append(result) }
        wake.signal()
    }
}

extension ACMESettings {
    /// Same CA, same storage: the account and the schedule carry over a reload.
    func sameAccount(as other: ACMESettings) -> Bool {
        directory == other.directory && storage == other.storage && trust == other.trust
            && contact == other.contact && challenges == other.challenges && ordersPer3h == other.ordersPer3h
    }
}

/// What metrics and `acme status` report.
struct ACMEReport: Sendable {
    var ordersIssued = 0
    var ordersFailed = 0
    var waitingForFirst = 0
    /// Primary name → seconds until its certificate expires.
    var expiry: [(name: String, seconds: Int64)] = []
}

/// An order thread's answer.
struct OrderResult: Sendable {
    enum Outcome: Sendable {
        case issued(CertificateInfo)
        /// Another instance of the fleet holds the domain's lock.
        case lockedElsewhere
        case failed(detail: String, retryAfter: Int?, rateLimited: Bool)
    }
    let site: ACMESite
    let outcome: Outcome
    /// The coordinator that started it.
    let generation: Int
}


/// The coordinator's state for one CA and storage (a reload that changes
/// either starts a new one). Only the coordinator thread touches it; it
/// carries out the scheduler's actions.
private final class Coordinator {
    nonisolated(unsafe) private static var generations = 0
    /// Results of another coordinator's orders are dropped.
    let generation: Int
    let settings: ACMESettings
    let storage: ACMEStorage
    let certificates: ACMECertificates
    unowned let service: ACMEService
    var sites: [String: ACMESite] = [:]
    var scheduler: ACMEScheduler
    var nextWakeup: Int64?
    /// The account key, once the account is registered or found.
    var accountKey: PrivateKey?
    var accountRetry: (at: Int64, failures: Int) = (0, 0)
    /// Storage files as last seen: a change (another instance of the fleet
    /// renewed) is announced to the credential store and the scheduler.
    var seen: [String: FileStamp?] = [:]
    var nextScan: Int64 = 0
    var orders: OrderThreads?
    let mirror: ChallengeMirror
    /// Orders the scheduler started before the account existed.
    var held: [ACMESite] = []
    /// RFC 9773: when each certificate's renewal information is asked again.
    var renewalInfoDue: [String: Int64] = [:]
    var renewalInfoClient: ACMEClient?

    /// Every instance of a fleet sees another's certificate within this.
    static let scanInterval: Int64 = 60
    /// After a lock held by another instance: look for its certificate soon.
    static let lockedElsewhereScan: Int64 = 5
    /// RFC 9773 §4.3: ask again after Retry-After, within these bounds
    /// (6 hours when the CA gives none); at most this many per minute, so
    /// 100,000 domains spread over the day.
    static let renewalInfoInterval: (default: Int64, least: Int64, most: Int64) = (21_600, 3_600, 86_400)
    static let renewalInfoBatch = 100
    /// Seconds of each scan it may take: results and orders wait meanwhile.
    static let renewalInfoTime: Int64 = 10

    init(settings: ACMESettings, sites: [ACMESite], certificates: ACMECertificates, service: ACMEService) {
        Self.generations += 1
        generation = Self.generations
        self.settings = settings
        self.storage = ACMEStorage(root: settings.storage)
        self.certificates = certificates
        self.service = service
        scheduler = ACMEScheduler(configuration: .init(orderBudget: settings.ordersPer3h, budgetWindow: 10_800))
        mirror = ChallengeMirror(storage: storage, certificates: certificates)
        reconfigure(sites: sites)
    }

    /// At start and on reload: every domain with what storage holds for it
    /// (a restart reuses its certificates and keeps its backoff, so it does
    /// not hammer the CA).
    func reconfigure(sites list: [ACMESite]) {
        let now = Int64(time(nil))
        sites = Dictionary(list.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var inputs: [ACMEScheduler.Input] = []
        inputs.reserveCapacity(list.count)
        for site in sites.values {
            for type in site.keyTypes {
                if let path = try? storage.certificate(site.name, type), seen[path] == nil { seen[path] = FileStamp(path: path) }
            }
            let (backoff, problem) = Backoff.load(site.name, from: storage, now: now)
            if let problem { Log.warning("acme: \(site.file): \(problem) (ignored)") }
            inputs.append(ACMEScheduler.Input(site.domain, certificate: storedCertificate(site), backoff: backoff))
        }
        perform(scheduler.domainsChanged(inputs, now: now))
        // A reload shows what other instances wrote at once, not within a minute.
        scan(now: now)
        nextScan = now + Self.scanInterval
    }

    func stop() {
        orders?.stop()
        orders = nil
        mirror.stop()
    }

    /// One turn: the account, the storage scan, the due orders. Returns how
    /// long the coordinator may sleep.
    func step(now: Int64) -> Double {
        guard let accountKey = accountKey ?? setUpAccount(now: now) else {
            return Double(max(1, accountRetry.at - now))
        }
        if orders == nil {
            let threads = OrderThreads(count: scheduler.configuration.maxInFlight, settings: settings, accountKey: accountKey,
                                       storage: storage, certificates: certificates, generation: generation, service: service)
            for site in held { threads.submit(site) }
            held.removeAll()
            orders = threads
        }
        if now >= nextScan {
            scan(now: now)
            refreshRenewalInfo(accountKey: accountKey, now: now)
            nextScan = now + Self.scanInterval
        }
        perform(scheduler.tick(now: now))
        return Double(max(1, min(nextScan, nextWakeup ?? nextScan) - now))
    }

    private func perform(_ decision: ACMEScheduler.Decision) {
        for action in decision.actions {
            switch action {
            case .order(let domain):
                guard let site = sites[domain.id] else {
                    // Never: the scheduler orders only the domains it was given.
                    perform(scheduler.orderFailed(domain.id, retryAfter: nil, rateLimited: false, detail: "unknown domain", now: Int64(time(nil))))
                    continue
                }
                if let orders { orders.submit(site) } else { held.append(site) }
            case .saveBackoff(let id, let backoff):
                do { try backoff.save(id, to: storage) } catch { Log.error("acme: \(error)") }
            }
        }
        nextWakeup = decision.nextWakeup
    }

    /// An order thread finished a domain.
    func finished(_ result: OrderResult) {
        let site = result.site
        let now = Int64(time(nil))
        switch result.outcome {
        case .issued(let leaf):
            remember(site)
            // Shared by a fleet: whoever succeeds clears it for all.
            try? Backoff.none.save(site.name, to: storage)
            let certificate = Self.info(leaf, now: now)
            Log.info("acme: \(site.file): certificate issued for \(site.domain.names.joined(separator: ", ")), valid until "
                     + "\(UTCTime.iso8601(certificate.notAfter)), renewal from \(UTCTime.iso8601(certificate.renewalTime ?? 0))")
            perform(scheduler.orderSucceeded(site.name, certificate: certificate, now: now))
        case .lockedElsewhere:
            // Another instance orders it (or backs it off): its certificate
            // shows up in a scan.
            nextScan = min(nextScan, now + Self.lockedElsewhereScan)
            perform(scheduler.orderLockBusy(site.name, now: now))
        case .failed(let detail, let retryAfter, let rateLimited):
            perform(scheduler.orderFailed(site.name, retryAfter: retryAfter, rateLimited: rateLimited, detail: detail, now: now))
            let next = scheduler.status(site.name, now: now)?.nextAttempt.map { "next attempt in \($0 - now) s" } ?? "will retry"
            Log.error("acme: \(site.file): order for \(site.domain.names.joined(separator: ", ")) failed: "
                      + "\(detail.replacingNewlines()); \(next)")
        }
    }

    /// The stamps of a site's files as this instance wrote them, so the
    /// next scan does not announce them again.
    private func remember(_ site: ACMESite) {
        for type in site.keyTypes {
            guard let path = try? storage.certificate(site.name, type) else { continue }
            seen[path] = FileStamp(path: path)
        }
    }

    /// Another instance's work: files changed since last seen are announced
    /// (the next handshake loads them) and given to the scheduler.
    private func scan(now: Int64) {
        for site in sites.values {
            // This instance's own order writes them; its result says so.
            if scheduler.status(site.name, now: now)?.inFlight == true { continue }
            var changed = false
            for type in site.keyTypes {
                guard let path = try? storage.certificate(site.name, type) else { continue }
                let stamp = FileStamp(path: path)
                if let known = seen[path], known == stamp { continue }
                seen[path] = stamp
                changed = true
            }
            guard changed else { continue }
            certificates.certificateChanged(primaryName: site.name)
            if let certificate = storedCertificate(site) {
                perform(scheduler.certificateFound(site.name, certificate: certificate, now: now))
            }
        }
    }

    /// RFC 9773 §4: when the CA's directory offers renewal information, the
    /// suggested window of each ECDSA certificate (its RSA twin renews with
    /// it), a batch per scan.
    private func refreshRenewalInfo(accountKey: PrivateKey, now: Int64) {
        do {
            if renewalInfoClient == nil {
                renewalInfoClient = ACMEClient(directoryURL: settings.directory, accountKey: accountKey,
                                               http: try ACMEHTTPClient(options: .init(trust: settings.trust)))
            }
            guard let client = renewalInfoClient, try client.directory().renewalInfo != nil else { return }
            var budget = Self.renewalInfoBatch
            let deadline = now + Self.renewalInfoTime
            for site in sites.values where budget > 0 && renewalInfoDue[site.name, default: 0] <= now {
                guard !service.stopRequested, Int64(time(nil)) < deadline else { return }
                renewalInfoDue[site.name] = now + Self.renewalInfoInterval.least
                guard scheduler.status(site.name, now: now)?.inFlight == false,
                      let path = try? storage.certificate(site.name, .ecdsa), let pem = (try? storage.read(path)) ?? nil,
                      let leaf = try? CertificateInfo(pem: pem), let certID = leaf.ariCertID else { continue }
                budget -= 1
                let bounds = Self.renewalInfoInterval
                do {
                    guard let info = try client.renewalInfo(certID: certID) else { return }
                    let window = RenewalWindow(start: Int64(info.windowStart), end: Int64(info.windowEnd))
                    renewalInfoDue[site.name] = now + min(max(Int64(info.retryAfter ?? Int(bounds.default)), bounds.least), bounds.most)
                    perform(scheduler.renewalInfo(site.name, window: window,
                                                  renewalTime: RenewalSchedule.renewalTime(leaf, window: window, now: now), now: now))
                } catch {
                    Log.warning("acme: \(site.file): renewal information: \(error)")
                }
            }
        } catch {
            Log.warning("acme: renewal information: \(error)")
        }
    }

    /// What storage holds for `site`: with RSA too, the one expiring first
    /// (the scheduler renews both together).
    private func storedCertificate(_ site: ACMESite) -> ACMECertificateInfo? {
        let now = Int64(time(nil))
        var first: ACMECertificateInfo?
        for type in site.keyTypes {
            guard let path = try? storage.certificate(site.name, type) else { continue }
            do {
                guard let pem = try storage.read(path) else { continue }
                let info = Self.info(try CertificateInfo(pem: pem), now: now)
                if first == nil || info.notAfter < first!.notAfter { first = info }
            } catch {
                Log.error("acme: \(site.file): \(path): \(error)")
            }
        }
        return first
    }

    static func info(_ leaf: CertificateInfo, now: Int64) -> ACMECertificateInfo {
        ACMECertificateInfo(notBefore: Int64(leaf.notBefore), notAfter: Int64(leaf.notAfter),
                            renewalTime: RenewalSchedule.renewalTime(leaf, now: now))
    }

    /// RFC 8555 §7.3: one account per storage, its key made under the
    /// storage's account lock, so a fleet registers it once.
    private func setUpAccount(now: Int64) -> PrivateKey? {
        guard now >= accountRetry.at else { return nil }
        do {
            let http = try ACMEHTTPClient(options: .init(trust: settings.trust))
            let client = try ACMEAccountSetup.loadOrCreate(storage: storage, directoryURL: settings.directory,
                                                           contact: settings.contact, http: http)
            Log.info("acme: account \(client.accountURL ?? "?") at \(settings.directory)")
            accountKey = client.accountKey
            accountRetry = (0, 0)
            return client.accountKey
        } catch {
            accountRetry.failures += 1
            let delay = min(Int64(60) << min(accountRetry.failures - 1, 6), 3600)
            accountRetry.at = now + delay
            Log.error("acme: cannot set up the account at \(settings.directory): \(error); next attempt in \(delay) s")
            return nil
        }
    }

    func report(now: Int64) -> ACMEReport {
        let counts = scheduler.stateCounts(now: now)
        return ACMEReport(ordersIssued: scheduler.counters.succeeded, ordersFailed: scheduler.counters.failed,
                          waitingForFirst: counts[.waitingFirst] ?? 0,
                          expiry: scheduler.status(now: now).compactMap { s in s.expiresIn.map { (s.id, $0) } })
    }
}

/// A few threads that run orders, one at a time each, every one with its own
/// libcurl handle and ACME client (neither is thread-safe).
private final class OrderThreads: @unchecked Sendable {
    // @unchecked: `queue` is behind its mutex; `threads` is written by init only.
    private let queue = Mutex<(jobs: [ACMESite], stopping: Bool)>(([], false))
    private let signal = ThreadSignal()
    private var threads: [JoinableThread] = []

    init(count: Int, settings: ACMESettings, accountKey: PrivateKey, storage: ACMEStorage,
         certificates: ACMECertificates, generation: Int, service: ACMEService) {
        for _ in 0 ..< max(1, count) {
            threads.append(JoinableThread(niceness: ACMEService.niceness) { [self] in
                let runner = OrderRunner(settings: settings, accountKey: accountKey, storage: storage, certificates: certificates)
                while let site = next() {
                    service.deliver(OrderResult(site: site, outcome: runner.run(site), generation: generation))
                }
            })
        }
    }

    func submit(_ site: ACMESite) {
        queue.withLock { $0.jobs.append(site) }
        signal.signal()
    }

    private func next() -> ACMESite? {
        while true {
            let (job, stopping) = queue.withLock { q -> (ACMESite?, Bool) in
                if q.stopping { return (nil, true) }
                return (q.jobs.isEmpty ? nil : q.jobs.removeFirst(), false)
            }
            if stopping { return nil }
            if let job { return job }
            signal.wait(seconds: 60)
        }
    }

    func stop() {
        queue.withLock { $0.stopping = true }
        for _ in threads { signal.signal() }
        for t in threads { t.join() }
        threads.removeAll()   // they captured self
    }
}

/// One order thread's ACME client and what an order needs.
private final class OrderRunner {
    let settings: ACMESettings
    let accountKey: PrivateKey
    let storage: ACMEStorage
    let certificates: ACMECertificates
    private var client: ACMEClient?

    init(settings: ACMESettings, accountKey: PrivateKey, storage: ACMEStorage, certificates: ACMECertificates) {
        self.settings = settings
        self.accountKey = accountKey
        self.storage = storage
        self.certificates = certificates
    }

    /// The account's client, found again by its key (RFC 8555 §7.3.1) once per thread.
    private func accountClient() throws -> ACMEClient {
        if let client { return client }
        let http = try ACMEHTTPClient(options: .init(trust: settings.trust))
        let fresh = ACMEClient(directoryURL: settings.directory, accountKey: accountKey, http: http)
        try fresh.newAccount(contact: [], onlyReturnExisting: true)
        client = fresh
        return fresh
    }

    /// Under the domain's lock, one certificate per key type (RFC 8555 §7.4),
    /// written to storage (chain and key in one file, atomically) and then
    /// announced, so the next handshake serves it.
    func run(_ site: ACMESite) -> OrderResult.Outcome {
        let lock: DomainLock
        do {
            // An owner per order: two orders of one process never share a lock.
            lock = try DomainLock.domain(site.name, storage: storage, owner: DomainLock.makeOwner())
            guard try lock.acquire() else { return .lockedElsewhere }
        } catch {
            return .failed(detail: "\(error)", retryAfter: nil, rateLimited: false)
        }
        defer { try? lock.release() }
        // Another instance of the fleet failed it recently: its backoff holds here too.
        if Backoff.load(site.name, from: storage, now: Int64(time(nil))).backoff.isWaiting(now: Int64(time(nil))) {
            return .lockedElsewhere
        }
        do {
            let client = try accountClient()
            let issuer = ACMEIssuer(client: client, solver: ChallengePublisher(storage: storage, certificates: certificates, lock: lock),
                                    challenges: settings.challenges.compactMap { ChallengeKind(rawValue: $0.rawValue) })
            let ari = try client.directory().renewalInfo != nil
            var first: CertificateInfo?
            for type in site.keyTypes {
                let path = try storage.certificate(site.name, type)
                // RFC 9773 §5: a renewal names the certificate it replaces.
                let current = ari ? (try? storage.read(path)).flatMap { $0 }.flatMap { try? CertificateInfo(pem: $0) } : nil
                let key = type == .ecdsa ? try PrivateKey.generateP256() : try PrivateKey.generateRSA()
                let issued = try issuer.issue(names: site.domain.names, key: key, replaces: current?.ariCertID)
                guard try lock.refresh() else { return .lockedElsewhere }
                try storage.write(issued.chainPEM + key.pem(), to: path)
                certificates.certificateChanged(primaryName: site.name)
                if first == nil || issued.leaf.notAfter < first!.notAfter { first = issued.leaf }
            }
            guard let first else { return .failed(detail: "no certificate ordered", retryAfter: nil, rateLimited: false) }
            return .issued(first)
        } catch let error as ACMERequestError {
            return .failed(detail: error.description, retryAfter: error.retryAfter,
                           rateLimited: error.problem?.type == ACMEProblem.rateLimited)
        } catch {
            return .failed(detail: "\(error)", retryAfter: nil, rateLimited: false)
        }
    }
}
