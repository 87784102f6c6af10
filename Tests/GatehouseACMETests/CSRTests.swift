import Foundation
import Testing
@testable import GatehouseACME

@Suite struct CSRTests {
    /// OpenSSL's CLI checks the self-signature and lists the names.
    func inspect(_ der: [UInt8], _ scratch: Scratch) throws -> String {
        let file = try scratch.write("req.der", der)
        let out = try openssl(["req", "-inform", "DER", "-in", file, "-noout", "-text", "-verify"]).output
        #expect(out.contains("verify OK"), "\(out)")
        return out
    }

    @Test func p256ForSeveralNames() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let key = try PrivateKey.generateP256()
        let names = ["customer.example", "www.customer.example", "shop.customer.example"]
        let text = try inspect(CSR.der(names: names, key: key), scratch)
        #expect(text.contains("Subject: CN = customer.example"))
        #expect(text.contains("DNS:customer.example, DNS:www.customer.example, DNS:shop.customer.example"))
        #expect(text.contains("prime256v1") || text.contains("P-256"))
        #expect(text.contains("ecdsa-with-SHA256"))
        // The CSR carries this key.
        let file = try scratch.write("req2.der", CSR.der(names: names, key: key))
        let csrKey = try openssl(["req", "-inform", "DER", "-in", file, "-noout", "-pubkey"]).output
        let keyFile = try scratch.write("key.pem", key.pem())
        #expect(csrKey == (try openssl(["pkey", "-in", keyFile, "-pubout"]).output))
    }

    @Test func rsa2048ForTheLegacyProfile() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let key = try PrivateKey.generateRSA(bits: 2048)
        let text = try inspect(CSR.der(names: ["old.example"], key: key), scratch)
        #expect(text.contains("Public-Key: (2048 bit)"))
        #expect(text.contains("sha256WithRSAEncryption"))
        #expect(text.contains("DNS:old.example"))
    }

    /// RFC 5280's 64-character limit on a CN: a longer first name is left
    /// to the SAN alone.
    @Test func longFirstNameHasNoCN() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let long = String(repeating: "a", count: 60) + ".example"
        let text = try inspect(CSR.der(names: [long], key: PrivateKey.generateP256()), scratch)
        #expect(!text.contains("CN ="))
        #expect(text.contains("DNS:" + long))
    }

    @Test func refusesBadNames() throws {
        let key = try PrivateKey.generateP256()
        for names in [[], ["*.example.com"], ["a.test,DNS:evil.test"], ["a.test", "a.test"], ["A.test"], ["a_b.test"]] {
            #expect(throws: ACMEError.self, "\(names)") { try CSR.der(names: names, key: key) }
        }
    }
}
