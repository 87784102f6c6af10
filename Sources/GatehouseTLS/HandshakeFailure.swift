import COpenSSL
import CShims

/// Why a TLS handshake failed, in the categories operators ask about
/// ("does anybody still try TLS 1.0 here?").
public enum HandshakeFailure: String, CaseIterable, Sendable {
    /// The client's versions and the domain's profile do not overlap.
    case protocolVersion = "protocol_version"
    case noSharedCipher = "no_shared_cipher"
    /// No SNI match and no default domain.
    case unrecognizedName = "unrecognized_name"
    /// RFC 7507: TLS_FALLBACK_SCSV below our best version.
    case inappropriateFallback = "inappropriate_fallback"
    case other
    /// The peer closed or timed out without a TLS error (port scans, probes).
    case aborted

    /// Classifies from the alert our ClientHello callback refused with, if it
    /// did, else from OpenSSL's error reasons (first match wins).
    public static func classify(reasons: [Int32], refusal: Int32?) -> HandshakeFailure {
        if let refusal { return refusal == Int32(SSL_AD_UNRECOGNIZED_NAME) ? .unrecognizedName : .other }
        for reason in reasons {
            switch reason {
            case gh_ssl_r_unsupported_protocol(), gh_ssl_r_version_too_low(): return .protocolVersion
            case gh_ssl_r_no_shared_cipher(): return .noSharedCipher
            case gh_ssl_r_inappropriate_fallback(): return .inappropriateFallback
            default: continue
            }
        }
        return reasons.isEmpty ? .aborted : .other
    }

    /// The reason codes of OpenSSL error codes (as libevent's
    /// bufferevent_get_openssl_error returns them; its own small codes are skipped).
    public static func reasons(of codes: [UInt]) -> [Int32] {
        codes.filter { $0 > 255 }.map { gh_err_reason($0) }
    }
}
