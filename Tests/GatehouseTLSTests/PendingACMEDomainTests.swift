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

    func makeServer(_ acme: ACMECertificates) throws -> TLSServer {
        try TLSServer(snapshot: snapshot, store: CredentialStore(snapshot: snapshot),
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

    /// Installed by the ACME thread: served at once, by primary name, and
    /// refused again once removed.
    @Test func installedCertificateIsServedWithoutReload() throws {
        let acme = ACMECertificates()
        let server = try makeServer(acme)
        guard case .refuse = try select(server, "pending.test", alpn: nil).0 else { Issue.record("selected before install"); return }
        acme.install(primaryName: "pending.test", credentials: [try selfSigned("pending.test")])
        guard case .selected(0) = try select(server, "PENDING.test.", alpn: ["h2", "http/1.1"]).0 else {
            Issue.record("not selected after install"); return
        }
        #expect(acme.credentials(primaryName: "pending.test").count == 1)
        acme.remove(primaryName: "pending.test")
        guard case .refuse(let alert) = try select(server, "pending.test", alpn: nil).0 else { Issue.record("selected after removal"); return }
        #expect(alert == Int32(SSL_AD_UNRECOGNIZED_NAME))
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
        acme.publishTLSALPN01(name: "pending.test", credentials: try selfSigned("pending.test"))
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

/// A P-256 certificate and its key as one PEM, made by the openssl CLI, loaded
/// the way ACME storage files are.
func selfSigned(_ name: String) throws -> Credentials {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gh-tls-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    p.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir + "/k.pem",
                   "-out", dir + "/c.pem", "-days", "1", "-subj", "/CN=\(name)", "-addext", "subjectAltName=DNS:\(name)"]
    p.standardError = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    let pem = try Data(contentsOf: URL(fileURLWithPath: dir + "/c.pem")) + Data(contentsOf: URL(fileURLWithPath: dir + "/k.pem"))
    return try CredentialLoader.load(pem: Array(pem), source: "test")
}
