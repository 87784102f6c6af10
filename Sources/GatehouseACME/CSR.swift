import COpenSSL

/// The PKCS#10 request an order is finalized with (RFC 8555 §7.4).
public enum CSR {
    /// DER of a CSR for `names` (the order's identifiers, all of them in
    /// subjectAltName; RFC 8555 §7.4 wants exactly those), signed with
    /// `key` and SHA-256. The first name is also the subject CN when it fits
    /// (RFC 5280 ub-common-name: 64); CAs take the names from the SAN.
    public static func der(names: [String], key: PrivateKey) throws(ACMEError) -> [UInt8] {
        guard !names.isEmpty else { throw ACMEError("a CSR needs at least one name") }
        for name in names where !HostName.isValid(name) { throw ACMEError("\"\(name)\" is not a host name for a certificate") }
        guard Set(names).count == names.count else { throw ACMEError("a name is listed twice") }
        guard let req = X509_REQ_new() else { throw .openssl("X509_REQ_new") }
        defer { X509_REQ_free(req) }
        guard X509_REQ_set_version(req, 0) == 1 else { throw .openssl("CSR version") }   // v1, the only one
        guard let subject = X509_NAME_new() else { throw .openssl("CSR subject") }
        defer { X509_NAME_free(subject) }
        if names[0].utf8.count <= 64 {
            guard X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, names[0], -1, -1, 0) == 1 else { throw .openssl("CSR subject") }
        }
        guard X509_REQ_set_subject_name(req, subject) == 1, X509_REQ_set_pubkey(req, key.pkey) == 1 else { throw .openssl("CSR subject") }

        var ctx = X509V3_CTX()
        X509V3_set_ctx(&ctx, nil, nil, req, nil, 0)
        let value = names.map { "DNS:\($0)" }.joined(separator: ",")
        guard let san = X509V3_EXT_conf_nid(nil, &ctx, NID_subject_alt_name, value) else { throw .openssl("subjectAltName") }
        defer { X509_EXTENSION_free(san) }
        // STACK_OF(X509_EXTENSION) is a family of macros over OPENSSL_sk_*.
        guard let stack = OPENSSL_sk_new_null() else { throw .openssl("extension list") }
        defer { OPENSSL_sk_free(stack) }
        guard OPENSSL_sk_push(stack, UnsafeRawPointer(san)) > 0, X509_REQ_add_extensions(req, stack) == 1 else {
            throw .openssl("CSR extensions")
        }
        guard X509_REQ_sign(req, key.pkey, EVP_sha256()) > 0 else { throw .openssl("CSR signature") }
        return try OpenSSL.der("CSR DER") { i2d_X509_REQ(req, $0) }
    }
}
