import COpenSSL
import Foundation
import Testing
import GatehouseConfig
@testable import GatehouseTLS

/// An `acme = true` domain before its first certificate: nothing is loaded
/// for it and its handshakes are refused as an unknown name.
@Suite struct PendingACMEDomainTests {
    let snapshot = ConfigSnapshot(
        mainFile: "/etc/gatehouse/gatehouse.toml", domainsDirectory: "/etc/gatehouse/domains.d",
        listeners: [ListenerConfig(host: "127.0.0.1", port: 8443, proto: .https)],
        tls: TLSSettings(defaultDomain: "pending.test"),
        domains: [
            DomainConfig(id: 0, file: "/etc/gatehouse/domains.d/a.toml", names: ["pending.test"],
                         backend: .tcp(host: "127.0.0.1", port: 9), certificates: [], acme: true),
            DomainConfig(id: 1, file: "/etc/gatehouse/domains.d/b.toml", names: ["files.test"],
                         backend: .tcp(host: "127.0.0.1", port: 9), certificate: "/nonexistent/c.pem", key: "/nonexistent/k.pem"),
        ])

    @Test func storeLoadsNothingAndCountsNothing() {
        let store = CredentialStore(snapshot: snapshot)
        #expect(store.credentials(for: 0).isEmpty)
        store.preload()
        #expect(store.credentials(for: 0).isEmpty)
        // Only the domain with (missing) files was tried, and failed.
        #expect(store.loadCount == 1 && store.failureCount == 1)
        #expect(store.loadedCount == 0)
    }

    @Test func credentialSetHasNoFailureForIt() {
        let (credentials, failures) = CredentialSet.load(snapshot)
        #expect(credentials[0].isEmpty)
        #expect(failures.map(\.domain.id) == [1])
    }

    @Test func handshakeIsRefusedAsUnrecognizedName() throws {
        let server = try TLSServer(snapshot: snapshot, store: CredentialStore(snapshot: snapshot),
                                   ticketKeys: TicketKeys.load(snapshot.tls))
        for name in ["pending.test", "unknown.test", nil] as [String?] {
            let ssl = try #require(server.makeSSL())
            defer { SSL_free(ssl) }
            let selection = name.map { n in Array(n.utf8).withUnsafeBytes { server.select(ssl: ssl, serverName: $0, alpn: nil) } }
                ?? server.select(ssl: ssl, serverName: nil, alpn: nil)   // no SNI: the default domain, which is pending
            guard case .refuse(let alert) = selection else {
                Issue.record("\(name ?? "no SNI"): selected, want unrecognized_name")
                continue
            }
            #expect(alert == Int32(SSL_AD_UNRECOGNIZED_NAME))
        }
        let ssl = try #require(server.makeSSL())
        defer { SSL_free(ssl) }
        let other = Array("files.test".utf8).withUnsafeBytes { server.select(ssl: ssl, serverName: $0, alpn: nil) }
        guard case .selected(1) = other else { Issue.record("files.test not selected"); return }
    }

    func makeServer(_ acme: ACMECertificates, files: [String] = []) throws -> TLSServer {
        try TLSServer(snapshot: snapshot, store: CredentialStore(snapshot: snapshot, acme: acme, acmeFiles: { _ in files }),
                      ticketKeys: TicketKeys.load(snapshot.tls), acme: acme)
    }

    func select(_ server: TLSServer, _ name: String, alpn: [String]?) throws -> (TLSServer.Selection, validation: Bool) {
        let ssl = try #require(server.makeSSL())
        defer { SSL_free(ssl) }
        let list = alpn.map { $0.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) } }
        let selection = Array(name.utf8).withUnsafeBytes { sni in
            if let list { return list.withUnsafeBytes { server.select(ssl: ssl, serverName: sni, alpn: $0) } }
            return server.select(ssl: ssl, serverName: sni, alpn: nil)
        }
        return (selection, TLSServer.isACMEValidation(ssl))
    }

    /// Written to storage by the ACME thread, which then says so: served at
    /// once (no reload); until it says so, the pending answer is cached (no
    /// stat per handshake); a domain with one of its two files is served.
    @Test func certificateInStorageIsServedOnceAnnouncedWithoutReload() throws {
        let dir = try TemporaryDirectory()
        let ecdsa = dir.path + "/ecdsa.pem", rsa = dir.path + "/rsa.pem"
        let acme = ACMECertificates()
        let server = try makeServer(acme, files: [ecdsa, rsa])
        guard case .refuse = try select(server, "pending.test", alpn: nil).0 else { Issue.record("selected before issuance"); return }
        try selfSignedPEM("pending.test").write(to: URL(fileURLWithPath: ecdsa))
        guard case .refuse = try select(server, "pending.test", alpn: nil).0 else { Issue.record("file seen before it was announced"); return }
        acme.certificateChanged(primaryName: "pending.test")
        guard case .selected(0) = try select(server, "PENDING.test.", alpn: ["h2", "http/1.1"]).0 else {
            Issue.record("not selected after the announcement"); return
        }
        #expect(server.store.credentials(for: 0).count == 1, "served with the one file that exists")
        #expect(server.store.loadCount == 1)
        // Renewed: the new file replaces the old at the next handshake.
        let before = server.store.credentials(for: 0)[0]
        try selfSignedPEM("pending.test").write(to: URL(fileURLWithPath: ecdsa))
        acme.certificateChanged(primaryName: "pending.test")
        #expect(server.store.credentials(for: 0)[0] !== before)
        try FileManager.default.removeItem(atPath: ecdsa)
        acme.certificateChanged(primaryName: "pending.test")
        guard case .refuse(let alert) = try select(server, "pending.test", alpn: nil).0 else { Issue.record("selected after removal"); return }
        #expect(alert == Int32(SSL_AD_UNRECOGNIZED_NAME))
        #expect(server.store.failureCount == 0)
    }

    /// A reload's new store keeps what the old one loaded for the same files.
    @Test func reloadCarriesTheLoadedCertificateOver() throws {
        let dir = try TemporaryDirectory()
        let ecdsa = dir.path + "/ecdsa.pem"
        try selfSignedPEM("pending.test").write(to: URL(fileURLWithPath: ecdsa))
        let acme = ACMECertificates()
        let first = CredentialStore(snapshot: snapshot, acme: acme, acmeFiles: { _ in [ecdsa] })
        #expect(first.credentials(for: 0).count == 1)
        let second = CredentialStore(snapshot: snapshot, previous: first, acme: acme, acmeFiles: { _ in [ecdsa] })
        #expect(second.credentials(for: 0).first === first.credentials(for: 0).first)
        #expect(second.loadCount == 0)
        // Replaced meanwhile (another instance of a fleet renewed it): the
        // reload's store loads the new file, without waiting for the ACME side.
        try selfSignedPEM("pending.test").write(to: URL(fileURLWithPath: ecdsa))
        let third = CredentialStore(snapshot: snapshot, previous: second, acme: acme, acmeFiles: { _ in [ecdsa] })
        #expect(third.credentials(for: 0).first !== second.credentials(for: 0).first)
        #expect(third.loadCount == 1)
    }

    /// RFC 8737 §3: only a ClientHello offering exactly acme-tls/1, for an
    /// ACME domain's name with a challenge published, is a validation.
    @Test func validationHandshakeNeedsOnlyACMETLSAndAPublishedChallenge() throws {
        let acme = ACMECertificates()
        let server = try makeServer(acme)
        let noProtocol = Int32(SSL_AD_NO_APPLICATION_PROTOCOL)
        guard case .refuse(let alert) = try select(server, "pending.test", alpn: ["acme-tls/1"]).0, alert == noProtocol else {
            Issue.record("validation without a challenge was not refused with no_application_protocol"); return
        }
        acme.publishTLSALPN01(name: "pending.test", credentials: try CredentialLoader.load(pem: Array(selfSignedPEM("pending.test")), source: "test"))
        let (selection, validation) = try select(server, "Pending.Test", alpn: ["acme-tls/1"])
        guard case .selected = selection, validation else { Issue.record("validation handshake not selected"); return }
        // Beside another protocol: an ordinary (pending, so refused) handshake.
        let mixed = try select(server, "pending.test", alpn: ["h2", "acme-tls/1"])
        guard case .refuse(let a) = mixed.0, a == Int32(SSL_AD_UNRECOGNIZED_NAME), !mixed.validation else {
            Issue.record("acme-tls/1 beside h2 treated as a validation"); return
        }
        // A domain with files of its own never answers a validation.
        guard case .refuse(let b) = try select(server, "files.test", alpn: ["acme-tls/1"]).0, b == noProtocol else {
            Issue.record("files.test answered a validation"); return
        }
        acme.withdrawTLSALPN01(name: "pending.test")
        guard case .refuse = try select(server, "pending.test", alpn: ["acme-tls/1"]).0 else { Issue.record("withdrawn challenge served"); return }
    }

    /// RFC 8446 §4.1.4: after a HelloRetryRequest the ClientHello callback
    /// runs again. Its second run must neither keep the first's validation
    /// (a second ClientHello without acme-tls/1 is an ordinary handshake)
    /// nor leak the challenge certificate it retained.
    @Test func secondClientHelloAfterRetryStartsOver() throws {
        let acme = ACMECertificates()
        let server = try makeServer(acme)
        weak var challenge: Credentials?
        do {
            let credentials = try CredentialLoader.load(pem: Array(selfSignedPEM("pending.test")), source: "test")
            challenge = credentials
            acme.publishTLSALPN01(name: "pending.test", credentials: credentials)
        }
        let ssl = try #require(server.makeSSL())
        func hello(_ alpn: [String]) -> TLSServer.Selection {
            let list = alpn.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) }
            return Array("pending.test".utf8).withUnsafeBytes { sni in list.withUnsafeBytes { server.select(ssl: ssl, serverName: sni, alpn: $0) } }
        }
        guard case .selected = hello(["acme-tls/1"]), TLSServer.isACMEValidation(ssl) else { Issue.record("no validation"); return }
        guard case .selected = hello(["acme-tls/1"]), TLSServer.isACMEValidation(ssl) else { Issue.record("no validation the second time"); return }
        guard case .refuse = hello(["h2"]) else { Issue.record("pending domain selected"); return }
        #expect(!TLSServer.isACMEValidation(ssl), "the first ClientHello's validation survived")
        #expect(TLSServer.selectedDomain(of: ssl) == nil)
        acme.withdrawTLSALPN01(name: "pending.test")
        SSL_free(ssl)
        #expect(challenge == nil, "the challenge certificate leaked")
    }

    @Test func alpnValidationListIsExact() {
        func only(_ bytes: [UInt8]) -> Bool { bytes.withUnsafeBytes { ALPN.offersOnlyACMEValidation($0) } }
        #expect(only([10] + Array("acme-tls/1".utf8)))
        #expect(!only([10] + Array("acme-tls/2".utf8)))
        #expect(!only([2] + Array("h2".utf8) + [10] + Array("acme-tls/1".utf8)))
        #expect(!only([]))
        let body: [UInt8] = [0, 11, 10] + Array("acme-tls/1".utf8)
        #expect(body.withUnsafeBytes { ALPN.protocolList(extensionBody: $0)?.count } == 11)
        #expect(([0, 12, 10] + Array("acme-tls/1".utf8)).withUnsafeBytes { ALPN.protocolList(extensionBody: $0) } == nil)
    }

    @Test func serverNameNormalizedLikeConfiguration() {
        func n(_ s: String) -> String? { Array(s.utf8).withUnsafeBytes { ServerNameExtension.normalized($0) } }
        #expect(n("WWW.Example.TEST.") == "www.example.test")
        #expect(n("a b") == nil)
        #expect(n(".") == nil)
    }
}

/// A P-256 certificate and its key as one PEM, made by the openssl CLI: what
/// ACME storage holds per key type.
func selfSignedPEM(_ name: String) throws -> Data {
    let dir = try TemporaryDirectory()
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    p.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir.path + "/k.pem",
                   "-out", dir.path + "/c.pem", "-days", "1", "-subj", "/CN=\(name)", "-addext", "subjectAltName=DNS:\(name)"]
    p.standardError = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    return try Data(contentsOf: URL(fileURLWithPath: dir.path + "/c.pem")) + Data(contentsOf: URL(fileURLWithPath: dir.path + "/k.pem"))
}

/// Removed with the value.
final class TemporaryDirectory {
    let path: String
    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("gh-tls-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}
