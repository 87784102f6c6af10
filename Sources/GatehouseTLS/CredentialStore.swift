#if canImport(Glibc)
import Glibc
#endif
import GatehouseConfig
import GatehouseLog
import Synchronization

/// Every domain's certificates and keys, loaded when first needed and kept in
/// a bounded cache, so start-up and reload cost does not grow with parsing
/// 100,000 certificates. Shared by the workers: a lookup takes a short lock
/// (a few array reads); loading from disk happens outside it.
///
/// Entries survive a reload when the domain names the same files and their
/// size, mtime and inode are unchanged. A changed file is loaded again on
/// first use; if that fails, the domain keeps the certificate it had.
///
/// An `acme = true` domain's files are in ACME storage (chain and key in one
/// file, per key type) and may not exist yet: it is served with the ones that
/// exist, none is not an error, and they are loaded again whenever the ACME
/// side says they changed (`ACMECertificates.version`), without a reload.
public final class CredentialStore: Sendable {
    /// Default bound on loaded domains (`[tls] certificate_cache`).
    public static let defaultCapacity = 10_000

    public let capacity: Int
    private let domains: [Domain]
    private let state: Mutex<State>
    private let acme: ACMECertificates?

    struct Domain: Sendable {
        let file: String
        let pairs: [CertificatePair]
        /// The primary name of an `acme = true` domain.
        let acmeName: String?
    }

    enum Slot {
        case unloaded
        /// `signature`: the files as they were when loaded. `stale`: they have
        /// changed since (seen at a reload): try the new files first, fall back
        /// to these.
        case loaded([Credentials], signature: FileSignature, stale: Bool)
        /// Failed; logged once. Retried after the next reload.
        case failed
        /// An ACME domain's files that existed at `version` (empty: none
        /// yet), as they were then (`signature`). `retryAt` (monotonic
        /// seconds, 0: never): a file failed to load and nothing older could
        /// be kept, so it is tried again then, not at every handshake.
        case acme([Credentials], version: UInt64, signature: FileSignature, retryAt: Double)
    }

    struct State {
        var slots: [Slot]
        /// Loaded slot ids and their second-chance bit (CLOCK eviction).
        var ring: [(id: Int, used: Bool)] = []
        var position: [Int: Int] = [:]
        var hand = 0
        /// Whether an ACME domain has a certificate file, per version: asked
        /// by every ClientHello and port-80 request of the domain, answered
        /// with one stat() per version, never by loading (which evictions
        /// would repeat).
        var acmePresence: [Int: (version: UInt64, present: Bool)] = [:]
    }

    /// `previous`: the store being replaced, whose entries carry over.
    /// `acmeFiles`: an `acme = true` domain's files in storage (`acme` tells
    /// when they change).
    public init(snapshot: ConfigSnapshot, capacity: Int = CredentialStore.defaultCapacity, previous: CredentialStore? = nil,
                acme: ACMECertificates? = nil, acmeFiles: (DomainConfig) -> [String] = { _ in [] }) {
        self.capacity = max(1, capacity)
        self.acme = acme
        let domains = snapshot.domains.map { d in
            d.acme ? Domain(file: d.file, pairs: acmeFiles(d).map { CertificatePair(certificate: $0, key: $0) }, acmeName: d.primaryName)
                : Domain(file: d.file, pairs: d.certificates, acmeName: nil)
        }
        self.domains = domains
        var slots = [Slot](repeating: .unloaded, count: domains.count)
        var state = State(slots: [])
        if let previous {
            let old = previous.loadedEntries()
            if !old.isEmpty {
                var byPairs: [[CertificatePair]: (credentials: [Credentials], signature: FileSignature)] = [:]
                for entry in old { byPairs[entry.pairs] = (entry.credentials, entry.signature) }
                for (id, d) in domains.enumerated() {
                    guard let hit = byPairs[d.pairs], state.ring.count < self.capacity else { continue }
                    if let name = d.acmeName {
                        // Changed in storage (another instance renewed): loaded
                        // again at first use, so a reload picks it up at once.
                        guard hit.signature == FileSignature(d.pairs) else { continue }
                        slots[id] = .acme(hit.credentials, version: acme?.version(primaryName: name) ?? 0, signature: hit.signature, retryAt: 0)
                        state.position[id] = state.ring.count
                        state.ring.append((id, false))
                        continue
                    }
                    // Only loaded domains are stat()ed: at most `capacity` of them.
                    slots[id] = .loaded(hit.credentials, signature: hit.signature,
                                        stale: hit.signature != FileSignature(d.pairs))
                    state.position[id] = state.ring.count
                    state.ring.append((id, false))
                }
            }
        }
        state.slots = slots
        self.state = Mutex(state)
    }

    public var count: Int { domains.count }
    public var loadedCount: Int { state.withLock { $0.ring.count } }
    /// Certificate loads from disk, and those that failed (each logged once).
    private let loads = Atomic<Int>(0)
    private let failures = Atomic<Int>(0)
    public var loadCount: Int { loads.load(ordering: .relaxed) }
    public var failureCount: Int { failures.load(ordering: .relaxed) }

    /// The credentials to serve domain `id` with, loading them if needed.
    /// Empty when they cannot be loaded (the handshake is refused).
    public func credentials(for id: Int) -> [Credentials] {
        if let name = domains[id].acmeName { return acmeCredentials(for: id, primaryName: name) }
        let (cached, stale): ([Credentials]?, [Credentials]?) = state.withLock { s in
            switch s.slots[id] {
            case .loaded(let c, _, let isStale):
                if isStale { return (nil, c) }
                if let p = s.position[id] { s.ring[p].used = true }
                return (c, nil)
            case .failed:
                return ([], nil)
            case .unloaded, .acme:
                return (nil, nil)
            }
        }
        if let cached { return cached }
        let domain = domains[id]
        let signature = FileSignature(domain.pairs)
        loads.wrappingAdd(1, ordering: .relaxed)
        let result: [Credentials]
        let failed: Bool
        do {
            result = try CredentialSet.load(pairs: domain.pairs)
            failed = false
            for w in CredentialSet.expiryWarnings(file: domain.file, result) {
                if w.expired { Log.error(w.text) } else { Log.warning(w.text) }
            }
        } catch {
            failures.wrappingAdd(1, ordering: .relaxed)
            if let stale {
                Log.error("\(domain.file): \(error) (keeping the previous certificate)")
                result = stale
                failed = false
            } else {
                Log.error("\(domain.file): \(error) (domain disabled)")
                result = []
                failed = true
            }
        }
        state.withLock { s in
            if failed {
                s.slots[id] = .failed
                return
            }
            if case .loaded(_, _, stale: false) = s.slots[id] { return }   // another worker was faster
            s.slots[id] = .loaded(result, signature: signature, stale: false)
            if s.position[id] == nil {
                s.position[id] = s.ring.count
                s.ring.append((id, true))
                evict(&s)
            }
        }
        return result
    }

    /// Whether ACME domain `id` has a certificate in storage (one stat()
    /// per announced version; no file is read).
    public func hasACMECertificate(for id: Int) -> Bool {
        guard let name = domains[id].acmeName else { return !domains[id].pairs.isEmpty }
        let version = acme?.version(primaryName: name) ?? 0
        if let known = state.withLock({ $0.acmePresence[id] }), known.version == version { return known.present }
        let present = domains[id].pairs.contains { FileStamp(path: $0.certificate) != nil }
        state.withLock { $0.acmePresence[id] = (version, present) }
        return present
    }

    /// The files of an ACME domain that exist, loaded once per version (each
    /// read whole first: chain and key come from the same bytes, never from
    /// two opens a rename could fall between). A file that fails to load
    /// keeps what was served before.
    private func acmeCredentials(for id: Int, primaryName: String) -> [Credentials] {
        let version = acme?.version(primaryName: primaryName) ?? 0
        let now = monotonicSeconds()
        let (cached, previous): ([Credentials]?, [Credentials]) = state.withLock { s in
            guard case .acme(let c, let v, _, let retryAt) = s.slots[id] else { return (nil, []) }
            guard v == version, retryAt == 0 || now < retryAt else { return (nil, c) }
            if let p = s.position[id] { s.ring[p].used = true }
            return (c, c)
        }
        if let cached { return cached }
        let domain = domains[id]
        let signature = FileSignature(domain.pairs)
        var loaded: [Credentials] = []
        var failed = false
        for pair in domain.pairs where FileStamp(path: pair.certificate) != nil {
            loads.wrappingAdd(1, ordering: .relaxed)
            do {
                loaded.append(try CredentialLoader.load(combinedFile: pair.certificate))
            } catch {
                failures.wrappingAdd(1, ordering: .relaxed)
                failed = true
                Log.error("\(domain.file): acme: \(error)")
            }
        }
        var retryAt = 0.0
        if failed {
            retryAt = now + Self.acmeRetrySeconds
            if loaded.count < previous.count { loaded = previous }
        }
        let result = loaded
        state.withLock { s in
            s.slots[id] = .acme(result, version: version, signature: signature, retryAt: retryAt)
            s.acmePresence[id] = (version, !result.isEmpty || domain.pairs.contains { FileStamp(path: $0.certificate) != nil })
            if result.isEmpty {
                // Nothing held: no ring entry (100,000 pending domains cost no cache room).
                if let p = s.position[id] { remove(at: p, &s) }
            } else if s.position[id] == nil {
                s.position[id] = s.ring.count
                s.ring.append((id, true))
                evict(&s)
            }
        }
        return result
    }

    /// How long a broken ACME file waits before it is read again.
    static let acmeRetrySeconds = 10.0

    private func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// CLOCK: sweep the ring, giving recently used entries a second chance.
    private func evict(_ s: inout State) {
        while s.ring.count > capacity {
            if s.hand >= s.ring.count { s.hand = 0 }
            if s.ring[s.hand].used {
                s.ring[s.hand].used = false
                s.hand += 1
                continue
            }
            let victim = s.ring[s.hand].id
            s.slots[victim] = .unloaded
            remove(at: s.hand, &s)
        }
    }

    /// Drops ring entry `p` (its slot is the caller's business).
    private func remove(at p: Int, _ s: inout State) {
        s.position[s.ring[p].id] = nil
        let last = s.ring.removeLast()
        if p < s.ring.count {
            s.ring[p] = last
            s.position[last.id] = p
        }
    }

    /// Loads the first `capacity` domains (in file order) that are not loaded
    /// yet, logging every problem: a broken certificate shows up in the log
    /// seconds after start or reload, not at some visitor's first handshake.
    /// `until`: checked before each domain; true stops the preload.
    public func preload(until cancelled: () -> Bool = { false }) {
        for id in 0 ..< min(domains.count, capacity) {
            if cancelled() { return }
            if domains[id].pairs.isEmpty { continue }
            let needed = state.withLock { s -> Bool in
                switch s.slots[id] {
                case .unloaded: return true
                case .loaded(_, _, let stale): return stale
                case .failed, .acme: return false
                }
            }
            if needed { _ = credentials(for: id) }
        }
    }

    private func loadedEntries() -> [(pairs: [CertificatePair], credentials: [Credentials], signature: FileSignature)] {
        state.withLock { s in
            s.ring.compactMap { entry in
                switch s.slots[entry.id] {
                case .loaded(let c, let signature, _): return (domains[entry.id].pairs, c, signature)
                case .acme(let c, _, let signature, _): return (domains[entry.id].pairs, c, signature)
                case .unloaded, .failed: return nil
                }
            }
        }
    }
}

/// The stamps of every file of a domain's certificate pairs, taken when they
/// are loaded: enough to see that certbot replaced them.
struct FileSignature: Equatable, Sendable {
    private let stamps: [FileStamp?]

    init(_ pairs: [CertificatePair]) {
        stamps = pairs.flatMap { [FileStamp(path: $0.certificate), FileStamp(path: $0.key)] }
    }
}

extension CertificatePair: Hashable {
    public func hash(into hasher: inout Hasher) {
        hasher.combine(certificate)
        hasher.combine(key)
    }
}
