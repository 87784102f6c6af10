import COpenSSL
import CShims

public struct TLSSetupError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// Builds one SSL_CTX per named profile. Certificates are not part of these
/// contexts: they are applied per connection in the certificate callback, so
/// start-up cost does not grow with the number of domains.
enum TLSContextFactory {
    /// Options every profile shares. SSLv2/3 are gone from OpenSSL 3 and below
    /// every profile's minimum version anyway; SSL_OP_NO_SSLv3 stays explicit.
    static var commonOptions: UInt64 {
        gh_ssl_op_all()
            | gh_ssl_op_no_sslv3()
            | gh_ssl_op_no_compression()            // CRIME
            | gh_ssl_op_no_renegotiation()          // client-initiated renegotiation DoS
            | gh_ssl_op_cipher_server_preference()  // TLS <= 1.2
            | gh_ssl_op_single_ecdh_use()           // fresh ECDHE keys per handshake
            | gh_ssl_op_ignore_unexpected_eof()     // libevent 2.1 reports a TCP close without close_notify as an error
    }

    static func make(_ profile: TLSProfile) throws(TLSSetupError) -> OpaquePointer {
        guard let ctx = SSL_CTX_new(TLS_server_method()) else {
            throw TLSSetupError(description: "SSL_CTX_new failed: \(opensslErrorString())")
        }
        func fail(_ what: String) -> TLSSetupError {
            SSL_CTX_free(ctx)
            return TLSSetupError(description: "profile \(profile.name.rawValue): \(what): \(opensslErrorString())")
        }
        SSL_CTX_set_options(ctx, commonOptions)
        // Level first: the cipher list is filtered by the level in force.
        SSL_CTX_set_security_level(ctx, profile.securityLevel)
        guard gh_ssl_ctx_set_min_proto_version(ctx, profile.minVersion.rawValue) == 1,
              gh_ssl_ctx_set_max_proto_version(ctx, profile.maxVersion.rawValue) == 1
        else { throw fail("protocol versions") }
        guard SSL_CTX_set_cipher_list(ctx, profile.cipherList) == 1 else { throw fail("cipher list") }
        guard SSL_CTX_set_ciphersuites(ctx, profile.cipherSuites) == 1 else { throw fail("TLS 1.3 suites") }
        guard gh_ssl_ctx_set1_groups_list(ctx, profile.groups) == 1 else { throw fail("groups") }
        _ = gh_ssl_ctx_set_session_cache_mode(ctx, gh_ssl_sess_cache_server())
        // RFC 8446 §4.6.1: one TLS 1.3 ticket per full handshake, not OpenSSL's
        // two (each costs ~6 % of a handshake); a resumption renews it (see
        // TLSCallbacks.ticketKey). SSL_new copies this from the base context.
        guard SSL_CTX_set_num_tickets(ctx, 1) == 1 else { throw fail("session tickets") }
        // Idle keep-alive connections should not pin 2 × 16 KB of TLS buffers.
        _ = gh_ssl_ctx_set_mode(ctx, gh_ssl_mode_release_buffers())
        return ctx
    }
}
