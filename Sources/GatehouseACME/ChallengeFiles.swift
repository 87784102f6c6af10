#if canImport(Glibc)
import Glibc
#endif

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

    /// The record as written; nil when missing or malformed.
    public func readHTTP01(token: String) -> (name: String, keyAuthorization: String)? {
        guard let path = try? http01(token: token), let bytes = try? read(path, limit: 4096) else { return nil }
        let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        guard lines.count == 3, lines[2].isEmpty else { return nil }
        let name = String(decoding: lines[0], as: UTF8.self)
        let keyAuthorization = String(decoding: lines[1], as: UTF8.self)
        guard HostName.isValid(name), Self.isKeyAuthorization(keyAuthorization, token: token) else { return nil }
        return (name, keyAuthorization)
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

    /// The entries of `directory` (not those starting with "."; temporary
    /// files do) and their mtimes; empty when it does not exist.
    public func list(_ directory: String) -> [(name: String, modified: Int)] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var out: [(String, Int)] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard !name.hasPrefix(".") else { continue }
            var st = stat()
            guard stat(directory + "/" + name, &st) == 0 else { continue }
            out.append((name, Int(st.st_mtim.tv_sec)))
        }
        return out
    }
}
