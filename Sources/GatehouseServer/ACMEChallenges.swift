import GatehouseACME
import GatehouseLog
import GatehouseTLS

/// Publishes a challenge where whichever instance the CA's validation
/// reaches can answer it: storage first (the fleet reads it there), then this
/// process's memory (no file read for the common case of one instance).
/// Unpublished on every outcome, so nothing stale is answered later.
final class ChallengePublisher: ChallengeSolver {
    let storage: ACMEStorage
    let certificates: ACMECertificates

    init(storage: ACMEStorage, certificates: ACMECertificates) {
        self.storage = storage
        self.certificates = certificates
    }

    func publish(_ c: PendingChallenge) throws {
        switch c.kind {
        case .http01:
            try storage.writeHTTP01(token: c.token, name: c.name, keyAuthorization: c.keyAuthorization)
            certificates.publishHTTP01(token: c.token, name: c.name, keyAuthorization: c.keyAuthorization)
        case .tlsALPN01:
            let pem = try ChallengeResponse.tlsALPN01Certificate(name: c.name, keyAuthorization: c.keyAuthorization)
            try storage.writeTLSALPN01(name: c.name, pem: pem)
            certificates.publishTLSALPN01(name: c.name,
                                          credentials: try CredentialLoader.load(pem: pem, source: "tls-alpn-01 challenge for \(c.name)"))
        }
    }

    func unpublish(_ c: PendingChallenge) {
        switch c.kind {
        case .http01:
            certificates.withdrawHTTP01(token: c.token)
            storage.removeHTTP01(token: c.token)
        case .tlsALPN01:
            certificates.withdrawTLSALPN01(name: c.name)
            storage.removeTLSALPN01(name: c.name)
        }
    }
}
