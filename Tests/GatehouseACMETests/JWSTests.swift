import Foundation
import Testing
@testable import GatehouseACME

@Suite struct JWSTests {
    let nonce = "oFvnlFP1wIhRlYS2jTaXbA"
    let url = "https://acme.test/acme/new-account"

    func decodeJSON(_ base64url: String) throws -> [String: Any] {
        let bytes = try #require(Base64URL.decode(base64url))
        return try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    /// RFC 8555 §6.2: alg, nonce, url and exactly one of jwk and kid.
    @Test func newAccountWithJWK() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let key = try PrivateKey.generateP256()
        let payload = Array(#"{"termsOfServiceAgreed":true,"contact":["mailto:ops@example.net"]}"#.utf8)
        let jws = try JWS.sign(payload: payload, url: url, nonce: nonce, key: key, keyIdentifier: .jwk(key.jwk()))
        let header = try decodeJSON(jws.protected)
        #expect(Set(header.keys) == ["alg", "jwk", "nonce", "url"])
        #expect(header["alg"] as? String == "ES256")
        #expect(header["nonce"] as? String == nonce)
        #expect(header["url"] as? String == url)
        let jwk = try #require(header["jwk"] as? [String: String])
        guard case .ec(_, let x, let y) = try key.jwk() else { Issue.record("not EC"); return }
        #expect(jwk == ["kty": "EC", "crv": "P-256", "x": x, "y": y])
        #expect(Base64URL.decode(jws.payload) == payload)
        // The header as sent: compact, "/" not escaped.
        let headerText = String(decoding: Base64URL.decode(jws.protected)!, as: UTF8.self)
        #expect(headerText.hasPrefix(#"{"alg":"ES256","jwk":{"crv":"P-256","kty":"EC","#))
        #expect(headerText.contains(#""url":"https://acme.test/acme/new-account""#))

        let pub = try publicKeyPEM(scratch, privateKey: key.pem())
        let signature = try #require(Base64URL.decode(jws.signature))
        #expect(try opensslVerifiesES256(scratch, publicKey: pub, message: Array("\(jws.protected).\(jws.payload)".utf8),
                                         rawSignature: signature))
    }

    @Test func postAsGetWithKid() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let key = try PrivateKey.generateP256()
        let kid = "https://acme.test/acme/acct/evOfKhNU60wg"
        let jws = try JWS.sign(payload: nil, url: "https://acme.test/acme/order/1", nonce: nonce, key: key, keyIdentifier: .kid(kid))
        let header = try decodeJSON(jws.protected)
        #expect(Set(header.keys) == ["alg", "kid", "nonce", "url"])
        #expect(header["kid"] as? String == kid)
        // RFC 8555 §6.3: POST-as-GET has the empty payload, signed as "protected.".
        #expect(jws.payload == "")
        let pub = try publicKeyPEM(scratch, privateKey: key.pem())
        #expect(try opensslVerifiesES256(scratch, publicKey: pub, message: Array("\(jws.protected).".utf8),
                                         rawSignature: Base64URL.decode(jws.signature)!))
    }

    /// RFC 7515 §7.2.2: the body is an object of protected, payload, signature.
    @Test func flattenedSerialization() throws {
        let key = try PrivateKey.generateP256()
        let jws = try JWS.sign(payload: Array("{}".utf8), url: url, nonce: nonce, key: key, keyIdentifier: .kid("k"))
        let body = try #require(try JSONSerialization.jsonObject(with: Data(jws.body())) as? [String: String])
        #expect(body == ["protected": jws.protected, "payload": jws.payload, "signature": jws.signature])
        #expect(jws.signature.count == 86)   // 64 bytes
        #expect(!jws.protected.contains("=") && !jws.signature.contains("="))
    }

    @Test func escapesWhatJSONNeeds() throws {
        let key = try PrivateKey.generateP256()
        let odd = "https://acme.test/a\"b\\c"
        let jws = try JWS.sign(payload: nil, url: odd, nonce: nonce, key: key, keyIdentifier: .kid("k"))
        #expect(try decodeJSON(jws.protected)["url"] as? String == odd)
    }

    @Test func refusesBadInput() throws {
        let key = try PrivateKey.generateP256()
        for bad in ["", "not base64!", "abc="] {
            #expect(throws: ACMEError.self) { try JWS.sign(payload: nil, url: url, nonce: bad, key: key, keyIdentifier: .kid("k")) }
        }
        #expect(throws: ACMEError.self) { try JWS.sign(payload: nil, url: "", nonce: nonce, key: key, keyIdentifier: .kid("k")) }
        let rsa = try PrivateKey.generateRSA()
        #expect(throws: ACMEError.self) { try JWS.sign(payload: nil, url: url, nonce: nonce, key: rsa, keyIdentifier: .kid("k")) }
    }
}
