import GatehouseACME
import GatehouseConfig

/// Where each ACME domain's certificate files are in storage.
enum ACMEFiles {
    /// Per key type: ECDSA, and RSA as well for the legacy profile, whose
    /// old clients may not do ECDSA.
    static func keyTypes(_ domain: DomainConfig) -> [ACMEStorage.KeyType] {
        domain.tlsProfile == .legacy ? [.ecdsa, .rsa] : [.ecdsa]
    }

    static func certificateFiles(_ domain: DomainConfig, settings: ACMESettings?) -> [String] {
        guard let settings else { return [] }
        let storage = ACMEStorage(root: settings.storage)
        return keyTypes(domain).compactMap { try? storage.certificate(domain.primaryName, $0) }
    }
}
