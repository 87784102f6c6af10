#if canImport(Glibc)
import Glibc
#endif
import GatehouseACME
import GatehouseConfig

/// `gatehouse acme status`: one line per ACME domain, read from storage
/// alone (as `certbot certificates` reads its directory), so it works
/// whether or not Gatehouse runs, and on any instance of a fleet.
public enum ACMEStatusReport {
    public static let header = "DOMAIN\tNAMES\tSTATE\tEXPIRES\tRENEWAL\tLAST-ERROR"

    public static func lines(_ snapshot: ConfigSnapshot, now: Int64 = Int64(time(nil))) -> [String] {
        guard let settings = snapshot.acme else { return [] }
        let storage = ACMEStorage(root: settings.storage)
        return snapshot.domains.filter(\.acme).map { domain in
            let name = domain.primaryName
            let leaf = (try? storage.certificate(name, .ecdsa)).flatMap { try? storage.read($0) }.flatMap { try? CertificateInfo(pem: $0) }
            let (backoff, _) = Backoff.load(name, from: storage, now: now)
            var state: String
            var renewal = "-"
            var expires = "-"
            if let leaf {
                expires = UTCTime.iso8601(Int64(leaf.notAfter))
                let at = RenewalSchedule.renewalTime(leaf, now: now)
                renewal = UTCTime.iso8601(at)
                state = Int64(leaf.notAfter) <= now ? "expired" : at <= now ? "renewing" : "valid"
            } else {
                state = "waiting"
            }
            if backoff.isWaiting(now: now) {
                state += ",backoff"
                renewal = UTCTime.iso8601(backoff.nextAttempt)
            }
            let error = backoff.lastError.map { $0.replacingNewlines() } ?? "-"
            return [name, domain.names.joined(separator: ","), state, expires, renewal, error].joined(separator: "\t")
        }
    }
}

/// The renewal time of a certificate: two thirds of its lifetime with
/// jitter (RenewalPolicy), the jitter drawn from a generator seeded by the
/// certificate's serial, so the ACME thread, `acme status` and every
/// instance of a fleet agree on it without storing it.
enum RenewalSchedule {
    static func renewalTime(_ leaf: CertificateInfo, window: RenewalWindow? = nil, now: Int64) -> Int64 {
        var random = SerialSeededRandom(leaf.serial)
        return RenewalPolicy.renewalTime(notBefore: Int64(leaf.notBefore), notAfter: Int64(leaf.notAfter), window: window,
                                         now: now, using: &random)
    }
}

/// SplitMix64 seeded by FNV-1a of the serial: reproducible, uniform enough
/// to spread renewals (not for anything secret).
struct SerialSeededRandom: RandomNumberGenerator {
    private var state: UInt64

    init(_ serial: [UInt8]) {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in serial { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        state = hash
    }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// RFC 3339 timestamps in UTC for people and logs.
enum UTCTime {
    static func iso8601(_ seconds: Int64) -> String {
        let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let rest = seconds - days * 86400
        let (y, m, d) = civil(days: days)
        func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(y)-\(two(m))-\(two(d))T\(two(rest / 3600)):\(two(rest % 3600 / 60)):\(two(rest % 60))Z"
    }

    /// Days since 1970-01-01 to a proleptic Gregorian date (years counted
    /// from March, so the leap day ends a year).
    static func civil(days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}

extension String {
    /// One line per domain: a CA's problem detail may hold newlines.
    func replacingNewlines() -> String {
        String(map { $0 == "\n" || $0 == "\r" || $0 == "\t" ? " " : $0 })
    }
}
