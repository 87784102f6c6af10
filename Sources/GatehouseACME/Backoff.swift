#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A domain's failed orders and when to try again. Kept in
/// `certificates/<name>/backoff.json` so that a restart, or another
/// instance of the fleet, does not hammer the CA (RFC 8555 §6.6: the CA
/// may refuse a client that retries too eagerly).
public struct Backoff: Sendable, Equatable, Codable {
    /// Failures since the last success.
    public var failures: Int
    /// The last failure's text, for `gatehouse acme status`.
    public var lastError: String?
    /// When the last failure happened, Unix seconds.
    public var lastFailure: Int64?
    /// No order before this time, Unix seconds; 0 without backoff.
    public var nextAttempt: Int64

    public init(failures: Int = 0, lastError: String? = nil, lastFailure: Int64? = nil, nextAttempt: Int64 = 0) {
        self.failures = failures
        self.lastError = lastError
        self.lastFailure = lastFailure
        self.nextAttempt = nextAttempt
    }

    /// No failure: order whenever due.
    public static let none = Backoff()

    /// The first retry waits a minute; each failure doubles it up to a day.
    public static let initialDelay: Int64 = 60
    public static let maximumDelay: Int64 = 86_400
    /// RFC 8555 §6.7 rateLimited without Retry-After: at least an hour,
    /// the smallest window of Let's Encrypt's limits that resets.
    public static let rateLimitedMinimum: Int64 = 3_600
    /// A Retry-After beyond a week (Let's Encrypt's longest limit) is
    /// taken as a week: a wrong header must not stop renewals for good.
    public static let retryAfterLimit: Int64 = 7 * 86_400
    /// lastError is cut to this many characters: problem details can be long.
    public static let errorTextLimit = 1_000

    public var isNone: Bool { failures == 0 && nextAttempt == 0 }

    /// Whether an order has to wait at `now`.
    public func isWaiting(now: Int64) -> Bool { nextAttempt > now }

    /// The wait after the `failures`-th failure in a row: 60 s · 2^(n−1)
    /// up to a day, less up to a quarter at random (so that domains failing
    /// together, e.g. when the CA is down, do not come back together); a
    /// longer Retry-After (RFC 9110 §10.2.3, RFC 8555 §6.6) wins.
    public static func delay<R: RandomNumberGenerator>(failures: Int, retryAfter: Int?, rateLimited: Bool,
                                                       using random: inout R) -> Int64 {
        let exponent = min(max(failures, 1) - 1, 20)
        let base = min(initialDelay << Int64(exponent), maximumDelay)
        var delay = base - Int64.random(in: 0 ... base / 4, using: &random)
        if let retryAfter {
            delay = max(delay, min(Int64(max(retryAfter, 0)), retryAfterLimit))
        } else if rateLimited {
            delay = max(delay, rateLimitedMinimum)
        }
        return delay
    }

    /// Counts a failed order at `now`.
    public mutating func recordFailure<R: RandomNumberGenerator>(now: Int64, retryAfter: Int?, rateLimited: Bool, detail: String,
                                                                using random: inout R) {
        failures += 1
        lastError = String(detail.prefix(Self.errorTextLimit))
        lastFailure = now
        nextAttempt = now + Self.delay(failures: failures, retryAfter: retryAfter, rateLimited: rateLimited, using: &random)
    }

    /// A certificate was obtained: no more waiting.
    public mutating func recordSuccess() {
        self = .none
    }
}

extension Backoff {
    /// The domain's saved backoff. A missing file is no backoff; so is a
    /// corrupt or unreadable one, or one further ahead than any delay this
    /// code chooses: that is reported as `problem` for the log, but a bad
    /// file must not stop renewals.
    public static func load(_ primaryName: String, from storage: ACMEStorage, now: Int64) -> (backoff: Backoff, problem: ACMEError?) {
        let path: String
        let bytes: [UInt8]?
        do {
            path = try storage.backoff(primaryName)
            bytes = try storage.read(path, limit: 64 * 1024)
        } catch {
            return (.none, ACMEError("backoff of \(primaryName) ignored: \(error)"))
        }
        guard let bytes else { return (.none, nil) }
        guard let backoff = try? JSONDecoder().decode(Backoff.self, from: Data(bytes)) else {
            return (.none, ACMEError("\(path): not a backoff record, ignored"))
        }
        guard backoff.failures >= 0, backoff.nextAttempt >= 0,
              backoff.nextAttempt <= now + max(retryAfterLimit, maximumDelay) else {
            return (.none, ACMEError("\(path): failures \(backoff.failures), next attempt \(backoff.nextAttempt) out of range, ignored"))
        }
        return (backoff, nil)
    }

    /// Writes the backoff atomically (0600); no backoff removes the file.
    public func save(_ primaryName: String, to storage: ACMEStorage) throws(ACMEError) {
        let path = try storage.backoff(primaryName)
        if isNone {
            try storage.remove(path)
            return
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data: Data
        do {
            data = try encoder.encode(self)
        } catch {
            throw ACMEError("\(path): cannot encode backoff: \(error)")
        }
        try storage.write(Array(data), to: path)
    }
}
