import GatehouseConfig

/// Protocol versions, as the wire values OpenSSL uses (TLS1_VERSION ...).
public enum TLSVersion: Int32, Sendable, Comparable, CaseIterable {
    case tls1_0 = 0x0301
    case tls1_1 = 0x0302
    case tls1_2 = 0x0303
    case tls1_3 = 0x0304

    public static func < (a: TLSVersion, b: TLSVersion) -> Bool { a.rawValue < b.rawValue }

    public var name: String {
        switch self {
        case .tls1_0: "TLSv1"
        case .tls1_1: "TLSv1.1"
        case .tls1_2: "TLSv1.2"
        case .tls1_3: "TLSv1.3"
        }
    }
}

/// What a named profile means, as data: the context factory turns it into an SSL_CTX.
/// Reference: Mozilla Server Side TLS guidelines 5.7 ("intermediate" and "old").
public struct TLSProfile: Sendable, Equatable {
    public let name: TLSProfileName
    public let minVersion: TLSVersion
    public let maxVersion: TLSVersion
    /// TLS <= 1.2 cipher list (OpenSSL syntax).
    public let cipherList: String
    /// TLS 1.3 suites.
    public let cipherSuites: String
    public let groups: String
    /// OpenSSL security level. Debian's default is 2; TLS 1.0/1.1 need 0 (their
    /// handshake signatures use SHA-1/MD5), so only `legacy` lowers it.
    public let securityLevel: Int32

    /// ECDHE only (forward secrecy), AEAD only.
    static let intermediateCiphers = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    ]
    /// What Android 4.x, IE 11 on Windows 7 and old IoT stacks need on top:
    /// CBC-SHA suites, ECDHE first, then static RSA. Never 3DES, RC4, NULL,
    /// EXPORT, anonymous or static DH.
    static let legacyExtraCiphers = [
        "ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256",
        "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384",
        "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
        "AES128-GCM-SHA256", "AES256-GCM-SHA384",
        "AES128-SHA256", "AES256-SHA256",
        "AES128-SHA", "AES256-SHA",
    ]
    static let tls13Suites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
    static let defaultGroups = "X25519:P-256:P-384"

    public static let modern = TLSProfile(
        name: .modern, minVersion: .tls1_2, maxVersion: .tls1_3,
        cipherList: intermediateCiphers.joined(separator: ":"),
        cipherSuites: tls13Suites, groups: defaultGroups, securityLevel: 2)

    public static let legacy = TLSProfile(
        name: .legacy, minVersion: .tls1_0, maxVersion: .tls1_3,
        cipherList: (intermediateCiphers + legacyExtraCiphers).joined(separator: ":"),
        cipherSuites: tls13Suites, groups: defaultGroups, securityLevel: 0)

    public static let strict = TLSProfile(
        name: .strict, minVersion: .tls1_3, maxVersion: .tls1_3,
        cipherList: intermediateCiphers.joined(separator: ":"),
        cipherSuites: tls13Suites, groups: defaultGroups, securityLevel: 2)

    public static func named(_ name: TLSProfileName) -> TLSProfile {
        switch name {
        case .modern: modern
        case .legacy: legacy
        case .strict: strict
        }
    }
}
