import Foundation
import Testing
@testable import GatehouseACME

@Suite struct ChallengeTests {
    let token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
    let rfc7638 = JWK.rsa(n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
                          e: "AQAB")

    /// RFC 8555 §8.1: token "." thumbprint.
    @Test func keyAuthorization() throws {
        let ka = try ChallengeResponse.keyAuthorization(token: token, accountKey: rfc7638)
        #expect(ka == token + ".NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        for bad in ["", "../x", token + "/", token + "=", "short"] {
            #expect(throws: ACMEError.self, "\(bad)") { try ChallengeResponse.keyAuthorization(token: bad, accountKey: rfc7638) }
        }
    }

    /// RFC 8737 §3: SHA-256 of the key authorization, as a DER OCTET STRING.
    @Test func tlsALPN01Digest() throws {
        let ka = try ChallengeResponse.keyAuthorization(token: token, accountKey: rfc7638)
        let hex = try openssl(["dgst", "-sha256", "-r"], input: Array(ka.utf8)).output.prefix(64)
        #expect(hexString(ChallengeResponse.tlsALPN01Digest(keyAuthorization: ka)) == String(hex))
        let value = ChallengeResponse.tlsALPN01ExtensionValue(keyAuthorization: ka)
        #expect(value.count == 34 && value[0] == 0x04 && value[1] == 0x20)
        #expect(Array(value.dropFirst(2)) == ChallengeResponse.tlsALPN01Digest(keyAuthorization: ka))
    }

    /// The certificate, read back by OpenSSL's CLI: self-signed, one
    /// dNSName, a critical acmeIdentifier holding the digest, its key.
    @Test func tlsALPN01Certificate() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let ka = try ChallengeResponse.keyAuthorization(token: token, accountKey: rfc7638)
        let bundle = try ChallengeResponse.tlsALPN01Certificate(name: "www.example.com", keyAuthorization: ka)
        let text = String(decoding: bundle, as: UTF8.self)
        #expect(text.hasPrefix("-----BEGIN CERTIFICATE-----\n"))
        #expect(text.contains("-----BEGIN PRIVATE KEY-----\n"))
        let file = try scratch.write("challenge.pem", bundle)

        let san = try openssl(["x509", "-in", file, "-noout", "-ext", "subjectAltName"]).output
        #expect(san.contains("DNS:www.example.com"))
        #expect(san.components(separatedBy: "DNS:").count == 2, "exactly one name: \(san)")

        let dump = try openssl(["x509", "-in", file, "-noout", "-text"]).output
        #expect(dump.contains("Version: 3"))
        #expect(dump.contains("Subject: CN = www.example.com"))
        #expect(dump.contains("Issuer: CN = www.example.com"))
        // OpenSSL has no name for the extension: it prints the OID.
        #expect(dump.contains("1.3.6.1.5.5.7.1.31: critical"), "\(dump)")
        // RFC 5280 §4.1: Extension ::= SEQUENCE { extnID, critical TRUE,
        // extnValue OCTET STRING { the RFC 8737 OCTET STRING } }.
        let oid: [UInt8] = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f]
        let expected = oid + [0x01, 0x01, 0xff, 0x04, 0x22] + ChallengeResponse.tlsALPN01ExtensionValue(keyAuthorization: ka)
        let der = try certificateDER(file: file, scratch: scratch)
        #expect(der.contains(subsequence: expected), "acmeIdentifier extension missing or not critical")

        // Signed by its own key, and that key is the one in the file.
        let verify = try openssl(["verify", "-CAfile", file, "-ignore_critical", "-partial_chain", file], expectSuccess: false).output
        #expect(verify.contains(": OK"), "\(verify)")
        let certKey = try openssl(["x509", "-in", file, "-noout", "-pubkey"]).output
        let ownKey = try openssl(["pkey", "-in", file, "-pubout"]).output
        #expect(certKey == ownKey)
    }

    @Test func tlsALPN01CertificateRefusesOddNames() throws {
        for bad in ["", "*.example.com", "a,DNS:evil.test", "a b.test", "Upper.test", "a..test", String(repeating: "a", count: 64) + ".test"] {
            #expect(throws: ACMEError.self, "\(bad)") { try ChallengeResponse.tlsALPN01Certificate(name: bad, keyAuthorization: "x") }
        }
    }

    /// The certificate's DER, by OpenSSL's CLI.
    func certificateDER(file: String, scratch: Scratch) throws -> [UInt8] {
        let out = scratch.path + "/cert.der"
        try openssl(["x509", "-in", file, "-outform", "DER", "-out", out])
        return try [UInt8](Data(contentsOf: URL(fileURLWithPath: out)))
    }
}

extension Array where Element == UInt8 {
    func contains(subsequence needle: [UInt8]) -> Bool {
        guard needle.count <= count else { return false }
        return (0 ... count - needle.count).contains { Array(self[$0 ..< $0 + needle.count]) == needle }
    }
}
