/// One immutable, fully validated configuration. Built once per (re)load and shared
/// read-only by every worker, so nothing here is ever mutated after `ConfigLoader` returns.
public struct ConfigSnapshot: Sendable {
    /// Absolute path of gatehouse.toml.
    public let mainFile: String
    /// Absolute path of the directory holding the per-domain files.
    public let domainsDirectory: String
    /// Worker count; 0 means one per core.
    public let workers: Int
    /// At least one when produced by the loader.
    public let listeners: [ListenerConfig]
    public let timeouts: TimeoutSettings
    public let limits: LimitSettings
    public let tls: TLSSettings
    /// `[metrics] address`: where the Prometheus endpoint listens; nil: none.
    public let metrics: MetricsSettings?
    /// `[access_log]`; nil: no access log.
    public let accessLog: AccessLogSettings?
    /// `user` / `group` / `allow_root`: who the process runs as after binding.
    public let privileges: PrivilegeSettings
    /// `[acme]`; nil: no domain may say `acme = true`.
    public let acme: ACMESettings?
    /// Sorted by file name; `domains[i].id == i` so ids double as array indices.
    public let domains: [DomainConfig]
    /// Maps SNI / Host names to indices into `domains`.
    public let names: NameIndex
    /// `domainStamps[i]`: `domains[i].file` as it was read, so a reload can
    /// reuse what did not change instead of parsing it again.
    /// nil: the file could not be stat()ed, so it is parsed again next time.
    var domainStamps: [FileStamp?] = []

    public init(
        mainFile: String,
        domainsDirectory: String,
        workers: Int = 1,
        listeners: [ListenerConfig],
        timeouts: TimeoutSettings = TimeoutSettings(),
        limits: LimitSettings = LimitSettings(),
        tls: TLSSettings = TLSSettings(),
        metrics: MetricsSettings? = nil,
        accessLog: AccessLogSettings? = nil,
        privileges: PrivilegeSettings = PrivilegeSettings(),
        acme: ACMESettings? = nil,
        domains: [DomainConfig],
        names: NameIndex
    ) {
        self.acme = acme
        self.metrics = metrics
        self.accessLog = accessLog
        self.privileges = privileges
        self.mainFile = mainFile
        self.domainsDirectory = domainsDirectory
        self.workers = workers
        self.listeners = listeners
        self.timeouts = timeouts
        self.limits = limits
        self.tls = tls
        self.domains = domains
        self.names = names
    }

    /// Convenience for small hand-built snapshots (tests, TLS layer): the name index is
    /// derived from `domains` so the two can never disagree.
    public init(
        mainFile: String,
        domainsDirectory: String,
        workers: Int = 1,
        listeners: [ListenerConfig],
        timeouts: TimeoutSettings = TimeoutSettings(),
        limits: LimitSettings = LimitSettings(),
        tls: TLSSettings = TLSSettings(),
        domains: [DomainConfig]
    ) {
        self.init(
            mainFile: mainFile, domainsDirectory: domainsDirectory, workers: workers,
            listeners: listeners, timeouts: timeouts, limits: limits, tls: tls,
            domains: domains, names: NameIndex(domains: domains))
    }

    /// The domain served to clients without SNI or with an unknown name, if configured.
    /// Resolved through `names` so it agrees with what a client sending that name gets.
    public var defaultDomainID: Int? {
        guard let name = tls.defaultDomain else { return nil }
        return names.lookup(name)
    }

    /// The domain for a Host / SNI name, or nil. Convenience over `names` + `domains`.
    public func domain(for name: String) -> DomainConfig? {
        guard let id = names.lookup(name), id >= 0, id < domains.count else { return nil }
        return domains[id]
    }
}

public enum ListenerProtocol: String, Sendable, CaseIterable {
    case https, http
}

public struct ListenerConfig: Sendable, Equatable {
    /// Numeric IPv4 or IPv6 literal without brackets ("0.0.0.0", "::").
    public var host: String
    public var port: UInt16
    /// TOML key `protocol` (a Swift keyword, hence the short name).
    public var proto: ListenerProtocol
    /// Where plain-HTTP listeners redirect to (TOML `https_port`); ignored for https.
    public var httpsPort: UInt16
    /// TOML `sni_fallback_profile` (https only): the profile for clients that send
    /// no SNI, which get the default domain. Lets one listener act as the dedicated
    /// legacy endpoint for clients that cannot send SNI.
    public var sniFallbackProfile: TLSProfileName?
    /// TOML `proxy_protocol`: every connection starts with a PROXY protocol
    /// header (v1 or v2) from an L4 balancer; the client address is taken from it.
    public var proxyProtocol: Bool

    public init(host: String, port: UInt16, proto: ListenerProtocol, httpsPort: UInt16 = 443,
                sniFallbackProfile: TLSProfileName? = nil, proxyProtocol: Bool = false) {
        self.proxyProtocol = proxyProtocol
        self.host = host
        self.port = port
        self.proto = proto
        self.httpsPort = httpsPort
        self.sniFallbackProfile = sniFallbackProfile
    }

    /// "host:port", bracketing IPv6 so the text is unambiguous in logs.
    public var address: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// `[metrics]`.
public struct MetricsSettings: Sendable, Equatable {
    /// Numeric IP literal without brackets.
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }
}

/// Started as root (without systemd), Gatehouse binds its ports and then
/// becomes `user`; staying root needs `allow_root = true`.
public struct PrivilegeSettings: Sendable, Equatable {
    public var user: String?
    /// Defaults to the user's primary group.
    public var group: String?
    public var allowRoot: Bool

    public init(user: String? = nil, group: String? = nil, allowRoot: Bool = false) {
        self.user = user
        self.group = group
        self.allowRoot = allowRoot
    }
}

public enum AccessLogFormat: String, Sendable, CaseIterable {
    /// The combined log format plus TLS and timing fields as key=value.
    case combined
    /// One JSON object per line.
    case json
}

/// `[access_log]`.
public struct AccessLogSettings: Sendable, Equatable {
    /// Absolute path.
    public var path: String
    public var format: AccessLogFormat

    public init(path: String, format: AccessLogFormat = .combined) {
        self.path = path
        self.format = format
    }
}

/// `[acme]`: where Gatehouse obtains certificates for the `acme = true` domains.
public struct ACMESettings: Sendable, Equatable {
    /// The CA's directory URL (RFC 8555 §7.1.1); always https.
    public var directory: String
    /// `contact`: mailto: URLs for the account (RFC 8555 §7.3); may be empty.
    public var contact: [String]
    /// Absolute path of the storage directory (account key, certificates,
    /// challenge tokens, locks); shared by a fleet. Exists and is writable
    /// once the loader returns.
    public var storage: String
    /// Absolute path of a PEM CA bundle for the ACME server's own certificate;
    /// nil: the system's CAs.
    public var trust: String?
    /// Challenge types in order of preference; never empty, no duplicates.
    public var challenges: [ACMEChallengeType]
    /// `orders_per_3h`: new orders started in any three hours, by this
    /// instance. Let's Encrypt allows 300 per account; a test CA or another
    /// CA's limits may allow more.
    public var ordersPer3h: Int
    public static let letsEncryptOrdersPer3h = 300

    public init(directory: String, contact: [String] = [], storage: String, trust: String? = nil,
                challenges: [ACMEChallengeType] = ACMEChallengeType.allCases, ordersPer3h: Int = letsEncryptOrdersPer3h) {
        self.directory = directory
        self.contact = contact
        self.storage = storage
        self.trust = trust
        self.challenges = challenges
        self.ordersPer3h = ordersPer3h
    }
}

/// The challenges Gatehouse can answer itself (no dns-01: it would need a DNS API).
public enum ACMEChallengeType: String, Sendable, CaseIterable {
    /// RFC 8737: a certificate on the https listeners for ALPN `acme-tls/1`.
    case tlsALPN01 = "tls-alpn-01"
    /// RFC 8555 §8.3: a token under /.well-known/acme-challenge/ on port 80.
    case http01 = "http-01"

    /// The listener protocol the CA's validation reaches.
    public var listener: ListenerProtocol {
        switch self {
        case .tlsALPN01: .https
        case .http01: .http
        }
    }
}

/// `[timeouts]`, all in seconds and strictly positive.
public struct TimeoutSettings: Sendable, Equatable {
    public var handshake: Double = 10
    public var requestHeader: Double = 10
    public var idle: Double = 60
    public var backendConnect: Double = 5
    public var backendResponse: Double = 60
    public var drain: Double = 30
    /// `stop_grace`: after SIGTERM, listeners keep accepting this long while
    /// /healthz already says 503, so a balancer's health check takes the
    /// instance out before its sockets close. 0 (default): close at once.
    public var stopGrace: Double = 0

    public init(
        handshake: Double = 10, requestHeader: Double = 10, idle: Double = 60,
        backendConnect: Double = 5, backendResponse: Double = 60, drain: Double = 30, stopGrace: Double = 0
    ) {
        self.stopGrace = stopGrace
        self.handshake = handshake
        self.requestHeader = requestHeader
        self.idle = idle
        self.backendConnect = backendConnect
        self.backendResponse = backendResponse
        self.drain = drain
    }
}

/// `[limits]`, all strictly positive.
public struct LimitSettings: Sendable, Equatable {
    public var maxRequestLineBytes: Int = 8192
    public var maxHeaderBytes: Int = 32768
    public var maxHeaderCount: Int = 100
    /// Accepting pauses while this many client connections are open.
    public var maxConnections: Int = 10000
    /// Open connections from one client (an IPv4 address or an IPv6 /64),
    /// counted by each worker; more are closed at once. 0: no cap (the
    /// default, as in nginx and HAProxy: a carrier-grade NAT puts thousands of
    /// visitors behind one address).
    public var maxConnectionsPerClient: Int = 0

    public init(
        maxRequestLineBytes: Int = 8192, maxHeaderBytes: Int = 32768,
        maxHeaderCount: Int = 100, maxConnections: Int = 10000, maxConnectionsPerClient: Int = 0
    ) {
        self.maxConnectionsPerClient = maxConnectionsPerClient
        self.maxRequestLineBytes = maxRequestLineBytes
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderCount = maxHeaderCount
        self.maxConnections = maxConnections
    }
}

/// `[tls]`.
public struct TLSSettings: Sendable, Equatable {
    /// Served to clients without SNI or with an unknown name; normalized like domain names.
    public var defaultDomain: String?
    /// Absolute path of a file of 80-byte session ticket keys shared by a fleet
    /// (the first encrypts, all decrypt); nil: keys made here, rotated every 12 h.
    public var ticketKeyFile: String?
    /// Domains whose certificates are kept loaded (`certificate_cache`); the
    /// rest are loaded again on their next handshake.
    public var certificateCache: Int

    public init(defaultDomain: String? = nil, ticketKeyFile: String? = nil, certificateCache: Int = 10_000) {
        self.defaultDomain = defaultDomain
        self.ticketKeyFile = ticketKeyFile
        self.certificateCache = certificateCache
    }
}

/// One certificate chain file and its private key, absolute paths.
public struct CertificatePair: Sendable, Equatable {
    public let certificate: String
    public let key: String

    public init(certificate: String, key: String) {
        self.certificate = certificate
        self.key = key
    }
}

public enum TLSProfileName: String, Sendable, CaseIterable {
    case modern, legacy, strict
}

public enum Backend: Sendable, Hashable, CustomStringConvertible {
    /// Hostnames are kept as written; the proxy resolves them.
    case tcp(host: String, port: UInt16)
    /// Absolute path of a Unix domain socket.
    case unix(path: String)

    /// Same syntax the config accepts, so log lines can be pasted back into a file.
    public var description: String {
        switch self {
        case .tcp(let host, let port):
            host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path):
            "unix:\(path)"
        }
    }
}

public struct DomainConfig: Sendable, Equatable {
    /// Index in `ConfigSnapshot.domains`.
    public internal(set) var id: Int
    /// Absolute path of the domains.d file it came from (for error messages and logs).
    public let file: String
    /// Lowercase, no trailing dot; `names[0]` is the primary name. Never empty.
    public let names: [String]
    public let backend: Backend
    /// Absolute paths, read by the TLS layer, not here. One or more pairs (an
    /// ECDSA and an RSA certificate, say); OpenSSL serves the best one the
    /// client supports. Empty exactly when `acme` is true: those certificates
    /// come from ACME storage, and until there is one the domain's handshakes
    /// fail.
    public let certificates: [CertificatePair]
    /// `acme = true`: Gatehouse obtains and renews the certificate (`[acme]`).
    public let acme: Bool
    public let tlsProfile: TLSProfileName
    public let redirectHTTP: Bool
    /// 0 disables HSTS.
    public let hstsMaxAge: Int
    public let hstsIncludeSubdomains: Bool
    public let hstsPreload: Bool
    public let maxBodyBytes: UInt64?
    /// `accept_any_host`: forward HTTPS requests whatever their Host names
    /// (off: a Host that is not one of `names` gets 421).
    public let acceptAnyHost: Bool
    /// `upgrade_insecure_requests`: every HTTPS response carries
    /// `Content-Security-Policy: upgrade-insecure-requests`.
    public let upgradeInsecureRequests: Bool
    /// `http2` (default true): offer `h2` in ALPN to this domain's clients.
    public let http2: Bool
    /// Precomputed once so the proxy copies bytes instead of formatting per response.
    public let hstsHeaderValue: String?

    public var primaryName: String { names[0] }
    /// The first pair's files; nil for an ACME domain.
    public var certificate: String? { certificates.first?.certificate }
    public var key: String? { certificates.first?.key }

    /// A domain with certificate files of its own.
    public init(
        id: Int,
        file: String,
        names: [String],
        backend: Backend,
        certificate: String,
        key: String,
        moreCertificates: [CertificatePair] = [],
        tlsProfile: TLSProfileName = .modern,
        redirectHTTP: Bool = true,
        hstsMaxAge: Int = 31_536_000,
        hstsIncludeSubdomains: Bool = false,
        hstsPreload: Bool = false,
        maxBodyBytes: UInt64? = nil,
        acceptAnyHost: Bool = false,
        upgradeInsecureRequests: Bool = false,
        http2: Bool = true
    ) {
        self.init(id: id, file: file, names: names, backend: backend,
                  certificates: [CertificatePair(certificate: certificate, key: key)] + moreCertificates,
                  acme: false, tlsProfile: tlsProfile, redirectHTTP: redirectHTTP, hstsMaxAge: hstsMaxAge,
                  hstsIncludeSubdomains: hstsIncludeSubdomains, hstsPreload: hstsPreload, maxBodyBytes: maxBodyBytes,
                  acceptAnyHost: acceptAnyHost, upgradeInsecureRequests: upgradeInsecureRequests, http2: http2)
    }

    /// `certificates` must be empty exactly when `acme` is true.
    /// `hstsHeaderValue` is derived from the HSTS fields so it can never disagree with them.
    public init(
        id: Int,
        file: String,
        names: [String],
        backend: Backend,
        certificates: [CertificatePair],
        acme: Bool,
        tlsProfile: TLSProfileName = .modern,
        redirectHTTP: Bool = true,
        hstsMaxAge: Int = 31_536_000,
        hstsIncludeSubdomains: Bool = false,
        hstsPreload: Bool = false,
        maxBodyBytes: UInt64? = nil,
        acceptAnyHost: Bool = false,
        upgradeInsecureRequests: Bool = false,
        http2: Bool = true
    ) {
        precondition(!names.isEmpty, "a domain needs at least one name")
        precondition(certificates.isEmpty == acme, "an ACME domain has no certificate files, any other domain at least one")
        self.acme = acme
        self.http2 = http2
        self.acceptAnyHost = acceptAnyHost
        self.upgradeInsecureRequests = upgradeInsecureRequests
        self.id = id
        self.file = file
        self.names = names
        self.backend = backend
        self.certificates = certificates
        self.tlsProfile = tlsProfile
        self.redirectHTTP = redirectHTTP
        self.hstsMaxAge = hstsMaxAge
        self.hstsIncludeSubdomains = hstsIncludeSubdomains
        self.hstsPreload = hstsPreload
        self.maxBodyBytes = maxBodyBytes
        self.hstsHeaderValue = DomainConfig.hstsHeader(
            maxAge: hstsMaxAge, includeSubdomains: hstsIncludeSubdomains, preload: hstsPreload)
    }

    static func hstsHeader(maxAge: Int, includeSubdomains: Bool, preload: Bool) -> String? {
        guard maxAge > 0 else { return nil }
        var value = "max-age=\(maxAge)"
        if includeSubdomains { value += "; includeSubDomains" }
        if preload { value += "; preload" }
        return value
    }
}
