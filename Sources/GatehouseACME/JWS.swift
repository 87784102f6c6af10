#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A JWS in the flattened JSON serialization (RFC 7515 §7.2.2), the only
/// one ACME accepts (RFC 8555 §6.2), as the body of every POST.
public struct JWS: Equatable, Sendable, Encodable {
    public let protected: String
    public let payload: String
    public let signature: String

    /// How the protected header names the account key (RFC 8555 §6.2):
    /// the key itself for newAccount (and revocation by certificate key),
    /// the account URL for everything else.
    public enum KeyIdentifier: Equatable, Sendable {
        case jwk(JWK)
        case kid(String)
    }

    struct ProtectedHeader: Encodable {
        let alg = "ES256"
        let jwk: JWK?
        let kid: String?
        let nonce: String
        let url: String
    }

    /// Signs `payload` (JSON bytes; nil for POST-as-GET, RFC 8555 §6.3,
    /// whose payload is the empty string) for a request to `url` with the
    /// server's `nonce` (RFC 8555 §6.5).
    public static func sign(payload: [UInt8]?, url: String, nonce: String, key: PrivateKey,
                            keyIdentifier: KeyIdentifier) throws(ACMEError) -> JWS {
        // RFC 8555 §6.5.1: a nonce is base64url; anything else is the
        // server's mistake and would be refused as badNonce anyway.
        guard !nonce.isEmpty, Base64URL.decode(nonce) != nil else { throw ACMEError("nonce \"\(nonce)\" is not base64url") }
        guard !url.isEmpty else { throw ACMEError("a JWS needs the request URL") }
        var jwk: JWK?
        var kid: String?
        switch keyIdentifier {
        case .jwk(let k): jwk = k
        case .kid(let k): kid = k
        }
        let header = try json(ProtectedHeader(jwk: jwk, kid: kid, nonce: nonce, url: url))
        let protected = Base64URL.encode(header)
        let encodedPayload = payload.map { Base64URL.encode($0) } ?? ""
        let signature = try key.signES256(Array("\(protected).\(encodedPayload)".utf8))
        return JWS(protected: protected, payload: encodedPayload, signature: Base64URL.encode(signature))
    }

    /// The request body (`application/jose+json`).
    public func body() throws(ACMEError) -> [UInt8] {
        try Self.json(self)
    }

    /// Compact, sorted members, "/" unescaped: deterministic bytes.
    static func json<T: Encodable>(_ value: T) throws(ACMEError) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            return Array(try encoder.encode(value))
        } catch {
            throw ACMEError("JSON encoding: \(error)")
        }
    }
}
