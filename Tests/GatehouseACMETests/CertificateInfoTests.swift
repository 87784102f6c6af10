import Foundation
import Testing
@testable import GatehouseACME

/// CertificateInfo on certificates made by OpenSSL's CLI, whose own
/// reading (-dateopt iso_8601, -serial) is the reference.
@Suite struct CertificateInfoTests {
    /// RFC 9773 §4.1's example: keyIdentifier 69:88:5B:…:C8:D4 and serial
    /// 0x87654321 (DER content 00 87 65 43 21) give this certID.
    static let rfcKeyIdentifier = "69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4"
    static let rfcCertID = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"

    /// A CA whose subjectKeyIdentifier is `keyIdentifier`, and a leaf it
    /// signs with `serial`, `days` and `san`; returns the leaf's path.
    func makeLeaf(_ scratch: Scratch, keyIdentifier: String, serial: String, days: Int, san: String, rsa: Bool = false) throws -> String {
        let d = scratch.path
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", d + "/ca.key",
                     "-out", d + "/ca.pem", "-days", "2", "-subj", "/CN=Info test CA",
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "subjectKeyIdentifier=\(keyIdentifier)"])
        let keyArgs = rsa ? ["-newkey", "rsa:2048"] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        try openssl(["req", "-new"] + keyArgs + ["-nodes", "-keyout", d + "/leaf.key", "-out", d + "/leaf.csr", "-subj", "/CN=leaf"])
        try scratch.write("leaf.ext", Array("subjectAltName=\(san)\nauthorityKeyIdentifier=keyid:always\n".utf8))
        try openssl(["x509", "-req", "-in", d + "/leaf.csr", "-CA", d + "/ca.pem", "-CAkey", d + "/ca.key", "-set_serial", serial,
                     "-days", "\(days)", "-out", d + "/leaf.pem", "-extfile", d + "/leaf.ext"])
        return d + "/leaf.pem"
    }

    /// OpenSSL's "notBefore=2026-12-02 11:45:00Z" as Unix seconds.
    func opensslDate(_ file: String, _ which: String) throws -> Int? {
        let out = try openssl(["x509", "-in", file, "-noout", "-\(which)", "-dateopt", "iso_8601"]).output
        let value = out.split(separator: "=", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
        return RFC3339.seconds(value.replacingOccurrences(of: " ", with: "T"))
    }

    @Test func rfc9773ExampleCertificate() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let leaf = try makeLeaf(scratch, keyIdentifier: Self.rfcKeyIdentifier, serial: "0x87654321", days: 10,
                                san: "DNS:a.example.com,DNS:b.example.com,IP:192.0.2.1")
        let info = try CertificateInfo(pem: Array(try Data(contentsOf: URL(fileURLWithPath: leaf))))
        #expect(info.serial == [0x00, 0x87, 0x65, 0x43, 0x21])
        #expect(info.authorityKeyIdentifier == [0x69, 0x88, 0x5b, 0x6b, 0x87, 0x46, 0x40, 0x41, 0xe1, 0xb3,
                                                0x7b, 0x84, 0x7b, 0xa0, 0xae, 0x2c, 0xde, 0x01, 0xc8, 0xd4])
        #expect(info.ariCertID == Self.rfcCertID)
        // Only dNSNames: the IP address is another GeneralName.
        #expect(info.dnsNames == ["a.example.com", "b.example.com"])
        #expect(info.notAfter - info.notBefore == 10 * 86400)
        #expect(abs(info.notBefore - Int(Date().timeIntervalSince1970)) < 600)
        #expect(info.notBefore == (try opensslDate(leaf, "startdate")))
        #expect(info.notAfter == (try opensslDate(leaf, "enddate")))
    }

    @Test func ariCertIDFromBytes() {
        let aki: [UInt8] = [0x69, 0x88, 0x5b, 0x6b, 0x87, 0x46, 0x40, 0x41, 0xe1, 0xb3, 0x7b, 0x84, 0x7b, 0xa0, 0xae, 0x2c, 0xde, 0x01, 0xc8, 0xd4]
        #expect(CertificateInfo.ariCertID(authorityKeyIdentifier: aki, serial: [0x00, 0x87, 0x65, 0x43, 0x21]) == Self.rfcCertID)
        // base64url, unpadded: no "+", "/" or "=".
        #expect(CertificateInfo.ariCertID(authorityKeyIdentifier: [0xfb, 0xff], serial: [0xff]) == "-_8._w")
    }

    /// A 20-octet serial (RFC 5280's most) without a leading 00, a small
    /// one, and an RSA leaf with a 1000-day validity.
    @Test func serialsAndDates() throws {
        for (serial, expected, rsa) in [("0x7f0102030405060708090a0b0c0d0e0f10111213", [0x7f] + Array(1 ... 0x13) as [UInt8], false),
                                        ("5", [0x05], true)] {
            let scratch = try Scratch()
            defer { scratch.remove() }
            let leaf = try makeLeaf(scratch, keyIdentifier: "01:02:03:04", serial: serial, days: 1000, san: "DNS:only.example.com", rsa: rsa)
            let info = try CertificateInfo(pem: Array(try Data(contentsOf: URL(fileURLWithPath: leaf))))
            #expect(info.serial == expected)
            #expect(info.authorityKeyIdentifier == [1, 2, 3, 4])
            #expect(info.ariCertID == "AQIDBA." + Base64URL.encode(expected))
            #expect(info.dnsNames == ["only.example.com"])
            #expect(info.notAfter - info.notBefore == 1000 * 86400)
            #expect(info.notAfter == (try opensslDate(leaf, "enddate")))
            // -serial prints the hex of the same number.
            let hex = try openssl(["x509", "-in", leaf, "-noout", "-serial"]).output
            #expect(hex.trimmingCharacters(in: .whitespacesAndNewlines) == "serial=" + hexString(Array(expected.drop { $0 == 0 })).uppercased())
        }
    }

    /// The first certificate of a chain is read: the leaf.
    @Test func chainLeafFirstAndNoSAN() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let leaf = try makeLeaf(scratch, keyIdentifier: "0a:0b:0c:0d", serial: "0x1234", days: 3, san: "DNS:leaf.example.com")
        let leafPEM = Array(try Data(contentsOf: URL(fileURLWithPath: leaf)))
        let caPEM = Array(try Data(contentsOf: URL(fileURLWithPath: scratch.path + "/ca.pem")))
        #expect(try CertificateInfo(pem: leafPEM + caPEM).dnsNames == ["leaf.example.com"])
        let ca = try CertificateInfo(pem: caPEM)
        #expect(ca.dnsNames.isEmpty)
        #expect(ca.serial.count >= 1)
        #expect(throws: ACMEError.self) { try CertificateInfo(pem: Array("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".utf8)) }
        #expect(throws: ACMEError.self) { try CertificateInfo(pem: []) }
    }

    @Test func keyMatch() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let leaf = try makeLeaf(scratch, keyIdentifier: "0a:0b:0c:0d", serial: "7", days: 3, san: "DNS:leaf.example.com")
        let pem = Array(try Data(contentsOf: URL(fileURLWithPath: leaf)))
        let key = try PrivateKey(pem: Array(try Data(contentsOf: URL(fileURLWithPath: scratch.path + "/leaf.key"))))
        #expect(try CertificateInfo.publicKeyMatches(pem: pem, key: key))
        #expect(try !CertificateInfo.publicKeyMatches(pem: pem, key: PrivateKey.generateP256()))
    }
}
