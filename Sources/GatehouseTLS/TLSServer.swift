import COpenSSL
import CShims
import GatehouseConfig
import GatehouseLog

/// The TLS side of one configuration snapshot: a context per profile, the
/// domains' credentials, and the SNI → domain selection run in OpenSSL's
/// ClientHello callback (the servername callback runs after the protocol
/// version is fixed, too late to pick a profile).
public final class TLSServer: @unchecked Sendable {
    // @unchecked: every field is immutable after init, and OpenSSL allows
    // concurrent SSL_new/handshakes on a fully configured SSL_CTX.

    /// Connections start on the modern context; the callback moves them.
    let baseContext: OpaquePointer
    let contexts: [TLSProfileName: OpaquePointer]
    let domains: [DomainEntry]
    let names: NameIndex
    let defaultDomain: Int?

    struct DomainEntry {
        let file: String
        let profile: TLSProfile
        let context: OpaquePointer
        let credentials: Credentials?
        /// RFC 5077/8446 resumption is bound to this: a session from one domain
        /// never resumes on another (the class of nginx CVE-2025-23419).
        let sessionIDContext: [UInt8]
    }

    /// `credentials[i]` belongs to `snapshot.domains[i]`; nil when it failed
    /// to load (that domain's handshakes fail, the others are unaffected).
    public init(snapshot: ConfigSnapshot, credentials: [Credentials?]) throws(TLSSetupError) {
        precondition(credentials.count == snapshot.domains.count)
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
        self.names = snapshot.names
        self.domains = snapshot.domains.map { d in
            DomainEntry(file: d.file, profile: TLSProfile.named(d.tlsProfile),
                        context: contexts[d.tlsProfile]!, credentials: credentials[d.id],
                        sessionIDContext: Self.sessionIDContext(for: d.primaryName))
        }
        self.defaultDomain = snapshot.tls.defaultDomain.flatMap { snapshot.names.lookup($0) }
        TLSCallbacks.installClientHello(on: baseContext, server: self)
    }

    deinit {
        for ctx in contexts.values { SSL_CTX_free(ctx) }
    }

    /// A new server-side SSL for an accepted connection.
    public func makeSSL() -> OpaquePointer? { SSL_new(baseContext) }

    /// The domain the handshake selected (by SNI or the default domain).
    public static func selectedDomain(of ssl: OpaquePointer) -> Int? {
        let raw = Int(bitPattern: SSL_get_ex_data(ssl, TLSCallbacks.domainIndex))
        return raw == 0 ? nil : raw - 1
    }

    public static func negotiatedVersion(of ssl: OpaquePointer) -> String {
        String(cString: SSL_get_version(ssl))
    }

    public static func negotiatedCipher(of ssl: OpaquePointer) -> String {
        guard let cipher = SSL_get_current_cipher(ssl), let name = SSL_CIPHER_get_name(cipher) else { return "-" }
        return String(cString: name)
    }

    enum Selection { case selected(Int), refuse(alert: Int32) }

    /// Runs inside the ClientHello callback, before version negotiation.
    func select(ssl: OpaquePointer, serverName: UnsafeRawBufferPointer?) -> Selection {
        let found = serverName.flatMap { names.lookup($0) } ?? defaultDomain
        guard let id = found else { return .refuse(alert: Int32(SSL_AD_UNRECOGNIZED_NAME)) }
        let domain = domains[id]
        guard let credentials = domain.credentials else {
            return .refuse(alert: Int32(SSL_AD_HANDSHAKE_FAILURE))
        }
        if domain.context != baseContext {
            // Brings the profile's cipher list and security level; the version
            // bounds are per-SSL and set below.
            _ = SSL_set_SSL_CTX(ssl, domain.context)
        }
        _ = gh_ssl_set_min_proto_version(ssl, domain.profile.minVersion.rawValue)
        _ = gh_ssl_set_max_proto_version(ssl, domain.profile.maxVersion.rawValue)
        guard credentials.apply(to: ssl) else {
            Log.error("\(domain.file): certificate: cannot be used for a handshake: \(opensslErrorString())")
            return .refuse(alert: Int32(SSL_AD_INTERNAL_ERROR))
        }
        _ = domain.sessionIDContext.withUnsafeBufferPointer {
            SSL_set_session_id_context(ssl, $0.baseAddress, UInt32($0.count))
        }
        SSL_set_ex_data(ssl, TLSCallbacks.domainIndex, UnsafeMutableRawPointer(bitPattern: id + 1))
        return .selected(id)
    }

    /// SHA-256 of the primary name: stable across reloads and processes, at
    /// most SSL_MAX_SID_CTX_LENGTH (32) bytes.
    static func sessionIDContext(for name: String) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        var bytes = Array(name.utf8)
        _ = EVP_Digest(&bytes, bytes.count, &digest, &length, EVP_sha256(), nil)
        return digest
    }
}

/// Loads every domain's credentials of a snapshot, reporting each failure.
public enum CredentialSet {
    public struct Failure: Sendable, CustomStringConvertible {
        public let domain: DomainConfig
        public let error: CredentialError
        public var description: String { "\(domain.file): \(error)" }
    }

    public static func load(_ snapshot: ConfigSnapshot) -> (credentials: [Credentials?], failures: [Failure]) {
        var credentials: [Credentials?] = []
        var failures: [Failure] = []
        credentials.reserveCapacity(snapshot.domains.count)
        for domain in snapshot.domains {
            do {
                credentials.append(try CredentialLoader.load(certificate: domain.certificate, key: domain.key))
            } catch {
                credentials.append(nil)
                failures.append(Failure(domain: domain, error: error))
            }
        }
        return (credentials, failures)
    }
}
