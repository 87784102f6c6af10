/// A public JSON Web Key (RFC 7517), the two kinds ACME uses.
public enum JWK: Equatable, Sendable, Encodable {
    /// RFC 7518 §6.2: x and y base64url, full length.
    case ec(crv: String, x: String, y: String)
    /// RFC 7518 §6.3: n and e base64url, minimal length.
    case rsa(n: String, e: String)

    /// RFC 7638 §3.2: only the required members, in lexicographic order,
    /// no whitespace. Every value is base64url or a curve name, so nothing
    /// needs escaping.
    public var canonicalJSON: String {
        switch self {
        case .ec(let crv, let x, let y): #"{"crv":"\#(crv)","kty":"EC","x":"\#(x)","y":"\#(y)"}"#
        case .rsa(let n, let e): #"{"e":"\#(e)","kty":"RSA","n":"\#(n)"}"#
        }
    }

    /// RFC 7638 §3 with SHA-256, base64url: what RFC 8555 §8.1 puts after
    /// the token in a key authorization.
    public var thumbprint: String {
        Base64URL.encode(OpenSSL.sha256(Array(canonicalJSON.utf8)))
    }

    private enum Member: String, CodingKey { case kty, crv, x, y, n, e }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Member.self)
        switch self {
        case .ec(let crv, let x, let y):
            try c.encode("EC", forKey: .kty)
            try c.encode(crv, forKey: .crv)
            try c.encode(x, forKey: .x)
            try c.encode(y, forKey: .y)
        case .rsa(let n, let e):
            try c.encode("RSA", forKey: .kty)
            try c.encode(n, forKey: .n)
            try c.encode(e, forKey: .e)
        }
    }
}
