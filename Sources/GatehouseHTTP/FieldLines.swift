// Shared by request heads, response heads and chunked trailers.

/// Finds CRLF-terminated lines incrementally. `scanPos` survives between
/// calls so a head trickled in byte by byte is scanned once (linear work).
struct LineScanner: Sendable {
    var lineStart = 0
    var scanPos = 0

    enum Step {
        /// Line content without its CRLF.
        case line(ByteSpan)
        case incomplete
        case error(HTTPParseError)
    }

    /// RFC 9112 §2.2: lines end in CRLF. Strict choice: a bare LF or a CR not
    /// followed by LF is rejected rather than tolerated, because parsers that
    /// disagree on line ends are a request-smuggling vector.
    /// Only bytes before `limit` are looked at.
    @inline(__always)
    mutating func next(_ p: UnsafeRawBufferPointer, limit: Int) -> Step {
        var i = scanPos
        while i < limit {
            let b = p[i]
            if b == CR {
                guard i + 1 < limit else { break }  // wait for the byte after CR
                guard p[i + 1] == LF else { return .error(.badRequest("bare CR")) }
                let line = ByteSpan(start: lineStart, end: i)
                lineStart = i + 2
                scanPos = i + 2
                return .line(line)
            }
            if b == LF { return .error(.badRequest("bare LF")) }
            i += 1
        }
        scanPos = i
        return .incomplete
    }
}

/// RFC 9112 §5: field-line = field-name ":" OWS field-value OWS.
/// Returns the name and the OWS-trimmed value, or the reason for rejecting.
@inline(__always)
func parseFieldLine(_ p: UnsafeRawBufferPointer, _ line: ByteSpan,
                    _ name: inout ByteSpan, _ value: inout ByteSpan) -> HTTPParseError? {
    let first = p[line.start]
    // RFC 9112 §5.2: obs-fold (a line starting with whitespace) is rejected.
    if isOWS(first) { return .badRequest("obsolete line folding") }
    var i = line.start
    while i < line.end && isTChar(p[i]) { i += 1 }
    guard i < line.end, p[i] == 0x3A else {
        // RFC 9112 §5.1: whitespace between name and colon MUST be rejected.
        if i < line.end && isOWS(p[i]) { return .badRequest("whitespace before colon") }
        return .badRequest("invalid field name")
    }
    guard i > line.start else { return .badRequest("empty field name") }
    name = ByteSpan(start: line.start, end: i)
    var s = i + 1
    for j in s..<line.end where !isFieldValueByte(p[j]) { return .badRequest("invalid byte in field value") }
    var e = line.end
    while s < e && isOWS(p[s]) { s += 1 }
    while e > s && isOWS(p[e - 1]) { e -= 1 }
    value = ByteSpan(start: s, end: e)
    return nil
}

/// Field names Gatehouse acts on, matched case-insensitively (RFC 9110 §5.1).
@inline(__always)
func classifyField(_ p: UnsafeRawBufferPointer, _ name: ByteSpan) -> HeaderKind {
    let s = name.start, e = name.end
    switch name.count {
    case 2: if p.matchesIgnoringCase(s, e, "te") { return .te }
    case 4: if p.matchesIgnoringCase(s, e, "host") { return .host }
    case 6: if p.matchesIgnoringCase(s, e, "expect") { return .expect }
    case 7:
        if p.matchesIgnoringCase(s, e, "upgrade") { return .upgrade }
        if p.matchesIgnoringCase(s, e, "trailer") { return .trailer }
    case 10:
        if p.matchesIgnoringCase(s, e, "connection") { return .connection }
        if p.matchesIgnoringCase(s, e, "keep-alive") { return .keepAlive }
    case 14: if p.matchesIgnoringCase(s, e, "content-length") { return .contentLength }
    case 15: if p.matchesIgnoringCase(s, e, "x-forwarded-for") { return .xForwardedFor }
    case 16:
        if p.matchesIgnoringCase(s, e, "proxy-connection") { return .proxyConnection }
        if p.matchesIgnoringCase(s, e, "x-forwarded-host") { return .xForwardedHost }
    case 17:
        if p.matchesIgnoringCase(s, e, "transfer-encoding") { return .transferEncoding }
        if p.matchesIgnoringCase(s, e, "x-forwarded-proto") { return .xForwardedProto }
    case 25: if p.matchesIgnoringCase(s, e, "strict-transport-security") { return .strictTransportSecurity }
    default: break
    }
    for i in s ..< e where p[i] == UInt8(ascii: "_") { return .underscored }
    return .other
}

/// RFC 9110 §8.6: Content-Length = 1*DIGIT. A list of identical values
/// (from a buggy intermediary) is accepted as one value; differing values,
/// empty elements, signs or more than 19 digits are rejected.
@inline(__always)
func parseContentLength(_ p: UnsafeRawBufferPointer, _ v: ByteSpan) -> UInt64? {
    var result: UInt64?
    let ok = forEachListElement(p, v) { s, e in
        guard e > s, e - s <= 19 else { return false }  // 19 digits cannot overflow UInt64
        var n: UInt64 = 0
        for i in s..<e {
            guard isDigit(p[i]) else { return false }
            n = n &* 10 &+ UInt64(p[i] &- 0x30)
        }
        if let r = result, r != n { return false }
        result = n
        return true
    }
    return ok ? result : nil
}

/// RFC 9110 §10.1.1: 100-continue is the only expectation defined; a list
/// with anything else (parameters included) cannot be met. Sets, never clears.
@inline(__always)
func parseExpect(_ p: UnsafeRawBufferPointer, _ v: ByteSpan, _ expectContinue: inout Bool, _ unknown: inout Bool) {
    _ = forEachListElement(p, v) { s, e in
        if s == e { return true }
        if p.matchesIgnoringCase(s, e, "100-continue") { expectContinue = true } else { unknown = true }
        return true
    }
}

/// RFC 9110 §7.2 / RFC 3986 §3.2.2: Host = uri-host [ ":" port ].
/// Strict subset: reg-name (and IPv4) limited to ALPHA DIGIT "-" "." "_" "~"
/// (no pct-encoding, no sub-delims); IP-literal only as "[" HEXDIG/":"/"." "]"
/// containing a ":" (no IPvFuture); the port, if the colon is there, is 1-5
/// digits <= 65535. Empty values are rejected.
func isValidHost(_ p: UnsafeRawBufferPointer, _ v: ByteSpan) -> Bool {
    guard !v.isEmpty else { return false }
    var i = v.start
    if p[i] == 0x5B {  // "["
        i += 1
        var sawColon = false
        while i < v.end && p[i] != 0x5D {
            let b = p[i]
            if b == 0x3A { sawColon = true } else if hexValue(b) == nil && b != 0x2E { return false }
            i += 1
        }
        guard i < v.end, sawColon else { return false }
        i += 1  // "]"
    } else {
        let s = i
        while i < v.end && p[i] != 0x3A {
            let b = p[i]
            switch b {
            case 0x30...0x39, 0x41...0x5A, 0x61...0x7A, 0x2D, 0x2E, 0x5F, 0x7E: break
            default: return false
            }
            i += 1
        }
        guard i > s else { return false }
    }
    if i == v.end { return true }
    guard p[i] == 0x3A else { return false }
    i += 1
    let digits = v.end - i
    guard digits >= 1 && digits <= 5 else { return false }
    var port = 0
    for j in i..<v.end {
        guard isDigit(p[j]) else { return false }
        port = port * 10 + Int(p[j] - 0x30)
    }
    return port <= 65535
}

/// Field lines of a head, validated once each as they complete, and the
/// semantics Gatehouse needs from them. One array per parser, reused.
struct FieldSection: Sendable {
    /// Read through `current`: after `reset()` it still holds the previous
    /// message's fields until the first field of the next one arrives. The
    /// head returned for the previous message shares this storage, and by
    /// then it is normally gone, so clearing reuses the buffer instead of
    /// allocating a new one per request.
    var headers: [HeaderField] = []
    /// Reserved at the first field, not at init: a parser of an idle
    /// keep-alive or not-yet-used connection then holds no field storage.
    var initialCapacity = 0
    private var stale = false
    var current: [HeaderField] { stale ? [] : headers }
    var contentLength: UInt64?
    var hasTransferEncoding = false
    var codingCount = 0
    var chunkedCount = 0
    var lastCodingIsChunked = false
    var host: ByteSpan?
    var hostCount = 0
    var close = false
    var keepAliveToken = false
    var listsOtherFields = false
    var expectContinue = false
    /// An Expect member other than 100-continue (RFC 9110 §10.1.1: 417).
    var unknownExpectation = false
    var hasUpgrade = false
    /// "upgrade" among the Connection tokens (RFC 9110 §7.8 requires it next to Upgrade).
    var upgradeToken = false

    init() {}

    mutating func reset() {
        stale = true
        contentLength = nil
        hasTransferEncoding = false
        codingCount = 0
        chunkedCount = 0
        lastCodingIsChunked = false
        host = nil
        hostCount = 0
        close = false
        keepAliveToken = false
        listsOtherFields = false
        expectContinue = false
        unknownExpectation = false
        hasUpgrade = false
        upgradeToken = false
    }

    mutating func add(_ p: UnsafeRawBufferPointer, _ line: ByteSpan, maxCount: Int, request: Bool) -> HTTPParseError? {
        if stale {
            headers.removeAll(keepingCapacity: true)
            stale = false
        }
        if headers.capacity == 0 { headers.reserveCapacity(initialCapacity) }
        guard headers.count < maxCount else { return .headerFieldsTooLarge }
        var name = ByteSpan(start: 0, end: 0), value = name
        if let error = parseFieldLine(p, line, &name, &value) { return error }
        let kind = classifyField(p, name)
        switch kind {
        case .host where request:
            // RFC 9112 §3.2: exactly one valid Host.
            hostCount += 1
            guard hostCount == 1 else { return .badRequest("multiple Host fields") }
            guard isValidHost(p, value) else { return .badRequest("invalid Host") }
            host = value
        case .contentLength:
            guard let n = parseContentLength(p, value) else { return .badRequest("invalid Content-Length") }
            if let old = contentLength, old != n { return .badRequest("conflicting Content-Length") }
            contentLength = n
        case .transferEncoding:
            // RFC 9112 §6.1: the codings of all TE fields form one list. Strict
            // choice: every element must be a bare token (no empty elements, no
            // parameters).
            hasTransferEncoding = true
            var valid = true
            _ = forEachListElement(p, value) { s, e in
                // RFC 9110 §5.6.1.2: empty list elements are accepted and ignored.
                if s == e { return true }
                guard isToken(p, s, e) else { valid = false; return false }
                codingCount += 1
                lastCodingIsChunked = p.matchesIgnoringCase(s, e, "chunked")
                if lastCodingIsChunked { chunkedCount += 1 }
                return true
            }
            guard valid else { return .badRequest("invalid Transfer-Encoding") }
        case .connection:
            // RFC 9110 §7.6.1: a list of field names plus "close"/"keep-alive";
            // empty elements are ignored (§5.6.1), non-tokens rejected.
            var valid = true
            _ = forEachListElement(p, value) { s, e in
                if s == e { return true }
                guard isToken(p, s, e) else { valid = false; return false }
                if p.matchesIgnoringCase(s, e, "close") {
                    close = true
                } else if p.matchesIgnoringCase(s, e, "keep-alive") {
                    keepAliveToken = true
                } else {
                    if p.matchesIgnoringCase(s, e, "upgrade") { upgradeToken = true }
                    listsOtherFields = true
                }
                return true
            }
            guard valid else { return .badRequest("invalid Connection") }
        case .expect where request:
            parseExpect(p, value, &expectContinue, &unknownExpectation)
        case .upgrade where request:
            hasUpgrade = true
        default:
            break
        }
        headers.append(HeaderField(name: name, value: value, kind: kind))
        return nil
    }

    /// RFC 9110 §7.6.1: fields named in Connection are hop-by-hop, whatever the
    /// order they arrived in. Only `.other` and `.strictTransportSecurity` are
    /// re-marked: every other kind is already dropped by the writers or (Host)
    /// is end-to-end by definition (RFC 9112 §3.2), so a client cannot strip it.
    mutating func markConnectionListed(_ p: UnsafeRawBufferPointer) {
        guard listsOtherFields, !stale else { return }
        for c in headers.indices where headers[c].kind == .connection {
            _ = forEachListElement(p, headers[c].value) { s, e in
                if s == e || p.matchesIgnoringCase(s, e, "close") || p.matchesIgnoringCase(s, e, "keep-alive") {
                    return true
                }
                let token = ByteSpan(start: s, end: e)
                for i in headers.indices {
                    let kind = headers[i].kind
                    if (kind == .other || kind == .strictTransportSecurity) && p.equalIgnoringCase(headers[i].name, token) {
                        headers[i].kind = .connectionListed
                    }
                }
                return true
            }
        }
    }

    /// RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
    func persistent(_ version: HTTPVersion) -> Bool {
        switch version {
        case .http11: !close
        case .http10: keepAliveToken && !close
        }
    }
}

/// RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive.
/// Returns nil when malformed; major 1 only is supported (1.x for x > 1 is
/// treated as 1.1, RFC 9110 §2.5).
enum ParsedVersion { case malformed, unsupported, ok(HTTPVersion) }

@inline(__always)
func parseVersion(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> ParsedVersion {
    guard end - start == 8, p.matches(start, start + 5, "HTTP/"), isDigit(p[start + 5]),
          p[start + 6] == 0x2E, isDigit(p[start + 7]) else { return .malformed }
    guard p[start + 5] == 0x31 else { return .unsupported }
    return .ok(p[start + 7] == 0x30 ? .http10 : .http11)
}
