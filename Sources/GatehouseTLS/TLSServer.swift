import COpenSSL
import CShims
import GatehouseConfig
import GatehouseLog

/// The TLS side of one configuration snapshot: a context per profile, the
/// domains' credentials, and the SNI → domain selection run in OpenSSL's
/// ClientHello callback (the servername callback runs after the protocol
/// version is fixed, too late to pick a profile). The certificate is installed
/// later, in the certificate callback, which resumed handshakes skip.
public final class TLSServer: @unchecked Sendable {
    // @unchecked: every field is immutable after init, and OpenSSL allows
    // concurrent SSL_new/handshakes on a fully configured SSL_CTX.

    /// Connections start on the modern context; the callback moves them.
    let baseContext: OpaquePointer
    let contexts: [TLSProfileName: OpaquePointer]
    let domains: [DomainEntry]
    let names: NameIndex
    let defaultDomain: Int?
    /// The default domain's context under each profile, for a listener's SNI
    /// fallback profile (clients without SNI reach only the default domain).
    let defaultDomainContexts: [TLSProfileName: SessionIDContext]
    public let ticketKeys: TicketKeys
    /// Certificates and keys, loaded on first use (bounded cache).
    public let store: CredentialStore
    /// The `acme = true` domains' certificate versions and challenges, shared
    /// by every runtime of the process (the ACME threads write them).
    public let acme: ACMECertificates

    /// Kept small: there may be 100,000 of them, and a reload briefly holds two sets.
    struct DomainEntry {
        let file: String
        /// Of the primary name under `profile`.
        let sessionIDContext: SessionIDContext
        let profile: TLSProfileName
        /// `http2`: offer h2 in ALPN.
        let http2: Bool
        /// The primary name of an `acme = true` domain (its certificates come
        /// from `acme`, by that name); nil for a domain with files of its own.
        let acmeName: String?
    }

    /// `store` holds `snapshot`'s domains' certificates (a domain whose files
    /// fail to load fails its own handshakes; the others are unaffected), and
    /// shares `acme` (the ACME domains' certificate versions and challenges).
    public init(snapshot: ConfigSnapshot, store: CredentialStore, ticketKeys: TicketKeys,
                acme: ACMECertificates = ACMECertificates()) throws(TLSSetupError) {
        precondition(store.count == snapshot.domains.count)
        self.store = store
        self.acme = acme
        // Before the contexts, which a throw would leak.
        let maker = try SessionIDContext.Maker()
        var domains: [DomainEntry] = []
        domains.reserveCapacity(snapshot.domains.count)
        for d in snapshot.domains {
            domains.append(DomainEntry(file: d.file, sessionIDContext: try maker.make(name: d.primaryName, profile: d.tlsProfile),
                                       profile: d.tlsProfile, http2: d.http2, acmeName: d.acme ? d.primaryName : nil))
        }
        self.domains = domains
        let defaultDomain = snapshot.tls.defaultDomain.flatMap { snapshot.names.lookup($0) }
        self.defaultDomain = defaultDomain
        var defaultDomainContexts: [TLSProfileName: SessionIDContext] = [:]
        if let defaultDomain {
            for name in TLSProfileName.allCases {
                defaultDomainContexts[name] = try maker.make(name: snapshot.domains[defaultDomain].primaryName, profile: name)
            }
        }
        self.defaultDomainContexts = defaultDomainContexts
        var contexts: [TLSProfileName: OpaquePointer] = [:]
        for name in TLSProfileName.allCases {
            do {
                contexts[name] = try TLSContextFactory.make(TLSProfile.named(name))
            } catch {
                for ctx in contexts.values { SSL_CTX_free(ctx) }
                throw error
            }
        }
        self.contexts = contexts
        self.baseContext = contexts[.modern]!
        self.ticketKeys = ticketKeys
        for ctx in contexts.values { TLSCallbacks.installTicketKeys(on: ctx, keys: ticketKeys) }
        self.names = snapshot.names
        TLSCallbacks.installClientHello(on: baseContext, server: self)
        // On every context: SSL_set_SSL_CTX replaces the connection's callback with the new context's.
        for ctx in contexts.values {
            TLSCallbacks.installCertificate(on: ctx, server: self)
            TLSCallbacks.installALPN(on: ctx, server: self)
        }
    }

    deinit {
        for ctx in contexts.values { SSL_CTX_free(ctx) }
    }

    /// A new server-side SSL for a connection accepted on a listener whose
    /// clients without SNI get `fallbackProfile` (nil: the default domain's own).
    public func makeSSL(fallbackProfile: TLSProfileName? = nil) -> OpaquePointer? {
        guard let ssl = SSL_new(baseContext) else { return nil }
        if let fallbackProfile, let index = TLSProfileName.allCases.firstIndex(of: fallbackProfile) {
            SSL_set_ex_data(ssl, TLSCallbacks.fallbackIndex, UnsafeMutableRawPointer(bitPattern: index + 1))
        }
        return ssl
    }

    static func fallbackProfile(of ssl: OpaquePointer) -> TLSProfileName? {
        let raw = Int(bitPattern: SSL_get_ex_data(ssl, TLSCallbacks.fallbackIndex))
        return raw == 0 ? nil : TLSProfileName.allCases[raw - 1]
    }

    /// The domain the handshake selected (by SNI or the default domain).
    public static func selectedDomain(of ssl: OpaquePointer) -> Int? {
        let raw = Int(bitPattern: SSL_get_ex_data(ssl, TLSCallbacks.domainIndex))
        return raw == 0 ? nil : raw - 1
    }

    /// The alert the ClientHello callback refused the handshake with, if it did.
    public static func refusal(of ssl: OpaquePointer) -> Int32? {
        let raw = Int(bitPattern: SSL_get_ex_data(ssl, TLSCallbacks.refusalIndex))
        return raw == 0 ? nil : Int32(raw - 1)
    }

    public static func protocolVersion(of ssl: OpaquePointer) -> TLSVersion? {
        TLSVersion(rawValue: SSL_version(ssl))
    }

    /// The SNI name the client sent, as sent (empty without SNI).
    public static func serverName(of ssl: OpaquePointer) -> [UInt8] {
        guard let name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) else { return [] }
        return Array(UnsafeRawBufferPointer(start: name, count: strlen(name)))
    }

    public static func negotiatedVersion(of ssl: OpaquePointer) -> String {
        String(cString: SSL_get_version(ssl))
    }

    public static func negotiatedCipher(of ssl: OpaquePointer) -> String {
        guard let cipher = SSL_get_current_cipher(ssl), let name = SSL_CIPHER_get_name(cipher) else { return "-" }
        return String(cString: name)
    }

    /// True for an RFC 8737 validation handshake: it carries the challenge
    /// certificate and no HTTP; the connection closes once it is done.
    public static func isACMEValidation(_ ssl: OpaquePointer) -> Bool {
        SSL_get_ex_data(ssl, TLSCallbacks.validationIndex) != nil
    }

    /// Runs inside the ALPN callback: the domain is selected, the version
    /// and the cipher negotiated.
    func allowsHTTP2(ssl: OpaquePointer) -> Bool {
        guard let id = Self.selectedDomain(of: ssl), id < domains.count, domains[id].http2,
              let cipher = SSL_get_pending_cipher(ssl) else { return false }
        let kx = SSL_CIPHER_get_kx_nid(cipher)
        return ALPN.http2Permitted(tlsVersion: SSL_version(ssl), aead: SSL_CIPHER_is_aead(cipher) == 1,
                                   ephemeralKeyExchange: kx == NID_kx_ecdhe || kx == NID_kx_dhe || kx == NID_kx_any)
    }

    /// The protocol ALPN chose: true for h2.
    public static func negotiatedHTTP2(_ ssl: OpaquePointer) -> Bool {
        var data: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &length)
        guard let data, length == 2 else { return false }
        return data[0] == UInt8(ascii: "h") && data[1] == UInt8(ascii: "2")
    }

    enum Selection { case selected(Int), refuse(alert: Int32) }

    /// Runs inside the ClientHello callback, before version negotiation.
    /// `alpn`: the client's protocol list, when it sent one.
    func select(ssl: OpaquePointer, serverName: UnsafeRawBufferPointer?, alpn: UnsafeRawBufferPointer?) -> Selection {
        // After a HelloRetryRequest this runs again (RFC 8446 §4.1.4): the
        // first ClientHello's decisions are undone, never inherited.
        TLSCallbacks.clearValidation(ssl)
        SSL_set_ex_data(ssl, TLSCallbacks.domainIndex, nil)
        if let alpn, ALPN.offersOnlyACMEValidation(alpn) {
            // The exact name only: no default-domain fallback for a validation.
            return selectValidation(ssl: ssl, serverName: serverName, domain: serverName.flatMap { names.lookup($0) })
        }
        let found = serverName.flatMap { names.lookup($0) } ?? defaultDomain
        guard let id = found else { return .refuse(alert: Int32(SSL_AD_UNRECOGNIZED_NAME)) }
        let domain = domains[id]
        // An ACME domain without a certificate yet is, to TLS clients, a name
        // not served here (RFC 6066 §3), not a broken one.
        if domain.acmeName != nil, !store.hasACMECertificate(for: id) {
            return .refuse(alert: Int32(SSL_AD_UNRECOGNIZED_NAME))
        }
        // A listener's SNI fallback profile applies only to clients that sent no
        // name at all; every name keeps its own domain's profile.
        var profileName = domain.profile
        var sessionIDContext = domain.sessionIDContext
        if serverName == nil, let fallback = Self.fallbackProfile(of: ssl), fallback != profileName {
            guard let fallbackContext = defaultDomainContexts[fallback] else { return .refuse(alert: Int32(SSL_AD_INTERNAL_ERROR)) }
            profileName = fallback
            sessionIDContext = fallbackContext
        }
        let profile = TLSProfile.named(profileName)
        guard let context = contexts[profileName] else { return .refuse(alert: Int32(SSL_AD_INTERNAL_ERROR)) }
        if context != baseContext {
            // Brings the profile's cipher list and security level; the version
            // bounds are per-SSL and set below.
            _ = SSL_set_SSL_CTX(ssl, context)
        }
        _ = gh_ssl_set_min_proto_version(ssl, profile.minVersion.rawValue)
        _ = gh_ssl_set_max_proto_version(ssl, profile.maxVersion.rawValue)
        // Resumption is bound to this (RFC 6066 §3, RFC 8446 §4.6.1): a session
        // never resumes on another domain or under another profile. Set after
        // the swap, which may copy the new context's (empty) one.
        sessionIDContext.apply(to: ssl)
        SSL_set_ex_data(ssl, TLSCallbacks.domainIndex, UnsafeMutableRawPointer(bitPattern: id + 1))
        return .selected(id)
    }

    /// RFC 8737 §3: a ClientHello offering only `acme-tls/1`, for a name of
    /// an `acme = true` domain with a challenge published, gets the challenge
    /// certificate (modern profile: §3 needs TLS 1.2 or later); any other is
    /// refused with no_application_protocol (RFC 7301 §3.2). No domain is
    /// selected, so no request can follow.
    private func selectValidation(ssl: OpaquePointer, serverName: UnsafeRawBufferPointer?, domain: Int?) -> Selection {
        let refusal = Selection.refuse(alert: Int32(SSL_AD_NO_APPLICATION_PROTOCOL))
        guard let serverName, let id = domain, domains[id].acmeName != nil,
              let name = ServerNameExtension.normalized(serverName),
              let challenge = acme.tlsALPN01(name: name) else { return refusal }
        let profile = TLSProfile.named(.modern)
        _ = gh_ssl_set_min_proto_version(ssl, profile.minVersion.rawValue)
        _ = gh_ssl_set_max_proto_version(ssl, profile.maxVersion.rawValue)
        TLSCallbacks.setValidation(ssl, challenge)
        return .selected(id)
    }

    enum Certificate { case installed, unavailable, failed }

    /// Runs in the certificate callback, after `select` and only on full
    /// handshakes: a resumption authenticates with the PSK (RFC 8446 §2.2), so
    /// the certificate is neither loaded nor installed for it.
    func installCertificate(ssl: OpaquePointer) -> Certificate {
        if let raw = SSL_get_ex_data(ssl, TLSCallbacks.validationIndex) {
            let challenge = Unmanaged<Credentials>.fromOpaque(raw).takeUnretainedValue()
            return challenge.apply(to: ssl) ? .installed : .failed
        }
        guard let id = Self.selectedDomain(of: ssl) else { return .failed }
        // Several pairs (ECDSA, RSA): OpenSSL picks the one the client's
        // signature algorithms allow. Empty: the files failed (logged once).
        let credentials = store.credentials(for: id)
        guard !credentials.isEmpty else { return .unavailable }
        for c in credentials where !c.apply(to: ssl) {
            Log.error("\(domains[id].file): certificate: cannot be used for a handshake: \(opensslErrorString())")
            return .failed
        }
        return .installed
    }
}

/// Loads every domain's credentials of a snapshot, reporting each failure.
public enum CredentialSet {
    public struct Failure: Sendable, CustomStringConvertible {
        public let domain: DomainConfig
        public let error: CredentialError
        public var description: String { "\(domain.file): \(error)" }
    }

    /// `credentials[i]` is empty when any pair of `snapshot.domains[i]` failed:
    /// a domain is served with all its certificates or not at all.
    public static func load(_ snapshot: ConfigSnapshot) -> (credentials: [[Credentials]], failures: [Failure]) {
        var credentials: [[Credentials]] = []
        var failures: [Failure] = []
        credentials.reserveCapacity(snapshot.domains.count)
        for domain in snapshot.domains {
            do {
                credentials.append(try load(pairs: domain.certificates))
            } catch {
                credentials.append([])
                failures.append(Failure(domain: domain, error: error))
            }
        }
        return (credentials, failures)
    }

    public struct ExpiryWarning: Sendable {
        public let text: String
        public let expired: Bool
    }

    /// Certificates already expired or expiring within `CredentialLoader.expiryWarning`.
    public static func expiryWarnings(_ snapshot: ConfigSnapshot, _ credentials: [[Credentials]]) -> [ExpiryWarning] {
        zip(snapshot.domains, credentials).flatMap { expiryWarnings(file: $0.file, $1) }
    }

    static func expiryWarnings(file: String, _ list: [Credentials]) -> [ExpiryWarning] {
        list.filter { $0.secondsUntilExpiry < CredentialLoader.expiryWarning }.map { c in
            let expired = c.secondsUntilExpiry <= 0
            let when = expired ? "has expired" : "expires in \(c.secondsUntilExpiry / 86400) days"
            return ExpiryWarning(text: "\(file): certificate: \(when) (\(c.subject))", expired: expired)
        }
    }

    static func load(pairs: [CertificatePair]) throws(CredentialError) -> [Credentials] {
        var loaded: [Credentials] = []
        for pair in pairs {
            let c = try CredentialLoader.load(certificate: pair.certificate, key: pair.key)
            // OpenSSL keeps one certificate per key type; a second would silently replace the first.
            if let twin = loaded.first(where: { $0.keyType == c.keyType }) {
                throw CredentialError(key: "certificate", message: "'\(pair.certificate)' has the same key type (\(c.keyType)) as \(twin.subject); list one certificate per key type")
            }
            loaded.append(c)
        }
        return loaded
    }
}
