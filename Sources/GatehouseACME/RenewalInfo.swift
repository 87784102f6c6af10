#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A CA's suggested renewal window for one certificate (RFC 9773 §4.2).
public struct RenewalInfo: Sendable, Equatable {
    /// Unix seconds; renew at a random time in [windowStart, windowEnd).
    public let windowStart: Int
    public let windowEnd: Int
    /// A page explaining the window (an incident, a revocation), for people.
    public let explanationURL: String?
    /// The response's Retry-After: when to ask again (§4.3).
    public let retryAfter: Int?

    public init(windowStart: Int, windowEnd: Int, explanationURL: String?, retryAfter: Int?) {
        self.windowStart = windowStart
        self.windowEnd = windowEnd
        self.explanationURL = explanationURL
        self.retryAfter = retryAfter
    }

    struct Body: Decodable {
        struct Window: Decodable { let start: String; let end: String }
        let suggestedWindow: Window
        let explanationURL: String?
    }

    /// The renewalInfo object (§4.2); a window whose end is not after its
    /// start is malformed.
    public init(json: [UInt8], retryAfter: Int?) throws(ACMEError) {
        let body: Body
        do {
            body = try JSONDecoder().decode(Body.self, from: Data(json))
        } catch {
            throw ACMEError("renewalInfo is not a renewalInfo object (\(error))")
        }
        guard let start = RFC3339.seconds(body.suggestedWindow.start), let end = RFC3339.seconds(body.suggestedWindow.end) else {
            throw ACMEError("renewalInfo window \"\(body.suggestedWindow.start.prefix(40))\" - \"\(body.suggestedWindow.end.prefix(40))\" is not RFC 3339")
        }
        guard end > start else { throw ACMEError("renewalInfo window ends before it starts") }
        self.init(windowStart: start, windowEnd: end, explanationURL: body.explanationURL, retryAfter: retryAfter)
    }
}

extension ACMEClient {
    /// RFC 9773 §4.1: the renewal window of the certificate `certID`
    /// (CertificateInfo.ariCertID) by a plain GET, not signed. nil when the
    /// CA's directory has no renewalInfo.
    public func renewalInfo(certID: String) throws -> RenewalInfo? {
        guard let base = try directory().renewalInfo else { return nil }
        // base64url "." base64url: nothing that could change the URL's meaning.
        let parts = certID.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && Base64URL.decode(String($0)) != nil }) else {
            throw ACMEError("\"\(certID.prefix(80))\" is not an ARI certID")
        }
        let url = (base.hasSuffix("/") ? base : base + "/") + certID
        let response = try http.get(url)
        guard response.status == 200 else { throw requestError(url, response) }
        do {
            return try RenewalInfo(json: response.body, retryAfter: response.retryAfter())
        } catch {
            throw ACMEError("\(url): \(error)")
        }
    }
}

/// RFC 3339 §5.6 date-time, "2025-01-02T04:00:00Z", fractions of a second
/// and numeric offsets included; as Unix seconds (the fraction dropped).
enum RFC3339 {
    static func seconds(_ text: String) -> Int? {
        let b = Array(text.utf8)
        // YYYY-MM-DDTHH:MM:SS is 19 bytes; "T" and "Z" may be lower case (§5.6 note).
        guard b.count >= 20, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"),
              b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t"),
              b[13] == UInt8(ascii: ":"), b[16] == UInt8(ascii: ":") else { return nil }
        func number(_ range: Range<Int>) -> Int? { decimal(b, range) }
        guard let year = number(0 ..< 4), let month = number(5 ..< 7), let day = number(8 ..< 10),
              let hour = number(11 ..< 13), let minute = number(14 ..< 16), let second = number(17 ..< 19),
              (1 ... 12).contains(month), day >= 1, day <= daysIn(month: month, year: year),
              hour < 24, minute < 60, second <= 60 else { return nil }   // 60: a leap second (§5.7)
        var i = 19
        if b[i] == UInt8(ascii: ".") {
            i += 1
            let digits = i
            while i < b.count, b[i] >= UInt8(ascii: "0"), b[i] <= UInt8(ascii: "9") { i += 1 }
            guard i > digits, i < b.count else { return nil }
        }
        var offset = 0
        switch b[i] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            guard i + 1 == b.count else { return nil }
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            guard i + 6 == b.count, b[i + 3] == UInt8(ascii: ":"),
                  let h = number(i + 1 ..< i + 3), let m = number(i + 4 ..< i + 6), h < 24, m < 60 else { return nil }
            offset = (h * 3600 + m * 60) * (b[i] == UInt8(ascii: "-") ? -1 : 1)
        default:
            return nil
        }
        // Local time minus its offset is UTC.
        return HTTPDate.daysFromCivil(year: year, month: month, day: day) * 86400 + hour * 3600 + minute * 60 + second - offset
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }
}
