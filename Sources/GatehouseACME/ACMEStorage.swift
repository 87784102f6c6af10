#if canImport(Glibc)
import Glibc
#endif

/// Where ACME state lives under `[acme] storage`, shared by every instance
/// of a fleet (NFS included), and how it is written:
///
///     account/key.pem                      the account's ES256 key (one per storage)
///     account/<directory id>.json          the account URL at one CA's directory
///     account/lock                         held while the key is made or registered
///     certificates/<name>/ecdsa.pem        key + chain, one file (P-256)
///     certificates/<name>/rsa.pem          key + chain, one file (RSA-2048, legacy profile)
///     certificates/<name>/lock             one instance at a time orders this domain
///     certificates/<name>/backoff.json     failures and when to try again
///     challenges/http-01/<token>           the key authorization served for a token
///     challenges/tls-alpn-01/<name>.pem    challenge certificate + key
///
/// `<name>` is the domain's primary name. Key and chain share one file so a
/// single rename replaces both: a reader never pairs a new certificate with
/// the old key. Directories are 0700 and files 0600 (RFC 8555 §11.1: whoever
/// reads the account key is the account); every write is a temporary file,
/// fsync, rename, fsync of the directory, so a crash leaves the old file or
/// the new one, never a torn one.
public struct ACMEStorage: Sendable {
    public let root: String

    public init(root: String) {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
    }

    public enum KeyType: String, Sendable, CaseIterable {
        case ecdsa, rsa
    }

    public var accountDirectory: String { root + "/account" }
    public var accountKey: String { accountDirectory + "/key.pem" }
    public var accountLock: String { accountDirectory + "/lock" }

    /// The account URL recorded for one CA: a directory URL maps to a file
    /// name readable by people (its host) and unique (a hash of the URL).
    public func accountRecord(directoryURL: String) -> String {
        let afterScheme = directoryURL.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: true).dropFirst().first ?? ""
        let host = String(afterScheme.map { c -> Character in
            c.isASCII && (c.isLetter || c.isNumber || c == "." || c == "-") ? Character(c.lowercased()) : "_"
        }.prefix(100))
        let hash = OpenSSL.sha256(Array(directoryURL.utf8)).prefix(8).map { byte -> String in
            let hex = String(byte, radix: 16)
            return hex.count == 1 ? "0" + hex : hex
        }.joined()
        return accountDirectory + "/\(host)-\(hash).json"
    }

    public func domainDirectory(_ primaryName: String) throws(ACMEError) -> String {
        guard HostName.isValid(primaryName) else { throw ACMEError("\"\(primaryName)\" cannot name a storage directory") }
        return root + "/certificates/" + primaryName
    }

    public func certificate(_ primaryName: String, _ type: KeyType) throws(ACMEError) -> String {
        try domainDirectory(primaryName) + "/\(type.rawValue).pem"
    }

    public func domainLock(_ primaryName: String) throws(ACMEError) -> String {
        try domainDirectory(primaryName) + "/lock"
    }

    public func backoff(_ primaryName: String) throws(ACMEError) -> String {
        try domainDirectory(primaryName) + "/backoff.json"
    }

    public var http01Directory: String { root + "/challenges/http-01" }
    public var tlsALPN01Directory: String { root + "/challenges/tls-alpn-01" }

    /// The token comes from the CA and, on the serving side, from a request
    /// path: checked before it becomes a file name.
    public func http01(token: String) throws(ACMEError) -> String {
        guard Base64URL.isValidToken(token) else { throw ACMEError("\"\(token.prefix(80))\" is not a challenge token") }
        return http01Directory + "/" + token
    }

    public func tlsALPN01(_ name: String) throws(ACMEError) -> String {
        guard HostName.isValid(name) else { throw ACMEError("\"\(name)\" cannot name a challenge certificate") }
        return tlsALPN01Directory + "/" + name + ".pem"
    }

    // MARK: - Files

    /// Replaces `path` atomically with `bytes`, mode 0600, creating missing
    /// directories (0700) below the root on the way.
    public func write(_ bytes: [UInt8], to path: String) throws(ACMEError) {
        let directory = Self.parent(of: path)
        try makeDirectories(directory)
        let random = try OpenSSL.randomBytes(6).map { String($0, radix: 16) }.joined()
        let name = path.split(separator: "/").last.map(String.init) ?? "file"
        let temporary = directory + "/.\(name).\(getpid()).\(random).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw Self.failure("cannot create", temporary) }
        var done = false
        defer {
            if !done { unlink(temporary) }
        }
        // The umask may have cleared bits of 0600 but never adds any; make it exact.
        guard fchmod(fd, 0o600) == 0 else { let e = Self.failure("cannot chmod", temporary); close(fd); throw e }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                let e = Self.failure("cannot write", temporary)
                close(fd)
                throw e
            }
            offset += n
        }
        // Data on disk before the rename makes it visible (ext4, XFS and NFS
        // all may reorder otherwise).
        guard fsync(fd) == 0 else { let e = Self.failure("cannot fsync", temporary); close(fd); throw e }
        guard close(fd) == 0 else { throw Self.failure("cannot close", temporary) }
        guard rename(temporary, path) == 0 else { throw Self.failure("cannot rename to \(path)", temporary) }
        done = true
        // The rename itself is durable once its directory is.
        let dirfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd >= 0 {
            _ = fsync(dirfd)
            close(dirfd)
        }
    }

    /// The file's bytes, or nil when it does not exist.
    public func read(_ path: String, limit: Int = 1 << 20) throws(ACMEError) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw Self.failure("cannot open", path)
        }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Self.failure("cannot read", path)
            }
            if n == 0 { return out }
            out.append(contentsOf: chunk[0 ..< n])
            guard out.count <= limit else { throw ACMEError("\(path): larger than \(limit) bytes") }
        }
    }

    /// Removes `path`; a file already gone is fine.
    public func remove(_ path: String) throws(ACMEError) {
        guard unlink(path) == 0 || errno == ENOENT else { throw Self.failure("cannot remove", path) }
    }

    /// `directory` and its missing parents up to the root, 0700. The root
    /// itself the configuration loader has made.
    func makeDirectories(_ directory: String) throws(ACMEError) {
        guard directory.hasPrefix(root + "/") || directory == root else { throw ACMEError("\(directory) is outside \(root)") }
        var partial = root
        for part in directory.dropFirst(root.count).split(separator: "/") {
            partial += "/" + part
            if mkdir(partial, 0o700) != 0 && errno != EEXIST { throw Self.failure("cannot create directory", partial) }
        }
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func failure(_ what: String, _ path: String) -> ACMEError {
        ACMEError("\(path): \(what): \(String(cString: strerror(errno)))")
    }
}
