#if canImport(Glibc)
import Glibc
#endif
import GatehouseACME
import GatehouseConfig
import GatehouseLog
import GatehouseTLS
import Synchronization

/// One `acme = true` domain file, as the ACME side sees it.
struct ACMEDomain: Sendable, Equatable {
    let file: String
    let names: [String]
    let keyTypes: [ACMEStorage.KeyType]
    var primaryName: String { names[0] }

    init(_ domain: DomainConfig) {
        file = domain.file
        names = domain.names
        keyTypes = ACMEStorageSource.keyTypes(domain)
    }

    static func all(_ snapshot: ConfigSnapshot) -> [ACMEDomain] {
        snapshot.domains.filter(\.acme).map(ACMEDomain.init)
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
        var configuration: (settings: ACMESettings?, domains: [ACMEDomain])?
        var results: [OrderResult] = []
        var stopping = false
    }

    init(certificates: ACMECertificates) {
        self.certificates = certificates
    }

    /// At start and on every reload (on the control thread): the coordinator
    /// picks the new domain list up at once.
    func configure(_ snapshot: ConfigSnapshot) {
        guard snapshot.acme != nil || coordinator != nil else { return }
        inbox.withLock { $0.configuration = (snapshot.acme, ACMEDomain.all(snapshot)) }
        if coordinator == nil {
            coordinator = JoinableThread { [self] in run() }
        }
        wake.signal()
    }

    /// Waits for the order in flight, if any (bounded by libcurl's timeouts).
    func stop() {
        inbox.withLock { $0.stopping = true }
        wake.signal()
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
                    current.reconfigure(domains: configuration.domains)
                } else {
                    state?.stop()
                    state = configuration.settings.map {
                        Coordinator(settings: $0, domains: configuration.domains, certificates: certificates, service: self)
                    }
                    if state == nil { report.withLock { $0 = ACMEReport() } }
                }
            }
            guard let coordinator = state else {
                wake.wait(seconds: 3600)
                continue
            }
            for result in results { coordinator.finished(result) }
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
            && contact == other.contact && challenges == other.challenges
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
    let domain: ACMEDomain
    let outcome: Outcome
}

/// The coordinator's state for one CA and storage (a reload that changes
/// either starts a new one). Only the coordinator thread touches it.
private final class Coordinator {
    let settings: ACMESettings
    let storage: ACMEStorage
    let certificates: ACMECertificates
    unowned let service: ACMEService
    var domains: [String: ACMEDomain] = [:]
    var scheduler = ACMEScheduler()
    /// The account key, once registered or found.
    var accountKey: PrivateKey?
    var accountRetry: (at: Int64, failures: Int) = (0, 0)
    /// Storage files as last seen: a change (renewed here, or by another
    /// instance of the fleet) is announced to the credential store.
    var seen: [String: FileStamp?] = [:]
    var nextScan: Int64 = 0
    var orders: OrderThreads?
    let owner = LockOwner.current()

    /// Every instance of a fleet sees another's certificate within this.
    static let scanInterval: Int64 = 60

    init(settings: ACMESettings, domains: [ACMEDomain], certificates: ACMECertificates, service: ACMEService) {
        self.settings = settings
        self.storage = ACMEStorage(root: settings.storage)
        self.certificates = certificates
        self.service = service
        reconfigure(domains: domains)
    }

    func reconfigure(domains list: [ACMEDomain]) {
        domains = Dictionary(list.map { ($0.primaryName, $0) }, uniquingKeysWith: { first, _ in first })
        scheduler.domainsChanged(list.map(\.primaryName), now: Int64(time(nil)))
        for d in list where scheduler.backoffUnknown(d.primaryName) {
            // A restart must not hammer the CA: the backoff lives in storage.
            let (backoff, problem) = Backoff.load(d.primaryName, from: storage, now: Int64(time(nil)))
            if let problem { Log.warning("acme: \(d.file): \(problem) (ignored)") }
            scheduler.restoreBackoff(d.primaryName, backoff)
        }
        nextScan = 0
    }

    func stop() {
        orders?.stop()
        orders = nil
    }

    /// One turn: account, storage scan, due orders. Returns how long the
    /// coordinator may sleep.
    func step(now: Int64) -> Double {
        guard let accountKey = accountKey ?? setUpAccount(now: now) else {
            return Double(max(1, accountRetry.at - now))
        }
        if now >= nextScan {
            scan(now: now)
            nextScan = now + Self.scanInterval
        }
        let threads = orders ?? OrderThreads(count: scheduler.maxInFlight, settings: settings, accountKey: accountKey,
                                             storage: storage, certificates: certificates, owner: owner, service: service)
        orders = threads
        for name in scheduler.due(now: now) {
            guard let domain = domains[name] else { continue }
            threads.submit(domain)
        }
        let next = min(nextScan, scheduler.nextWakeup(now: now) ?? nextScan)
        return Double(max(1, next - now))
    }

    /// An order thread finished a domain.
    func finished(_ result: OrderResult) {
        let name = result.domain.primaryName
        let now = Int64(time(nil))
        switch result.outcome {
        case .issued(let leaf):
            Log.info("acme: \(result.domain.file): certificate issued for \(result.domain.names.joined(separator: ", ")), "
                     + "expires in \((Int64(leaf.notAfter) - now) / 3600) h")
            scheduler.orderSucceeded(name, notBefore: Int64(leaf.notBefore), notAfter: Int64(leaf.notAfter), now: now)
            try? Backoff.none.save(name, to: storage)
            remember(result.domain)
        case .lockedElsewhere:
            // Another instance is ordering it: its certificate shows up in a scan.
            scheduler.lockedElsewhere(name, now: now)
        case .failed(let detail, let retryAfter, let rateLimited):
            let backoff = scheduler.orderFailed(name, detail: detail, retryAfter: retryAfter, rateLimited: rateLimited, now: now)
            Log.error("acme: \(result.domain.file): order for \(result.domain.names.joined(separator: ", ")) failed: \(detail); "
                      + "next attempt in \(backoff.nextAttempt - now) s")
            do { try backoff.save(name, to: storage) } catch { Log.error("acme: \(error)") }
        }
    }

    /// The stamps of a domain's files as this instance wrote them, so the
    /// next scan does not announce them again.
    private func remember(_ domain: ACMEDomain) {
        for type in domain.keyTypes {
            guard let path = try? storage.certificate(domain.primaryName, type) else { continue }
            seen[path] = FileStamp(path: path)
        }
    }

    /// Reads every ACME domain's files in storage: at start (a restart reuses
    /// them, no new order), then every minute (another instance's work).
    private func scan(now: Int64) {
        for domain in domains.values {
            var changed = false
            for type in domain.keyTypes {
                guard let path = try? storage.certificate(domain.primaryName, type) else { continue }
                let stamp = FileStamp(path: path)
                let known = seen[path]
                guard known == nil || known! != stamp else { continue }
                seen[path] = stamp
                if known != nil { changed = true }
                guard type == .ecdsa, stamp != nil else { continue }
                do {
                    guard let pem = try storage.read(path) else { continue }
                    let leaf = try CertificateInfo(pem: pem)
                    scheduler.certificateFound(domain.primaryName, notBefore: Int64(leaf.notBefore),
                                               notAfter: Int64(leaf.notAfter), now: now)
                } catch {
                    Log.error("acme: \(domain.file): \(path): \(error)")
                }
            }
            if changed { certificates.certificateChanged(primaryName: domain.primaryName) }
        }
    }

    /// RFC 8555 §7.3: one account per storage, its key made under the
    /// storage's account lock so a fleet registers it once.
    private func setUpAccount(now: Int64) -> PrivateKey? {
        guard now >= accountRetry.at else { return nil }
        do {
            let http = try ACMEHTTPClient(options: .init(trust: settings.trust))
            let account = try ACMEAccountSetup.loadOrCreate(storage: storage, directoryURL: settings.directory,
                                                            contact: settings.contact.map { [$0] } ?? [], http: http, owner: owner)
            Log.info("acme: account \(account.url) at \(settings.directory)")
            accountKey = account.key
            accountRetry = (0, 0)
            return account.key
        } catch {
            accountRetry.failures += 1
            let delay = min(Int64(60) << min(accountRetry.failures - 1, 10), 3600)
            accountRetry.at = now + delay
            Log.error("acme: cannot set up the account at \(settings.directory): \(error); next attempt in \(delay) s")
            return nil
        }
    }

    func report(now: Int64) -> ACMEReport {
        scheduler.report(now: now)
    }
}

/// A few threads that run orders, one at a time each, every one with its own
/// libcurl handle and ACME client (neither is thread-safe).
private final class OrderThreads: @unchecked Sendable {
    // @unchecked: `queue` is behind its mutex; the rest is immutable.
    private let queue = Mutex<(jobs: [ACMEDomain], stopping: Bool)>(([], false))
    private let signal = ThreadSignal()
    private var threads: [JoinableThread] = []

    init(count: Int, settings: ACMESettings, accountKey: PrivateKey, storage: ACMEStorage,
         certificates: ACMECertificates, owner: LockOwner, service: ACMEService) {
        for _ in 0 ..< max(1, count) {
            threads.append(JoinableThread { [self] in
                let runner = OrderRunner(settings: settings, accountKey: accountKey, storage: storage,
                                         certificates: certificates, owner: owner)
                while let domain = next() {
                    service.deliver(OrderResult(domain: domain, outcome: runner.run(domain)))
                }
            })
        }
    }

    func submit(_ domain: ACMEDomain) {
        queue.withLock { $0.jobs.append(domain) }
        signal.signal()
    }

    private func next() -> ACMEDomain? {
        while true {
            let (job, stopping) = queue.withLock { q -> (ACMEDomain?, Bool) in
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
    }
}

/// One order thread's ACME client and what an order needs.
private final class OrderRunner {
    let settings: ACMESettings
    let accountKey: PrivateKey
    let storage: ACMEStorage
    let certificates: ACMECertificates
    let owner: LockOwner
    private var client: ACMEClient?

    init(settings: ACMESettings, accountKey: PrivateKey, storage: ACMEStorage, certificates: ACMECertificates, owner: LockOwner) {
        self.settings = settings
        self.accountKey = accountKey
        self.storage = storage
        self.certificates = certificates
        self.owner = owner
    }

    /// The account's client, found again by key (RFC 8555 §7.3.1) once per thread.
    private func accountClient() throws -> ACMEClient {
        if let client { return client }
        let http = try ACMEHTTPClient(options: .init(trust: settings.trust))
        let fresh = ACMEClient(directoryURL: settings.directory, accountKey: accountKey, http: http)
        try fresh.newAccount(contact: [], onlyReturnExisting: true)
        client = fresh
        return fresh
    }

    /// Under the domain's lock, one certificate per key type (RFC 8555 §7.4):
    /// written to storage (chain and key in one file, atomically), then
    /// announced, so new handshakes get it at once.
    func run(_ domain: ACMEDomain) -> OrderResult.Outcome {
        let name = domain.primaryName
        let lock: DomainLock
        do {
            guard let acquired = try DomainLock.acquire(path: storage.domainLock(name), owner: owner) else { return .lockedElsewhere }
            lock = acquired
        } catch {
            return .failed(detail: "\(error)", retryAfter: nil, rateLimited: false)
        }
        defer { lock.release() }
        do {
            let client = try accountClient()
            let issuer = ACMEIssuer(client: client, solver: ChallengePublisher(storage: storage, certificates: certificates),
                                    challenges: settings.challenges.compactMap { ChallengeKind(rawValue: $0.rawValue) })
            let ari = try client.directory().renewalInfo != nil
            var ecdsaLeaf: CertificateInfo?
            for type in domain.keyTypes {
                let path = try storage.certificate(name, type)
                // RFC 9773 §5: a renewal names the certificate it replaces.
                let current = ari ? (try? storage.read(path)).flatMap { $0 }.flatMap { try? CertificateInfo(pem: $0) } : nil
                let key = type == .ecdsa ? try PrivateKey.generateP256() : try PrivateKey.generateRSA()
                let issued = try issuer.issue(names: domain.names, key: key, replaces: current?.ariCertID)
                lock.refresh()
                try storage.write(issued.chainPEM + key.pem(), to: path)
                certificates.certificateChanged(primaryName: name)
                if type == .ecdsa { ecdsaLeaf = issued.leaf }
            }
            guard let ecdsaLeaf else { return .failed(detail: "no ECDSA certificate ordered", retryAfter: nil, rateLimited: false) }
            return .issued(ecdsaLeaf)
        } catch let error as ACMERequestError {
            return .failed(detail: error.description, retryAfter: error.retryAfter,
                           rateLimited: error.problem?.type == ACMEProblem.rateLimited)
        } catch {
            return .failed(detail: "\(error)", retryAfter: nil, rateLimited: false)
        }
    }
}
