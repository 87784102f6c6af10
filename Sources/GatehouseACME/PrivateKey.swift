import COpenSSL

/// A private key held by OpenSSL: the account key (ECDSA P-256, for ES256),
/// and the keys of certificates (P-256, or RSA-2048 for the legacy profile's
/// old clients). Owns one reference to its EVP_PKEY.
public final class PrivateKey: @unchecked Sendable {
    // @unchecked: immutable after init; OpenSSL allows concurrent use of an
    // EVP_PKEY for signing once it is fully set up.
    let pkey: OpaquePointer

    public enum Kind: Equatable, Sendable {
        case p256
        case rsa(bits: Int)
    }

    public let kind: Kind

    init(taking pkey: OpaquePointer) throws(ACMEError) {
        if EVP_PKEY_is_a(pkey, "EC") == 1 {
            var name = [CChar](repeating: 0, count: 64)
            var length = 0
            guard EVP_PKEY_get_group_name(pkey, &name, name.count, &length) == 1,
                  ["prime256v1", "P-256", "secp256r1"].contains(OpenSSL.string(name)) else {
                EVP_PKEY_free(pkey)
                throw ACMEError("an EC key must be on curve P-256")
            }
            kind = .p256
        } else if EVP_PKEY_is_a(pkey, "RSA") == 1 {
            let bits = Int(EVP_PKEY_get_bits(pkey))
            // NIST SP 800-57 and the CA/B Forum baseline: 2048 bits at least.
            guard bits >= 2048 else {
                EVP_PKEY_free(pkey)
                throw ACMEError("an RSA key must have at least 2048 bits, this one has \(bits)")
            }
            kind = .rsa(bits: bits)
        } else {
            EVP_PKEY_free(pkey)
            throw ACMEError("only ECDSA P-256 and RSA keys are supported")
        }
        self.pkey = pkey
    }

    deinit { EVP_PKEY_free(pkey) }

    /// A new ECDSA key on P-256 (secp256r1).
    public static func generateP256() throws(ACMEError) -> PrivateKey {
        try generate("EC") { EVP_PKEY_CTX_set_group_name($0, "P-256") == 1 }
    }

    /// A new RSA key (public exponent 65537, OpenSSL's default).
    public static func generateRSA(bits: Int = 2048) throws(ACMEError) -> PrivateKey {
        try generate("RSA") { EVP_PKEY_CTX_set_rsa_keygen_bits($0, Int32(bits)) == 1 }
    }

    private static func generate(_ algorithm: String, _ configure: (OpaquePointer) -> Bool) throws(ACMEError) -> PrivateKey {
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, algorithm, nil) else { throw .openssl("\(algorithm) key generation") }
        defer { EVP_PKEY_CTX_free(ctx) }
        var pkey: OpaquePointer?
        guard EVP_PKEY_keygen_init(ctx) == 1, configure(ctx), EVP_PKEY_generate(ctx, &pkey) == 1, let pkey else {
            throw .openssl("\(algorithm) key generation")
        }
        return try PrivateKey(taking: pkey)
    }

    /// Loads an unencrypted PEM private key (PKCS#8 or the traditional form).
    public convenience init(pem: [UInt8]) throws(ACMEError) {
        // A password callback that refuses: never prompt on a terminal.
        let pkey = OpenSSL.readingFromMemory(pem) { PEM_read_bio_PrivateKey($0, nil, { _, _, _, _ in 0 }, nil) }
        guard let pkey else { throw .openssl("no usable PEM private key") }
        try self.init(taking: pkey)
    }

    /// PKCS#8 PEM ("BEGIN PRIVATE KEY"), unencrypted: the storage's 0600
    /// mode is its protection, as for certbot's and nginx's keys.
    public func pem() throws(ACMEError) -> [UInt8] {
        try OpenSSL.writingToMemory("private key PEM") { PEM_write_bio_PrivateKey($0, pkey, nil, nil, 0, nil, nil) == 1 }
    }

    /// The public key as a JWK (RFC 7517 §4, RFC 7518 §6.2.1 / §6.3.1).
    public func jwk() throws(ACMEError) -> JWK {
        switch kind {
        case .p256:
            // RFC 7518 §6.2.1.2: x and y are the full 32-byte coordinates.
            .ec(crv: "P-256", x: Base64URL.encode(try parameter("qx", count: 32)),
                y: Base64URL.encode(try parameter("qy", count: 32)))
        case .rsa:
            .rsa(n: Base64URL.encode(try parameter("n", count: nil)), e: Base64URL.encode(try parameter("e", count: nil)))
        }
    }

    /// A BIGNUM parameter, fixed-width (`count`) or minimal.
    private func parameter(_ name: String, count: Int?) throws(ACMEError) -> [UInt8] {
        var bn: OpaquePointer?
        guard EVP_PKEY_get_bn_param(pkey, name, &bn) == 1, let bn else { throw .openssl("public key parameter \(name)") }
        defer { BN_free(bn) }
        if let count { return try OpenSSL.bytes(bn, count: count) }
        return OpenSSL.minimalBytes(bn)
    }

    /// ES256 (RFC 7518 §3.4): ECDSA P-256 over SHA-256, returned as the
    /// 64-byte R || S that JWS wants, not OpenSSL's DER.
    public func signES256<C: Collection>(_ message: C) throws(ACMEError) -> [UInt8] where C.Element == UInt8 {
        guard kind == .p256 else { throw ACMEError("ES256 needs a P-256 key") }
        let der = try sign(Array(message))
        return try ECDSASignature.raw(fromDER: der)
    }

    private func sign(_ message: [UInt8]) throws(ACMEError) -> [UInt8] {
        guard let md = EVP_MD_CTX_new() else { throw .openssl("signature") }
        defer { EVP_MD_CTX_free(md) }
        guard EVP_DigestSignInit(md, nil, EVP_sha256(), nil, pkey) == 1 else { throw .openssl("signature") }
        var length = 0
        guard EVP_DigestSign(md, nil, &length, message, message.count) == 1 else { throw .openssl("signature") }
        var out = [UInt8](repeating: 0, count: length)
        guard EVP_DigestSign(md, &out, &length, message, message.count) == 1 else { throw .openssl("signature") }
        return Array(out.prefix(length))
    }
}

/// ECDSA signature encodings: OpenSSL produces the DER ECDSA-Sig-Value
/// (RFC 3279 §2.2.3), JWS wants R || S, each left-padded to the curve's
/// size (RFC 7518 §3.4).
enum ECDSASignature {
    static let componentSize = 32

    static func raw(fromDER der: [UInt8]) throws(ACMEError) -> [UInt8] {
        let sig = der.withUnsafeBufferPointer { buf -> OpaquePointer? in
            var p = buf.baseAddress
            return d2i_ECDSA_SIG(nil, &p, buf.count)
        }
        guard let sig else { throw .openssl("ECDSA signature is not DER") }
        defer { ECDSA_SIG_free(sig) }
        guard let r = ECDSA_SIG_get0_r(sig), let s = ECDSA_SIG_get0_s(sig) else { throw ACMEError("ECDSA signature without r or s") }
        return try OpenSSL.bytes(r, count: componentSize) + OpenSSL.bytes(s, count: componentSize)
    }
}
