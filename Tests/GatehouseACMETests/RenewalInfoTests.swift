import Foundation
import Testing
@testable import GatehouseACME

@Suite struct RFC3339Tests {
    /// RFC 3339 §5.8's examples, and the times `date -u -d` gives for them.
    @Test func rfcExamples() {
        #expect(RFC3339.seconds("1985-04-12T23:20:50.52Z") == 482_196_050)
        #expect(RFC3339.seconds("1996-12-19T16:39:57-08:00") == 851_042_397)
        #expect(RFC3339.seconds("1990-12-31T23:59:60Z") == 662_688_000)        // leap second
        #expect(RFC3339.seconds("1990-12-31T15:59:60-08:00") == 662_688_000)
        #expect(RFC3339.seconds("1937-01-01T12:00:27.87+00:20") == -1_041_337_173)
    }

    @Test func variants() {
        #expect(RFC3339.seconds("2025-01-02T04:00:00Z") == 1_735_790_400)
        #expect(RFC3339.seconds("2025-01-02t04:00:00z") == 1_735_790_400)
        #expect(RFC3339.seconds("2025-01-02T04:00:00.000000001Z") == 1_735_790_400)
        #expect(RFC3339.seconds("2025-01-02T05:30:00+01:30") == 1_735_790_400)
        #expect(RFC3339.seconds("2025-01-01T23:00:00-05:00") == 1_735_790_400)
        #expect(RFC3339.seconds("2024-02-29T00:00:00Z") == 1_709_164_800)
        #expect(RFC3339.seconds("1970-01-01T00:00:00Z") == 0)
    }

    @Test func malformed() {
        for bad in ["", "2025-01-02", "2025-01-02T04:00:00", "2025-01-02 04:00:00Z", "2025-01-02T04:00Z",
                    "2025-01-02T04:00:00.Z", "2025-01-02T04:00:00+0100", "2025-01-02T04:00:00+01", "2025-01-02T04:00:00Zjunk",
                    "2025-13-01T00:00:00Z", "2025-02-29T00:00:00Z", "2025-04-31T00:00:00Z", "2025-01-00T00:00:00Z",
                    "2025-01-02T24:00:00Z", "2025-01-02T04:60:00Z", "2025-01-02T04:00:61Z", "2025-01-02T04:00:00+24:00",
                    "+025-01-02T04:00:00Z", "2025-01-02T04:00:00.5", "２０２５-01-02T04:00:00Z"] {
            #expect(RFC3339.seconds(bad) == nil, "\(bad)")
        }
    }
}

@Suite struct RenewalInfoTests {
    /// RFC 9773 §4.2's example response (Retry-After: 21600).
    static let example = """
        {
          "suggestedWindow": {
            "start": "2025-01-02T04:00:00Z",
            "end": "2025-01-03T04:00:00Z"
          },
          "explanationURL": "https://acme.example.com/docs/ari"
        }
        """

    @Test func rfcExample() throws {
        let info = try RenewalInfo(json: Array(Self.example.utf8), retryAfter: 21600)
        #expect(info == RenewalInfo(windowStart: 1_735_790_400, windowEnd: 1_735_876_800,
                                    explanationURL: "https://acme.example.com/docs/ari", retryAfter: 21600))
    }

    @Test func withoutExplanationWithFractionsAndOffsets() throws {
        let json = #"{"suggestedWindow": {"start": "2025-01-02T04:00:00.123456Z", "end": "2025-01-03T05:00:00+01:00"}, "other": 1}"#
        let info = try RenewalInfo(json: Array(json.utf8), retryAfter: nil)
        #expect(info == RenewalInfo(windowStart: 1_735_790_400, windowEnd: 1_735_876_800, explanationURL: nil, retryAfter: nil))
    }

    @Test func malformed() {
        for bad in [#"{}"#, #"{"suggestedWindow": {"start": "2025-01-02T04:00:00Z"}}"#,
                    #"{"suggestedWindow": {"start": "2025-01-02T04:00:00Z", "end": "tomorrow"}}"#,
                    #"{"suggestedWindow": {"start": "2025-01-03T04:00:00Z", "end": "2025-01-02T04:00:00Z"}}"#,
                    #"{"suggestedWindow": {"start": "2025-01-02T04:00:00Z", "end": "2025-01-02T04:00:00Z"}}"#, "not json"] {
            #expect(throws: ACMEError.self, "\(bad)") { try RenewalInfo(json: Array(bad.utf8), retryAfter: nil) }
        }
    }
}
