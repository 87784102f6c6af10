/// The challenge types Gatehouse can answer (RFC 8555 §8.3, RFC 8737).
public enum ChallengeKind: String, Sendable, Equatable, CaseIterable {
    case http01 = "http-01"
    case tlsALPN01 = "tls-alpn-01"
}

/// One challenge to be made answerable: for http-01 serve
/// `keyAuthorization` at /.well-known/acme-challenge/`token` (§8.3); for
/// tls-alpn-01 serve ChallengeResponse.tlsALPN01Certificate(name:
/// keyAuthorization:) to `name` over acme-tls/1 (RFC 8737 §3). The token
/// has been checked to be base64url (it names files and URL paths).
public struct PendingChallenge: Sendable, Equatable {
    public let kind: ChallengeKind
    /// The identifier being validated.
    public let name: String
    public let token: String
    public let keyAuthorization: String

    public init(kind: ChallengeKind, name: String, token: String, keyAuthorization: String) {
        self.kind = kind
        self.name = name
        self.token = token
        self.keyAuthorization = keyAuthorization
    }
}

/// Makes challenge responses reachable by the CA (the proxy: storage it
/// serves from). `unpublish` is called for every challenge `publish` was
/// called for, also when publishing or validation failed.
public protocol ChallengeSolver: AnyObject {
    func publish(_ c: PendingChallenge) throws
    func unpublish(_ c: PendingChallenge)
    /// Every challenge of the order is published; the CA is told next. A
    /// fleet's solver waits here until the other instances can answer too.
    func published() throws
}

extension ChallengeSolver {
    public func published() throws {}
}

/// What an order produced.
public struct IssuedCertificate: Sendable {
    /// PEM certificates as the CA sent them, leaf first (§7.4.2).
    public let chainPEM: [UInt8]
    /// The leaf's.
    public let leaf: CertificateInfo
    /// The order, for the log.
    public let orderURL: String
}

/// One certificate from order to chain (RFC 8555 §7.4 - §7.4.2) over an
/// ACMEClient whose account exists. Blocking; on the ACME thread.
public final class ACMEIssuer {
    public let client: ACMEClient
    public let solver: ChallengeSolver
    /// In order of preference; the first one the CA offers is answered.
    public let challenges: [ChallengeKind]
    /// The longest wait for one authorization, or for the order to become
    /// ready, or valid: seconds.
    public let pollTimeout: Double
    /// The wait between polls when the CA sends no Retry-After.
    public let pollInterval: Double

    public init(client: ACMEClient, solver: ChallengeSolver, challenges: [ChallengeKind],
                pollTimeout: Double = 120, pollInterval: Double = 1) {
        self.client = client
        self.solver = solver
        self.challenges = challenges
        self.pollTimeout = pollTimeout
        self.pollInterval = pollInterval
    }

    /// New order for `names`, each pending authorization answered with the
    /// preferred challenge the CA offers (already valid ones, reused by the
    /// CA, are skipped), finalized with a CSR by `key`, and the chain
    /// downloaded. `replaces`: the ARI certID of the certificate this one
    /// renews (RFC 9773 §5). Throws ACMEValidationError when the CA finds
    /// a challenge or the order invalid (or they do not settle in time),
    /// ACMERequestError for the CA's other problems, ACMEError otherwise;
    /// `description` is one log line for each.
    public func issue(names: [String], key: PrivateKey, replaces: String? = nil) throws -> IssuedCertificate {
        // The CSR first: a name it refuses fails before anything is ordered.
        let csr = try CSR.der(names: names, key: key)
        let order = try client.newOrder(identifiers: names.map(ACMEIdentifier.dns), replaces: replaces)
        try authorize(order)

        var current = try client.pollOrder(order.url, until: .ready, timeout: pollTimeout, interval: pollInterval)
        if current.status == .ready { current = try client.finalize(current, csrDER: csr) }
        if current.status != .valid {
            current = try client.pollOrder(order.url, until: .valid, timeout: pollTimeout, interval: pollInterval)
        }
        let chain = try client.certificateChain(current)
        let leaf = try CertificateInfo(pem: chain)
        // What the CA sent must be for this key and these names.
        guard try CertificateInfo.publicKeyMatches(pem: chain, key: key) else {
            throw ACMEError("\(current.url): the certificate is not for the CSR's key")
        }
        let missing = names.filter { !leaf.dnsNames.contains($0) }
        guard missing.isEmpty else { throw ACMEError("\(current.url): the certificate lacks \(missing.joined(separator: ", "))") }
        return IssuedCertificate(chainPEM: chain, leaf: leaf, orderURL: order.url)
    }

    /// §7.5: every pending authorization's challenge published, then all
    /// answered, then all polled, so the CA validates them concurrently; every
    /// published challenge is unpublished at the end, whatever happened.
    func authorize(_ order: ACMEOrder) throws {
        let accountJWK = try client.accountKey.jwk()
        var published: [PendingChallenge] = []
        defer { for c in published { solver.unpublish(c) } }
        var polling: [String] = []
        var answers: [ACMEChallenge] = []
        for url in order.authorizations {
            let authorization = try client.authorization(url)
            switch authorization.status {
            case .valid:
                continue
            case .pending:
                break
            default:
                let failed = authorization.failedChallenge
                throw ACMEValidationError(object: .authorization, url: url, status: authorization.status,
                                          identifier: authorization.identifier.value, challengeType: failed?.type,
                                          problem: failed?.error, timedOut: false)
            }
            let name = authorization.identifier.value
            guard authorization.identifier.type == "dns", authorization.wildcard != true else {
                throw ACMEError("\(url): cannot validate \(authorization.identifier.type) \(name)\(authorization.wildcard == true ? " (wildcard)" : "")")
            }
            guard let (kind, challenge) = Self.select(authorization, preferring: challenges) else {
                throw ACMEError("\(url): \(name): the CA offers \(authorization.challenges.map(\.type).joined(separator: ", ")), none of \(challenges.map(\.rawValue).joined(separator: ", "))")
            }
            let token = challenge.token ?? ""
            let pending = PendingChallenge(kind: kind, name: name, token: token,
                                           keyAuthorization: try ChallengeResponse.keyAuthorization(token: token, accountKey: accountJWK))
            published.append(pending)
            try solver.publish(pending)
            // Processing or valid already: answered before (a retried order).
            if challenge.status == .pending { answers.append(challenge) }
            polling.append(url)
        }
        if !published.isEmpty { try solver.published() }
        for challenge in answers { try client.respond(to: challenge) }
        for url in polling {
            try client.pollAuthorization(url, timeout: pollTimeout, interval: pollInterval)
        }
    }

    /// The first kind in `preferences` that `authorization` offers.
    public static func select(_ authorization: ACMEAuthorization,
                              preferring preferences: [ChallengeKind]) -> (ChallengeKind, ACMEChallenge)? {
        for kind in preferences {
            if let challenge = authorization.challenges.first(where: { $0.type == kind.rawValue }) { return (kind, challenge) }
        }
        return nil
    }
}
