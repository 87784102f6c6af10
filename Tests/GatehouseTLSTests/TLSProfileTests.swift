import COpenSSL
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
            let profile = TLSProfile.named(name)
            let ctx = try TLSContextFactory.make(profile)
            defer { SSL_CTX_free(ctx) }
            // The context carries the profile's version bounds.
            #expect(SSL_CTX_ctrl(ctx, SSL_CTRL_GET_MIN_PROTO_VERSION, 0, nil) == Int(profile.minVersion.rawValue))
            #expect(SSL_CTX_ctrl(ctx, SSL_CTRL_GET_MAX_PROTO_VERSION, 0, nil) == Int(profile.maxVersion.rawValue))
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

    @Test func alpnPrefersH2WhenAllowedElseHTTP11() {
        func pick(_ list: [UInt8], h2: Bool) -> ALPN.Choice? {
            list.withUnsafeBytes { ALPN.select(from: $0, h2Allowed: h2)?.choice }
        }
        let both: [UInt8] = [8] + Array("http/1.1".utf8) + [2] + Array("h2".utf8)
        #expect(pick(both, h2: true) == .h2, "the server's preference, whatever the client's order")
        #expect(both.withUnsafeBytes { ALPN.select(from: $0, h2Allowed: true)?.offset } == 10)
        #expect(pick(both, h2: false) == .http11)
        #expect(both.withUnsafeBytes { ALPN.select(from: $0, h2Allowed: false)?.offset } == 1)
        let h2only: [UInt8] = [2] + Array("h2".utf8)
        #expect(pick(h2only, h2: false) == nil)
        #expect(pick(h2only, h2: true) == .h2)
        let truncated: [UInt8] = [9] + Array("http/1.1".utf8)
        #expect(pick(truncated, h2: true) == nil)
        let lookalike: [UInt8] = [3] + Array("h2c".utf8) + [6] + Array("http/1".utf8)
        #expect(pick(lookalike, h2: true) == nil)
    }

    @Test func http2NeedsTLS12WithAnAEADEphemeralSuiteOrTLS13() {
        // RFC 9113 §9.2.
        #expect(ALPN.http2Permitted(tlsVersion: 0x0304, aead: true, ephemeralKeyExchange: true))
        #expect(ALPN.http2Permitted(tlsVersion: 0x0303, aead: true, ephemeralKeyExchange: true))
        #expect(!ALPN.http2Permitted(tlsVersion: 0x0303, aead: false, ephemeralKeyExchange: true), "CBC")
        #expect(!ALPN.http2Permitted(tlsVersion: 0x0303, aead: true, ephemeralKeyExchange: false), "static RSA")
        #expect(!ALPN.http2Permitted(tlsVersion: 0x0302, aead: true, ephemeralKeyExchange: true))
        #expect(!ALPN.http2Permitted(tlsVersion: 0x0301, aead: true, ephemeralKeyExchange: true))
    }
}
