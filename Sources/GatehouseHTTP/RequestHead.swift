public struct RequestHead: Sendable, Equatable {
    public var method: ByteSpan
    public var methodKind: Method
    /// The request-target as received.
    public var target: ByteSpan
    /// Origin-form path+query to forward. Absolute-form: from the first "/"
    /// after the authority, empty if there was none (writers emit "/").
    /// Asterisk-form: the "*".
    public var path: ByteSpan
    public var version: HTTPVersion
    public var headers: [HeaderField]
    /// The Host field value (validated).
    public var host: ByteSpan?
    /// .none, .contentLength(n) or .chunked; never .untilClose.
    public var framing: BodyFraming
    /// RFC 9112 §9.3: 1.1 unless "close"; 1.0 only with "keep-alive".
    public var keepAlive: Bool
    /// Expect: 100-continue (case-insensitive), HTTP/1.1 only (RFC 9110 §10.1.1).
    public var expectContinue: Bool
    /// An Upgrade header was present.
    public var hasUpgrade: Bool
    /// RFC 9110 §7.8: an HTTP/1.1 request with Upgrade and "upgrade" in
    /// Connection asks to switch protocols (WebSocket, RFC 6455 §4.1).
    public var wantsUpgrade: Bool = false
    /// Bytes up to and including the final CRLF CRLF (plus any skipped leading CRLFs).
    public var headLength: Int
}

public enum RequestHeadResult: Sendable, Equatable {
    case incomplete
    case complete(RequestHead)
    case error(HTTPParseError)
}

/// Incremental, in-place HTTP/1.1 request head parser (RFC 9112 §2-§6).
/// Each line is validated once, when its CRLF arrives; limits are enforced
/// as soon as enough bytes are buffered.
public struct RequestHeadParser: Sendable {
    /// RFC 9112 §2.2: empty lines before the request line are skipped, up to this many.
    public static let maxLeadingEmptyLines = 4

    /// Visible ASCII minus `#` (a fragment is never sent) and the characters
    /// RFC 3986 does not allow anywhere in a URI.
    static let targetByteAllowed: [Bool] = (0 ..< 128).map { b in
        b >= 0x21 && b <= 0x7E && !Array("#\"<>\\^`{|}".utf8).contains(UInt8(b))
    }

    public let limits: HTTPLimits
    private var lines = LineScanner()
    private var fields = FieldSection()
    private var inFields = false
    private var leadingEmptyLines = 0
    private var method = ByteSpan(start: 0, end: 0)
    private var methodKind = Method.other
    private var target = ByteSpan(start: 0, end: 0)
    private var path = ByteSpan(start: 0, end: 0)
    private var authority: ByteSpan?
    private var version = HTTPVersion.http11
    private var headLength = 0
    private var failure: HTTPParseError?

    public init(limits: HTTPLimits = HTTPLimits()) {
        self.limits = limits
        fields.initialCapacity = min(limits.maxHeaderCount, 32)
    }

    /// Before the next message. Keeps the header array's capacity.
    public mutating func reset() {
        lines = LineScanner()
        fields.reset()
        inFields = false
        leadingEmptyLines = 0
        authority = nil
        version = .http11
        headLength = 0
        failure = nil
    }

    /// `bytes` holds everything buffered from the start of the message; call
    /// again with more bytes after `.incomplete`. Results are sticky until `reset()`.
    public mutating func parse(_ bytes: UnsafeRawBufferPointer) -> RequestHeadResult {
        if let failure { return .error(failure) }
        if headLength > 0 { return .complete(makeHead()) }
        // The caller must pass at least what it passed before; if not, start over.
        if bytes.count < lines.scanPos { reset() }
        let view = min(bytes.count, limits.maxHeaderBytes)
        while true {
            let limit = inFields ? view : min(view, lines.lineStart + limits.maxRequestLineBytes)
            switch lines.next(bytes, limit: limit) {
            case .error(let error):
                return fail(error)
            case .incomplete:
                // RFC 9112 §3: a request line longer than we accept -> 414.
                if !inFields && lines.lineStart + limits.maxRequestLineBytes <= view { return fail(.uriTooLong) }
                // RFC 6585 §5: the head cannot fit -> 431.
                if bytes.count > limits.maxHeaderBytes { return fail(.headerFieldsTooLarge) }
                return .incomplete
            case .line(let line):
                if !inFields {
                    if line.isEmpty {
                        leadingEmptyLines += 1
                        if leadingEmptyLines > Self.maxLeadingEmptyLines { return fail(.badRequest("too many empty lines")) }
                        continue
                    }
                    if let error = parseRequestLine(bytes, line) { return fail(error) }
                    inFields = true
                } else if line.isEmpty {
                    if let error = finish(bytes) { return fail(error) }
                    headLength = line.end + 2
                    return .complete(makeHead())
                } else if let error = fields.add(bytes, line, maxCount: limits.maxHeaderCount, request: true) {
                    return fail(error)
                }
            }
        }
    }

    private mutating func fail(_ error: HTTPParseError) -> RequestHeadResult {
        failure = error
        return .error(error)
    }

    /// RFC 9112 §3: request-line = method SP request-target SP HTTP-version.
    private mutating func parseRequestLine(_ p: UnsafeRawBufferPointer, _ line: ByteSpan) -> HTTPParseError? {
        // RFC 9110 §9.1: method = token.
        var i = line.start
        while i < line.end && isTChar(p[i]) { i += 1 }
        guard i > line.start, i < line.end, p[i] == SP else { return .badRequest("invalid method") }
        method = ByteSpan(start: line.start, end: i)
        // RFC 9112 §3.2: the target has no whitespace; strict choice: only
        // visible ASCII and no "#" (a fragment is never sent).
        i += 1
        let targetStart = i
        while i < line.end && p[i] != SP {
            let b = p[i]
            guard isRequestTargetByte(b) else { return .badRequest("invalid request-target") }
            i += 1
        }
        guard i > targetStart, i < line.end else { return .badRequest("malformed request line") }
        target = ByteSpan(start: targetStart, end: i)
        switch parseVersion(p, i + 1, line.end) {
        case .malformed: return .badRequest("malformed HTTP version")
        case .unsupported: return .versionNotSupported
        case .ok(let v): version = v
        }
        methodKind = classifyMethod(p, method)
        return classifyTarget(p)
    }

    /// RFC 9112 §3.2: the four request-target forms.
    private mutating func classifyTarget(_ p: UnsafeRawBufferPointer) -> HTTPParseError? {
        // RFC 9112 §3.2.3: authority-form is only for CONNECT; we are not a forward proxy.
        if methodKind == .connect { return .badRequest("CONNECT not supported") }
        let s = target.start, e = target.end
        let first = p[s]
        if first == 0x2F {  // origin-form
            path = target
            return nil
        }
        if first == 0x2A && target.count == 1 {  // asterisk-form, RFC 9112 §3.2.4
            guard methodKind == .options else { return .badRequest("asterisk-form without OPTIONS") }
            path = target
            return nil
        }
        // RFC 9112 §3.2.2: absolute-form, http and https only.
        let authorityStart: Int
        if p.hasPrefixIgnoringCase(s, e, "http://") {
            authorityStart = s + 7
        } else if p.hasPrefixIgnoringCase(s, e, "https://") {
            authorityStart = s + 8
        } else {
            return .badRequest("unsupported request-target form")
        }
        var k = authorityStart
        while k < e && p[k] != 0x2F && p[k] != 0x3F { k += 1 }
        // A query without a path would need a "/" we cannot splice in place.
        if k < e && p[k] == 0x3F { return .badRequest("absolute-form query without path") }
        guard k > authorityStart else { return .badRequest("absolute-form without authority") }
        authority = ByteSpan(start: authorityStart, end: k)
        path = ByteSpan(start: k, end: e)
        return nil
    }

    /// Cross-field rules, once the whole head is there.
    private mutating func finish(_ p: UnsafeRawBufferPointer) -> HTTPParseError? {
        // RFC 9112 §3.2: HTTP/1.1 requests carry exactly one Host.
        if fields.hostCount == 0 && version == .http11 { return .badRequest("missing Host") }
        if fields.hasTransferEncoding {
            // RFC 9112 §6.1: TE in HTTP/1.0 is faulty framing.
            if version == .http10 { return .badRequest("Transfer-Encoding in HTTP/1.0") }
            // RFC 9112 §6.1: a server MAY reject CL with TE; we do (smuggling).
            if fields.contentLength != nil { return .badRequest("Content-Length with Transfer-Encoding") }
            // RFC 9112 §6.3 rule 4: chunked must be the final coding (else 400);
            // §6.1: a coding we do not implement before it gets 501 (we only
            // re-frame chunked).
            if !fields.lastCodingIsChunked || fields.chunkedCount != 1 {
                return .badRequest("Transfer-Encoding not ending in one chunked")
            }
            if fields.codingCount != 1 { return .notImplemented("transfer coding other than chunked") }
        }
        if let authority {
            // Strict choice: the absolute-form authority must match Host.
            guard let host = fields.host, p.equalIgnoringCase(authority, host) else {
                return .badRequest("absolute-form authority differs from Host")
            }
        }
        // Checked last: a head that is malformed anyway gets its 400.
        if fields.unknownExpectation { return .expectationFailed }
        fields.markConnectionListed(p)
        return nil
    }

    private func makeHead() -> RequestHead {
        let framing: BodyFraming
        if fields.hasTransferEncoding {
            framing = .chunked
        } else if let n = fields.contentLength {
            framing = .contentLength(n)
        } else {
            framing = .none  // RFC 9112 §6.3 rule 7
        }
        return RequestHead(
            method: method, methodKind: methodKind, target: target, path: path, version: version,
            headers: fields.current, host: fields.host, framing: framing,
            keepAlive: fields.persistent(version),
            expectContinue: fields.expectContinue && version == .http11,
            hasUpgrade: fields.hasUpgrade,
            wantsUpgrade: fields.hasUpgrade && fields.upgradeToken && version == .http11,
            headLength: headLength)
    }
}

/// A byte the request-target may hold (also checked on HTTP/2's :path).
/// RFC 3986 §2: `"<>\^`{|}` are not URI characters either (HAProxy refuses
/// them too); clients percent-encode them.
@inline(__always)
func isRequestTargetByte(_ b: UInt8) -> Bool {
    b >= 0x21 && b <= 0x7E && RequestHeadParser.targetByteAllowed[Int(b)]
}

/// RFC 9110 §9.1: method names are case-sensitive.
@inline(__always)
func classifyMethod(_ p: UnsafeRawBufferPointer, _ m: ByteSpan) -> Method {
    let s = m.start, e = m.end
    switch m.count {
    case 3:
        if p.matches(s, e, "GET") { return .get }
        if p.matches(s, e, "PUT") { return .put }
    case 4:
        if p.matches(s, e, "HEAD") { return .head }
        if p.matches(s, e, "POST") { return .post }
    case 5:
        if p.matches(s, e, "PATCH") { return .patch }
        if p.matches(s, e, "TRACE") { return .trace }
    case 6: if p.matches(s, e, "DELETE") { return .delete }
    case 7:
        if p.matches(s, e, "OPTIONS") { return .options }
        if p.matches(s, e, "CONNECT") { return .connect }
    default: break
    }
    return .other
}
