import Testing
import COpenSSL
import CShims
@testable import GatehouseTLS

struct HandshakeFailureTests {
    @Test func ourRefusalsWinOverOpenSSLReasons() {
        #expect(HandshakeFailure.classify(reasons: [gh_ssl_r_callback_failed()], refusal: Int32(SSL_AD_UNRECOGNIZED_NAME)) == .unrecognizedName)
        #expect(HandshakeFailure.classify(reasons: [gh_ssl_r_callback_failed()], refusal: Int32(SSL_AD_HANDSHAKE_FAILURE)) == .other)
    }

    @Test func openSSLReasonsMapToCategories() {
        #expect(HandshakeFailure.classify(reasons: [gh_ssl_r_unsupported_protocol()], refusal: nil) == .protocolVersion)
        #expect(HandshakeFailure.classify(reasons: [gh_ssl_r_version_too_low()], refusal: nil) == .protocolVersion)
        #expect(HandshakeFailure.classify(reasons: [gh_ssl_r_no_shared_cipher()], refusal: nil) == .noSharedCipher)
        #expect(HandshakeFailure.classify(reasons: [gh_ssl_r_http_request(), gh_ssl_r_inappropriate_fallback()], refusal: nil) == .inappropriateFallback)
        #expect(HandshakeFailure.classify(reasons: [gh_ssl_r_wrong_version_number()], refusal: nil) == .other)
        #expect(HandshakeFailure.classify(reasons: [], refusal: nil) == .aborted)
    }

    @Test func libeventsOwnCodesAreSkipped() {
        // bufferevent_get_openssl_error also yields SSL_get_error() values (1, 5).
        #expect(HandshakeFailure.reasons(of: [1, 5]).isEmpty)
    }
}
