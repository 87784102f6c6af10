import COpenSSL
import Foundation
import Testing
@testable import GatehouseACME

@Suite struct JWKTests {
    /// RFC 7638 §3.1.
    @Test func rfc7638Thumbprint() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        let jwk = JWK.rsa(n: n, e: "AQAB")
        #expect(jwk.canonicalJSON == #"{"e":"AQAB","kty":"RSA","n":"\#(n)"}"#)
        #expect(jwk.thumbprint == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
    }

    /// RFC 7515 A.3's key loads from PEM and gives back the RFC's x and y.
    @Test func ecJWKOfAKnownKey() throws {
        let key = try PrivateKey(pem: RFC7515A3.pem)
        #expect(key.kind == .p256)
        let jwk = try key.jwk()
        #expect(jwk == .ec(crv: "P-256", x: RFC7515A3.x, y: RFC7515A3.y))
        #expect(jwk.canonicalJSON == #"{"crv":"P-256","kty":"EC","x":"\#(RFC7515A3.x)","y":"\#(RFC7515A3.y)"}"#)
        // The thumbprint's SHA-256, by OpenSSL's CLI.
        let hex = try openssl(["dgst", "-sha256", "-r"], input: Array(jwk.canonicalJSON.utf8)).output.prefix(64)
        #expect(hexString(Base64URL.decode(jwk.thumbprint)!) == String(hex))
    }

    /// A fresh key's x and y are the point OpenSSL's CLI finds in its PEM.
    @Test func ecJWKMatchesOpenSSLsPublicKey() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let key = try PrivateKey.generateP256()
        let file = try scratch.write("k.pem", key.pem())
        let der = try scratch.path + "/pub.der"
        try openssl(["pkey", "-in", file, "-pubout", "-outform", "DER", "-out", der])
        let spki = try [UInt8](Data(contentsOf: URL(fileURLWithPath: der)))
        // SubjectPublicKeyInfo for P-256 ends in 04 || X || Y (RFC 5480 §2.2).
        #expect(spki.count == 91 && spki[26] == 0x04)
        guard case .ec(let crv, let x, let y) = try key.jwk() else { Issue.record("not EC"); return }
        #expect(crv == "P-256")
        #expect(Base64URL.decode(x) == Array(spki[27 ..< 59]))
        #expect(Base64URL.decode(y) == Array(spki[59 ..< 91]))
        #expect(x.count == 43 && y.count == 43)
    }

    @Test func rsaJWKMatchesOpenSSLsModulus() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let key = try PrivateKey.generateRSA(bits: 2048)
        #expect(key.kind == .rsa(bits: 2048))
        let file = try scratch.write("k.pem", key.pem())
        let modulus = try openssl(["rsa", "-in", file, "-noout", "-modulus"]).output
        guard case .rsa(let n, let e) = try key.jwk() else { Issue.record("not RSA"); return }
        #expect(e == "AQAB")
        #expect("Modulus=" + hexString(Base64URL.decode(n)!).uppercased() == modulus.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(Base64URL.decode(n)!.count == 256)
    }
}

@Suite struct PrivateKeyTests {
    @Test func pemRoundTripAndOpenSSLReadsIt() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let key = try PrivateKey.generateP256()
        let pem = try key.pem()
        #expect(String(decoding: pem, as: UTF8.self).hasPrefix("-----BEGIN PRIVATE KEY-----\n"))
        let again = try PrivateKey(pem: pem)
        #expect(try again.jwk() == key.jwk())
        let file = try scratch.write("k.pem", pem)
        let text = try openssl(["pkey", "-in", file, "-noout", "-text"]).output
        #expect(text.contains("prime256v1") || text.contains("P-256"))
    }

    @Test func refusesWhatIsNotAUsableKey() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let cases: [(String, [String])] = [
            ("P-384", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]),
            ("RSA-1024", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"]),
            ("Ed25519", ["genpkey", "-algorithm", "ED25519"]),
        ]
        for (label, args) in cases {
            let out = scratch.path + "/\(label).pem"
            try openssl(args + ["-out", out])
            let pem = try [UInt8](Data(contentsOf: URL(fileURLWithPath: out)))
            #expect(throws: ACMEError.self, "\(label)") { try PrivateKey(pem: pem) }
        }
        #expect(throws: ACMEError.self) { try PrivateKey(pem: Array("not a key".utf8)) }
        // An encrypted key is refused rather than prompting for a password.
        let encrypted = scratch.path + "/enc.pem"
        try openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes256", "-pass", "pass:x", "-out", encrypted])
        let pem = try [UInt8](Data(contentsOf: URL(fileURLWithPath: encrypted)))
        #expect(throws: ACMEError.self) { try PrivateKey(pem: pem) }
    }

    @Test func rsaKeyCannotSignES256() throws {
        let key = try PrivateKey.generateRSA()
        #expect(throws: ACMEError.self) { try key.signES256([1, 2, 3]) }
    }
}

@Suite struct ES256Tests {
    /// The RFC's own signature, through our test's DER encoder, is accepted
    /// by OpenSSL for the RFC's key: the verification below is sound.
    @Test func rfc7515A3SignatureVerifies() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let pub = try publicKeyPEM(scratch, privateKey: RFC7515A3.pem)
        let raw = try #require(Base64URL.decode(RFC7515A3.signature))
        #expect(raw.count == 64)
        #expect(try opensslVerifiesES256(scratch, publicKey: pub, message: Array(RFC7515A3.signingInput.utf8), rawSignature: raw))
        var wrong = raw
        wrong[10] ^= 1
        #expect(try !opensslVerifiesES256(scratch, publicKey: pub, message: Array(RFC7515A3.signingInput.utf8), rawSignature: wrong))
    }

    @Test func ourSignatureVerifiesWithOpenSSL() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let key = try PrivateKey(pem: RFC7515A3.pem)
        let message = Array(RFC7515A3.signingInput.utf8)
        let raw = try key.signES256(message)
        #expect(raw.count == 64)
        let pub = try publicKeyPEM(scratch, privateKey: RFC7515A3.pem)
        #expect(try opensslVerifiesES256(scratch, publicKey: pub, message: message, rawSignature: raw))
    }

    /// Enough signatures that some r or s is shorter than 32 bytes (DER drops
    /// the leading zero; about 1 in 128 signatures), each verified in
    /// process from a DER this test builds itself.
    @Test func shortComponentsArePadded() throws {
        let key = try PrivateKey.generateP256()
        var short = 0
        for i in 0 ..< 2000 {
            let message = Array("message \(i)".utf8)
            let raw = try key.signES256(message)
            #expect(raw.count == 64)
            if raw[0] == 0 || raw[32] == 0 { short += 1 }
            #expect(verifyInProcess(key: key, message: message, der: derSignature(raw: raw)), "signature \(i)")
        }
        #expect(short > 0, "no short component in 2,000 signatures (p < 1e-6)")
    }

    @Test func derConversionEdges() throws {
        // r = 1 (one byte), s with the high bit set (a 0x00 prefix in DER).
        let s = [UInt8](repeating: 0xff, count: 32)
        let der: [UInt8] = [0x30, 0x26, 0x02, 0x01, 0x01, 0x02, 0x21, 0x00] + s
        #expect(try ECDSASignature.raw(fromDER: der) == [UInt8](repeating: 0, count: 31) + [1] + s)
        #expect(throws: ACMEError.self) { try ECDSASignature.raw(fromDER: [0x30, 0x00]) }
        #expect(throws: ACMEError.self) { try ECDSASignature.raw(fromDER: [0x30, 0x03, 0x02, 0x01]) }
        // A component longer than the curve allows.
        let long: [UInt8] = [0x30, 0x26, 0x02, 0x21, 0x01] + [UInt8](repeating: 1, count: 32) + [0x02, 0x01, 0x01]
        #expect(throws: ACMEError.self) { try ECDSASignature.raw(fromDER: long) }
    }

    func verifyInProcess(key: PrivateKey, message: [UInt8], der: [UInt8]) -> Bool {
        guard let md = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(md) }
        guard EVP_DigestVerifyInit(md, nil, EVP_sha256(), nil, key.pkey) == 1 else { return false }
        return EVP_DigestVerify(md, der, der.count, message, message.count) == 1
    }
}

func hexString(_ bytes: [UInt8]) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}
