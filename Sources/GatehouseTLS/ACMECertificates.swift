import GatehouseLog
import Synchronization

/// Where a challenge published by another instance of a fleet is found
/// (ACME storage, implemented by the server): the CA's validation may reach
/// any instance, not the one that ordered.
public protocol ACMEChallengeSource: Sendable {
    /// The tls-alpn-01 certificate and key (PEM, one file) for `name`.
    func tlsALPN01(name: String) -> [UInt8]?
    /// The http-01 key authorization for `token`, when it was issued for `name`.
    func http01(token: String, name: String) -> [UInt8]?
}

/// What the ACME thread hands the handshakes and the port-80 listeners: each
/// ACME domain's current certificates (by primary name, so they survive
/// reloads, which renumber domains) and the challenges under validation.
/// One object for the life of the process; every runtime shares it. Lookups
/// take a short lock; they happen only for `acme = true` domains.
public final class ACMECertificates: Sendable {
    private let state = Mutex(State())
    private let source: (any ACMEChallengeSource)?

    struct State {
        var issued: [String: [Credentials]] = [:]
        var tlsALPN01: [String: Credentials] = [:]
        /// token → (name, key authorization).
        var http01: [String: (name: String, keyAuthorization: [UInt8])] = [:]
    }

    public init(source: (any ACMEChallengeSource)? = nil) {
        self.source = source
    }

    // MARK: - Certificates

    /// Serves `credentials` (an ECDSA pair, and RSA for a legacy domain) to
    /// new handshakes of the domain at once; handshakes in progress keep theirs.
    public func install(primaryName: String, credentials: [Credentials]) {
        state.withLock { $0.issued[primaryName] = credentials }
    }

    public func remove(primaryName: String) {
        _ = state.withLock { $0.issued.removeValue(forKey: primaryName) }
    }

    /// Empty until the domain's first certificate is installed.
    public func credentials(primaryName: String) -> [Credentials] {
        state.withLock { $0.issued[primaryName] } ?? []
    }

    public func hasCertificate(primaryName: String) -> Bool {
        state.withLock { $0.issued[primaryName]?.isEmpty == false }
    }

    public var installedCount: Int { state.withLock { $0.issued.count } }

    // MARK: - Challenges

    /// RFC 8737 §3: the certificate a validation handshake for `name` gets.
    public func publishTLSALPN01(name: String, credentials: Credentials) {
        state.withLock { $0.tlsALPN01[name] = credentials }
    }

    public func withdrawTLSALPN01(name: String) {
        _ = state.withLock { $0.tlsALPN01.removeValue(forKey: name) }
    }

    /// This instance's challenge, else one another instance wrote to storage.
    func tlsALPN01(name: String) -> Credentials? {
        if let mine = state.withLock({ $0.tlsALPN01[name] }) { return mine }
        guard let pem = source?.tlsALPN01(name: name) else { return nil }
        do {
            return try CredentialLoader.load(pem: pem, source: "tls-alpn-01 challenge for \(name)")
        } catch {
            Log.error("acme: \(error)")
            return nil
        }
    }

    public func publishHTTP01(token: String, name: String, keyAuthorization: String) {
        state.withLock { $0.http01[token] = (name, Array(keyAuthorization.utf8)) }
    }

    public func withdrawHTTP01(token: String) {
        _ = state.withLock { $0.http01.removeValue(forKey: token) }
    }

    /// RFC 8555 §8.3: the key authorization for a token Gatehouse issued for
    /// the request's host `name` (whatever port its Host named); nil for any
    /// other token, which then goes to the domain's backend.
    public func http01(token: String, name: String) -> [UInt8]? {
        if let mine = state.withLock({ $0.http01[token] }) {
            return mine.name == name ? mine.keyAuthorization : nil
        }
        return source?.http01(token: token, name: name)
    }
}
