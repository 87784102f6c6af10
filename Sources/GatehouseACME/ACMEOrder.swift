#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The states of orders, authorizations and challenges (RFC 8555 §7.1.6).
public enum ACMEStatus: String, Decodable, Sendable, Equatable {
    case pending, ready, processing, valid, invalid, expired, deactivated, revoked
}

/// An identifier object (RFC 8555 §7.1.3, §9.7.7): Gatehouse orders DNS
/// names only.
public struct ACMEIdentifier: Codable, Sendable, Equatable {
    public let type: String
    public let value: String

    public init(type: String, value: String) {
        self.type = type
        self.value = value
    }

    public static func dns(_ name: String) -> ACMEIdentifier { ACMEIdentifier(type: "dns", value: name) }
}

/// The order object (RFC 8555 §7.1.3). `url` is not in the JSON: it is
/// the newOrder response's Location, and what the order is polled at.
public struct ACMEOrder: Decodable, Sendable, Equatable {
    public internal(set) var url = ""
    public let status: ACMEStatus
    public let expires: String?
    public let identifiers: [ACMEIdentifier]
    public let authorizations: [String]
    public let finalize: String
    public let certificate: String?
    /// Why the order is invalid (§7.1.3 "error").
    public let error: ACMEProblem?
    /// RFC 9773 §5: the certID this order replaces, echoed by the CA.
    public let replaces: String?

    enum CodingKeys: String, CodingKey {
        case status, expires, identifiers, authorizations, finalize, certificate, error, replaces
    }
}

/// The authorization object (RFC 8555 §7.1.4).
public struct ACMEAuthorization: Decodable, Sendable, Equatable {
    public internal(set) var url = ""
    public let identifier: ACMEIdentifier
    public let status: ACMEStatus
    public let expires: String?
    public let challenges: [ACMEChallenge]
    public let wildcard: Bool?

    enum CodingKeys: String, CodingKey {
        case identifier, status, expires, challenges, wildcard
    }

    /// The problem a failed challenge carries (§7.1.5, §8: "error"), which
    /// is what says why the authorization is invalid.
    public var failedChallenge: ACMEChallenge? {
        challenges.first { $0.error != nil && $0.status == .invalid } ?? challenges.first { $0.error != nil }
    }
}

/// A challenge object (RFC 8555 §7.1.5, §8).
public struct ACMEChallenge: Decodable, Sendable, Equatable {
    public let type: String
    public let url: String
    public let status: ACMEStatus
    /// http-01 and tls-alpn-01 have one (§8.3, RFC 8737 §3); unchecked here.
    public let token: String?
    public let validated: String?
    public let error: ACMEProblem?
}

/// An order or authorization the CA gave up on (status invalid, §7.1.6),
/// or one that did not settle within the wait allowed. The description is
/// one log line: what failed, for which name, by which challenge, and the
/// CA's problem.
public struct ACMEValidationError: Error, Sendable, CustomStringConvertible {
    public enum Object: String, Sendable { case order, authorization }
    public let object: Object
    public let url: String
    /// The status last seen.
    public let status: ACMEStatus
    /// The authorization's name.
    public let identifier: String?
    /// The challenge whose `error` is `problem`.
    public let challengeType: String?
    public let problem: ACMEProblem?
    /// The wait ran out with the object still pending or processing.
    public let timedOut: Bool

    public var description: String {
        var text = object.rawValue
        if let identifier { text += " for \(identifier)" }
        text += timedOut ? " still \(status.rawValue) when the wait ran out" : " \(status.rawValue)"
        if let challengeType { text += ", \(challengeType)" }
        if let problem { text += ": \(problem)" }
        return text + " (\(url))"
    }
}

extension ACMEClient {
    /// RFC 8555 §7.4: a new order for `identifiers`. `replaces` is the
    /// certID (RFC 9773 §5, §4.1) of the certificate this one renews; sent
    /// only when given, as CAs without ARI may refuse unknown fields.
    public func newOrder(identifiers: [ACMEIdentifier], replaces: String? = nil) throws -> ACMEOrder {
        struct Request: Encodable {
            let identifiers: [ACMEIdentifier]
            let replaces: String?   // nil: left out by the synthesized encoder
        }
        let url = try directory().newOrder
        let response = try post(url, payload: JWS.json(Request(identifiers: identifiers, replaces: replaces)))
        guard response.status == 201, let location = response.location else {
            throw ACMEError("\(url): new order answered \(response.status)\(response.location == nil ? " without Location" : "")")
        }
        var order = try decode(ACMEOrder.self, response.body, from: url)
        order.url = location
        return order
    }

    /// The order at `url` by POST-as-GET (§7.4, §6.3).
    public func order(_ url: String) throws -> ACMEOrder {
        try fetchOrder(url).order
    }

    /// The authorization at `url` by POST-as-GET (§7.5).
    public func authorization(_ url: String) throws -> ACMEAuthorization {
        try fetchAuthorization(url).authorization
    }

    /// The challenge at `url` by POST-as-GET (§7.5.1).
    public func challenge(_ url: String) throws -> ACMEChallenge {
        try decode(ACMEChallenge.self, post(url, payload: nil).body, from: url)
    }

    /// §7.5.1: the client is ready for validation: POST `{}` (an empty
    /// object, not POST-as-GET) to the challenge.
    @discardableResult
    public func respond(to challenge: ACMEChallenge) throws -> ACMEChallenge {
        try decode(ACMEChallenge.self, post(challenge.url, payload: Array("{}".utf8)).body, from: challenge.url)
    }

    /// §7.4: finalize with the CSR (DER, sent base64url). Returns the order
    /// as answered: often still processing, so poll it afterwards.
    @discardableResult
    public func finalize(_ order: ACMEOrder, csrDER: [UInt8]) throws -> ACMEOrder {
        struct Request: Encodable { let csr: String }
        let response = try post(order.finalize, payload: JWS.json(Request(csr: Base64URL.encode(csrDER))))
        var answered = try decode(ACMEOrder.self, response.body, from: order.finalize)
        answered.url = order.url
        return answered
    }

    /// §7.4.2: the certificate chain of a valid order, PEM, leaf first.
    public func certificateChain(_ order: ACMEOrder) throws -> [UInt8] {
        guard order.status == .valid, let url = order.certificate else {
            throw ACMEError("\(order.url): order is \(order.status.rawValue), no certificate to download")
        }
        let response = try post(url, payload: nil, accept: "application/pem-certificate-chain")
        guard response.status == 200, response.body.starts(with: Array("-----BEGIN CERTIFICATE-----".utf8)) else {
            throw ACMEError("\(url): answered \(response.status) without a PEM certificate chain")
        }
        return response.body
    }

    /// Polls the authorization at `url` until it is valid (§7.5.1): pending
    /// waits, invalid (or expired, deactivated, revoked) throws
    /// ACMEValidationError with the failed challenge's problem. Waits
    /// Retry-After when the CA sends one, else `interval`, and at most
    /// `timeout` seconds in all.
    @discardableResult
    public func pollAuthorization(_ url: String, timeout: Double = 60, interval: Double = 1) throws -> ACMEAuthorization {
        let deadline = monotonicNow() + timeout
        while true {
            let (authorization, retryAfter) = try fetchAuthorization(url)
            let failed = authorization.failedChallenge
            func failure(timedOut: Bool) -> ACMEValidationError {
                ACMEValidationError(object: .authorization, url: url, status: authorization.status,
                                    identifier: authorization.identifier.value, challengeType: failed?.type,
                                    problem: failed?.error, timedOut: timedOut)
            }
            switch authorization.status {
            case .valid:
                return authorization
            case .pending, .processing, .ready:
                guard wait(retryAfter: retryAfter, interval: interval, deadline: deadline) else { throw failure(timedOut: true) }
            case .invalid, .expired, .deactivated, .revoked:
                throw failure(timedOut: false)
            }
        }
    }

    /// Polls the order at `url` until its status is `target` (ready before
    /// finalizing, valid after, §7.4): earlier states wait (Retry-After or
    /// `interval`, at most `timeout` in all), invalid throws with the
    /// order's problem.
    @discardableResult
    public func pollOrder(_ url: String, until target: ACMEStatus = .valid,
                          timeout: Double = 60, interval: Double = 1) throws -> ACMEOrder {
        // §7.1.6: pending → ready → processing → valid.
        let progress: [ACMEStatus] = [.pending, .ready, .processing, .valid]
        guard let goal = progress.firstIndex(of: target) else { throw ACMEError("an order never waits to become \(target.rawValue)") }
        let deadline = monotonicNow() + timeout
        while true {
            let (order, retryAfter) = try fetchOrder(url)
            guard let step = progress.firstIndex(of: order.status) else {
                throw ACMEValidationError(object: .order, url: url, status: order.status, identifier: nil,
                                          challengeType: nil, problem: order.error, timedOut: false)
            }
            if step >= goal { return order }
            guard wait(retryAfter: retryAfter, interval: interval, deadline: deadline) else {
                throw ACMEValidationError(object: .order, url: url, status: order.status, identifier: nil,
                                          challengeType: nil, problem: order.error, timedOut: true)
            }
        }
    }

    func fetchOrder(_ url: String) throws -> (order: ACMEOrder, retryAfter: Int?) {
        let response = try post(url, payload: nil)
        var order = try decode(ACMEOrder.self, response.body, from: url)
        order.url = url
        return (order, response.retryAfter())
    }

    func fetchAuthorization(_ url: String) throws -> (authorization: ACMEAuthorization, retryAfter: Int?) {
        let response = try post(url, payload: nil)
        var authorization = try decode(ACMEAuthorization.self, response.body, from: url)
        authorization.url = url
        return (authorization, response.retryAfter())
    }

    /// Sleeps Retry-After (RFC 8555 §7.5.1 and §7.4: the CA's pace; never
    /// less than `interval`, so a 0 does not spin) unless that passes the
    /// deadline. False when no wait is left.
    func wait(retryAfter: Int?, interval: Double, deadline: Double) -> Bool {
        let remaining = deadline - monotonicNow()
        guard remaining > 0 else { return false }
        let delay = max(Double(retryAfter ?? 0), interval)
        // A CA asking for longer than is left: sleep what is left, look once more.
        sleepSeconds(min(delay, remaining))
        return true
    }
}

/// Seconds on CLOCK_MONOTONIC: waits do not follow wall-clock steps.
func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func sleepSeconds(_ seconds: Double) {
    guard seconds > 0 else { return }
    var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
    var remaining = timespec()
    // A signal ends the sleep early: sleep the rest.
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}
