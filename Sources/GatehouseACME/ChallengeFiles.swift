/// Challenges live in storage, not only in memory: the CA's validation may
/// reach any instance of a fleet sharing the storage (issue: fleet), not the
/// one that ordered.
extension ACMEStorage {
    /// RFC 8555 §8.3. The record names the identifier too, so a token is
    /// answered only for the host it was issued for: "<name>\n<key authorization>\n".
    public func writeHTTP01(token: String, name: String, keyAuthorization: String) throws(ACMEError) {
        guard HostName.isValid(name), Self.isKeyAuthorization(keyAuthorization, token: token) else {
            throw ACMEError("http-01 record for \"\(name.prefix(80))\" is malformed")
        }
        try write(Array("\(name)\n\(keyAuthorization)\n".utf8), to: http01(token: token))
    }

    /// The key authorization when `token` was issued for `name`; nil for any
    /// other token or name (the request then goes to the domain's app).
    public func readHTTP01(token: String, name: String) -> [UInt8]? {
        guard let path = try? http01(token: token), let bytes = try? read(path, limit: 4096) else { return nil }
        let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        guard lines.count == 3, lines[2].isEmpty, lines[0].elementsEqual(name.utf8) else { return nil }
        let keyAuthorization = String(decoding: lines[1], as: UTF8.self)
        return Self.isKeyAuthorization(keyAuthorization, token: token) ? Array(lines[1]) : nil
    }

    public func removeHTTP01(token: String) {
        if let path = try? http01(token: token) { try? remove(path) }
    }

    /// RFC 8737 §3: the challenge certificate and its key, one PEM file.
    public func writeTLSALPN01(name: String, pem: [UInt8]) throws(ACMEError) {
        try write(pem, to: tlsALPN01(name))
    }

    public func readTLSALPN01(name: String) -> [UInt8]? {
        guard let path = try? tlsALPN01(name) else { return nil }
        return try? read(path, limit: 64 * 1024)
    }

    public func removeTLSALPN01(name: String) {
        if let path = try? tlsALPN01(name) { try? remove(path) }
    }

    /// RFC 8555 §8.1: token "." base64url(thumbprint), nothing else.
    static func isKeyAuthorization(_ value: String, token: String) -> Bool {
        let parts = value.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 2 && parts[0] == token && Base64URL.isValidToken(token)
            && parts[1].count == 43 && Base64URL.decode(String(parts[1]))?.count == 32
    }
}
