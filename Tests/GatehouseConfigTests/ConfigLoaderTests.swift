import Testing
@testable import GatehouseConfig

@Suite struct ConfigLoaderTests {
    @Test func minimalConfigGetsDefaults() throws {
        let (dir, result) = loadTree()
        let snap = try result.get()
        #expect(snap.mainFile == dir + "/gatehouse.toml")
        #expect(snap.domainsDirectory == dir + "/domains.d")
        #expect(snap.workers == 1)
        #expect(snap.listeners == [ListenerConfig(host: "127.0.0.1", port: 8443, proto: .https, httpsPort: 443)])
        #expect(snap.timeouts == TimeoutSettings())
        #expect(snap.timeouts.handshake == 10 && snap.timeouts.idle == 60 && snap.timeouts.drain == 30)
        #expect(snap.limits == LimitSettings())
        #expect(snap.limits.maxConnections == 10000)
        #expect(snap.tls.defaultDomain == nil)
        #expect(snap.defaultDomainID == nil)

        try #require(snap.domains.count == 1)
        let d = snap.domains[0]
        #expect(d.id == 0)
        #expect(d.file == dir + "/domains.d/example.toml")
        #expect(d.names == ["example.com"])
        #expect(d.primaryName == "example.com")
        #expect(d.backend == .tcp(host: "127.0.0.1", port: 8000))
        // Relative paths resolve against the domain file's directory.
        #expect(d.certificate == dir + "/domains.d/cert.pem")
        #expect(d.key == dir + "/domains.d/key.pem")
        #expect(d.tlsProfile == .modern)
        #expect(d.redirectHTTP)
        #expect(d.hstsMaxAge == 31_536_000)
        #expect(!d.hstsIncludeSubdomains && !d.hstsPreload)
        #expect(d.maxBodyBytes == nil)
        #expect(d.hstsHeaderValue == "max-age=31536000")
        #expect(snap.names.lookup("EXAMPLE.com.") == 0)
    }

    @Test func fullConfigRoundTrip() throws {
        let main = """
            domains_dir = "./sites/../sites"
            workers = 0
            [[listener]]
            address = "0.0.0.0:443"
            protocol = "https"
            [[listener]]
            address = "[::]:443"
            protocol = "https"
            [[listener]]
            address = "0.0.0.0:80"
            protocol = "http"
            https_port = 8443
            [timeouts]
            handshake = 2.5
            request_header = 3
            idle = 4
            backend_connect = 5
            backend_response = 6
            drain = 7
            [limits]
            max_request_line = 1000
            max_header_bytes = 2000
            max_header_count = 30
            max_connections = 40
            [tls]
            default_domain = "WWW.Example.com."
            """
        let example = """
            names = ["Example.com.", "www.example.com", "*.example.com"]
            backend = "unix:/run/apps/example.sock"
            certificate = "/etc/letsencrypt/live/example.com/fullchain.pem"
            key = "../keys/example.pem"
            tls_profile = "legacy"
            redirect_http = false
            hsts_max_age = 63072000
            hsts_include_subdomains = true
            hsts_preload = true
            max_body_bytes = 10485760
            """
        let other = """
            names = ["other.net"]
            backend = "[::1]:9000"
            certificate = "c.pem"
            key = "k.pem"
            tls_profile = "strict"
            hsts_max_age = 0
            """
        let hostnameBackend = """
            names = ["app.example.org"]
            backend = "LocalHost:8080"
            certificate = "c.pem"
            key = "k.pem"
            hsts_max_age = 600
            hsts_include_subdomains = true
            """
        let tmp = TempDir()
        defer { tmp.remove() }
        tmp.write("gatehouse.toml", main)
        // Sorted by file name, so ids follow 10-, 20-, 30-.
        tmp.write("sites/20-other.toml", other)
        tmp.write("sites/10-example.toml", example)
        tmp.write("sites/30-app.toml", hostnameBackend)
        // Ignored: other extensions, hidden files, subdirectories.
        tmp.write("sites/README.md", "not toml")
        tmp.write("sites/40-disabled.toml.off", "garbage = [")
        tmp.write("sites/.#10-example.toml", "garbage = [")
        tmp.write("sites/nested/50-deep.toml", "garbage = [")
        tmp.mkdirs("sites/dir.toml")

        let snap = try ConfigLoader.load(path: tmp.path + "/gatehouse.toml")
        #expect(snap.domainsDirectory == tmp.path + "/sites")
        #expect(snap.workers == 0)
        #expect(snap.listeners == [
            ListenerConfig(host: "0.0.0.0", port: 443, proto: .https),
            ListenerConfig(host: "::", port: 443, proto: .https),
            ListenerConfig(host: "0.0.0.0", port: 80, proto: .http, httpsPort: 8443),
        ])
        #expect(snap.listeners[1].address == "[::]:443")
        #expect(snap.timeouts == TimeoutSettings(handshake: 2.5, requestHeader: 3, idle: 4, backendConnect: 5, backendResponse: 6, drain: 7))
        #expect(snap.limits == LimitSettings(maxRequestLineBytes: 1000, maxHeaderBytes: 2000, maxHeaderCount: 30, maxConnections: 40))
        #expect(snap.tls.defaultDomain == "www.example.com")
        #expect(snap.defaultDomainID == 0)

        try #require(snap.domains.count == 3)
        #expect(snap.domains.map(\.id) == [0, 1, 2])
        #expect(snap.domains.map(\.file) == ["10-example.toml", "20-other.toml", "30-app.toml"].map { tmp.path + "/sites/" + $0 })

        let e = snap.domains[0]
        #expect(e.names == ["example.com", "www.example.com", "*.example.com"])
        #expect(e.backend == .unix(path: "/run/apps/example.sock"))
        #expect(e.backend.description == "unix:/run/apps/example.sock")
        #expect(e.certificate == "/etc/letsencrypt/live/example.com/fullchain.pem")
        #expect(e.key == tmp.path + "/keys/example.pem")
        #expect(e.tlsProfile == .legacy)
        #expect(!e.redirectHTTP)
        #expect(e.hstsMaxAge == 63_072_000 && e.hstsIncludeSubdomains && e.hstsPreload)
        #expect(e.hstsHeaderValue == "max-age=63072000; includeSubDomains; preload")
        #expect(e.maxBodyBytes == 10_485_760)

        let o = snap.domains[1]
        #expect(o.backend == .tcp(host: "::1", port: 9000))
        #expect(o.backend.description == "[::1]:9000")
        #expect(o.tlsProfile == .strict)
        #expect(o.hstsHeaderValue == nil)

        let a = snap.domains[2]
        #expect(a.backend == .tcp(host: "localhost", port: 8080))
        #expect(a.hstsHeaderValue == "max-age=600; includeSubDomains")

        #expect(snap.names.count == 5)
        #expect(snap.names.lookup("foo.example.com") == 0)
        #expect(snap.domain(for: "OTHER.net")?.id == 1)
        #expect(snap.domain(for: "app.example.org")?.id == 2)
        #expect(snap.domain(for: "nope.org") == nil)
    }

    @Test func certificatePairsAndTLSKeys() throws {
        let main = Fixtures.main + """
            sni_fallback_profile = "legacy"
            [tls]
            default_domain = "example.com"
            ticket_key_file = "keys/tickets.bin"
            """
        let domain = """
            names = ["example.com"]
            backend = "127.0.0.1:8000"
            certificate = ["ec.pem", "/etc/ssl/rsa.pem"]
            key = ["ec.key", "/etc/ssl/rsa.key"]
            """
        let (dir, result) = loadTree(main: main, domains: [("example.toml", domain)])
        let snapshot = try result.get()
        #expect(snapshot.listeners[0].sniFallbackProfile == .legacy)
        #expect(snapshot.tls.ticketKeyFile == dir + "/keys/tickets.bin")
        let pairs = snapshot.domains[0].certificates
        #expect(pairs == [
            CertificatePair(certificate: dir + "/domains.d/ec.pem", key: dir + "/domains.d/ec.key"),
            CertificatePair(certificate: "/etc/ssl/rsa.pem", key: "/etc/ssl/rsa.key"),
        ])
        #expect(snapshot.domains[0].certificate == pairs[0].certificate)
    }

    @Test func relativeMainPathIsMadeAbsolute() {
        #expect(FileSystem.absolute("gatehouse.toml", relativeTo: "/etc/gatehouse") == "/etc/gatehouse/gatehouse.toml")
        #expect(FileSystem.absolute("./a/../b//c.toml", relativeTo: "/x/") == "/x/b/c.toml")
        #expect(FileSystem.absolute("/abs/./p", relativeTo: "/ignored") == "/abs/p")
        #expect(FileSystem.directory(of: "/gatehouse.toml") == "/")
    }

    @Test func emptyDomainsDirectoryIsAllowed() throws {
        let snap = try loadTree(domains: []).result.get()
        #expect(snap.domains.isEmpty)
        #expect(snap.names.count == 0)
    }

    @Test func shippedExampleLoads() throws {
        // Tests/GatehouseConfigTests/<file> -> repository root.
        var root = #filePath
        for _ in 0 ..< 3 { root = FileSystem.directory(of: root) }
        let snap = try ConfigLoader.load(path: root + "/config/gatehouse.toml")
        #expect(snap.workers == 1)
        #expect(snap.listeners == [
            ListenerConfig(host: "0.0.0.0", port: 443, proto: .https),
            ListenerConfig(host: "0.0.0.0", port: 80, proto: .http, httpsPort: 443),
        ])
        #expect(snap.timeouts == TimeoutSettings())
        #expect(snap.limits == LimitSettings())
        #expect(snap.tls.defaultDomain == nil)
        #expect(snap.domainsDirectory == root + "/config/domains.d")
        try #require(snap.domains.count == 1)
        let d = snap.domains[0]
        #expect(d.names == ["example.com", "www.example.com", "*.example.com"])
        #expect(d.certificate?.hasPrefix("/etc/letsencrypt/") == true)
        #expect(d.key?.hasPrefix("/etc/letsencrypt/") == true)
        #expect(d.maxBodyBytes == 10_485_760)
    }

    @Test func errorDescriptions() {
        #expect(ConfigError(file: "/a.toml", line: 3, column: 7, message: "bad").description == "/a.toml:3:7: bad")
        #expect(ConfigError(file: "/a.toml", line: 3, message: "bad").description == "/a.toml:3: bad")
        #expect(ConfigError(file: "/a.toml", key: "timeouts.idle", message: "bad").description == "/a.toml: timeouts.idle: bad")
        #expect(ConfigError(file: "/a.toml", message: "bad").description == "/a.toml: bad")
        let all = ConfigErrors([ConfigError(file: "/a", message: "x"), ConfigError(file: "/b", message: "y")])
        #expect(all.description == "/a: x\n/b: y")
    }

    @Test func hstsHeaderValues() {
        #expect(DomainConfig.hstsHeader(maxAge: 0, includeSubdomains: true, preload: true) == nil)
        #expect(DomainConfig.hstsHeader(maxAge: 5, includeSubdomains: false, preload: false) == "max-age=5")
    }
}

@Suite struct ReloadReuseTests {
    /// A main file and domains a.example and b.example.
    static func twoDomains() -> TempDir {
        let tmp = TempDir()
        tmp.write("gatehouse.toml", Fixtures.main)
        tmp.mkdirs("domains.d")
        tmp.write("domains.d/a.toml", Fixtures.domain.replacingFirst("example.com", "a.example"))
        tmp.write("domains.d/b.toml", Fixtures.domain.replacingFirst("example.com", "b.example"))
        return tmp
    }

    @Test func unchangedDomainFilesAreReusedChangedOnesParsed() throws {
        let tmp = Self.twoDomains()
        defer { tmp.remove() }
        let first = try ConfigLoader.load(path: tmp.path + "/gatehouse.toml")
        #expect(first.domainStamps.count == 2)

        // b changes (different size), c is new, a stays.
        tmp.write("domains.d/b.toml", Fixtures.domain.replacingFirst("example.com", "bb.example"))
        tmp.write("domains.d/c.toml", Fixtures.domain.replacingFirst("example.com", "c.example"))
        let second = try ConfigLoader.load(path: tmp.path + "/gatehouse.toml", previous: first)
        #expect(second.domains.map(\.primaryName) == ["a.example", "bb.example", "c.example"])
        #expect(second.domains.map(\.id) == [0, 1, 2])
        #expect(second.names.lookup("bb.example") == 1 && second.names.lookup("b.example") == nil)
        #expect(second.domainStamps[0] == first.domainStamps[0])
    }

    @Test func aReusedDomainStillClashesWithAChangedOne() throws {
        let tmp = Self.twoDomains()
        defer { tmp.remove() }
        let first = try ConfigLoader.load(path: tmp.path + "/gatehouse.toml")
        tmp.write("domains.d/b.toml", Fixtures.domain.replacingFirst("example.com", "a.example"))
        #expect(throws: ConfigErrors.self) {
            try ConfigLoader.load(path: tmp.path + "/gatehouse.toml", previous: first)
        }
    }
}

@Suite struct TenantSafetyConfigTests {
    @Test func safeDefaults() throws {
        let snap = try loadTree().result.get()
        #expect(!snap.domains[0].acceptAnyHost)
        #expect(!snap.domains[0].upgradeInsecureRequests)
        // No per-client cap unless asked for: a carrier-grade NAT shares one address.
        #expect(snap.limits.maxConnectionsPerClient == 0)
    }

    @Test func optIns() throws {
        let domain = Fixtures.domain + "accept_any_host = true\nupgrade_insecure_requests = true\n"
        let main = Fixtures.main + "[limits]\nmax_connections_per_client = 4096\n"
        let snap = try loadTree(main: main, domains: [("example.toml", domain)]).result.get()
        #expect(snap.domains[0].acceptAnyHost)
        #expect(snap.domains[0].upgradeInsecureRequests)
        #expect(snap.limits.maxConnectionsPerClient == 4096)
    }

    @Test func http2IsOnUnlessADomainTurnsItOff() throws {
        #expect(try loadTree().result.get().domains[0].http2)
        let domain = Fixtures.domain + "http2 = false\n"
        #expect(try !loadTree(domains: [("example.toml", domain)]).result.get().domains[0].http2)
    }

    @Test func stopGraceMayBeZero() throws {
        #expect(try loadTree().result.get().timeouts.stopGrace == 0)
        let main = Fixtures.main + "[timeouts]\nstop_grace = 0\n"
        #expect(try loadTree(main: main).result.get().timeouts.stopGrace == 0)
        let later = Fixtures.main + "[timeouts]\nstop_grace = 2.5\n"
        #expect(try loadTree(main: later).result.get().timeouts.stopGrace == 2.5)
    }
}
