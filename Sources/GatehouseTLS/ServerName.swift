/// RFC 6066 §3: the server_name extension body.
///   ServerNameList: uint16 length, then entries of
///   NameType (1 byte, 0 = host_name), uint16 length, name bytes.
public enum ServerNameExtension {
    /// The host_name entry, or nil when the extension is malformed or has none.
    public static func hostName(in body: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard body.count >= 2 else { return nil }
        let listLength = Int(body[0]) << 8 | Int(body[1])
        guard listLength == body.count - 2 else { return nil }
        var i = 2
        while i + 3 <= body.count {
            let type = body[i]
            let length = Int(body[i + 1]) << 8 | Int(body[i + 2])
            i += 3
            guard i + length <= body.count else { return nil }
            if type == 0 {
                guard length > 0 else { return nil }
                return UnsafeRawBufferPointer(rebasing: body[i ..< i + length])
            }
            i += length
        }
        return nil
    }

    /// The name as configuration spells names: ASCII lowercase, without a
    /// trailing dot; nil when it holds bytes no host name has.
    public static func normalized(_ name: UnsafeRawBufferPointer) -> String? {
        var bytes = Array(name)
        if bytes.last == UInt8(ascii: ".") { bytes.removeLast() }
        guard !bytes.isEmpty, bytes.count <= 253 else { return nil }
        for i in bytes.indices {
            let b = bytes[i]
            guard b > 0x20, b < 0x7f else { return nil }
            if b >= UInt8(ascii: "A"), b <= UInt8(ascii: "Z") { bytes[i] = b | 0x20 }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// RFC 7301 §3.1: the client's protocol list is length-prefixed names.
public enum ALPN {
    public static let http11: [UInt8] = Array("http/1.1".utf8)
    public static let h2: [UInt8] = Array("h2".utf8)

    /// RFC 8737 §6.2: the protocol of a tls-alpn-01 validation handshake.
    public static let acmeTLS1: [UInt8] = Array("acme-tls/1".utf8)

    public enum Choice: Equatable, Sendable { case h2, http11 }

    /// The extension body as the ClientHello carries it (RFC 7301 §3.1: a
    /// uint16 length, then the list); nil when malformed.
    public static func protocolList(extensionBody body: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard body.count >= 2, Int(body[0]) << 8 | Int(body[1]) == body.count - 2 else { return nil }
        return UnsafeRawBufferPointer(rebasing: body[2...])
    }

    /// RFC 8737 §3: a validation client offers `acme-tls/1` as its single
    /// protocol. Offered beside others it is never chosen: such a client is a
    /// browser, and gets the domain's own certificate.
    public static func offersOnlyACMEValidation(_ list: UnsafeRawBufferPointer) -> Bool {
        list.count == acmeTLS1.count + 1 && Int(list[0]) == acmeTLS1.count && list.dropFirst().elementsEqual(acmeTLS1)
    }

    /// The server's choice from the client's wire-format list: h2 when it is
    /// offered and `h2Allowed`, else http/1.1 when offered, else nothing (no
    /// ALPN answer: the client then speaks HTTP/1.1, RFC 7301 §3.2). Returns
    /// the chosen name's offset and length inside `list`.
    public static func select(from list: UnsafeRawBufferPointer, h2Allowed: Bool) -> (choice: Choice, offset: Int, length: Int)? {
        var http11At: Int?
        var i = 0
        while i < list.count {
            let length = Int(list[i])
            let start = i + 1
            guard length > 0, start + length <= list.count else { return nil }
            let name = UnsafeRawBufferPointer(rebasing: list[start ..< start + length])
            if h2Allowed, name.elementsEqual(h2) { return (.h2, start, length) }
            if http11At == nil, name.elementsEqual(http11) { http11At = start }
            i = start + length
        }
        return http11At.map { (.http11, $0, http11.count) }
    }

    /// RFC 9113 §9.2: HTTP/2 over TLS needs TLS 1.2 or later and, at 1.2, an
    /// AEAD cipher with an ephemeral key exchange (§9.2.2, Appendix A); the
    /// legacy profile's CBC and static-RSA suites and TLS 1.0/1.1 never get h2.
    public static func http2Permitted(tlsVersion: Int32, aead: Bool, ephemeralKeyExchange: Bool) -> Bool {
        if tlsVersion >= 0x0304 { return true }
        return tlsVersion == 0x0303 && aead && ephemeralKeyExchange
    }
}
