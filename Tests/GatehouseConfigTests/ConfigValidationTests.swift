import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import GatehouseConfig

/// One invalid configuration and what its error must say.
struct ErrorCase: Sendable, CustomTestStringConvertible {
    var label: String
    var main: String = Fixtures.main
    var domains: [(String, String)] = [("example.toml", Fixtures.domain)]
    var createDomainsDir = true
    /// Base name of the file the error must name.
    var file: String
    /// Key path that must appear (nil for syntax errors).
    var key: String?
    var fragment: String

    var testDescription: String { label }
}

private func mainCase(_ label: String, _ main: String, key: String?, _ fragment: String) -> ErrorCase {
    ErrorCase(label: label, main: main, file: "gatehouse.toml", key: key, fragment: fragment)
}

private func listenerCase(_ label: String, _ body: String, key: String, _ fragment: String) -> ErrorCase {
    mainCase(label, "domains_dir = \"domains.d\"\n" + body, key: key, fragment)
}

private func domainCase(_ label: String, _ domain: String, key: String?, _ fragment: String) -> ErrorCase {
    ErrorCase(label: label, domains: [("example.toml", domain)], file: "example.toml", key: key, fragment: fragment)
}

/// The valid fixture domain with one line replaced/added.
private func domainWith(_ extra: String, without: String? = nil) -> String {
    var lines = Fixtures.domain.split(separator: "\n").map(String.init)
    if let without { lines.removeAll { $0.hasPrefix(without + " ") } }
    return (lines + [extra]).joined(separator: "\n") + "\n"
}

private let listener = "[[listener]]\naddress = \"127.0.0.1:8443\"\nprotocol = \"https\"\n"

let errorCases: [ErrorCase] = [
    // Main file
    mainCase("main syntax error", "workers = 1\nworkers = \n" + Fixtures.main, key: nil, "gatehouse.toml:2:"),
    mainCase("unknown top-level key", "wrkers = 2\n" + Fixtures.main, key: "wrkers", "unknown key"),
    mainCase("unknown timeouts key", Fixtures.main + "[timeouts]\nhandshak = 1\n", key: "timeouts.handshak", "unknown key"),
    mainCase("unknown limits key", Fixtures.main + "[limits]\nmax_body = 1\n", key: "limits.max_body", "unknown key"),
    mainCase("unknown tls key", Fixtures.main + "[tls]\ndefault = \"example.com\"\n", key: "tls.default", "unknown key"),
    mainCase("unknown section", Fixtures.main + "[tsl]\ndefault_domain = \"example.com\"\n", key: "tsl", "unknown key"),
    listenerCase("unknown listener key", listener + "adress = \"1.2.3.4:1\"\n", key: "listener[0].adress", "unknown key"),
    mainCase("workers wrong type", Fixtures.main.replacingFirst("domains_dir", "workers = \"2\"\ndomains_dir"), key: "workers", "expected an integer, got string"),
    mainCase("workers negative", "workers = -1\n" + Fixtures.main, key: "workers", "between 0 and"),
    mainCase("domains_dir wrong type", "domains_dir = 5\n" + listener, key: "domains_dir", "expected a string"),
    mainCase("timeout wrong type", Fixtures.main + "[timeouts]\nidle = \"60\"\n", key: "timeouts.idle", "expected a number, got string"),
    mainCase("timeout zero", Fixtures.main + "[timeouts]\nhandshake = 0\n", key: "timeouts.handshake", "positive"),
    mainCase("timeout negative", Fixtures.main + "[timeouts]\ndrain = -1.5\n", key: "timeouts.drain", "positive"),
    mainCase("timeout huge", Fixtures.main + "[timeouts]\nidle = 60000000\n", key: "timeouts.idle", "at most"),
    mainCase("timeouts not a table", "timeouts = 5\n" + Fixtures.main, key: "timeouts", "expected a table"),
    mainCase("limit zero", Fixtures.main + "[limits]\nmax_header_count = 0\n", key: "limits.max_header_count", "between 1 and"),
    mainCase("limit wrong type", Fixtures.main + "[limits]\nmax_connections = 1.5\n", key: "limits.max_connections", "expected an integer"),
    listenerCase("listener missing protocol", "[[listener]]\naddress = \"127.0.0.1:8443\"\n", key: "listener[0].protocol", "missing required key"),
    listenerCase("listener missing address", "[[listener]]\nprotocol = \"https\"\n", key: "listener[0].address", "missing required key"),
    listenerCase("address without port", "[[listener]]\naddress = \"0.0.0.0\"\nprotocol = \"https\"\n", key: "listener[0].address", "invalid address"),
    listenerCase("address hostname", "[[listener]]\naddress = \"localhost:443\"\nprotocol = \"https\"\n", key: "listener[0].address", "invalid address"),
    listenerCase("address bad IPv4", "[[listener]]\naddress = \"300.0.0.1:443\"\nprotocol = \"https\"\n", key: "listener[0].address", "invalid address"),
    listenerCase("address bare IPv6", "[[listener]]\naddress = \":::443\"\nprotocol = \"https\"\n", key: "listener[0].address", "invalid address"),
    listenerCase("address bad IPv6", "[[listener]]\naddress = \"[::g]:443\"\nprotocol = \"https\"\n", key: "listener[0].address", "not an IPv6 address"),
    listenerCase("port zero", "[[listener]]\naddress = \"0.0.0.0:0\"\nprotocol = \"https\"\n", key: "listener[0].address", "port must be 1-65535"),
    listenerCase("port too big", "[[listener]]\naddress = \"[::]:65536\"\nprotocol = \"https\"\n", key: "listener[0].address", "port must be 1-65535"),
    listenerCase("port not numeric", "[[listener]]\naddress = \"0.0.0.0:https\"\nprotocol = \"https\"\n", key: "listener[0].address", "port must be 1-65535"),
    listenerCase("duplicate address", listener + listener, key: "listener[1].address", "already used by listener[0]"),
    listenerCase("duplicate IPv6 spelled differently",
                 "[[listener]]\naddress = \"[::0]:443\"\nprotocol = \"https\"\n[[listener]]\naddress = \"[0::]:443\"\nprotocol = \"https\"\n",
                 key: "listener[1].address", "already used"),
    listenerCase("unknown protocol", "[[listener]]\naddress = \"0.0.0.0:21\"\nprotocol = \"ftp\"\n", key: "listener[0].protocol", "unknown protocol \"ftp\""),
    listenerCase("https_port on https", listener + "https_port = 443\n", key: "listener[0].https_port", "only valid for http listeners"),
    listenerCase("https_port out of range", "[[listener]]\naddress = \"0.0.0.0:80\"\nprotocol = \"http\"\nhttps_port = 0\n", key: "listener[0].https_port", "1-65535"),
    mainCase("zero listeners", "domains_dir = \"domains.d\"\n", key: "listener", "at least one [[listener]]"),
    mainCase("empty listener array", "domains_dir = \"domains.d\"\nlistener = []\n", key: "listener", "at least one [[listener]]"),
    mainCase("listener as single table", "domains_dir = \"domains.d\"\n[listener]\naddress = \"0.0.0.0:443\"\nprotocol = \"https\"\n", key: "listener", "expected an array of tables"),
    mainCase("default_domain not configured", Fixtures.main + "[tls]\ndefault_domain = \"example.net\"\n", key: "tls.default_domain", "not one of the configured names"),
    listenerCase("sni_fallback_profile on http", "[[listener]]\naddress = \"0.0.0.0:80\"\nprotocol = \"http\"\nsni_fallback_profile = \"legacy\"\n",
                 key: "listener[0].sni_fallback_profile", "only valid for https listeners"),
    listenerCase("sni_fallback_profile unknown", listener + "sni_fallback_profile = \"old\"\n",
                 key: "listener[0].sni_fallback_profile", "unknown profile \"old\""),
    mainCase("sni_fallback_profile without default_domain", Fixtures.main + "sni_fallback_profile = \"legacy\"\n",
             key: "listener", "needs [tls] default_domain"),
    mainCase("ticket_key_file empty", Fixtures.main + "[tls]\nticket_key_file = \"\"\n", key: "tls.ticket_key_file", "must not be empty"),
    mainCase("default_domain wildcard", Fixtures.main + "[tls]\ndefault_domain = \"*.example.com\"\n", key: "tls.default_domain", "wildcard"),
    ErrorCase(label: "domains_dir missing", main: Fixtures.main.replacingFirst("domains.d", "nowhere"), domains: [],
              file: "gatehouse.toml", key: "domains_dir", fragment: "does not exist"),
    ErrorCase(label: "domains_dir default missing", main: listener, domains: [], createDomainsDir: false,
              file: "gatehouse.toml", key: "domains_dir", fragment: "does not exist"),
    ErrorCase(label: "domains_dir is a file", main: Fixtures.main.replacingFirst("domains.d", "gatehouse.toml"), domains: [],
              file: "gatehouse.toml", key: "domains_dir", fragment: "not a directory"),

    // Domain files
    domainCase("domain syntax error", Fixtures.domain + "tls_profile = modern\n", key: nil, "example.toml:5"),
    domainCase("domain duplicate key", Fixtures.domain + "key = \"other.pem\"\n", key: nil, "example.toml:5"),
    domainCase("unknown domain key", Fixtures.domain + "tls_profil = \"modern\"\n", key: "tls_profil", "unknown key"),
    domainCase("names wrong type", domainWith("names = \"example.com\"", without: "names"), key: "names", "expected an array of strings, got string"),
    domainCase("names element wrong type", domainWith("names = [\"example.com\", 5]", without: "names"), key: "names", "element 1 is integer"),
    domainCase("names empty", domainWith("names = []", without: "names"), key: "names", "at least one name"),
    domainCase("names missing", domainWith("", without: "names"), key: "names", "missing required key"),
    domainCase("backend missing", domainWith("", without: "backend"), key: "backend", "missing required key"),
    domainCase("certificate missing", domainWith("", without: "certificate"), key: "certificate", "missing required key"),
    domainCase("key missing", domainWith("", without: "key"), key: "key", "missing required key"),
    domainCase("certificate empty", domainWith("certificate = \"\"", without: "certificate"), key: "certificate", "must not be empty"),
    domainCase("key wrong type", domainWith("key = 1", without: "key"), key: "key", "expected a string or an array of strings, got integer"),
    domainCase("certificate array element wrong type", domainWith("certificate = [\"a.pem\", 2]", without: "certificate"), key: "certificate", "element 1 is integer"),
    domainCase("certificate array empty", domainWith("certificate = []", without: "certificate"), key: "certificate", "at least one file"),
    domainCase("more certificates than keys",
               domainWith("certificate = [\"ec.pem\", \"rsa.pem\"]", without: "certificate"), key: "key", "lists 1 file(s) for 2 certificate(s)"),
    domainCase("backend URL", domainWith("backend = \"http://127.0.0.1:8000\"", without: "backend"), key: "backend", "invalid backend"),
    domainCase("backend no port", domainWith("backend = \"127.0.0.1\"", without: "backend"), key: "backend", "invalid backend"),
    domainCase("backend port zero", domainWith("backend = \"127.0.0.1:0\"", without: "backend"), key: "backend", "port must be 1-65535"),
    domainCase("backend bare IPv6", domainWith("backend = \"::1:8000\"", without: "backend"), key: "backend", "invalid backend"),
    domainCase("backend bad host", domainWith("backend = \"bad_host:80\"", without: "backend"), key: "backend", "not a valid host name"),
    domainCase("backend relative unix", domainWith("backend = \"unix:run/x.sock\"", without: "backend"), key: "backend", "must be absolute"),
    domainCase("backend long unix", domainWith("backend = \"unix:/\(String(repeating: "x", count: 120))\"", without: "backend"), key: "backend", "longer than 107"),
    domainCase("backend wrong type", domainWith("backend = 8000", without: "backend"), key: "backend", "expected a string, got integer"),
    domainCase("name underscore", domainWith("names = [\"exa_mple.com\"]", without: "names"), key: "names", "invalid name \"exa_mple.com\""),
    domainCase("name double wildcard", domainWith("names = [\"*.*.example.com\"]", without: "names"), key: "names", "wildcard"),
    domainCase("name inner wildcard", domainWith("names = [\"a.*.example.com\"]", without: "names"), key: "names", "wildcard"),
    domainCase("name partial wildcard", domainWith("names = [\"w*.example.com\"]", without: "names"), key: "names", "wildcard"),
    domainCase("name leading hyphen", domainWith("names = [\"-a.example.com\"]", without: "names"), key: "names", "hyphen"),
    domainCase("name long label", domainWith("names = [\"\(String(repeating: "a", count: 64)).com\"]", without: "names"), key: "names", "63"),
    domainCase("name too long", domainWith("names = [\"\(String(repeating: "abcdefghi.", count: 26))com\"]", without: "names"), key: "names", "253"),
    domainCase("name empty label", domainWith("names = [\"example..com\"]", without: "names"), key: "names", "empty label"),
    domainCase("name empty", domainWith("names = [\"\"]", without: "names"), key: "names", "invalid name"),
    domainCase("name space", domainWith("names = [\"ex ample.com\"]", without: "names"), key: "names", "not allowed"),
    domainCase("name unicode", domainWith("names = [\"bücher.de\"]", without: "names"), key: "names", "ASCII"),
    domainCase("name IP address", domainWith("names = [\"192.0.2.1\"]", without: "names"), key: "names", "all digits"),
    domainCase("name twice in one file", domainWith("names = [\"example.com\", \"Example.COM.\"]", without: "names"), key: "names", "listed twice"),
    domainCase("unknown tls_profile", domainWith("tls_profile = \"x\""), key: "tls_profile", "unknown profile \"x\" (modern, legacy, strict)"),
    domainCase("redirect_http wrong type", domainWith("redirect_http = \"yes\""), key: "redirect_http", "expected a boolean"),
    domainCase("hsts_max_age negative", domainWith("hsts_max_age = -1"), key: "hsts_max_age", ">= 0"),
    domainCase("preload without include_subdomains", domainWith("hsts_preload = true"), key: "hsts_preload", "requires hsts_include_subdomains"),
    domainCase("preload with short max_age",
               domainWith("hsts_preload = true\nhsts_include_subdomains = true\nhsts_max_age = 86400"),
               key: "hsts_preload", "requires hsts_max_age >= 31536000"),
    domainCase("max_body_bytes zero", domainWith("max_body_bytes = 0"), key: "max_body_bytes", "> 0"),
    domainCase("max_body_bytes wrong type", domainWith("max_body_bytes = \"10M\""), key: "max_body_bytes", "expected an integer"),
    domainCase("accept_any_host wrong type", domainWith("accept_any_host = 1"), key: "accept_any_host", "expected a boolean"),
    domainCase("http2 wrong type", domainWith("http2 = 1"), key: "http2", "expected a boolean"),
    domainCase("upgrade_insecure_requests wrong type", domainWith("upgrade_insecure_requests = \"on\""),
               key: "upgrade_insecure_requests", "expected a boolean"),
    mainCase("stop_grace negative", Fixtures.main + "[timeouts]\nstop_grace = -1\n",
             key: "timeouts.stop_grace", "positive number"),
    mainCase("drain zero", Fixtures.main + "[timeouts]\ndrain = 0\n", key: "timeouts.drain", "positive number"),
    mainCase("per-client cap negative", Fixtures.main + "[limits]\nmax_connections_per_client = -1\n",
             key: "limits.max_connections_per_client", "between 0 and"),
]

/// Loads `c`'s tree and expects an error naming its file, key and fragment.
func expectError(_ c: ErrorCase) {
    let (dir, result) = loadTree(main: c.main, domains: c.domains, createDomainsDir: c.createDomainsDir)
    guard case .failure(let errors) = result else {
        Issue.record("\(c.label): expected an error")
        return
    }
    let path = c.file == "gatehouse.toml" ? dir + "/gatehouse.toml" : dir + "/domains.d/" + c.file
    let match = errors.errors.first { e in
        e.file == path && e.key == c.key && e.description.contains(c.fragment)
            && e.description.contains(c.file) && (c.key.map { e.description.contains($0) } ?? true)
    }
    #expect(match != nil, "\(c.label): got\n\(errors.description)")
    if c.key == nil {
        // Syntax errors carry the parser's position instead of a key.
        #expect(match?.line != nil && match?.column != nil)
    }
}

extension String {
    func replacingFirst(_ target: String, _ replacement: String) -> String {
        guard let r = range(of: target) else { return self }
        var copy = self
        copy.replaceSubrange(r, with: replacement)
        return copy
    }
}

@Suite struct ConfigValidationTests {
    @Test(arguments: errorCases)
    func reportsError(_ c: ErrorCase) throws {
        expectError(c)
    }

    @Test func duplicateNameAcrossFilesNamesBothFiles() throws {
        let second = domainWith("names = [\"www.example.com\", \"EXAMPLE.com\"]", without: "names")
        let (dir, result) = loadTree(domains: [("b-second.toml", second), ("a-first.toml", Fixtures.domain)])
        guard case .failure(let errors) = result else { Issue.record("expected an error"); return }
        #expect(errors.errors.count == 1)
        let e = try #require(errors.errors.first)
        #expect(e.file == dir + "/domains.d/b-second.toml")
        #expect(e.key == "names")
        #expect(e.description.contains("b-second.toml"))
        #expect(e.description.contains(dir + "/domains.d/a-first.toml"))
        #expect(e.description.contains("\"example.com\""))
    }

    @Test func everyFileIsCheckedAndAllErrorsReported() throws {
        let main = "bogus = 1\n" + Fixtures.main + "[timeouts]\nidle = 0\n"
        let (dir, result) = loadTree(main: main, domains: [
            ("a.toml", domainWith("tls_profile = \"x\"")),
            ("b.toml", "names = [\n"),
            ("c.toml", Fixtures.domain.replacingFirst("example.com", "c.example.com")),
            ("d.toml", domainWith("hsts_preload = true", without: "names") + "names = [\"d.example.com\"]\nextra = 1\n"),
        ])
        guard case .failure(let errors) = result else { Issue.record("expected errors"); return }
        let described = errors.errors.map { "\($0.file.replacingFirst(dir + "/", "")) \($0.key ?? "-")" }
        #expect(described.contains("gatehouse.toml bogus"))
        #expect(described.contains("gatehouse.toml timeouts.idle"))
        #expect(described.contains("domains.d/a.toml tls_profile"))
        #expect(described.contains("domains.d/b.toml -"))
        #expect(described.contains("domains.d/d.toml extra"))
        #expect(described.contains("domains.d/d.toml hsts_preload"))
        #expect(!described.contains { $0.hasPrefix("domains.d/c.toml") })
        #expect(errors.errors.count == 6)
        // One line per error.
        #expect(errors.description.split(separator: "\n").count == 6)
    }

    @Test func defaultDomainCheckedAgainstFailedFilesToo() throws {
        // example.com's file has an unrelated error; default_domain must not also fail.
        let (_, result) = loadTree(
            main: Fixtures.main + "[tls]\ndefault_domain = \"example.com\"\n",
            domains: [("example.toml", domainWith("tls_profile = \"x\""))])
        guard case .failure(let errors) = result else { Issue.record("expected an error"); return }
        #expect(errors.errors.map(\.key) == ["tls_profile"])
    }

    @Test func defaultDomainCoveredByWildcardIsAccepted() throws {
        let (_, result) = loadTree(
            main: Fixtures.main + "[tls]\ndefault_domain = \"fallback.example.com\"\n",
            domains: [("example.toml", domainWith("names = [\"*.example.com\"]", without: "names"))])
        let snap = try result.get()
        #expect(snap.defaultDomainID == 0)
    }

    @Test func missingMainFile() {
        do {
            _ = try ConfigLoader.load(path: "/nonexistent-gatehouse-dir/gatehouse.toml")
            Issue.record("expected an error")
        } catch {
            #expect(error.errors.count == 1)
            #expect(error.description.hasPrefix("/nonexistent-gatehouse-dir/gatehouse.toml: cannot open"))
        }
    }

    @Test func nulAndInvalidUTF8AreRejected() {
        let (_, r1) = loadTree(main: "# comment\n# x\0y\n" + Fixtures.main)
        guard case .failure(let e1) = r1 else { Issue.record("expected an error"); return }
        #expect(e1.description.contains("gatehouse.toml:2: NUL byte"))
    }

    @Test func invalidUTF8IsRejected() {
        let tmp = TempDir()
        defer { tmp.remove() }
        tmp.write("gatehouse.toml", Fixtures.main)
        tmp.mkdirs("domains.d")
        let file = tmp.write("domains.d/example.toml", Fixtures.domain)
        // Append a lone continuation byte.
        let fd = open(file, O_WRONLY | O_APPEND)
        var bad: [UInt8] = [UInt8(ascii: "#"), 0x80, UInt8(ascii: "\n")]
        _ = write(fd, &bad, bad.count)
        close(fd)
        do {
            _ = try ConfigLoader.load(path: tmp.path + "/gatehouse.toml")
            Issue.record("expected an error")
        } catch {
            #expect(error.description == tmp.path + "/domains.d/example.toml: not valid UTF-8")
        }
    }
}
