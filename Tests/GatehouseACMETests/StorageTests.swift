import Foundation
import Testing
@testable import GatehouseACME

@Suite struct StorageTests {
    @Test func layout() throws {
        let s = ACMEStorage(root: "/var/lib/gatehouse/acme/")
        #expect(s.root == "/var/lib/gatehouse/acme")
        #expect(s.accountKey == "/var/lib/gatehouse/acme/account/key.pem")
        #expect(s.accountLock == "/var/lib/gatehouse/acme/account/lock")
        #expect(try s.certificate("customer.example", .ecdsa) == "/var/lib/gatehouse/acme/certificates/customer.example/ecdsa.pem")
        #expect(try s.certificate("customer.example", .rsa) == "/var/lib/gatehouse/acme/certificates/customer.example/rsa.pem")
        #expect(try s.domainLock("customer.example") == "/var/lib/gatehouse/acme/certificates/customer.example/lock")
        #expect(try s.backoff("customer.example") == "/var/lib/gatehouse/acme/certificates/customer.example/backoff.json")
        let token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
        #expect(try s.http01(token: token) == "/var/lib/gatehouse/acme/challenges/http-01/" + token)
        #expect(try s.tlsALPN01("www.customer.example") == "/var/lib/gatehouse/acme/challenges/tls-alpn-01/www.customer.example.pem")
    }

    @Test func accountRecordPerDirectory() {
        let s = ACMEStorage(root: "/s")
        let le = s.accountRecord(directoryURL: "https://acme-v02.api.letsencrypt.org/directory")
        let staging = s.accountRecord(directoryURL: "https://acme-staging-v02.api.letsencrypt.org/directory")
        let pebble = s.accountRecord(directoryURL: "https://127.0.0.1:14000/dir")
        #expect(le.hasPrefix("/s/account/acme-v02.api.letsencrypt.org-") && le.hasSuffix(".json"))
        #expect(staging.hasPrefix("/s/account/acme-staging-v02.api.letsencrypt.org-"))
        #expect(pebble.hasPrefix("/s/account/127.0.0.1_14000-"))
        #expect(Set([le, staging, pebble]).count == 3)
        #expect(s.accountRecord(directoryURL: "https://127.0.0.1:14000/other") != pebble)
        #expect(s.accountRecord(directoryURL: "https://127.0.0.1:14000/dir") == pebble)
        // Nothing from the URL can leave the account directory.
        let odd = s.accountRecord(directoryURL: "https://../../etc/x")
        #expect(!odd.dropFirst("/s/account/".count).contains("/"))
    }

    @Test func namesAndTokensAreChecked() {
        let s = ACMEStorage(root: "/s")
        for bad in ["", "..", "../etc", "a/b", "*.example.com", "Example.com"] {
            #expect(throws: ACMEError.self, "\(bad)") { try s.domainDirectory(bad) }
            #expect(throws: ACMEError.self, "\(bad)") { try s.tlsALPN01(bad) }
        }
        for bad in ["", "../../../../../../../../../../etc/passwd", "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ/PCt92wr-oA"] {
            #expect(throws: ACMEError.self, "\(bad)") { try s.http01(token: bad) }
        }
    }

    @Test func atomicWritesWithOwnerOnlyModes() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let s = ACMEStorage(root: scratch.path)
        let old = umask(0)
        defer { umask(old) }
        let path = try s.certificate("customer.example", .ecdsa)
        try s.write(Array("first".utf8), to: path)
        #expect(try s.read(path) == Array("first".utf8))
        try s.write(Array("second, longer".utf8), to: path)
        #expect(try s.read(path) == Array("second, longer".utf8))
        #expect(mode(path) == 0o600)
        for dir in [scratch.path + "/certificates", scratch.path + "/certificates/customer.example"] {
            #expect(mode(dir) == 0o700, "\(dir)")
        }
        // No temporary file stays behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path + "/certificates/customer.example") == ["ecdsa.pem"])
        // A reader holding the old file keeps the old bytes: the new one is
        // a new inode, renamed over it.
        let before = try inode(path)
        try s.write(Array("third".utf8), to: path)
        #expect(try inode(path) != before)
    }

    @Test func readMissingAndRemove() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let s = ACMEStorage(root: scratch.path)
        let path = try s.http01(token: "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA")
        #expect(try s.read(path) == nil)
        try s.write(Array("ka".utf8), to: path)
        #expect(try s.read(path) == Array("ka".utf8))
        try s.remove(path)
        try s.remove(path)
        #expect(try s.read(path) == nil)
        // Anything but "does not exist" is an error, not a missing file.
        #expect(throws: ACMEError.self) { try s.read(scratch.path) }
    }

    @Test func readLimit() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let s = ACMEStorage(root: scratch.path)
        try s.write([UInt8](repeating: 1, count: 100), to: s.accountKey)
        #expect(throws: ACMEError.self) { try s.read(s.accountKey, limit: 99) }
        #expect(try s.read(s.accountKey, limit: 100)?.count == 100)
    }

    @Test func writesStayInsideTheRoot() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let s = ACMEStorage(root: scratch.path + "/acme")
        #expect(throws: ACMEError.self) { try s.write([1], to: scratch.path + "/elsewhere/x") }
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/elsewhere"))
    }

    @Test func writeFailsCleanly() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let s = ACMEStorage(root: scratch.path)
        // A directory where the file should go: the rename fails, the
        // temporary file is removed.
        try FileManager.default.createDirectory(atPath: scratch.path + "/account/key.pem/inner", withIntermediateDirectories: true)
        #expect(throws: ACMEError.self) { try s.write([1, 2, 3], to: s.accountKey) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path + "/account") == ["key.pem"])
    }

    func mode(_ path: String) -> mode_t {
        var st = stat()
        return stat(path, &st) == 0 ? st.st_mode & 0o777 : 0
    }

    func inode(_ path: String) throws -> UInt64 {
        var st = stat()
        guard stat(path, &st) == 0 else { throw ACMEError("stat") }
        return UInt64(st.st_ino)
    }
}
