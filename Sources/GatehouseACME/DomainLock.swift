#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// A lock file on the shared storage (NFS included): one instance of a
/// fleet at a time orders a domain (`certificates/<name>/lock`) or makes
/// the account (`account/lock`). It names its owner and an expiry, so an
/// instance that died holding it stops blocking the others after the TTL.
///
/// Creation is O_CREAT|O_EXCL, atomic on local file systems and NFSv3+.
/// Taking over an expired lock is a rename over it followed by a re-read;
/// two instances taking over the same expired lock within the same
/// instant can both believe they won, which `refresh` then tells the
/// loser. The lock saves work and rate limit; it is not needed for
/// correctness (two orders for one domain both yield valid certificates).
///
/// Used on the ACME thread only.
public final class DomainLock {
    public let storage: ACMEStorage
    public let path: String
    /// Who we are: host name, pid and a random part (a pid is reused after
    /// a restart, and by another host's instance).
    public let owner: String
    /// How long the lock holds without `refresh`.
    public let ttl: Int64
    /// The expiry we last wrote while we hold the lock; nil otherwise.
    public private(set) var expiry: Int64?

    public static let defaultTTL: Int64 = 600

    public init(storage: ACMEStorage, path: String, owner: String = DomainLock.makeOwner(), ttl: Int64 = DomainLock.defaultTTL) {
        self.storage = storage
        self.path = path
        self.owner = owner
        self.ttl = ttl
    }

    /// The lock of a domain's certificates.
    public static func domain(_ primaryName: String, storage: ACMEStorage, owner: String = makeOwner(),
                              ttl: Int64 = defaultTTL) throws(ACMEError) -> DomainLock {
        DomainLock(storage: storage, path: try storage.domainLock(primaryName), owner: owner, ttl: ttl)
    }

    /// The lock held while the account key is made or registered.
    public static func account(storage: ACMEStorage, owner: String = makeOwner(), ttl: Int64 = defaultTTL) -> DomainLock {
        DomainLock(storage: storage, path: storage.accountLock, owner: owner, ttl: ttl)
    }

    /// "host/pid/random": one per process is enough, the manager makes it once.
    public static func makeOwner() -> String {
        var name = [CChar](repeating: 0, count: 256)
        let host = gethostname(&name, name.count - 1) == 0 ? OpenSSL.string(name) : "unknown"
        let clean = String(host.unicodeScalars.prefix(64).map { $0.isASCII && $0.value > 0x20 && $0 != "/" ? Character($0) : "_" })
        let random = ((try? OpenSSL.randomBytes(8)) ?? []).map { byte -> String in
            let hex = String(byte, radix: 16)
            return hex.count == 1 ? "0" + hex : hex
        }.joined()
        return "\(clean)/\(getpid())/\(random)"
    }

    /// What a lock file holds.
    public struct Content: Codable, Sendable, Equatable {
        public var owner: String
        public var expires: Int64
    }

    public static func now() -> Int64 { Int64(time(nil)) }

    /// Takes the lock if it is free, expired, or garbage older than the
    /// TTL. False when another owner holds it.
    public func acquire(now: Int64 = DomainLock.now()) throws(ACMEError) -> Bool {
        try storage.makeDirectories(ACMEStorage.parent(of: path))
        // Twice: a takeover that finds the file changed under it looks again.
        for _ in 0 ..< 2 {
            if try create(now: now) { return true }
            guard let seen = try inspect() else { continue } // gone meanwhile: create again
            if let content = seen.content {
                if content.owner == owner {
                    return try replace(now: now)
                }
                if content.expires > now { return false }
            } else if now - seen.modified < ttl {
                // Being written right now (create, then write), or garbage
                // not yet old enough to be sure nobody is writing it.
                return false
            }
            // Expired: only if it is still the file judged expired.
            guard let again = try inspect(), again.inode == seen.inode, again.modified == seen.modified else { continue }
            return try replace(now: now)
        }
        return false
    }

    /// Extends the expiry to now + TTL while work goes on; false (and the
    /// lock no longer ours) when another owner has taken it. Call well
    /// before the TTL runs out, e.g. each TTL/3.
    public func refresh(now: Int64 = DomainLock.now()) throws(ACMEError) -> Bool {
        guard try currentOwner() == owner else {
            expiry = nil
            return false
        }
        return try replace(now: now)
    }

    /// Removes the lock if it is still ours and unexpired; anyone else's,
    /// or ours past its expiry (someone may be taking it over), stays.
    public func release(now: Int64 = DomainLock.now()) throws(ACMEError) {
        defer { expiry = nil }
        guard let seen = try inspect(), let content = seen.content, content.owner == owner, content.expires > now else { return }
        try storage.remove(path)
    }

    /// The owner named in the file, nil when there is none or it is garbage.
    public func currentOwner() throws(ACMEError) -> String? {
        try inspect()?.content?.owner
    }

    // MARK: - Files

    private func encoded(now: Int64) throws(ACMEError) -> [UInt8] {
        do {
            return Array(try JSONEncoder().encode(Content(owner: owner, expires: now + ttl))) + [0x0A]
        } catch {
            throw ACMEError("\(path): cannot encode lock: \(error)")
        }
    }

    /// O_EXCL creation with our content; false when the file exists.
    private func create(now: Int64) throws(ACMEError) -> Bool {
        let bytes = try encoded(now: now)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        if fd < 0 {
            if errno == EEXIST { return false }
            throw ACMEStorage.failure("cannot create lock", path)
        }
        var ok = fchmod(fd, 0o600) == 0
        var offset = 0
        while ok, offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 && errno == EINTR { continue }
            ok = n > 0
            offset += max(n, 0)
        }
        ok = ok && fsync(fd) == 0
        let error = ok ? nil : ACMEStorage.failure("cannot write lock", path)
        close(fd)
        if let error {
            // A half-written lock would block others for a TTL.
            unlink(path)
            throw error
        }
        expiry = now + ttl
        return true
    }

    /// Our content renamed over the file, then read back: ours only if
    /// nobody renamed theirs over it meanwhile.
    private func replace(now: Int64) throws(ACMEError) -> Bool {
        try storage.write(try encoded(now: now), to: path)
        guard try currentOwner() == owner else {
            expiry = nil
            return false
        }
        expiry = now + ttl
        return true
    }

    private struct Seen {
        var content: Content?
        var inode: UInt64
        var modified: Int64
    }

    /// The file's content (nil if garbage), inode and mtime; nil when absent.
    private func inspect() throws(ACMEError) -> Seen? {
        var st = stat()
        if lstat(path, &st) != 0 {
            if errno == ENOENT { return nil }
            throw ACMEStorage.failure("cannot stat lock", path)
        }
        let seen = Seen(content: nil, inode: UInt64(st.st_ino), modified: Int64(st.st_mtim.tv_sec))
        // Anything but a regular file (a directory, a symlink) is garbage.
        guard st.st_mode & S_IFMT == S_IFREG else { return seen }
        guard let bytes = try? storage.read(path, limit: 4096) else { return seen }
        var result = seen
        if let content = try? JSONDecoder().decode(Content.self, from: Data(bytes)), !content.owner.isEmpty {
            result.content = content
        }
        return result
    }
}
