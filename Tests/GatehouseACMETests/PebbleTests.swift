import Foundation
import Testing
@testable import GatehouseACME

/// Debian's pebble (apt: pebble) on loopback with a certificate from a CA
/// made here, since the package ships none for its own HTTPS listener.
/// Its default of rejecting 5 % of nonces stays on.
final class Pebble {
    let scratch: Scratch
    let process: Process
    let port: Int
    var ca: String { scratch.path + "/ca.pem" }
    var directoryURL: String { "https://127.0.0.1:\(port)/dir" }
    let log: String

    static let binary = "/usr/bin/pebble"
    static var installed: Bool { FileManager.default.isExecutableFile(atPath: binary) }

    /// pebble's management interface: /roots/0 is the root of its chains.
    private(set) var managementPort = 0

    /// `challenges`: validate against that pebble-challtestsrv (its DNS
    /// resolves every name to 127.0.0.1; its HTTP-01 and TLS-ALPN-01 ports
    /// are the ones pebble connects to). `environment`: more PEBBLE_*.
    init(challenges: ChallTestSrv? = nil, environment: [String: String] = [:]) throws {
        scratch = try Scratch()
        let d = scratch.path
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", d + "/ca.key",
                     "-out", d + "/ca.pem", "-days", "2", "-subj", "/CN=Gatehouse test CA for pebble",
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"])
        try openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", d + "/pebble.key",
                     "-out", d + "/pebble.csr", "-subj", "/CN=localhost"])
        try scratch.write("pebble.ext", Array("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n".utf8))
        try openssl(["x509", "-req", "-in", d + "/pebble.csr", "-CA", d + "/ca.pem", "-CAkey", d + "/ca.key", "-CAcreateserial",
                     "-days", "2", "-out", d + "/pebble.pem", "-extfile", d + "/pebble.ext"])
        var lastError = ""
        for _ in 0 ..< 5 {
            // A free port is only likely free: try again if pebble cannot bind.
            let port = Self.freePort(), management = Self.freePort()
            let config = """
                {"pebble": {"listenAddress": "127.0.0.1:\(port)", "managementListenAddress": "127.0.0.1:\(management)",
                 "certificate": "\(d)/pebble.pem", "privateKey": "\(d)/pebble.key",
                 "httpPort": \(challenges?.http01Port ?? Self.freePort()), "tlsPort": \(challenges?.tlsALPN01Port ?? Self.freePort()),
                 "ocspResponderURL": "",
                 "externalAccountBindingRequired": false}}
                """
            try scratch.write("pebble.json", Array(config.utf8))
            let log = d + "/pebble-\(port).log"
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Self.binary)
            process.arguments = ["-config", d + "/pebble.json"] + (challenges.map { ["-dnsserver", "127.0.0.1:\($0.dnsPort)"] } ?? [])
            var env = ProcessInfo.processInfo.environment
            env["PEBBLE_VA_NOSLEEP"] = "1"
            env.merge(environment) { $1 }
            process.environment = env
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            let deadline = Date().addingTimeInterval(15)
            while Date() < deadline, process.isRunning, !Self.accepts(port) { usleep(50_000) }
            if process.isRunning, Self.accepts(port) {
                self.process = process
                self.port = port
                self.managementPort = management
                self.log = log
                return
            }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            lastError = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        }
        scratch.remove()
        throw ACMEError("pebble did not start: \(lastError)")
    }

    func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        scratch.remove()
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}

/// A first round trip with a real ACME server: the directory, a nonce, a
/// new account (signed with the JWK), the same account found again, and
/// the account read with its kid: Pebble checks every JWS we send.
@Suite(.serialized, .enabled(if: Pebble.installed, "pebble is not installed (apt install pebble)"))
struct PebbleTests {
    @Test func directoryNonceAndAccount() throws {
        let pebble = try Pebble()
        defer { pebble.stop() }
        let http = try ACMEHTTPClient(options: .init(trust: pebble.ca, userAgent: "Gatehouse-test"))
        let key = try PrivateKey.generateP256()
        let client = ACMEClient(directoryURL: pebble.directoryURL, accountKey: key, http: http)

        let directory = try client.directory()
        #expect(directory.newNonce.hasPrefix("https://127.0.0.1:\(pebble.port)/"))
        #expect(directory.newAccount.hasPrefix("https://127.0.0.1:\(pebble.port)/"))
        #expect(directory.newOrder.hasPrefix("https://127.0.0.1:\(pebble.port)/"))
        let nonce = try client.freshNonce()
        #expect(Base64URL.decode(nonce) != nil, "\(nonce)")

        let created = try client.newAccount(contact: ["mailto:ops@gatehouse.test"])
        #expect(created.created)
        #expect(created.account.status == "valid")
        #expect(created.url.hasPrefix("https://127.0.0.1:\(pebble.port)/"))
        #expect(client.accountURL == created.url)

        // RFC 8555 §7.3.1: the same key finds the same account.
        let again = ACMEClient(directoryURL: pebble.directoryURL, accountKey: key, http: http)
        let found = try again.newAccount(contact: [], onlyReturnExisting: true)
        #expect(!found.created)
        #expect(found.url == created.url)

        // Signed with kid now.
        for _ in 0 ..< 20 {
            #expect(try again.account().status == "valid")
        }
    }

    @Test func unknownKeyHasNoAccount() throws {
        let pebble = try Pebble()
        defer { pebble.stop() }
        let http = try ACMEHTTPClient(options: .init(trust: pebble.ca))
        let client = ACMEClient(directoryURL: pebble.directoryURL, accountKey: try PrivateKey.generateP256(), http: http)
        do {
            try client.newAccount(contact: [], onlyReturnExisting: true)
            Issue.record("an account for a key never registered")
        } catch let error as ACMERequestError {
            #expect(error.problem?.type == "urn:ietf:params:acme:error:accountDoesNotExist", "\(error)")
        }
    }

    /// Pebble refuses 5 % of nonces: over many requests some badNonce
    /// answers arrive and each is retried with the nonce it carried.
    @Test func badNoncesAreRetried() throws {
        let pebble = try Pebble()
        defer { pebble.stop() }
        let http = try ACMEHTTPClient(options: .init(trust: pebble.ca))
        let client = ACMEClient(directoryURL: pebble.directoryURL, accountKey: try PrivateKey.generateP256(), http: http)
        try client.newAccount(contact: [])
        for _ in 0 ..< 150 {
            #expect(try client.account().status == "valid")
        }
        // P(no rejection in 150) = 0.95^150 < 0.05 %.
        #expect(client.badNoncesSeen > 0)
    }

    /// The system's CAs do not vouch for this pebble: nothing is sent.
    @Test func unverifiedServerRefused() throws {
        let pebble = try Pebble()
        defer { pebble.stop() }
        let client = ACMEClient(directoryURL: pebble.directoryURL, accountKey: try PrivateKey.generateP256(),
                                http: try ACMEHTTPClient())
        #expect(throws: ACMEError.self) { try client.directory() }
    }
}
