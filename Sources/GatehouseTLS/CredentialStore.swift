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
public final class CredentialStore: Sendable {
    /// Default bound on loaded domains (`[tls] certificate_cache`).
    public static let defaultCapacity = 10_000

    public let capacity: Int
    private let domains: [Domain]
    private let state: Mutex<State>

    struct Domain: Sendable {
        let file: String
        let pairs: [CertificatePair]
    }

    enum Slot {
        case unloaded
        /// `signature`: the files as they were when loaded. `stale`: they have
        /// changed since (seen at a reload): try the new files first, fall back
        /// to these.
        case loaded([Credentials], signature: FileSignature, stale: Bool)
        /// Failed; logged once. Retried after the next reload.
        case failed
    }

    struct State {
        var slots: [Slot]
        /// Loaded slot ids and their second-chance bit (CLOCK eviction).
        var ring: [(id: Int, used: Bool)] = []
        var position: [Int: Int] = [:]
        var hand = 0
    }

    /// `previous`: the store being replaced, whose entries carry over.
    public init(snapshot: ConfigSnapshot, capacity: Int = CredentialStore.defaultCapacity, previous: CredentialStore? = nil) {
        self.capacity = max(1, capacity)
        let domains = snapshot.domains.map { Domain(file: $0.file, pairs: $0.certificates) }
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
        // An ACME domain before its first certificate: nothing to load, and
        // nothing to count as a load or a failure.
        guard !domains[id].pairs.isEmpty else { return [] }
        let (cached, stale): ([Credentials]?, [Credentials]?) = state.withLock { s in
            switch s.slots[id] {
            case .loaded(let c, _, let isStale):
                if isStale { return (nil, c) }
                if let p = s.position[id] { s.ring[p].used = true }
                return (c, nil)
            case .failed:
                return ([], nil)
            case .unloaded:
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
            s.position[victim] = nil
            let last = s.ring.removeLast()
            if s.hand < s.ring.count {
                s.ring[s.hand] = last
                s.position[last.id] = s.hand
            }
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
                case .failed: return false
                }
            }
            if needed { _ = credentials(for: id) }
        }
    }

    private func loadedEntries() -> [(pairs: [CertificatePair], credentials: [Credentials], signature: FileSignature)] {
        state.withLock { s in
            s.ring.compactMap { entry in
                guard case .loaded(let c, let signature, _) = s.slots[entry.id] else { return nil }
                return (domains[entry.id].pairs, c, signature)
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
