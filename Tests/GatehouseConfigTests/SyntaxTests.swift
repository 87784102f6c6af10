import Testing
@testable import GatehouseConfig

@Suite struct SyntaxTests {
    @Test func normalizesNames() throws {
        #expect(try Syntax.normalizeName("Example.COM.", allowWildcard: true).get() == "example.com")
        #expect(try Syntax.normalizeName("*.Example.com", allowWildcard: true).get() == "*.example.com")
        #expect(try Syntax.normalizeName("xn--bcher-kva.de", allowWildcard: true).get() == "xn--bcher-kva.de")
        #expect(try Syntax.normalizeName("localhost", allowWildcard: true).get() == "localhost")
        #expect(try Syntax.normalizeName("a-1.b2.example", allowWildcard: true).get() == "a-1.b2.example")
        let longest = String(repeating: "a", count: 63) + "." + String(repeating: "b", count: 63) + "."
            + String(repeating: "c", count: 63) + "." + String(repeating: "d", count: 61)
        #expect(longest.utf8.count == 253)
        #expect((try? Syntax.normalizeName(longest, allowWildcard: true).get()) != nil)
        #expect((try? Syntax.normalizeName(longest + "d", allowWildcard: true).get()) == nil)
        #expect((try? Syntax.normalizeName("*.example.com", allowWildcard: false).get()) == nil)
        #expect((try? Syntax.normalizeName("*", allowWildcard: true).get()) == nil)
        #expect((try? Syntax.normalizeName("*.", allowWildcard: true).get()) == nil)
        #expect((try? Syntax.normalizeName(".", allowWildcard: true).get()) == nil)
        #expect((try? Syntax.normalizeName("a-.com", allowWildcard: true).get()) == nil)
    }

    @Test func listenAddresses() throws {
        #expect(try Syntax.listenAddress("0.0.0.0:443").get() == ("0.0.0.0", 443))
        #expect(try Syntax.listenAddress("[::]:80").get() == ("::", 80))
        #expect(try Syntax.listenAddress("[0:0::1]:8443").get() == ("::1", 8443))
        #expect(try Syntax.listenAddress("127.0.0.1:65535").get() == ("127.0.0.1", 65535))
        for bad in ["", ":443", "0.0.0.0:", "0.0.0.0:+1", "0.0.0.0:443:1", "[::]", "[::]443", "::443",
                    "[fe80::1%eth0]:443", "1.2.3:443", "example.com:443", "0.0.0.0:99999999999999999999"] {
            #expect((try? Syntax.listenAddress(bad).get()) == nil, "\(bad)")
        }
    }

    @Test func backends() throws {
        #expect(try Syntax.backend("127.0.0.1:8000").get() == .tcp(host: "127.0.0.1", port: 8000))
        #expect(try Syntax.backend("[::1]:8000").get() == .tcp(host: "::1", port: 8000))
        #expect(try Syntax.backend("localhost:8000").get() == .tcp(host: "localhost", port: 8000))
        #expect(try Syntax.backend("App.Internal:80").get() == .tcp(host: "app.internal", port: 80))
        #expect(try Syntax.backend("unix:/run/apps/x.sock").get() == .unix(path: "/run/apps/x.sock"))
        for bad in ["", "unix:", "unix:x.sock", "http://a:80", "a", "a:", ":80", "[::1]", "[::1:80", "a b:80", "*.a:80"] {
            #expect((try? Syntax.backend(bad).get()) == nil, "\(bad)")
        }
    }

    @Test func backendDescriptionRoundTrips() throws {
        for text in ["127.0.0.1:8000", "[::1]:8000", "localhost:8000", "unix:/run/apps/x.sock"] {
            #expect(try Syntax.backend(text).get().description == text)
        }
    }
}
