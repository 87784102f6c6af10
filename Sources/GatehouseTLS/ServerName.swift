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
}

/// RFC 7301 §3.1: the client's protocol list is length-prefixed names.
public enum ALPN {
    public static let http11: [UInt8] = Array("http/1.1".utf8)

    /// Offset of the "http/1.1" name inside the wire-format list, if offered.
    public static func findHTTP11(in list: UnsafeRawBufferPointer) -> Int? {
        var i = 0
        while i < list.count {
            let length = Int(list[i])
            let start = i + 1
            guard length > 0, start + length <= list.count else { return nil }
            if length == http11.count, http11.indices.allSatisfy({ list[start + $0] == http11[$0] }) {
                return start
            }
            i = start + length
        }
        return nil
    }
}
