import Synchronization

/// What the ACME thread tells the handshakes and the port-80 listeners: that
/// a domain's certificate files in storage changed (the credential store then
/// loads them again at the next handshake, so a new certificate is served with
/// no reload), and the challenges under validation. Keyed by primary name, so
/// it survives reloads, which renumber domains. One object for the life of
/// the process; every runtime shares it.
public final class ACMECertificates: Sendable {
    private let state = Mutex(State())

    struct State {
        var versions: [String: UInt64] = [:]
        /// This process's challenges, and those other instances of a fleet
        /// wrote to storage (mirrored by a thread: workers never read storage).
        var own = Challenges()
        var mirrored = Challenges()
    }

    public struct Challenges: Sendable {
        public var tlsALPN01: [String: Credentials] = [:]
        /// token → (name, key authorization).
        public var http01: [String: HTTP01Answer] = [:]
        public init() {}
    }

    public struct HTTP01Answer: Sendable {
        public let name: String
        public let keyAuthorization: [UInt8]
        public init(name: String, keyAuthorization: [UInt8]) {
            self.name = name
            self.keyAuthorization = keyAuthorization
        }
    }

    public init() {}

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
        state.withLock { $0.own.tlsALPN01[name] = credentials }
    }

    public func withdrawTLSALPN01(name: String) {
        _ = state.withLock { $0.own.tlsALPN01.removeValue(forKey: name) }
    }

    /// What storage holds now (every instance's challenges, this one's too).
    public func mirror(_ challenges: Challenges) {
        state.withLock { $0.mirrored = challenges }
    }

    func tlsALPN01(name: String) -> Credentials? {
        state.withLock { $0.own.tlsALPN01[name] ?? $0.mirrored.tlsALPN01[name] }
    }

    public func publishHTTP01(token: String, name: String, keyAuthorization: String) {
        state.withLock { $0.own.http01[token] = HTTP01Answer(name: name, keyAuthorization: Array(keyAuthorization.utf8)) }
    }

    public func withdrawHTTP01(token: String) {
        _ = state.withLock { $0.own.http01.removeValue(forKey: token) }
    }

    /// RFC 8555 §8.3: the key authorization for a token Gatehouse issued for
    /// the request's host `name` (whatever port its Host named); nil for any
    /// other token, which then goes to the domain's backend.
    public func http01(token: String, name: String) -> [UInt8]? {
        guard let answer = state.withLock({ $0.own.http01[token] ?? $0.mirrored.http01[token] }), answer.name == name else { return nil }
        return answer.keyAuthorization
    }
}
