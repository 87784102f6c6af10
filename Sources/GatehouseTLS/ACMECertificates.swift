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

/// What the ACME thread tells the handshakes and the port-80 listeners: that
/// a domain's certificate files in storage changed (the credential store then
/// loads them again at the next handshake, so a new certificate is served with
/// no reload), and the challenges under validation. Keyed by primary name, so
/// it survives reloads, which renumber domains. One object for the life of
/// the process; every runtime shares it.
public final class ACMECertificates: Sendable {
    private let state = Mutex(State())
    private let source: (any ACMEChallengeSource)?

    struct State {
        var versions: [String: UInt64] = [:]
        var tlsALPN01: [String: Credentials] = [:]
        /// token → (name, key authorization).
        var http01: [String: (name: String, keyAuthorization: [UInt8])] = [:]
    }

    public init(source: (any ACMEChallengeSource)? = nil) {
        self.source = source
    }

    // MARK: - Certificates

    /// The domain's files in storage were replaced (issued or renewed here,
    /// or by another instance of the fleet): new handshakes load them at once;
    /// handshakes in progress keep what they have.
    public func certificateChanged(primaryName: String) {
        state.withLock { $0.versions[primaryName, default: 0] &+= 1 }
    }

    /// Compared by the credential store with the version it loaded.
    func version(primaryName: String) -> UInt64 {
        state.withLock { $0.versions[primaryName] } ?? 0
    }

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
