import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import GatehouseConfig

/// The main fixture with an http listener too and an `[acme]` table whose
/// storage is relative (created inside the test's temp dir).
private let acmeMain = Fixtures.main + """
    [[listener]]
    address = "127.0.0.1:8080"
    protocol = "http"

    [acme]
    directory = "https://acme.test/directory"
    storage = "acme"

    """

private let acmeDomain = """
    names = ["example.com", "www.example.com"]
    backend = "127.0.0.1:8000"
    acme = true

    """

/// `acmeMain` with `[acme]`'s body replaced.
private func mainWithACME(_ body: String) -> String {
    Fixtures.main + "[[listener]]\naddress = \"127.0.0.1:8080\"\nprotocol = \"http\"\n\n[acme]\n" + body
}

private func acmeMainCase(_ label: String, _ body: String, key: String, _ fragment: String) -> ErrorCase {
    ErrorCase(label: label, main: mainWithACME(body), file: "gatehouse.toml", key: key, fragment: fragment)
}

private func acmeDomainCase(_ label: String, _ domain: String, main: String = acmeMain, key: String, _ fragment: String) -> ErrorCase {
    ErrorCase(label: label, main: main, domains: [("example.toml", domain)], file: "example.toml", key: key, fragment: fragment)
}

private let directory = "directory = \"https://acme.test/directory\"\n"

let acmeErrorCases: [ErrorCase] = [
    // Domain files
    acmeDomainCase("acme with certificate", acmeDomain + "certificate = \"c.pem\"\n", key: "certificate", "not allowed with acme = true"),
    acmeDomainCase("acme with key", acmeDomain + "key = \"k.pem\"\n", key: "key", "not allowed with acme = true"),
    acmeDomainCase("acme with a wildcard name", acmeDomain.replacingFirst("\"www.example.com\"", "\"*.example.com\""),
                   key: "names", "\"*.example.com\" is a wildcard"),
    acmeDomainCase("acme without [acme]", acmeDomain, main: Fixtures.main, key: "acme", "needs an [acme] table"),
    acmeDomainCase("acme wrong type", acmeDomain.replacingFirst("acme = true", "acme = \"yes\""), key: "acme", "expected a boolean"),
    acmeDomainCase("acme = false needs a certificate", acmeDomain.replacingFirst("acme = true", "acme = false"),
                   key: "certificate", "missing required key"),

    // [acme]
    acmeMainCase("unknown acme key", directory + "storage = \"acme\"\nemail = \"a@b.test\"\n", key: "acme.email", "unknown key"),
    acmeMainCase("directory missing", "storage = \"acme\"\n", key: "acme.directory", "missing required key"),
    acmeMainCase("directory http", "directory = \"http://acme.test/directory\"\nstorage = \"acme\"\n",
                 key: "acme.directory", "expected an https URL"),
    acmeMainCase("directory not a URL", "directory = \"acme.test\"\nstorage = \"acme\"\n", key: "acme.directory", "expected an https URL"),
    acmeMainCase("directory without host", "directory = \"https:///directory\"\nstorage = \"acme\"\n",
                 key: "acme.directory", "expected an https URL"),
    acmeMainCase("directory with space", "directory = \"https://acme.test/a b\"\nstorage = \"acme\"\n",
                 key: "acme.directory", "expected an https URL"),
    acmeMainCase("directory wrong type", "directory = 1\nstorage = \"acme\"\n", key: "acme.directory", "expected a string"),
    acmeMainCase("storage missing", directory, key: "acme.storage", "missing required key"),
    acmeMainCase("storage empty", directory + "storage = \"\"\n", key: "acme.storage", "must not be empty"),
    acmeMainCase("storage under a file", directory + "storage = \"gatehouse.toml/acme\"\n", key: "acme.storage", "cannot create directory"),
    acmeMainCase("storage is a file", directory + "storage = \"gatehouse.toml\"\n", key: "acme.storage", "not a directory"),
    // Even root cannot create files in /proc.
    acmeMainCase("storage not writable", directory + "storage = \"/proc\"\n", key: "acme.storage", "not writable"),
    acmeMainCase("storage cannot be created", directory + "storage = \"/proc/gatehouse-acme\"\n",
                 key: "acme.storage", "cannot create directory"),
    acmeMainCase("contact not mailto", directory + "storage = \"acme\"\ncontact = \"ops@example.net\"\n",
                 key: "acme.contact", "expected \"mailto:"),
    acmeMainCase("contact two addresses", directory + "storage = \"acme\"\ncontact = \"mailto:a@x.test,b@x.test\"\n",
                 key: "acme.contact", "invalid contact"),
    acmeMainCase("contact in array", directory + "storage = \"acme\"\ncontact = [\"mailto:a@x.test\", \"tel:+1\"]\n",
                 key: "acme.contact", "\"tel:+1\""),
    acmeMainCase("trust missing file", directory + "storage = \"acme\"\ntrust = \"nope.pem\"\n", key: "acme.trust", "cannot open"),
    acmeMainCase("trust is a directory", directory + "storage = \"acme\"\ntrust = \"domains.d\"\n", key: "acme.trust", "not a regular file"),
    acmeMainCase("challenges unknown", directory + "storage = \"acme\"\nchallenges = [\"dns-01\"]\n",
                 key: "acme.challenges", "unknown challenge \"dns-01\""),
    acmeMainCase("challenges empty", directory + "storage = \"acme\"\nchallenges = []\n", key: "acme.challenges", "at least one"),
    acmeMainCase("challenges twice", directory + "storage = \"acme\"\nchallenges = [\"http-01\", \"http-01\"]\n",
                 key: "acme.challenges", "listed twice"),
    acmeMainCase("orders_per_3h zero", directory + "storage = \"acme\"\norders_per_3h = 0\n",
                 key: "acme.orders_per_3h", "between 1 and 1000000"),
    acmeMainCase("orders_per_3h not a number", directory + "storage = \"acme\"\norders_per_3h = \"many\"\n",
                 key: "acme.orders_per_3h", "an integer"),
    acmeMainCase("challenges wrong type", directory + "storage = \"acme\"\nchallenges = \"http-01\"\n",
                 key: "acme.challenges", "expected an array of strings"),
    ErrorCase(label: "http-01 without an http listener",
              main: Fixtures.main + "[acme]\n" + directory + "storage = \"acme\"\nchallenges = [\"http-01\"]\n",
              file: "gatehouse.toml", key: "acme.challenges", fragment: "http-01 needs an http listener"),
    ErrorCase(label: "acme not a table", main: "acme = true\n" + Fixtures.main, file: "gatehouse.toml", key: "acme",
              fragment: "expected a table"),
]

@Suite struct ACMEConfigTests {
    @Test(arguments: acmeErrorCases)
    func reportsError(_ c: ErrorCase) {
        expectError(c)
    }

    @Test func acmeDomainLoadsWithoutCertificates() throws {
        let (dir, result) = loadTree(main: acmeMain, domains: [("a.toml", Fixtures.domain), ("b.toml", acmeDomain.replacingFirst("example.com", "b.test"))])
        let snap = try result.get()
        let acme = try #require(snap.acme)
        #expect(acme.directory == "https://acme.test/directory")
        #expect(acme.storage == dir + "/acme")
        #expect(acme.contact.isEmpty)
        #expect(acme.trust == nil)
        #expect(acme.challenges == [.tlsALPN01, .http01])
        #expect(snap.domains.map(\.acme) == [false, true])
        let b = snap.domains[1]
        #expect(b.certificates.isEmpty)
        #expect(b.certificate == nil && b.key == nil)
        #expect(b.names == ["b.test", "www.example.com"])
        #expect(snap.domains[0].certificates.count == 1)
    }

    @Test func everyKeyParsed() throws {
        let tmp = TempDir()
        defer { tmp.remove() }
        tmp.write("gatehouse.toml", mainWithACME("""
            directory = "HTTPS://ca.test:14000/dir?x=1"
            contact = "mailto:ops@example.net"
            storage = "state/acme"
            trust = "ca.pem"
            challenges = ["http-01", "tls-alpn-01"]
            orders_per_3h = 5000

            """))
        tmp.write("ca.pem", "not parsed here\n")
        tmp.mkdirs("domains.d")
        tmp.write("domains.d/a.toml", acmeDomain)
        let snap = try ConfigLoader.load(path: tmp.path + "/gatehouse.toml")
        let acme = try #require(snap.acme)
        #expect(acme.directory == "HTTPS://ca.test:14000/dir?x=1")
        #expect(acme.contact == ["mailto:ops@example.net"])
        #expect(acme.storage == tmp.path + "/state/acme")
        #expect(acme.trust == tmp.path + "/ca.pem")
        #expect(acme.challenges == [.http01, .tlsALPN01])
        #expect(acme.ordersPer3h == 5000)
    }

    @Test func storageIsCreatedOwnerOnly() throws {
        let tmp = TempDir()
        defer { tmp.remove() }
        tmp.write("gatehouse.toml", mainWithACME(directory + "storage = \"var/lib/acme\"\n"))
        tmp.mkdirs("domains.d")
        tmp.write("domains.d/a.toml", Fixtures.domain)
        let old = umask(0)
        defer { umask(old) }
        _ = try ConfigLoader.load(path: tmp.path + "/gatehouse.toml")
        for dir in ["/var", "/var/lib", "/var/lib/acme"] {
            var st = stat()
            #expect(stat(tmp.path + dir, &st) == 0)
            #expect(st.st_mode & 0o777 == 0o700, "\(dir): \(String(st.st_mode & 0o777, radix: 8))")
        }
        // The write probe leaves nothing behind.
        let listing = FileSystem.listFiles(tmp.path + "/var/lib/acme", suffix: "")
        #expect((try? listing.get()) == [])
    }

    @Test func existingStorageIsKept() throws {
        let tmp = TempDir()
        defer { tmp.remove() }
        tmp.mkdirs("acme")
        chmod(tmp.path + "/acme", 0o750)
        tmp.write("gatehouse.toml", mainWithACME(directory + "storage = \"acme\"\n"))
        tmp.mkdirs("domains.d")
        _ = try ConfigLoader.load(path: tmp.path + "/gatehouse.toml")
        var st = stat()
        #expect(stat(tmp.path + "/acme", &st) == 0 && st.st_mode & 0o777 == 0o750)
    }

    @Test func unchangedACMEDomainIsRecheckedWhenTheTableGoes() throws {
        let tmp = TempDir()
        defer { tmp.remove() }
        tmp.write("gatehouse.toml", acmeMain)
        tmp.mkdirs("domains.d")
        tmp.write("domains.d/a.toml", acmeDomain)
        let first = try ConfigLoader.load(path: tmp.path + "/gatehouse.toml")
        tmp.write("gatehouse.toml", Fixtures.main)
        do {
            _ = try ConfigLoader.load(path: tmp.path + "/gatehouse.toml", previous: first)
            Issue.record("expected an error")
        } catch {
            #expect(error.errors.map(\.description) == [
                tmp.path + "/domains.d/a.toml: acme: needs an [acme] table in \(tmp.path)/gatehouse.toml (directory and storage)",
            ])
        }
    }

    @Test func eachProblemOfOneFileReported() throws {
        let domain = """
            names = ["*.example.com", "example.com"]
            backend = "127.0.0.1:8000"
            certificate = "c.pem"
            key = "k.pem"
            acme = true

            """
        let (_, result) = loadTree(main: acmeMain, domains: [("a.toml", domain)])
        guard case .failure(let errors) = result else { Issue.record("expected errors"); return }
        #expect(errors.errors.map(\.key).sorted { ($0 ?? "") < ($1 ?? "") } == ["certificate", "key", "names"])
    }

    @Test func missingTableReportedBesideOtherErrors() throws {
        let (dir, result) = loadTree(main: Fixtures.main, domains: [("a.toml", acmeDomain + "tls_profile = \"old\"\n")])
        guard case .failure(let errors) = result else { Issue.record("expected errors"); return }
        #expect(errors.errors.map(\.key) == ["acme", "tls_profile"])
        #expect(errors.errors.allSatisfy { $0.file == dir + "/domains.d/a.toml" })
    }

    @Test func wildcardsStayAllowedWithoutACME() throws {
        let (_, result) = loadTree(main: acmeMain, domains: [("a.toml", Fixtures.domain.replacingFirst("\"example.com\"", "\"*.example.com\""))])
        #expect(try result.get().domains[0].names == ["*.example.com"])
    }

    @Test func directorySyntax() {
        for good in ["https://a.test/dir", "https://a.test", "https://127.0.0.1:14000/dir", "https://[::1]:14000/dir", "Https://a.test/d?x=1"] {
            #expect((try? Syntax.acmeDirectory(good).get()) == good, "\(good)")
        }
        for bad in ["", "http://a.test/dir", "https://", "https:///dir", "https://u@a.test/dir", "https://a.test/d#f",
                    "https://a.test/\u{7f}", "ftp://a.test", " https://a.test/dir", "https://:443/dir"] {
            #expect((try? Syntax.acmeDirectory(bad).get()) == nil, "\(bad)")
        }
    }

    @Test func contactSyntax() {
        for good in ["mailto:a@b.test", "mailto:ops+acme@example.net"] {
            #expect((try? Syntax.acmeContact(good).get()) == good, "\(good)")
        }
        for bad in ["", "a@b.test", "mailto:", "mailto:a", "mailto:@b.test", "mailto:a@", "mailto:a@b@c", "mailto:a@b.test?subject=x",
                    "mailto:a@b.test,c@d.test", "mailto:a b@c.test", "tel:+15551234"] {
            #expect((try? Syntax.acmeContact(bad).get()) == nil, "\(bad)")
        }
    }
}
