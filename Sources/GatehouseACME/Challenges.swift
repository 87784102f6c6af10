import COpenSSL

/// What Gatehouse answers a CA's validation with.
public enum ChallengeResponse {
    /// RFC 8555 §8.1: token || "." || base64url(JWK thumbprint of the
    /// account key). The http-01 body (§8.3), and the input of tls-alpn-01's
    /// digest. The token is checked first: it comes from the network.
    public static func keyAuthorization(token: String, accountKey: JWK) throws(ACMEError) -> String {
        guard Base64URL.isValidToken(token) else { throw ACMEError("challenge token \"\(token.prefix(80))\" is not base64url of 22-256 characters") }
        return token + "." + accountKey.thumbprint
    }

    /// RFC 8737 §3: the SHA-256 digest of the key authorization, which the
    /// acmeIdentifier extension carries.
    public static func tlsALPN01Digest(keyAuthorization: String) -> [UInt8] {
        OpenSSL.sha256(Array(keyAuthorization.utf8))
    }

    /// The acmeIdentifier extension's value, DER: `Authorization ::= OCTET
    /// STRING (SIZE (32))` (RFC 8737 §3), so 04 20 and the digest.
    public static func tlsALPN01ExtensionValue(keyAuthorization: String) -> [UInt8] {
        [0x04, 0x20] + tlsALPN01Digest(keyAuthorization: keyAuthorization)
    }

    /// id-pe-acmeIdentifier (RFC 8737 §6.1).
    public static let acmeIdentifierOID = "1.3.6.1.5.5.7.1.31"
    /// The ALPN protocol of a validation handshake (RFC 8737 §6.2).
    public static let tlsALPN01Protocol = "acme-tls/1"

    /// The self-signed certificate a tls-alpn-01 validation handshake for
    /// `name` gets (RFC 8737 §3): subjectAltName with exactly that dNSName,
    /// and the critical acmeIdentifier extension. A new P-256 key each
    /// time: it proves nothing and is thrown away with the challenge.
    /// Returns the PEM of the certificate followed by its key, one file.
    public static func tlsALPN01Certificate(name: String, keyAuthorization: String,
                                            validitySeconds: Int = 7 * 86400) throws(ACMEError) -> [UInt8] {
        guard HostName.isValid(name) else { throw ACMEError("\"\(name)\" is not a host name tls-alpn-01 can validate") }
        let key = try PrivateKey.generateP256()
        guard let x509 = X509_new() else { throw .openssl("X509_new") }
        defer { X509_free(x509) }
        guard X509_set_version(x509, 2) == 1 else { throw .openssl("certificate version") }   // v3
        try setRandomSerial(X509_get_serialNumber(x509))
        // Backdated an hour for clocks a little behind ours.
        guard X509_gmtime_adj(X509_getm_notBefore(x509), -3600) != nil,
              X509_gmtime_adj(X509_getm_notAfter(x509), validitySeconds) != nil else { throw .openssl("certificate validity") }
        guard let subject = X509_get_subject_name(x509),
              X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, name, -1, -1, 0) == 1,
              X509_set_issuer_name(x509, subject) == 1,
              X509_set_pubkey(x509, key.pkey) == 1 else { throw .openssl("certificate subject") }

        var ctx = X509V3_CTX()
        X509V3_set_ctx(&ctx, x509, x509, nil, nil, 0)
        guard let san = X509V3_EXT_conf_nid(nil, &ctx, NID_subject_alt_name, "DNS:\(name)") else { throw .openssl("subjectAltName") }
        defer { X509_EXTENSION_free(san) }
        guard X509_add_ext(x509, san, -1) == 1 else { throw .openssl("subjectAltName") }

        let ext = try makeExtension(oid: acmeIdentifierOID, critical: true,
                                der: tlsALPN01ExtensionValue(keyAuthorization: keyAuthorization))
        defer { X509_EXTENSION_free(ext) }
        guard X509_add_ext(x509, ext, -1) == 1 else { throw .openssl("acmeIdentifier") }

        guard X509_sign(x509, key.pkey, EVP_sha256()) > 0 else { throw .openssl("certificate signature") }
        let certificate = try OpenSSL.writingToMemory("certificate PEM") { PEM_write_bio_X509($0, x509) == 1 }
        return certificate + (try key.pem())
    }

    static func makeExtension(oid: String, critical: Bool, der: [UInt8]) throws(ACMEError) -> OpaquePointer {
        guard let obj = OBJ_txt2obj(oid, 1) else { throw .openssl("OID \(oid)") }
        defer { ASN1_OBJECT_free(obj) }
        guard let value = ASN1_OCTET_STRING_new() else { throw .openssl("extension value") }
        defer { ASN1_OCTET_STRING_free(value) }
        guard ASN1_OCTET_STRING_set(value, der, Int32(der.count)) == 1,
              let ext = X509_EXTENSION_create_by_OBJ(nil, obj, critical ? 1 : 0, value) else { throw .openssl("extension \(oid)") }
        return ext
    }

    /// RFC 5280 §4.1.2.2: positive, at most 20 octets; 16 random ones.
    static func setRandomSerial(_ serial: UnsafeMutablePointer<ASN1_INTEGER>?) throws(ACMEError) {
        var bytes = try OpenSSL.randomBytes(16)
        bytes[0] &= 0x7f
        bytes[0] |= 0x01   // never zero, never shortened below 16 octets
        guard let bn = BN_bin2bn(bytes, Int32(bytes.count), nil) else { throw .openssl("serial") }
        defer { BN_free(bn) }
        guard BN_to_ASN1_INTEGER(bn, serial) != nil else { throw .openssl("serial") }
    }
}

/// The host names ACME can validate for Gatehouse: LDH labels (what the
/// configuration accepts), no wildcard. Checked again here because names
/// end up in OpenSSL's extension syntax ("DNS:a,DNS:b") and in file paths.
enum HostName {
    static func isValid(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= 253 else { return false }
        for label in bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.count <= 63, label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-") else { return false }
            for b in label where !(b &- UInt8(ascii: "a") < 26 || b &- UInt8(ascii: "0") < 10 || b == UInt8(ascii: "-")) {
                return false
            }
        }
        return true
    }
}
