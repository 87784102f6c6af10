import COpenSSL
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
            let selection = name.map { n in Array(n.utf8).withUnsafeBytes { server.select(ssl: ssl, serverName: $0) } }
                ?? server.select(ssl: ssl, serverName: nil)   // no SNI: the default domain, which is pending
            guard case .refuse(let alert) = selection else {
                Issue.record("\(name ?? "no SNI"): selected, want unrecognized_name")
                continue
            }
            #expect(alert == Int32(SSL_AD_UNRECOGNIZED_NAME))
        }
        let ssl = try #require(server.makeSSL())
        defer { SSL_free(ssl) }
        let other = Array("files.test".utf8).withUnsafeBytes { server.select(ssl: ssl, serverName: $0) }
        guard case .selected(1) = other else { Issue.record("files.test not selected"); return }
    }
}
