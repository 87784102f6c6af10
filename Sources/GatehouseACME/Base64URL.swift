/// base64url without padding (RFC 4648 §5, as RFC 7515 §2 uses it): every
/// binary value in JWS, JWK and ACME (nonces, tokens, CSRs).
public enum Base64URL {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    public static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var it = bytes.makeIterator()
        while let a = it.next() {
            let b = it.next(), c = it.next()
            out.append(alphabet[Int(a >> 2)])
            out.append(alphabet[Int((a & 0x03) << 4 | (b ?? 0) >> 4)])
            guard let b else { break }
            out.append(alphabet[Int((b & 0x0f) << 2 | (c ?? 0) >> 6)])
            guard let c else { break }
            out.append(alphabet[Int(c & 0x3f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func encode(_ text: String) -> String { encode(Array(text.utf8)) }

    /// nil for anything but canonical unpadded base64url: padding, the
    /// base64 characters `+` and `/`, whitespace, an impossible length, or
    /// nonzero bits after the last byte (which would let two texts decode
    /// to the same bytes).
    public static func decode(_ text: String) -> [UInt8]? {
        var values: [UInt8] = []
        values.reserveCapacity(text.utf8.count)
        for c in text.utf8 {
            guard let v = value(c) else { return nil }
            values.append(v)
        }
        if values.count % 4 == 1 { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(values.count * 3 / 4)
        var i = 0
        while i + 4 <= values.count {
            let (a, b, c, d) = (values[i], values[i + 1], values[i + 2], values[i + 3])
            out.append(a << 2 | b >> 4)
            out.append(b << 4 | c >> 2)
            out.append(c << 6 | d)
            i += 4
        }
        switch values.count - i {
        case 2:
            guard values[i + 1] & 0x0f == 0 else { return nil }
            out.append(values[i] << 2 | values[i + 1] >> 4)
        case 3:
            guard values[i + 2] & 0x03 == 0 else { return nil }
            out.append(values[i] << 2 | values[i + 1] >> 4)
            out.append(values[i + 1] << 4 | values[i + 2] >> 2)
        default:
            break
        }
        return out
    }

    static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "A") ... UInt8(ascii: "Z"): c - UInt8(ascii: "A")
        case UInt8(ascii: "a") ... UInt8(ascii: "z"): c - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0") ... UInt8(ascii: "9"): c - UInt8(ascii: "0") + 52
        case UInt8(ascii: "-"): 62
        case UInt8(ascii: "_"): 63
        default: nil
        }
    }

    /// Whether a challenge token from the CA may be used: it names a file in
    /// storage and a URL path, so it is checked before either. RFC 8555
    /// §8.3 and RFC 8737 §3: base64url only, no padding, at least 128 bits
    /// of entropy (22 characters); 256 bounds what a broken CA can make us
    /// store.
    public static func isValidToken(_ token: String) -> Bool {
        let count = token.utf8.count
        return count >= 22 && count <= 256 && token.utf8.allSatisfy { value($0) != nil }
    }
}
