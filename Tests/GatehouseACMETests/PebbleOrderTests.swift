import Foundation
import Testing
@testable import GatehouseACME

/// Debian's pebble-challtestsrv on loopback: the DNS pebble asks (every
/// name is 127.0.0.1) and the HTTP-01 and TLS-ALPN-01 servers pebble
/// validates against, fed through its management API.
final class ChallTestSrv {
    let scratch: Scratch
    let process: Process
    let http01Port: Int, tlsALPN01Port: Int, dnsPort: Int, managementPort: Int

    static let binary = "/usr/bin/pebble-challtestsrv"
    static var installed: Bool { FileManager.default.isExecutableFile(atPath: binary) }

    init() throws {
        scratch = try Scratch()
        var lastError = ""
        for _ in 0 ..< 5 {
            let ports = (0 ..< 4).map { _ in Pebble.freePort() }
            let log = scratch.path + "/challtestsrv-\(ports[3]).log"
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Self.binary)
            process.arguments = ["-http01", "127.0.0.1:\(ports[0])", "-tlsalpn01", "127.0.0.1:\(ports[1])", "-dns01", "127.0.0.1:\(ports[2])",
                                 "-https01", "", "-management", "127.0.0.1:\(ports[3])", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            let deadline = Date().addingTimeInterval(15)
            func up() -> Bool { Pebble.accepts(ports[3]) && Pebble.accepts(ports[0]) && Pebble.accepts(ports[1]) }
            while Date() < deadline, process.isRunning, !up() { usleep(50_000) }
            if process.isRunning, up() {
                self.process = process
                (http01Port, tlsALPN01Port, dnsPort, managementPort) = (ports[0], ports[1], ports[2], ports[3])
                return
            }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            lastError = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        }
        scratch.remove()
        throw ACMEError("pebble-challtestsrv did not start: \(lastError)")
    }

    func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        scratch.remove()
    }

    /// POST `body` as JSON to the management API's `path`.
    func manage(_ path: String, _ body: [String: String]) throws {
        let json = String(decoding: try JSONSerialization.data(withJSONObject: body), as: UTF8.self)
        let result = try run("/usr/bin/curl", ["-sS", "-f", "-X", "POST", "-d", json, "http://127.0.0.1:\(managementPort)\(path)"])
        guard result.status == 0 else { throw ACMEError("challtestsrv \(path): \(result.output)") }
    }
}

/// Runs a program, returning its status and its stdout and stderr.
func run(_ program: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: program)
    process.arguments = arguments
    let out = Pipe()
    process.standardOutput = out
    process.standardError = out
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Publishes through challtestsrv (or, `publishNothing`, does not), and
/// records every call.
final class TestSolver: ChallengeSolver {
    let server: ChallTestSrv
    var publishNothing = false
    var published: [PendingChallenge] = []
    var unpublished: [PendingChallenge] = []

    init(server: ChallTestSrv) { self.server = server }

    func publish(_ c: PendingChallenge) throws {
        published.append(c)
        if publishNothing { return }
        switch c.kind {
        case .http01: try server.manage("/add-http01", ["token": c.token, "content": c.keyAuthorization])
        // challtestsrv makes the RFC 8737 certificate from the key authorization.
        case .tlsALPN01: try server.manage("/add-tlsalpn01", ["host": c.name, "content": c.keyAuthorization])
        }
    }

    func unpublish(_ c: PendingChallenge) {
        unpublished.append(c)
        switch c.kind {
        case .http01: try? server.manage("/del-http01", ["token": c.token])
        case .tlsALPN01: try? server.manage("/del-tlsalpn01", ["host": c.name])
        }
    }
}

/// Whole orders against pebble, validated over loopback by challtestsrv;
/// pebble's 5 % nonce rejection stays on.
@Suite(.serialized, .enabled(if: Pebble.installed && ChallTestSrv.installed, "pebble is not installed (apt install pebble)"))
struct PebbleOrderTests {
    struct Setup {
        let pebble: Pebble
        let server: ChallTestSrv
        let client: ACMEClient
        let solver: TestSolver
    }

    /// challtestsrv and pebble up, an account registered; both stopped after `body`.
    func withPebble(environment: [String: String] = [:], _ body: (Setup) throws -> Void) throws {
        let server = try ChallTestSrv()
        defer { server.stop() }
        let pebble = try Pebble(challenges: server, environment: environment)
        defer { pebble.stop() }
        let client = ACMEClient(directoryURL: pebble.directoryURL, accountKey: try PrivateKey.generateP256(),
                                http: try ACMEHTTPClient(options: .init(trust: pebble.ca, userAgent: "Gatehouse-test")))
        try client.newAccount(contact: [])
        try body(Setup(pebble: pebble, server: server, client: client, solver: TestSolver(server: server)))
    }

    func issuer(_ s: Setup, _ challenges: [ChallengeKind]) -> ACMEIssuer {
        ACMEIssuer(client: s.client, solver: s.solver, challenges: challenges, pollTimeout: 30, pollInterval: 0.2)
    }

    /// OpenSSL's CLI verifies the chain up to pebble's root and shows the
    /// names; returns the leaf's `-text`.
    @discardableResult
    func verify(_ s: Setup, _ issued: IssuedCertificate, names: [String]) throws -> String {
        let d = s.pebble.scratch.path
        let chain = try s.pebble.scratch.write("chain-\(UUID().uuidString).pem", issued.chainPEM)
        let root = d + "/root-\(UUID().uuidString).pem"
        let fetched = try run("/usr/bin/curl", ["-sS", "-f", "--cacert", s.pebble.ca, "-o", root,
                                                "https://127.0.0.1:\(s.pebble.managementPort)/roots/0"])
        #expect(fetched.status == 0, "\(fetched.output)")
        let leaf = d + "/leaf-\(UUID().uuidString).pem"
        try openssl(["x509", "-in", chain, "-out", leaf])   // the first certificate
        let verified = try openssl(["verify", "-CAfile", root, "-untrusted", chain, leaf], expectSuccess: false).output
        #expect(verified.contains(": OK"), "\(verified)")
        let san = try openssl(["x509", "-in", leaf, "-noout", "-ext", "subjectAltName"]).output
        for name in names { #expect(san.contains("DNS:\(name)"), "\(san)") }
        #expect(Set(issued.leaf.dnsNames) == Set(names))
        #expect(String(decoding: issued.chainPEM, as: UTF8.self).components(separatedBy: "-----BEGIN CERTIFICATE-----").count - 1 >= 2)
        return try openssl(["x509", "-in", leaf, "-noout", "-text"]).output
    }

    @Test func http01TwoNames() throws {
        try withPebble { s in
            let names = ["www.gatehouse.test", "gatehouse.test"]
            let issued = try issuer(s, [.http01]).issue(names: names, key: try PrivateKey.generateP256())
            try verify(s, issued, names: names)
            #expect(s.solver.published.count == 2)
            #expect(s.solver.published.allSatisfy { $0.kind == .http01 })
            #expect(Set(s.solver.published.map(\.name)) == Set(names))
            #expect(s.solver.unpublished == s.solver.published)
            let thumbprint = try s.client.accountKey.jwk().thumbprint
            #expect(s.solver.published.allSatisfy { $0.keyAuthorization == $0.token + "." + thumbprint })
            #expect(issued.leaf.notAfter > issued.leaf.notBefore)
            #expect(issued.leaf.ariCertID != nil)
            #expect(issued.orderURL.hasPrefix("https://127.0.0.1:\(s.pebble.port)/"))
            // Pebble 2.4 has no renewalInfo in its directory.
            #expect(try s.client.renewalInfo(certID: issued.leaf.ariCertID!) == nil)
        }
    }

    @Test func tlsALPN01() throws {
        try withPebble { s in
            let issued = try issuer(s, [.tlsALPN01, .http01]).issue(names: ["alpn.gatehouse.test"], key: try PrivateKey.generateP256())
            try verify(s, issued, names: ["alpn.gatehouse.test"])
            #expect(s.solver.published.map(\.kind) == [.tlsALPN01])
            #expect(s.solver.unpublished == s.solver.published)
        }
    }

    @Test func rsaKey() throws {
        try withPebble { s in
            let key = try PrivateKey.generateRSA(bits: 2048)
            let issued = try issuer(s, [.http01]).issue(names: ["rsa.gatehouse.test"], key: key)
            let text = try verify(s, issued, names: ["rsa.gatehouse.test"])
            #expect(text.contains("rsaEncryption") && text.contains("(2048 bit)"), "\(text)")
            #expect(try CertificateInfo.publicKeyMatches(pem: issued.chainPEM, key: key))
        }
    }

    /// Nothing served: pebble's validation fails, the error names the name,
    /// the challenge and the CA's problem, and the challenge is unpublished.
    @Test func invalidChallenge() throws {
        try withPebble { s in
            s.solver.publishNothing = true
            do {
                _ = try issuer(s, [.http01]).issue(names: ["nothing.gatehouse.test"], key: try PrivateKey.generateP256())
                Issue.record("issued without a challenge answered")
            } catch let error as ACMEValidationError {
                #expect(error.object == .authorization && error.status == .invalid && !error.timedOut)
                #expect(error.identifier == "nothing.gatehouse.test")
                #expect(error.challengeType == "http-01")
                #expect(error.problem?.type.hasPrefix("urn:ietf:params:acme:error:") == true, "\(error)")
                #expect(error.description.contains("nothing.gatehouse.test") && error.description.contains("urn:ietf:params:acme:error:"))
                #expect(!error.description.contains("\n"))
            }
            #expect(s.solver.published.count == 1)
            #expect(s.solver.unpublished == s.solver.published)
        }
    }

    /// PEBBLE_AUTHZREUSE=100: the second order's authorization is already
    /// valid, so nothing is published for it.
    @Test func validAuthorizationsSkipped() throws {
        try withPebble(environment: ["PEBBLE_AUTHZREUSE": "100"]) { s in
            let issuer = issuer(s, [.http01])
            let first = try issuer.issue(names: ["again.gatehouse.test"], key: try PrivateKey.generateP256())
            #expect(first.leaf.dnsNames == ["again.gatehouse.test"])
            #expect(s.solver.published.count == 1)
            let second = try issuer.issue(names: ["again.gatehouse.test"], key: try PrivateKey.generateP256())
            try verify(s, second, names: ["again.gatehouse.test"])
            #expect(s.solver.published.count == 1)
            #expect(s.solver.unpublished == s.solver.published)
        }
    }
}
