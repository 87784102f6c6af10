import Foundation
import Testing
import GatehouseConfig
import GatehouseHTTP
@testable import GatehouseLog
@testable import GatehouseProxy
import GatehouseTLS

@Suite struct RequestRoutingTests {
    static func domain(_ id: Int, _ names: [String], acceptAnyHost: Bool = false, redirect: Bool = true) -> DomainConfig {
        DomainConfig(id: id, file: "/d/\(id).toml", names: names, backend: .tcp(host: "127.0.0.1", port: 8000),
                     certificate: "/c.pem", key: "/k.pem", redirectHTTP: redirect, acceptAnyHost: acceptAnyHost)
    }

    let router: RequestRouter = {
        let domains = [domain(0, ["a.test", "www.a.test"]), domain(1, ["*.w.test"]),
                       domain(2, ["any.test"], acceptAnyHost: true), domain(3, ["quiet.test"], redirect: false)]
        let snapshot = ConfigSnapshot(mainFile: "/g.toml", domainsDirectory: "/d", listeners: [], domains: domains)
        return RequestRouter(names: NameIndex(domains: domains), domains: domains, acme: ACMECertificates(), store: CredentialStore(snapshot: snapshot))
    }()

    func https(_ sni: Int?, _ host: String?) -> RoutingDecision {
        route(.https, sni, host, "/")
    }

    func route(_ scheme: Scheme, _ sni: Int?, _ host: String?, _ path: String) -> RoutingDecision {
        var path = path
        return path.withUTF8 { p in
            guard var host else { return router.route(scheme: scheme, handshakeDomain: sni, host: nil, path: UnsafeRawBufferPointer(p)) }
            return host.withUTF8 { h in
                router.route(scheme: scheme, handshakeDomain: sni, host: UnsafeRawBufferPointer(h), path: UnsafeRawBufferPointer(p))
            }
        }
    }

    @Test func httpsForwardsOnlyTheHandshakeDomainsNames() {
        #expect(https(0, "a.test") == .forward(domain: 0))
        #expect(https(0, "WWW.A.TEST.") == .forward(domain: 0))
        #expect(https(1, "x.w.test") == .forward(domain: 1))
        #expect(https(0, nil) == .forward(domain: 0))        // HTTP/1.0 without Host
        for host in ["nobody.test", "127.0.0.1", "[::1]", "x.w.test", "w.test", "a.b.w.test", "any.test", ""] {
            #expect(https(0, host) == .refuse(.misdirected), "\(host)")
        }
        #expect(https(nil, "a.test") == .refuse(.misdirected))
        #expect(https(9, "a.test") == .refuse(.misdirected))
    }

    @Test func acceptAnyHostTakesOnlyUnclaimedNames() {
        #expect(https(2, "nobody.test") == .forward(domain: 2))
        #expect(https(2, "192.0.2.1") == .forward(domain: 2))
        #expect(https(2, "a.test") == .refuse(.misdirected))
    }

    @Test func plainHTTP() {
        #expect(route(.http, nil, "a.test", "/x") == .redirect(domain: 0))
        #expect(route(.http, nil, "nobody.test", "/x") == .refuse(.unknownHost))
        #expect(route(.http, nil, nil, "/x") == .refuse(.unknownHost))
        #expect(route(.http, nil, "quiet.test", "/x") == .notRedirected)
        #expect(route(.http, nil, "quiet.test", "/.well-known/acme-challenge/t0k-_") == .forward(domain: 3))
        #expect(route(.http, nil, "a.test", "/.well-known/acme-challenge/../admin") == .redirect(domain: 0))
    }

    @Test func anACMEDomainWaitingForItsCertificateIs503OnPlainHTTPButGetsItsTokens() {
        let pending = DomainConfig(id: 0, file: "/d/p.toml", names: ["pending.test"],
                                   backend: .tcp(host: "127.0.0.1", port: 8000), certificates: [], acme: true)
        let acme = ACMECertificates()
        let snapshot = ConfigSnapshot(mainFile: "/g.toml", domainsDirectory: "/d", listeners: [], domains: [pending])
        let router = RequestRouter(names: NameIndex(domains: [pending]), domains: [pending], acme: acme,
                                   store: CredentialStore(snapshot: snapshot, acme: acme))
        func http(_ path: String) -> RoutingDecision {
            var host = "pending.test", path = path
            return host.withUTF8 { h in
                path.withUTF8 { p in
                    router.route(scheme: .http, handshakeDomain: nil, host: UnsafeRawBufferPointer(h), path: UnsafeRawBufferPointer(p))
                }
            }
        }
        #expect(http("/page") == .pendingCertificate, "not a redirect to an HTTPS that fails")
        #expect(http("/.well-known/acme-challenge/tok") == .forward(domain: 0))
        // A token Gatehouse issued for this name is answered; for another name, or another token, it goes to the app.
        acme.publishHTTP01(token: "tok", name: "pending.test", keyAuthorization: "tok.thumb")
        #expect(http("/.well-known/acme-challenge/tok") == .acmeAnswer(keyAuthorization: Array("tok.thumb".utf8)))
        #expect(http("/.well-known/acme-challenge/other") == .forward(domain: 0))
        acme.publishHTTP01(token: "tok2", name: "elsewhere.test", keyAuthorization: "tok2.thumb")
        #expect(http("/.well-known/acme-challenge/tok2") == .forward(domain: 0))
        acme.withdrawHTTP01(token: "tok")
        #expect(http("/.well-known/acme-challenge/tok") == .forward(domain: 0))
    }

    /// Issued and announced by the ACME thread: from then on port 80 redirects, with no reload.
    @Test func anACMEDomainWithItsCertificateRedirects() throws {
        let pending = DomainConfig(id: 0, file: "/d/p.toml", names: ["pending.test"],
                                   backend: .tcp(host: "127.0.0.1", port: 8000), certificates: [], acme: true)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("gh-route-\(UUID().uuidString).pem").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let acme = ACMECertificates()
        let snapshot = ConfigSnapshot(mainFile: "/g.toml", domainsDirectory: "/d", listeners: [], domains: [pending])
        let router = RequestRouter(names: NameIndex(domains: [pending]), domains: [pending], acme: acme,
                                   store: CredentialStore(snapshot: snapshot, acme: acme, acmeFiles: { _ in [file] }))
        func http() -> RoutingDecision {
            var host = "pending.test:80", path = "/page"
            return host.withUTF8 { h in
                path.withUTF8 { p in
                    router.route(scheme: .http, handshakeDomain: nil, host: hostWithoutPort(UnsafeRawBufferPointer(h)), path: UnsafeRawBufferPointer(p))
                }
            }
        }
        #expect(http() == .pendingCertificate)
        #expect(FileManager.default.createFile(atPath: file, contents: Data(Self.testPEM.utf8)))
        acme.certificateChanged(primaryName: "pending.test")
        #expect(http() == .redirect(domain: 0))
    }

    @Test func acmeTokens() {
        func kind(_ s: String) -> RequestRouter.ACMEPath {
            var s = s
            return s.withUTF8 { RequestRouter.acmeChallenge(UnsafeRawBufferPointer($0)) }
        }
        let prefix = "/.well-known/acme-challenge/"
        #expect(kind(prefix + "abcXYZ019-_") == .token)
        for tail in ["", "..", "../admin", "%2e%2e/admin", "a/b", "a.b", "a?x", "a%41", "a b", "a~"] {
            #expect(kind(prefix + tail) == .malformed, "\(tail)")
        }
        #expect(kind("/.well-known/acme-challenge") == .none)
        #expect(kind("/.well-known/other/tok") == .none)
        #expect(kind("/") == .none)
    }

    @Test func clientKeys() {
        func key(_ s: String) -> [UInt8] { ClientKey.of(Array(s.utf8)) }
        #expect(key("192.0.2.1") == Array("192.0.2.1".utf8))
        #expect(key("2001:db8::1") == key("2001:db8:0:0:ffff:ffff:ffff:ffff"))
        #expect(key("2001:db8::1") != key("2001:db8:0:1::1"))
        #expect(key("::ffff:192.0.2.1") == key("192.0.2.1"))
        #expect(key("unix") == Array("unix".utf8))
    }

    @Test func rateLimitedLogWritesOncePerInterval() {
        let log = RateLimitedLog(intervalSeconds: 1)
        #expect(log.claim(now: 5_000_000_000))
        #expect(!log.claim(now: 5_000_000_001))
        #expect(!log.claim(now: 5_999_999_999))
        #expect(log.claim(now: 6_000_000_000))
        #expect(!log.claim(now: 6_100_000_000))
    }

    /// A throwaway self-signed P-256 certificate and key for pending.test
    /// (valid for a century; it never meets a real handshake here).
    static let testPEM = """
        -----BEGIN CERTIFICATE-----
        MIIBnzCCAUSgAwIBAgIUXXlZOJ5aPw4xgDp5Bvjvxy6Uzi8wCgYIKoZIzj0EAwIw
        FzEVMBMGA1UEAwwMcGVuZGluZy50ZXN0MCAXDTI2MTIwMjExMzA1M1oYDzIxMjYx
        MTA4MTEzMDUzWjAXMRUwEwYDVQQDDAxwZW5kaW5nLnRlc3QwWTATBgcqhkjOPQIB
        BggqhkjOPQMBBwNCAASrC5meSXaHwoWRZqp2QyhA2ttCmb39pAb7UuzuPKnDBVGC
        d+YTUPqwlYxa4weZhkpscfn/ekUd0Zkj39PdSrjxo2wwajAdBgNVHQ4EFgQUO5Ot
        9WtiqOzi4F22swmb0bcCnoYwHwYDVR0jBBgwFoAUO5Ot9WtiqOzi4F22swmb0bcC
        noYwDwYDVR0TAQH/BAUwAwEB/zAXBgNVHREEEDAOggxwZW5kaW5nLnRlc3QwCgYI
        KoZIzj0EAwIDSQAwRgIhAOB+lNsnjeO1/zmbsBKeSW5iSw9vRCDKOYIN5Pmb0hmf
        AiEAnEslDFRnRwxVFmtfHm7+WiaoXCqkWOjX8yTEt04VqQ0=
        -----END CERTIFICATE-----
        -----BEGIN PRIVATE KEY-----
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgYbxqWP4isgU5O0wQ
        w6rtt2mCDqoQEs/SCy69nzkLmyyhRANCAASrC5meSXaHwoWRZqp2QyhA2ttCmb39
        pAb7UuzuPKnDBVGCd+YTUPqwlYxa4weZhkpscfn/ekUd0Zkj39PdSrjx
        -----END PRIVATE KEY-----
        """
}
