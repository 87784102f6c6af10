#if canImport(Glibc)
import Glibc
#endif
import COpenSSL
import CShims
import GatehouseConfig

/// A parsed certificate chain and its private key, ready to be applied to a
/// connection. Owns one reference to each OpenSSL object.
public final class Credentials: @unchecked Sendable {
    // @unchecked: immutable after init; OpenSSL objects are reference counted
    // with atomics and only read once loaded.
    let leaf: OpaquePointer      // X509*
    let key: OpaquePointer       // EVP_PKEY*
    let chain: OpaquePointer     // STACK_OF(X509)* (intermediates, may be empty)
    /// Seconds until the leaf expires (negative when already expired).
    public let secondsUntilExpiry: Int
    public let subject: String

    init(leaf: OpaquePointer, key: OpaquePointer, chain: OpaquePointer, secondsUntilExpiry: Int, subject: String) {
        self.leaf = leaf
        self.key = key
        self.chain = chain
        self.secondsUntilExpiry = secondsUntilExpiry
        self.subject = subject
    }

    deinit {
        X509_free(leaf)
        EVP_PKEY_free(key)
        gh_x509_chain_free(chain)
    }

    public var intermediateCount: Int { Int(gh_x509_chain_count(chain)) }

    /// "RSA", "EC", "ED25519", …: OpenSSL holds one certificate per type.
    public var keyType: String {
        guard let name = EVP_PKEY_get0_type_name(key) else { return "?" }
        return String(cString: name)
    }

    /// Puts this chain and key on one connection (called in the certificate callback).
    func apply(to ssl: OpaquePointer) -> Bool {
        SSL_use_cert_and_key(ssl, leaf, key, chain, 1) == 1
    }
}

/// Why a domain's certificate or key could not be used; `key` names the config key.
public struct CredentialError: Error, Sendable, CustomStringConvertible {
    public let key: String
    public let message: String
    public var description: String { "\(key): \(message)" }
}

public enum CredentialLoader {
    /// Fourteen days: time enough for an operator to notice a failed renewal.
    public static let expiryWarning = 14 * 24 * 3600

    /// Loads and cross-checks a full-chain PEM and its private key.
    public static func load(certificate: String, key: String) throws(CredentialError) -> Credentials {
        try load(certificates: { body throws(CredentialError) in try readPEM(path: certificate, configKey: "certificate", body) },
                 certificateSource: "'\(certificate)'",
                 key: { body throws(CredentialError) in try readPEM(path: key, configKey: "key", body) },
                 keySource: "'\(key)'")
    }

    /// Loads one PEM holding the chain and its key (ACME storage writes them
    /// as one file, so a single rename replaces both). `source` names it in errors.
    public static func load(pem: [UInt8], source: String) throws(CredentialError) -> Credentials {
        let inMemory = { (body: (OpaquePointer) -> Void) throws(CredentialError) in
            let read: Bool = pem.withUnsafeBytes { bytes in
                guard let bio = BIO_new_mem_buf(bytes.baseAddress, Int32(bytes.count)) else { return false }
                defer { BIO_free(bio) }
                body(bio)
                return true
            }
            guard read else { throw CredentialError(key: "certificate", message: "cannot read \(source)") }
        }
        return try load(certificates: inMemory, certificateSource: source, key: inMemory, keySource: source)
    }

    /// An ACME storage file (chain and key), read once, bounded.
    public static func load(combinedFile path: String) throws(CredentialError) -> Credentials {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CredentialError(key: "certificate", message: "cannot read '\(path)': \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { throw CredentialError(key: "certificate", message: "cannot read '\(path)': \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0 ..< n])
            guard bytes.count <= 1 << 20 else { throw CredentialError(key: "certificate", message: "'\(path)' is larger than 1 MiB") }
        }
        return try load(pem: bytes, source: "'\(path)'")
    }

    /// `certificates` and `key` each hand a fresh BIO to their body.
    private static func load(certificates: ((OpaquePointer) -> Void) throws(CredentialError) -> Void, certificateSource: String,
                             key: ((OpaquePointer) -> Void) throws(CredentialError) -> Void, keySource: String) throws(CredentialError) -> Credentials {
        var certs: [OpaquePointer] = []
        try certificates { bio in
            // PEM_read_bio_X509 skips blocks of other types (a key in the same file).
            while let x = PEM_read_bio_X509(bio, nil, nil, nil) { certs.append(x) }
            // The loop ends on "no start line" after the last certificate.
            ERR_clear_error()
        }
        guard let leaf = certs.first else {
            throw CredentialError(key: "certificate", message: "no PEM certificate in \(certificateSource)")
        }
        let chain = gh_x509_chain_new()!
        for c in certs.dropFirst() { _ = gh_x509_chain_push(chain, c) }

        var pkey: OpaquePointer?
        do {
            try key { bio in
                // A password callback that refuses: never prompt on a terminal.
                pkey = PEM_read_bio_PrivateKey(bio, nil, { _, _, _, _ in 0 }, nil)
            }
        } catch {
            X509_free(leaf); gh_x509_chain_free(chain)
            throw error
        }
        guard let pkey else {
            let reason = opensslErrorString()
            X509_free(leaf); gh_x509_chain_free(chain)
            throw CredentialError(key: "key", message: "no usable private key in \(keySource) (\(reason))")
        }
        guard X509_check_private_key(leaf, pkey) == 1 else {
            ERR_clear_error()
            X509_free(leaf); gh_x509_chain_free(chain); EVP_PKEY_free(pkey)
            throw CredentialError(key: "key", message: "\(keySource) does not match certificate \(certificateSource)")
        }
        var days: Int32 = 0, secs: Int32 = 0
        let remaining = ASN1_TIME_diff(&days, &secs, nil, X509_get0_notAfter(leaf)) == 1
            ? Int(days) * 86400 + Int(secs) : 0
        return Credentials(leaf: leaf, key: pkey, chain: chain, secondsUntilExpiry: remaining,
                           subject: subjectLine(leaf))
    }

    private static func readPEM(path: String, configKey: String, _ body: (OpaquePointer) -> Void) throws(CredentialError) {
        guard let bio = BIO_new_file(path, "r") else {
            let err = String(cString: strerror(errno))
            ERR_clear_error()
            throw CredentialError(key: configKey, message: "cannot read '\(path)': \(err)")
        }
        defer { BIO_free(bio) }
        body(bio)
    }

    static func subjectLine(_ x509: OpaquePointer) -> String {
        guard let name = X509_get_subject_name(x509), let line = X509_NAME_oneline(name, nil, 0) else { return "?" }
        defer { gh_openssl_free(line) }
        return String(cString: line)
    }
}

func opensslErrorString() -> String {
    let code = ERR_get_error()
    ERR_clear_error()
    guard code != 0 else { return "unknown error" }
    var buf = [CChar](repeating: 0, count: 256)
    ERR_error_string_n(code, &buf, buf.count)
    return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
