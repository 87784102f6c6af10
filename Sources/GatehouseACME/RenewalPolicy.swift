/// A suggested renewal window from the CA (RFC 9773 §4.2), Unix seconds.
public struct RenewalWindow: Sendable, Equatable, Codable {
    public var start: Int64
    public var end: Int64

    public init(start: Int64, end: Int64) {
        self.start = start
        self.end = end
    }
}

/// When to renew a certificate. Pure: time and randomness come in as
/// arguments, so a seeded generator makes every choice reproducible.
public enum RenewalPolicy {
    /// Renew at two thirds of the lifetime (a 90-day certificate after 60
    /// days, a 6-day one after 4): the remaining third leaves time for
    /// retries with backoff before expiry, as Let's Encrypt advises.
    public static func target(notBefore: Int64, notAfter: Int64) -> Int64 {
        notBefore + lifetime(notBefore: notBefore, notAfter: notAfter) * 2 / 3
    }

    /// The jitter window ends at the target and is this share of the
    /// lifetime long (4.5 days of 90, 7.2 hours of 6), so certificates
    /// issued in the same second do not all renew in the same minute.
    public static let jitterDivisor: Int64 = 20

    /// The choice never falls in the last tenth of the lifetime (9 days of
    /// 90), whatever an ARI window says: that time is for retries.
    public static let safetyDivisor: Int64 = 10

    public static func lifetime(notBefore: Int64, notAfter: Int64) -> Int64 {
        max(0, notAfter - notBefore)
    }

    /// The latest renewal time allowed: notAfter less the safety margin.
    public static func latest(notBefore: Int64, notAfter: Int64) -> Int64 {
        notAfter - lifetime(notBefore: notBefore, notAfter: notAfter) / safetyDivisor
    }

    /// A renewal time chosen uniformly at random. With an ARI window, inside
    /// it (RFC 9773 §4.2: "select a uniform random time within the suggested
    /// window"; one already past means now), but no later than `latest`.
    /// Without one, in [target − lifetime/20, target], never before
    /// notBefore. A certificate without lifetime renews at once.
    public static func renewalTime<R: RandomNumberGenerator>(notBefore: Int64, notAfter: Int64, window: RenewalWindow? = nil,
                                                              now: Int64, using random: inout R) -> Int64 {
        let lifetime = lifetime(notBefore: notBefore, notAfter: notAfter)
        guard lifetime > 0 else { return now }
        let latest = latest(notBefore: notBefore, notAfter: notAfter)
        if let window, window.end >= window.start {
            // RFC 9773 §4.2: a window in the past means renew now.
            guard window.end > now else { return now }
            let end = min(window.end, latest)
            let start = min(window.start, end)
            return max(Int64.random(in: start ... end, using: &random), now)
        }
        let target = target(notBefore: notBefore, notAfter: notAfter)
        let high = min(target, latest)
        let low = min(max(target - lifetime / jitterDivisor, notBefore), high)
        return Int64.random(in: low ... high, using: &random)
    }

    /// Whether the certificate renewing at `renewalTime` is due at `now`.
    public static func isDue(renewalTime: Int64, now: Int64) -> Bool {
        renewalTime <= now
    }

    /// Seconds until the certificate expires; negative once it has.
    public static func secondsUntilExpiry(notAfter: Int64, now: Int64) -> Int64 {
        notAfter - now
    }
}
