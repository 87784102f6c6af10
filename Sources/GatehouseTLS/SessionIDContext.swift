import COpenSSL
import GatehouseConfig

/// What a session is bound to (SSL_set_session_id_context): SHA-256 of the
/// domain's primary name, a 0 byte and the profile's name, so a session resumes
/// only on the same domain (the class of nginx CVE-2025-23419) *and* policy
/// (else a CBC suite from a fallback-profile session would carry over to the
/// domain's own modern policy). Stable across reloads, processes and releases,
/// for a shared ticket_key_file. Made once per domain, not per handshake;
/// 32 bytes inline (SSL_MAX_SID_CTX_LENGTH), no allocation.
struct SessionIDContext: Equatable, Sendable {
    private var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    static func == (a: SessionIDContext, b: SessionIDContext) -> Bool { a.words == b.words }

    var bytes: [UInt8] { withUnsafeBytes(of: words) { Array($0) } }

    func apply(to ssl: OpaquePointer) {
        withUnsafeBytes(of: words) { raw in
            _ = SSL_set_session_id_context(ssl, raw.bindMemory(to: UInt8.self).baseAddress, UInt32(raw.count))
        }
    }

    /// One digest context for many domains: start-up with 100,000 of them
    /// hashes 100,000 names.
    final class Maker {
        private let md: OpaquePointer
        private let context: OpaquePointer

        init() throws(TLSSetupError) {
            guard let md = EVP_MD_fetch(nil, "SHA256", nil) else {
                throw TLSSetupError(description: "SHA-256 unavailable: \(opensslErrorString())")
            }
            guard let context = EVP_MD_CTX_new() else {
                EVP_MD_free(md)
                throw TLSSetupError(description: "EVP_MD_CTX_new failed")
            }
            self.md = md
            self.context = context
        }

        deinit {
            EVP_MD_CTX_free(context)
            EVP_MD_free(md)
        }

        func make(name: String, profile: TLSProfileName) throws(TLSSetupError) -> SessionIDContext {
            var result = SessionIDContext()
            var name = name
            var profileName = profile.rawValue
            var zero: UInt8 = 0
            let ok = EVP_DigestInit_ex2(context, md, nil) == 1
                && name.withUTF8 { EVP_DigestUpdate(context, $0.baseAddress, $0.count) } == 1
                && EVP_DigestUpdate(context, &zero, 1) == 1
                && profileName.withUTF8 { EVP_DigestUpdate(context, $0.baseAddress, $0.count) } == 1
                && withUnsafeMutableBytes(of: &result.words) { EVP_DigestFinal_ex(context, $0.baseAddress, nil) } == 1
            // Never a made-up value: two domains sharing one would resume each other's sessions.
            guard ok else { throw TLSSetupError(description: "SHA-256 failed: \(opensslErrorString())") }
            return result
        }
    }
}
