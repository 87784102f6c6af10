import COpenSSL

/// What renewal needs to know of a certificate, read by OpenSSL from PEM
/// (the first certificate of a chain: the leaf, RFC 8555 §7.4.2).
public struct CertificateInfo: Sendable, Equatable {
    /// Validity (RFC 5280 §4.1.2.5) in Unix seconds.
    public let notBefore: Int
    public let notAfter: Int
    /// The serial's DER INTEGER content bytes, a leading 00 included when
    /// the first bit is set (RFC 5280 §4.1.2.2).
    public let serial: [UInt8]
    /// keyIdentifier of the authorityKeyIdentifier extension (RFC 5280
    /// §4.2.1.1); nil when absent (self-signed certificates may omit it).
    public let authorityKeyIdentifier: [UInt8]?
    /// The subjectAltName's dNSNames, in order (RFC 5280 §4.2.1.6).
    public let dnsNames: [String]

    /// RFC 9773 §4.1: the certificate's name at the CA's renewalInfo and in
    /// a replacing order; nil without an authority key identifier.
    public var ariCertID: String? {
        authorityKeyIdentifier.map { Self.ariCertID(authorityKeyIdentifier: $0, serial: serial) }
    }

    /// base64url(keyIdentifier) "." base64url(serial content bytes), both
    /// unpadded (RFC 9773 §4.1).
    public static func ariCertID(authorityKeyIdentifier: [UInt8], serial: [UInt8]) -> String {
        Base64URL.encode(authorityKeyIdentifier) + "." + Base64URL.encode(serial)
    }

    public init(pem: [UInt8]) throws(ACMEError) {
        let x509 = try Self.load(pem)
        defer { X509_free(x509) }
        guard let before = X509_get0_notBefore(x509), let after = X509_get0_notAfter(x509),
              let notBefore = Self.seconds(before), let notAfter = Self.seconds(after) else { throw .openssl("certificate validity") }
        self.notBefore = notBefore
        self.notAfter = notAfter

        guard let number = X509_get0_serialNumber(x509) else { throw .openssl("certificate serial") }
        let der = try OpenSSL.der("certificate serial") { i2d_ASN1_INTEGER(number, $0) }
        serial = try Self.integerContent(der)

        authorityKeyIdentifier = X509_get0_authority_key_id(x509).map(Self.bytes)
        dnsNames = try Self.dnsNames(x509)
    }

    /// Whether the certificate in `pem` (its first) carries `key`'s public key.
    static func publicKeyMatches(pem: [UInt8], key: PrivateKey) throws(ACMEError) -> Bool {
        let x509 = try load(pem)
        defer { X509_free(x509) }
        let matches = X509_check_private_key(x509, key.pkey) == 1
        ERR_clear_error()   // a mismatch queues an error nobody reads
        return matches
    }

    static func load(_ pem: [UInt8]) throws(ACMEError) -> OpaquePointer {
        guard let x509 = OpenSSL.readingFromMemory(pem, { PEM_read_bio_X509($0, nil, nil, nil) }) else {
            throw .openssl("no PEM certificate")
        }
        return x509
    }

    /// ASN1_TIME (UTCTime or GeneralizedTime) as Unix seconds.
    static func seconds(_ time: UnsafePointer<ASN1_TIME>) -> Int? {
        var tm = tm()
        guard ASN1_TIME_to_tm(time, &tm) == 1 else { return nil }
        let days = HTTPDate.daysFromCivil(year: Int(tm.tm_year) + 1900, month: Int(tm.tm_mon) + 1, day: Int(tm.tm_mday))
        return days * 86400 + Int(tm.tm_hour) * 3600 + Int(tm.tm_min) * 60 + Int(tm.tm_sec)
    }

    /// The content of a DER INTEGER (X.690 §8.3): tag 02, a short or long
    /// form length, then the bytes.
    static func integerContent(_ der: [UInt8]) throws(ACMEError) -> [UInt8] {
        guard der.count >= 3, der[0] == 0x02 else { throw ACMEError("serial is not a DER INTEGER") }
        var start = 2
        var length = Int(der[1])
        if der[1] & 0x80 != 0 {
            let n = Int(der[1] & 0x7f)
            guard n >= 1, n <= 2, der.count >= 2 + n else { throw ACMEError("serial length unreadable") }
            length = der[2 ..< 2 + n].reduce(0) { $0 << 8 | Int($1) }
            start = 2 + n
        }
        guard length >= 1, der.count == start + length else { throw ACMEError("serial length unreadable") }
        return Array(der[start...])
    }

    static func bytes(_ string: UnsafePointer<ASN1_STRING>) -> [UInt8] {
        let count = Int(ASN1_STRING_length(string))
        guard count > 0, let data = ASN1_STRING_get0_data(string) else { return [] }
        return Array(UnsafeBufferPointer(start: data, count: count))
    }

    static func dnsNames(_ x509: OpaquePointer) throws(ACMEError) -> [String] {
        var critical: Int32 = 0
        guard let names = X509_get_ext_d2i(x509, NID_subject_alt_name, &critical, nil) else {
            // -1: absent; anything else: present but unreadable (or twice).
            if critical == -1 { return [] }
            throw .openssl("subjectAltName")
        }
        // GENERAL_NAMES is STACK_OF(GENERAL_NAME): OPENSSL_sk_* underneath.
        let stack = OpaquePointer(names)
        defer { GENERAL_NAMES_free(stack) }
        var out: [String] = []
        for i in 0 ..< max(0, OPENSSL_sk_num(stack)) {
            guard let entry = OPENSSL_sk_value(stack, i) else { continue }
            var type: Int32 = -1
            guard let value = GENERAL_NAME_get0_value(entry.assumingMemoryBound(to: GENERAL_NAME.self), &type), type == GEN_DNS else { continue }
            // dNSName is an IA5String (RFC 5280 §4.2.1.6): ASCII.
            out.append(String(decoding: bytes(value.assumingMemoryBound(to: ASN1_STRING.self)), as: UTF8.self))
        }
        return out
    }
}
