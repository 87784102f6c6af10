#if canImport(Glibc)
import Glibc
#endif

/// Pure parsers for the string-valued settings. Each returns either the parsed value or
/// a message for the operator; the caller attaches file and key.
enum Syntax {
    /// Lowercases and drops one trailing dot, then checks LDH syntax (RFC 1123 labels of
    /// 1-63 letters/digits/hyphens, no leading or trailing hyphen, total <= 253).
    /// "*." + name is accepted only when `allowWildcard`.
    static func normalizeName(_ raw: String, allowWildcard: Bool) -> Result<String, Message> {
        var bytes = Array(raw.utf8)
        guard bytes.allSatisfy({ $0 < 0x80 }) else {
            return .failure("invalid name \"\(raw)\": must be ASCII (use the xn-- form for internationalized names)")
        }
        for i in bytes.indices { bytes[i] = NameIndex.lower(bytes[i]) }
        if bytes.last == UInt8(ascii: ".") { bytes.removeLast() }

        var host = bytes[...]
        if allowWildcard, bytes.starts(with: [UInt8(ascii: "*"), UInt8(ascii: ".")]) {
            host = bytes[2...]
        }
        if host.contains(UInt8(ascii: "*")) {
            return .failure("invalid name \"\(raw)\": a wildcard is only allowed as the whole leftmost label (\"*.example.com\")")
        }
        if let problem = hostnameProblem(host) {
            return .failure("invalid name \"\(raw)\": \(problem)")
        }
        return .success(String(decoding: bytes, as: UTF8.self))
    }

    /// Why `name` (lowercase, no trailing dot) is not an LDH host name, or nil if it is.
    static func hostnameProblem(_ name: ArraySlice<UInt8>) -> String? {
        if name.isEmpty { return "empty" }
        if name.count > NameIndex.maxNameLength { return "longer than 253 characters" }
        for label in name.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            if label.isEmpty { return "empty label" }
            if label.count > 63 { return "label longer than 63 characters" }
            for b in label where !(b &- UInt8(ascii: "a") < 26 || b &- UInt8(ascii: "0") < 10 || b == UInt8(ascii: "-")) {
                return "character \"\(String(decoding: [b], as: UTF8.self))\" not allowed (letters, digits, hyphen)"
            }
            if label.first == UInt8(ascii: "-") || label.last == UInt8(ascii: "-") {
                return "label starts or ends with a hyphen"
            }
        }
        // RFC 3696 §2: a numeric top-level label means an (invalid) IP address.
        if let last = name.split(separator: UInt8(ascii: ".")).last,
           last.allSatisfy({ $0 &- UInt8(ascii: "0") < 10 }) {
            return "last label is all digits (not an IP address or host name)"
        }
        return nil
    }

    /// An ACME directory URL (RFC 8555 §7.1.1): https only, since every
    /// request carries the account's signed JWS and the CA's answers decide
    /// what gets served; a host, no userinfo, whitespace or fragment.
    static func acmeDirectory(_ raw: String) -> Result<String, Message> {
        let usage = "invalid directory \"\(raw)\": expected an https URL such as \"https://acme-v02.api.letsencrypt.org/directory\""
        guard raw.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }), !raw.contains("#") else { return .failure(Message(usage)) }
        let scheme = "https://"
        guard raw.lowercased().hasPrefix(scheme) else { return .failure(Message(usage)) }
        let rest = raw.dropFirst(scheme.count)
        let authority = rest.prefix { $0 != "/" && $0 != "?" }
        guard !authority.isEmpty, !authority.contains("@"), !authority.hasPrefix(":") else { return .failure(Message(usage)) }
        return .success(raw)
    }

    /// An account contact (RFC 8555 §7.3): one "mailto:" address. Let's
    /// Encrypt refuses other schemes, several addresses in one URL and
    /// header fields ("?"), so they are refused here, not at the first order.
    static func acmeContact(_ raw: String) -> Result<String, Message> {
        let usage = "invalid contact \"\(raw)\": expected \"mailto:someone@example.net\""
        guard raw.hasPrefix("mailto:") else { return .failure(Message(usage)) }
        let address = raw.dropFirst("mailto:".count)
        let parts = address.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty,
              address.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: ",") && $0 != UInt8(ascii: "?") })
        else { return .failure(Message(usage)) }
        return .success(raw)
    }

    /// Listener address: "IPv4:port" or "[IPv6]:port", numeric only, because listeners
    /// bind at startup and must not depend on DNS. Returns the canonical host text.
    static func listenAddress(_ raw: String) -> Result<(host: String, port: UInt16), Message> {
        let usage = "invalid address \"\(raw)\": expected \"IPv4:port\" or \"[IPv6]:port\""
        guard let (host, portText, bracketed) = splitHostPort(raw) else { return .failure(Message(usage)) }
        guard let port = parsePort(portText) else {
            return .failure("invalid address \"\(raw)\": port must be 1-65535")
        }
        if bracketed {
            guard let canonical = canonicalIP(host, family: AF_INET6) else {
                return .failure("invalid address \"\(raw)\": \"\(host)\" is not an IPv6 address")
            }
            return .success((canonical, port))
        }
        guard let canonical = canonicalIP(host, family: AF_INET) else {
            return .failure(Message(usage + " (numeric addresses only)"))
        }
        return .success((canonical, port))
    }

    /// Backend: "host:port" (IPv4 or DNS name), "[IPv6]:port" or "unix:/absolute/path".
    static func backend(_ raw: String) -> Result<Backend, Message> {
        let usage = "invalid backend \"\(raw)\": expected \"host:port\", \"[IPv6]:port\" or \"unix:/absolute/path\""
        if raw.hasPrefix("unix:") {
            let path = String(raw.dropFirst(5))
            guard path.hasPrefix("/") else {
                return .failure("invalid backend \"\(raw)\": the unix socket path must be absolute")
            }
            // sun_path is 108 bytes including the terminating NUL.
            guard path.utf8.count <= 107 else {
                return .failure("invalid backend \"\(raw)\": unix socket path longer than 107 bytes")
            }
            return .success(.unix(path: path))
        }
        guard let (host, portText, bracketed) = splitHostPort(raw) else { return .failure(Message(usage)) }
        guard let port = parsePort(portText) else {
            return .failure("invalid backend \"\(raw)\": port must be 1-65535")
        }
        if bracketed {
            guard let canonical = canonicalIP(host, family: AF_INET6) else {
                return .failure("invalid backend \"\(raw)\": \"\(host)\" is not an IPv6 address")
            }
            return .success(.tcp(host: canonical, port: port))
        }
        if let canonical = canonicalIP(host, family: AF_INET) {
            return .success(.tcp(host: canonical, port: port))
        }
        let lowered = Array(host.utf8).map(NameIndex.lower)
        if let problem = hostnameProblem(lowered[...]) {
            return .failure("invalid backend \"\(raw)\": \"\(host)\" is not a valid host name (\(problem))")
        }
        return .success(.tcp(host: String(decoding: lowered, as: UTF8.self), port: port))
    }

    /// Splits "host:port" / "[v6]:port". Nil when the shape is wrong, e.g. a bare IPv6
    /// address (more than one colon) or a URL.
    static func splitHostPort(_ raw: String) -> (host: String, port: Substring, bracketed: Bool)? {
        if raw.hasPrefix("[") {
            guard let close = raw.firstIndex(of: "]") else { return nil }
            let host = raw[raw.index(after: raw.startIndex) ..< close]
            let rest = raw[raw.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            return (String(host), rest.dropFirst(), true)
        }
        let parts = raw.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty else { return nil }
        return (String(parts[0]), parts[1], false)
    }

    /// Decimal 1-65535, digits only (no sign, no spaces).
    static func parsePort(_ text: Substring) -> UInt16? {
        guard !text.isEmpty, text.count <= 5, text.utf8.allSatisfy({ $0 &- UInt8(ascii: "0") < 10 }),
              let value = Int(text), value >= 1, value <= 65535 else { return nil }
        return UInt16(value)
    }

    /// inet_pton then inet_ntop, so "::0" and "::" compare equal for duplicate checks.
    static func canonicalIP(_ text: String, family: Int32) -> String? {
        guard !text.isEmpty, !text.utf8.contains(0) else { return nil }
        var storage = in6_addr()
        return withUnsafeMutableBytes(of: &storage) { raw -> String? in
            guard inet_pton(family, text, raw.baseAddress) == 1 else { return nil }
            var out = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            guard inet_ntop(family, raw.baseAddress, &out, socklen_t(out.count)) != nil else { return nil }
            return String(decoding: out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}

/// An operator-facing message; the loader adds file and key.
struct Message: Error, ExpressibleByStringInterpolation {
    let text: String
    init(_ text: String) { self.text = text }
    init(stringLiteral value: String) { text = value }
}
