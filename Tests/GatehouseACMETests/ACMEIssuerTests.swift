import Foundation
import Testing
@testable import GatehouseACME

/// ACMEIssuer.select: the first kind of the preference list the CA offers.
@Suite struct ChallengeSelectionTests {
    static func authorization(_ types: [String]) throws -> ACMEAuthorization {
        let challenges = types.enumerated().map { i, type in
            #"{"type": "\#(type)", "url": "https://ca.test/chall/\#(i)", "status": "pending", "token": "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"}"#
        }.joined(separator: ",")
        let json = #"{"identifier": {"type": "dns", "value": "www.example.org"}, "status": "pending", "expires": "2026-01-02T14:09:30Z", "challenges": [\#(challenges)]}"#
        return try JSONDecoder().decode(ACMEAuthorization.self, from: Data(json.utf8))
    }

    @Test func preferenceOrder() throws {
        let offered = try Self.authorization(["dns-01", "http-01", "tls-alpn-01"])
        let a = ACMEIssuer.select(offered, preferring: [.tlsALPN01, .http01])
        #expect(a?.0 == .tlsALPN01 && a?.1.url == "https://ca.test/chall/2")
        let b = ACMEIssuer.select(offered, preferring: [.http01, .tlsALPN01])
        #expect(b?.0 == .http01 && b?.1.url == "https://ca.test/chall/1")
        let c = ACMEIssuer.select(try Self.authorization(["dns-01", "http-01"]), preferring: [.tlsALPN01, .http01])
        #expect(c?.0 == .http01)
        #expect(ACMEIssuer.select(try Self.authorization(["dns-01"]), preferring: [.tlsALPN01, .http01]) == nil)
        #expect(ACMEIssuer.select(offered, preferring: []) == nil)
    }

    /// RFC 8555 §7.1.4's example authorization decodes, and its failed
    /// challenge's problem is found.
    @Test func failedChallengeProblem() throws {
        let json = """
            {"status": "invalid", "identifier": {"type": "dns", "value": "www.example.org"},
             "challenges": [
               {"type": "http-01", "url": "https://example.com/acme/chall/prV_B7yEyA4", "status": "invalid",
                "token": "DGyRejmCefe7v4NfDGDKfA", "error": {"type": "urn:ietf:params:acme:error:connection", "detail": "refused", "status": 400}},
               {"type": "dns-01", "url": "https://example.com/acme/chall/Rg5dV14Gh1Q", "status": "pending", "token": "DGyRejmCefe7v4NfDGDKfA"}]}
            """
        let authorization = try JSONDecoder().decode(ACMEAuthorization.self, from: Data(json.utf8))
        #expect(authorization.failedChallenge?.type == "http-01")
        #expect(authorization.failedChallenge?.error?.type == "urn:ietf:params:acme:error:connection")
        let error = ACMEValidationError(object: .authorization, url: "https://example.com/acme/authz/1", status: .invalid,
                                        identifier: "www.example.org", challengeType: "http-01",
                                        problem: authorization.failedChallenge?.error, timedOut: false)
        #expect(error.description == "authorization for www.example.org invalid, http-01: urn:ietf:params:acme:error:connection: refused (https://example.com/acme/authz/1)")
    }

    /// RFC 8555 §6.7.1's example: the subproblems name their identifiers,
    /// all on one line.
    @Test func subproblems() throws {
        let json = #"""
            {"type": "urn:ietf:params:acme:error:malformed",
             "detail": "Some of the identifiers requested were rejected",
             "subproblems": [
               {"type": "urn:ietf:params:acme:error:malformed", "detail": "Invalid underscore in DNS name \"_example.org\"",
                "identifier": {"type": "dns", "value": "_example.org"}},
               {"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": "This CA will not issue for \"example.net\"",
                "identifier": {"type": "dns", "value": "example.net"}}]}
            """#
        let problem = try JSONDecoder().decode(ACMEProblem.self, from: Data(json.utf8))
        #expect(problem.subproblems?.map(\.identifier?.value) == ["_example.org", "example.net"])
        #expect(problem.description == #"urn:ietf:params:acme:error:malformed: Some of the identifiers requested were rejected; "#
            + #"_example.org: urn:ietf:params:acme:error:malformed: Invalid underscore in DNS name "_example.org"; "#
            + #"example.net: urn:ietf:params:acme:error:rejectedIdentifier: This CA will not issue for "example.net""#)
    }
}
