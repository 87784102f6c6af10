import GatehouseACME
import GatehouseConfig
import GatehouseTLS
import Synchronization

/// ACME storage as the serving side reads it: where each ACME domain's
/// certificate files are, and the challenges another instance of a fleet
/// published (the CA's validation may reach any of them). The storage
/// directory comes from the running configuration and follows reloads.
final class ACMEStorageSource: ACMEChallengeSource {
    private let storage = Mutex<ACMEStorage?>(nil)

    func use(_ settings: ACMESettings?) {
        storage.withLock { $0 = settings.map { ACMEStorage(root: $0.storage) } }
    }

    /// The domain's files, per key type: ECDSA, and RSA as well for the
    /// legacy profile, whose old clients may not do ECDSA.
    static func certificateFiles(_ domain: DomainConfig, settings: ACMESettings?) -> [String] {
        guard let settings else { return [] }
        let storage = ACMEStorage(root: settings.storage)
        return keyTypes(domain).compactMap { try? storage.certificate(domain.primaryName, $0) }
    }

    static func keyTypes(_ domain: DomainConfig) -> [ACMEStorage.KeyType] {
        domain.tlsProfile == .legacy ? [.ecdsa, .rsa] : [.ecdsa]
    }

    func tlsALPN01(name: String) -> [UInt8]? {
        storage.withLock { $0 }?.readTLSALPN01(name: name)
    }

    func http01(token: String, name: String) -> [UInt8]? {
        storage.withLock { $0 }?.readHTTP01(token: token, name: name)
    }
}
