import GatehouseConfig
import GatehouseHTTP
import GatehouseLog
import GatehouseTLS

/// What happens to a parsed request before any backend is involved.
enum RoutingDecision: Equatable {
    /// Proxied to this domain's backend.
    case forward(domain: Int)
    /// Plain HTTP: 301 to the https URL of this domain's name.
    case redirect(domain: Int)
    /// Plain HTTP for a domain with `redirect_http = false`: 404.
    case notRedirected
    /// Plain HTTP for an `acme = true` domain still waiting for its first
    /// certificate: 503 with Retry-After, not a redirect to an HTTPS whose
    /// handshake would fail (README, Automatic certificates).
    case pendingCertificate
    /// RFC 8555 §8.3: an http-01 token Gatehouse's ACME client issued for
    /// this host: answered with its key authorization.
    case acmeAnswer(keyAuthorization: [UInt8])
    /// Gatehouse answers itself; the backend sees nothing.
    case refuse(Refusal)
}

/// Requests and connections Gatehouse turns away because of what the client
/// sent. Each kind has a counter and a log line limited to one per second.
public enum Refusal: Int, CaseIterable, Sendable {
    /// 421 (RFC 9110 §15.5.20): over HTTPS, a Host that is not one of the
    /// names of the domain the handshake selected.
    case misdirected
    /// 404 on a plain-HTTP listener: no domain claims the Host.
    case unknownHost
    /// A path under /.well-known/acme-challenge/ that is not one token: it
    /// is answered as an ordinary path (301), never passed through.
    case acmePath
    /// 417 (RFC 9110 §10.1.1): an Expect member other than 100-continue.
    case expectation
    /// A connection over `max_connections_per_client`, closed at accept.
    case perClientLimit

    public var label: String {
        switch self {
        case .misdirected: "misdirected"
        case .unknownHost: "unknown_host"
        case .acmePath: "acme_path"
        case .expectation: "expectation"
        case .perClientLimit: "per_client_limit"
        }
    }

    /// One limiter per kind, shared by every worker.
    static let logs: [RateLimitedLog] = allCases.map { _ in RateLimitedLog() }
    var log: RateLimitedLog { Self.logs[rawValue] }
}

/// The routing policy, apart from the connection so it can be tested alone.
/// A customer's app only ever sees requests for names that customer
/// configured: over HTTPS the Host must be one of the names of the domain the
/// TLS handshake selected (a name another domain claims could otherwise reach
/// it over a weaker profile's handshake, and a stray Host poisons links an app
/// builds from it).
struct RequestRouter {
    let names: NameIndex
    let domains: [DomainConfig]
    /// The http-01 tokens Gatehouse issued.
    let acme: ACMECertificates
    /// Whether an `acme = true` domain has a certificate yet.
    let store: CredentialStore

    /// `host`: the Host value without its port, nil when the request had none
    /// (HTTP/1.0; upstream it then names the routed domain). `handshakeDomain`:
    /// the domain the TLS handshake selected (nil on plain HTTP).
    func route(scheme: Scheme, handshakeDomain: Int?, host: UnsafeRawBufferPointer?,
               path: UnsafeRawBufferPointer) -> RoutingDecision {
        let hostDomain = host.flatMap { names.lookup($0) }
        switch scheme {
        case .https:
            guard let selected = handshakeDomain, selected < domains.count else { return .refuse(.misdirected) }
            guard host != nil, hostDomain != selected else { return .forward(domain: selected) }
            // `accept_any_host` admits names nobody claims (IP literals,
            // stale DNS), never another domain's.
            if hostDomain == nil, domains[selected].acceptAnyHost { return .forward(domain: selected) }
            return .refuse(.misdirected)
        case .http:
            guard let domain = hostDomain, let host else { return .refuse(.unknownHost) }
            let acmeDomain = domains[domain].acme
            if Self.acmeChallenge(path) == .token {
                // Any other token goes to the app, so a customer's own certbot keeps working.
                if acmeDomain, let answer = http01Answer(host: host, path: path) { return .acmeAnswer(keyAuthorization: answer) }
                return .forward(domain: domain)
            }
            // Not redirected to an HTTPS whose handshake would fail.
            if acmeDomain, !store.hasACMECertificate(for: domain) { return .pendingCertificate }
            return domains[domain].redirectHTTP ? .redirect(domain: domain) : .notRedirected
        }
    }

    /// Found by the token and the Host's name (without its port).
    private func http01Answer(host: UnsafeRawBufferPointer, path: UnsafeRawBufferPointer) -> [UInt8]? {
        guard let name = ServerNameExtension.normalized(host) else { return nil }
        let token = String(decoding: path[Self.acmePrefix.count...], as: UTF8.self)
        return acme.http01(token: token, name: name)
    }

    enum ACMEPath: Equatable { case none, token, malformed }

    static let acmePrefix = Array("/.well-known/acme-challenge/".utf8)

    /// RFC 8555 §8.3: the http-01 path is the prefix and one base64url token
    /// (`[A-Za-z0-9_-]+`). Anything else under the prefix (a "/", a dot
    /// segment, percent-encoding, a query) is `.malformed`: an ordinary path.
    static func acmeChallenge(_ path: UnsafeRawBufferPointer) -> ACMEPath {
        guard path.count >= acmePrefix.count, zip(path, acmePrefix).allSatisfy({ $0 == $1 }) else { return .none }
        guard path.count > acmePrefix.count else { return .malformed }
        for b in path[acmePrefix.count...] where !isBase64URL(b) { return .malformed }
        return .token
    }

    @inline(__always) static func isBase64URL(_ b: UInt8) -> Bool {
        let l = b | 0x20
        return (l >= UInt8(ascii: "a") && l <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
            || b == UInt8(ascii: "-") || b == UInt8(ascii: "_")
    }
}
