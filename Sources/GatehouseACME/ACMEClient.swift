#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The directory object (RFC 8555 §7.1.1): every other URL comes from it.
public struct ACMEDirectory: Decodable, Sendable, Equatable {
    public let newNonce: String
    public let newAccount: String
    public let newOrder: String
    public let revokeCert: String?
    public let keyChange: String?
    /// RFC 9773 (ACME Renewal Information), when the CA offers it.
    public let renewalInfo: String?
    public let meta: Meta?

    public struct Meta: Decodable, Sendable, Equatable {
        public let termsOfService: String?
        public let website: String?
        public let externalAccountRequired: Bool?
    }
}

/// A problem document (RFC 8555 §6.7, RFC 7807).
public struct ACMEProblem: Decodable, Sendable, Equatable, CustomStringConvertible {
    public let type: String
    public let detail: String?
    public let status: Int?
    /// §6.7.1: one problem per identifier when only some failed (an order
    /// refusing a name); each names its identifier.
    public let subproblems: [ACMEProblem]?
    public let identifier: ACMEIdentifier?

    public static let badNonce = "urn:ietf:params:acme:error:badNonce"
    public static let rateLimited = "urn:ietf:params:acme:error:rateLimited"

    /// One line: the subproblems follow, each with its name.
    public var description: String {
        var text = (identifier.map { "\($0.value): " } ?? "") + type + (detail.map { ": \($0)" } ?? "")
        for sub in subproblems ?? [] { text += "; \(sub)" }
        return text
    }
}

/// The account object (RFC 8555 §7.1.2), the parts Gatehouse reads.
public struct ACMEAccount: Decodable, Sendable, Equatable {
    public let status: String
    public let contact: [String]?
    public let orders: String?
}

/// What a failed ACME request says: the HTTP status, the CA's problem if
/// it sent one, and Retry-After.
public struct ACMERequestError: Error, Sendable, CustomStringConvertible {
    public let url: String
    public let status: Int
    public let problem: ACMEProblem?
    public let retryAfter: Int?

    public var description: String {
        "\(url): \(status)" + (problem.map { " \($0)" } ?? "") + (retryAfter.map { " (retry after \($0) s)" } ?? "")
    }
}

/// The request layer of RFC 8555 over one account key: the directory,
/// nonces (each response's Replay-Nonce feeds the next request, §6.5),
/// signed POSTs with badNonce retried (§6.5: the error carries a fresh
/// nonce), and the account. Blocking; one per ACME thread.
public final class ACMEClient {
    public let directoryURL: String
    public let accountKey: PrivateKey
    let http: ACMEHTTPClient
    private var cachedDirectory: ACMEDirectory?
    private var nonce: String?
    /// The account URL once known: requests are then signed with `kid`.
    public private(set) var accountURL: String?
    /// badNonce answers retried per request; CAs may reject any nonce
    /// (Pebble 5 % by default), so a few in a row must not fail an order.
    public var badNonceRetries = 5
    /// Counted for tests and metrics.
    public private(set) var badNoncesSeen = 0

    public init(directoryURL: String, accountKey: PrivateKey, http: ACMEHTTPClient) {
        self.directoryURL = directoryURL
        self.accountKey = accountKey
        self.http = http
    }

    public func directory() throws -> ACMEDirectory {
        if let cachedDirectory { return cachedDirectory }
        let response = try http.get(directoryURL)
        guard response.status == 200 else { throw requestError(directoryURL, response) }
        let directory = try decode(ACMEDirectory.self, response.body, from: directoryURL)
        cachedDirectory = directory
        return directory
    }

    /// RFC 8555 §7.2: HEAD newNonce.
    func freshNonce() throws -> String {
        let url = try directory().newNonce
        let response = try http.head(url)
        guard response.status == 200 || response.status == 204, let nonce = response.replayNonce else {
            throw requestError(url, response)
        }
        return nonce
    }

    /// A signed POST (`payload` nil: POST-as-GET, §6.3). Any status below
    /// 400 is returned; problems are thrown as ACMERequestError. `accept`:
    /// the Accept field (the certificate chain's media type, §7.4.2).
    public func post(_ url: String, payload: [UInt8]?, useJWK: Bool = false, accept: String? = nil) throws -> HTTPResponse {
        var attempts = 0
        while true {
            let nonce = try self.nonce.take() ?? freshNonce()
            let keyIdentifier: JWS.KeyIdentifier
            if useJWK || accountURL == nil {
                keyIdentifier = .jwk(try accountKey.jwk())
            } else {
                keyIdentifier = .kid(accountURL!)
            }
            let jws = try JWS.sign(payload: payload, url: url, nonce: nonce, key: accountKey, keyIdentifier: keyIdentifier)
            let response = try http.post(url, jose: jws.body(), accept: accept)
            self.nonce = response.replayNonce
            if response.status < 400 { return response }
            let error = requestError(url, response)
            if error.problem?.type == ACMEProblem.badNonce, attempts < badNonceRetries {
                attempts += 1
                badNoncesSeen += 1
                continue
            }
            throw error
        }
    }

    /// RFC 8555 §7.3: registers the account key, or finds its account
    /// (200 and the same URL when it exists, §7.3.1). Sets `accountURL`.
    @discardableResult
    public func newAccount(contact: [String], termsOfServiceAgreed: Bool = true,
                           onlyReturnExisting: Bool = false) throws -> (url: String, created: Bool, account: ACMEAccount) {
        struct Request: Encodable {
            let contact: [String]?
            let termsOfServiceAgreed: Bool?
            let onlyReturnExisting: Bool?
        }
        let body = onlyReturnExisting
            ? Request(contact: nil, termsOfServiceAgreed: nil, onlyReturnExisting: true)
            : Request(contact: contact, termsOfServiceAgreed: termsOfServiceAgreed, onlyReturnExisting: nil)
        let url = try directory().newAccount
        let response = try post(url, payload: JWS.json(body), useJWK: true)
        guard let location = response.location, response.status == 200 || response.status == 201 else {
            throw ACMERequestError(url: url, status: response.status, problem: nil, retryAfter: nil)
        }
        let account = try decode(ACMEAccount.self, response.body, from: url)
        accountURL = location
        return (location, response.status == 201, account)
    }

    /// The account object, by POST-as-GET to its URL (§7.3.2).
    public func account() throws -> ACMEAccount {
        guard let accountURL else { throw ACMEError("no account yet") }
        return try decode(ACMEAccount.self, post(accountURL, payload: nil).body, from: accountURL)
    }

    func requestError(_ url: String, _ response: HTTPResponse) -> ACMERequestError {
        // RFC 8555 §6.7: problems come as application/problem+json; a body
        // that is not one is reported by status alone.
        let problem = try? JSONDecoder().decode(ACMEProblem.self, from: Data(response.body))
        return ACMERequestError(url: url, status: response.status, problem: problem, retryAfter: response.retryAfter())
    }

    func decode<T: Decodable>(_ type: T.Type, _ body: [UInt8], from url: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(body))
        } catch {
            throw ACMEError("\(url): unexpected answer (\(error))")
        }
    }
}

extension Optional {
    /// The value, leaving nil behind: a nonce is used once.
    mutating func take() -> Wrapped? {
        defer { self = nil }
        return self
    }
}
