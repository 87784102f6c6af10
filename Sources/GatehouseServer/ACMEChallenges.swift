#if canImport(Glibc)
import Glibc
#endif
import GatehouseACME
import GatehouseConfig
import GatehouseLog
import GatehouseTLS
import Synchronization

/// Publishes a challenge where whichever instance the CA's validation
/// reaches can answer it: storage first (the fleet reads it there), then this
/// process's memory (no file read for the common case of one instance).
/// Unpublished on every outcome, so nothing stale is answered later.
final class ChallengePublisher: ChallengeSolver {
    let storage: ACMEStorage
    let certificates: ACMECertificates
    /// The domain's lock, refreshed at each step of a long order.
    let lock: DomainLock

    init(storage: ACMEStorage, certificates: ACMECertificates, lock: DomainLock) {
        self.storage = storage
        self.certificates = certificates
        self.lock = lock
    }

    func publish(_ c: PendingChallenge) throws {
        switch c.kind {
        case .http01:
            try storage.writeHTTP01(token: c.token, name: c.name, keyAuthorization: c.keyAuthorization)
            certificates.publishHTTP01(token: c.token, name: c.name, keyAuthorization: c.keyAuthorization)
        case .tlsALPN01:
            let pem = try ChallengeResponse.tlsALPN01Certificate(name: c.name, keyAuthorization: c.keyAuthorization)
            try storage.writeTLSALPN01(name: c.name, pem: pem)
            certificates.publishTLSALPN01(name: c.name,
                                          credentials: try CredentialLoader.load(pem: pem, source: "tls-alpn-01 challenge for \(c.name)"))
        }
    }

    /// Every instance's mirror has read storage before the CA is told.
    func published() throws {
        _ = try lock.refresh()
        usleep(useconds_t(ChallengeMirror.interval * 2 * 1_000_000))
    }

    func unpublish(_ c: PendingChallenge) {
        switch c.kind {
        case .http01:
            certificates.withdrawHTTP01(token: c.token)
            storage.removeHTTP01(token: c.token)
        case .tlsALPN01:
            certificates.withdrawTLSALPN01(name: c.name)
            storage.removeTLSALPN01(name: c.name)
        }
    }
}

/// Copies the challenges in storage into memory every quarter second (when
/// a directory changed), so the workers answer a validation that reaches
/// this instance for an order another instance placed, without ever reading
/// storage themselves (NFS can stall; a client could make them read at
/// will). Files older than an hour (left by a crash) are removed.
final class ChallengeMirror: @unchecked Sendable {
    // @unchecked: `stopping` is atomic; the rest belongs to the mirror thread.
    static let interval = 0.25
    static let staleAfter = 3600

    private let storage: ACMEStorage
    private let certificates: ACMECertificates
    private let signal = ThreadSignal()
    private let stopping = Atomic<Bool>(false)
    private var thread: JoinableThread?
    /// Parsed challenge certificates by file name and mtime.
    private var parsed: [String: (modified: Int, credentials: Credentials)] = [:]

    init(storage: ACMEStorage, certificates: ACMECertificates) {
        self.storage = storage
        self.certificates = certificates
        thread = JoinableThread(niceness: ACMEService.niceness) { [self] in run() }
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        signal.signal()
        thread?.join()
        thread = nil
        certificates.mirror(ACMECertificates.Challenges())
    }

    private func run() {
        var last: (FileStamp?, FileStamp?)? = nil
        var nextSweep = 0
        while !stopping.load(ordering: .relaxed) {
            let stamps = (FileStamp(path: storage.http01Directory), FileStamp(path: storage.tlsALPN01Directory))
            let now = Int(time(nil))
            if last == nil || last!.0 != stamps.0 || last!.1 != stamps.1 || now >= nextSweep {
                refresh(now: now)
                last = stamps
                nextSweep = now + 60
            }
            signal.wait(seconds: Self.interval)
        }
    }

    private func refresh(now: Int) {
        var challenges = ACMECertificates.Challenges()
        for (token, modified) in storage.list(storage.http01Directory) {
            if now - modified > Self.staleAfter { storage.removeHTTP01(token: token); continue }
            guard let record = storage.readHTTP01(token: token) else { continue }
            challenges.http01[token] = .init(name: record.name, keyAuthorization: Array(record.keyAuthorization.utf8))
        }
        var seen: Set<String> = []
        for (file, modified) in storage.list(storage.tlsALPN01Directory) where file.hasSuffix(".pem") {
            let name = String(file.dropLast(4))
            if now - modified > Self.staleAfter { storage.removeTLSALPN01(name: name); continue }
            seen.insert(file)
            if let known = parsed[file], known.modified == modified {
                challenges.tlsALPN01[name] = known.credentials
                continue
            }
            guard let pem = storage.readTLSALPN01(name: name),
                  let credentials = try? CredentialLoader.load(pem: pem, source: "tls-alpn-01 challenge for \(name)") else { continue }
            parsed[file] = (modified, credentials)
            challenges.tlsALPN01[name] = credentials
        }
        parsed = parsed.filter { seen.contains($0.key) }
        certificates.mirror(challenges)
    }
}
