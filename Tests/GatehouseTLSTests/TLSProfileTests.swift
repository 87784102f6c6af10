import Testing
import GatehouseConfig
@testable import GatehouseTLS

@Suite struct TLSProfileTests {
    @Test func modernIsTLS12And13WithAEADOnly() {
        let p = TLSProfile.modern
        #expect(p.minVersion == .tls1_2 && p.maxVersion == .tls1_3)
        #expect(p.securityLevel == 2)
        for suite in p.cipherList.split(separator: ":") {
            #expect(suite.hasPrefix("ECDHE-"))
            #expect(suite.contains("GCM") || suite.contains("CHACHA20"))
        }
    }

    @Test func legacyAddsOnlyCBCSHAAndNeverWeakSuites() {
        let p = TLSProfile.legacy
        #expect(p.minVersion == .tls1_0 && p.maxVersion == .tls1_3)
        #expect(p.securityLevel == 0)
        let suites = p.cipherList.split(separator: ":").map(String.init)
        #expect(suites.contains("ECDHE-RSA-AES128-SHA"))
        #expect(suites.contains("AES128-SHA"))
        for weak in ["DES", "RC4", "NULL", "EXP", "ADH", "AECDH", "DH-", "MD5", "PSK", "SRP"] {
            #expect(!suites.contains { $0.contains(weak) && !$0.hasPrefix("ECDHE-") }, "weak \(weak)")
        }
        #expect(!suites.contains { $0.contains("3DES") || $0.contains("DES-CBC") })
    }

    @Test func strictIsTLS13Only() {
        #expect(TLSProfile.strict.minVersion == .tls1_3)
        #expect(TLSProfile.strict.maxVersion == .tls1_3)
    }

    @Test func everyProfileBuildsAContext() throws {
        for name in TLSProfileName.allCases {
            let ctx = try TLSContextFactory.make(TLSProfile.named(name))
            #expect(ctx != nil)
        }
    }
}

@Suite struct ServerNameTests {
    func ext(_ name: String, type: UInt8 = 0) -> [UInt8] {
        let n = Array(name.utf8)
        let entry = [type, UInt8(n.count >> 8), UInt8(n.count & 0xff)] + n
        return [UInt8(entry.count >> 8), UInt8(entry.count & 0xff)] + entry
    }

    @Test func extractsHostName() {
        let bytes = ext("Example.COM")
        let name = bytes.withUnsafeBytes { ServerNameExtension.hostName(in: $0).map { Array($0) } }
        #expect(name == Array("Example.COM".utf8))
    }

    @Test func rejectsMalformedExtensions() {
        var bad = ext("a.test")
        bad[1] &+= 1 // list length disagrees
        for input in [[], [0], bad, ext("x", type: 1), [0, 3, 0, 0, 0]] as [[UInt8]] {
            let name = input.withUnsafeBytes { ServerNameExtension.hostName(in: $0) }
            #expect(name == nil)
        }
    }

    @Test func alpnFindsHTTP11Only() {
        let list: [UInt8] = [2] + Array("h2".utf8) + [8] + Array("http/1.1".utf8)
        #expect(list.withUnsafeBytes { ALPN.findHTTP11(in: $0) } == 4)
        let h2only: [UInt8] = [2] + Array("h2".utf8)
        #expect(h2only.withUnsafeBytes { ALPN.findHTTP11(in: $0) } == nil)
        let truncated: [UInt8] = [9] + Array("http/1.1".utf8)
        #expect(truncated.withUnsafeBytes { ALPN.findHTTP11(in: $0) } == nil)
    }
}
