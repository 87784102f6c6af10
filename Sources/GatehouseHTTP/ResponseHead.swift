public struct ResponseHead: Sendable, Equatable {
    public var version: HTTPVersion
    public var status: Int
    /// May be empty.
    public var reason: ByteSpan
    public var headers: [HeaderField]
    /// RFC 9112 §6.3, given the request method.
    public var framing: BodyFraming
    /// RFC 9112 §9.3, and false when the body is delimited by close.
    public var keepAlive: Bool
    /// The (validated) Content-Length value, even when it does not frame a
    /// body (HEAD, 304): writers re-emit it as metadata.
    public var contentLength: UInt64?
    public var headLength: Int
}

public enum ResponseHeadResult: Sendable, Equatable {
    case incomplete
    case complete(ResponseHead)
    case error(HTTPParseError)
}

/// Incremental, in-place parser for a backend's response head. Every error is
/// `.badRequest(reason)`: the proxy answers the client 502 either way.
public struct ResponseHeadParser: Sendable {
    public let limits: HTTPLimits
    private var lines = LineScanner()
    private var fields = FieldSection()
    private var inFields = false
    private var version = HTTPVersion.http11
    private var status = 0
    private var reason = ByteSpan(start: 0, end: 0)
    private var headLength = 0
    private var framing = BodyFraming.none
    private var failure: HTTPParseError?

    public init(limits: HTTPLimits = HTTPLimits()) {
        self.limits = limits
        fields.initialCapacity = min(limits.maxHeaderCount, 32)
    }

    public mutating func reset() {
        lines = LineScanner()
        fields.reset()
        inFields = false
        headLength = 0
        failure = nil
    }

    /// Same contract as `RequestHeadParser.parse`.
    public mutating func parse(_ bytes: UnsafeRawBufferPointer, requestMethod: Method) -> ResponseHeadResult {
        if let failure { return .error(failure) }
        if headLength > 0 { return .complete(makeHead()) }
        if bytes.count < lines.scanPos { reset() }
        let view = min(bytes.count, limits.maxHeaderBytes)
        while true {
            let limit = inFields ? view : min(view, lines.lineStart + limits.maxRequestLineBytes)
            switch lines.next(bytes, limit: limit) {
            case .error(let error):
                return fail(error)
            case .incomplete:
                if !inFields && lines.lineStart + limits.maxRequestLineBytes <= view {
                    return fail(.badRequest("status line too long"))
                }
                if bytes.count > limits.maxHeaderBytes { return fail(.badRequest("response head too large")) }
                return .incomplete
            case .line(let line):
                if !inFields {
                    if let error = parseStatusLine(bytes, line) { return fail(error) }
                    inFields = true
                } else if line.isEmpty {
                    if let error = finish(bytes, requestMethod: requestMethod) { return fail(error) }
                    headLength = line.end + 2
                    return .complete(makeHead())
                } else if let error = fields.add(bytes, line, maxCount: limits.maxHeaderCount, request: false) {
                    // Response errors are all reported as 400-class; 502 to the client.
                    return fail(error == .headerFieldsTooLarge ? .badRequest("too many response fields") : error)
                }
            }
        }
    }

    private mutating func fail(_ error: HTTPParseError) -> ResponseHeadResult {
        failure = error
        return .error(error)
    }

    /// RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ].
    /// Also accepts a missing final SP ("HTTP/1.1 200").
    private mutating func parseStatusLine(_ p: UnsafeRawBufferPointer, _ line: ByteSpan) -> HTTPParseError? {
        let s = line.start
        guard line.count >= 12 else { return .badRequest("malformed status line") }
        switch parseVersion(p, s, s + 8) {
        case .malformed: return .badRequest("malformed status line")
        case .unsupported: return .badRequest("unsupported response version")
        case .ok(let v): version = v
        }
        guard p[s + 8] == SP, isDigit(p[s + 9]), isDigit(p[s + 10]), isDigit(p[s + 11]) else {
            return .badRequest("malformed status line")
        }
        status = Int(p[s + 9] - 0x30) * 100 + Int(p[s + 10] - 0x30) * 10 + Int(p[s + 11] - 0x30)
        guard (100...599).contains(status) else { return .badRequest("invalid status code") }
        if line.end == s + 12 {
            reason = ByteSpan(start: line.end, end: line.end)
            return nil
        }
        guard p[s + 12] == SP else { return .badRequest("malformed status line") }
        // reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
        for i in (s + 13)..<line.end where !isFieldValueByte(p[i]) { return .badRequest("invalid reason phrase") }
        reason = ByteSpan(start: s + 13, end: line.end)
        return nil
    }

    private mutating func finish(_ p: UnsafeRawBufferPointer, requestMethod: Method) -> HTTPParseError? {
        if fields.hasTransferEncoding {
            // RFC 9112 §6.1: TE in an HTTP/1.0 message is faulty framing.
            if version == .http10 { return .badRequest("Transfer-Encoding in HTTP/1.0 response") }
            if fields.contentLength != nil { return .badRequest("Content-Length with Transfer-Encoding") }
            // RFC 9112 §7: chunked MUST NOT be applied more than once.
            if fields.chunkedCount > 1 { return .badRequest("chunked applied twice") }
        }
        fields.markConnectionListed(p)
        // RFC 9112 §6.3, in rule order.
        if requestMethod == .head || status < 200 || status == 204 || status == 304 {
            framing = .none  // rules 1-2 (CONNECT is never forwarded)
        } else if fields.hasTransferEncoding {
            // Rule 4. We re-frame chunked ourselves; any other coding (gzip,
            // chunked) would reach the client without the field that names it,
            // so such a response is refused (the proxy answers 502).
            guard fields.codingCount == 1, fields.lastCodingIsChunked else {
                return .badRequest("transfer coding other than chunked")
            }
            framing = .chunked
        } else if let n = fields.contentLength {
            framing = .contentLength(n)  // rule 6
        } else {
            framing = .untilClose  // rule 8
        }
        return nil
    }

    private func makeHead() -> ResponseHead {
        ResponseHead(
            version: version, status: status, reason: reason, headers: fields.current, framing: framing,
            keepAlive: fields.persistent(version) && framing != .untilClose,
            contentLength: fields.contentLength, headLength: headLength)
    }
}
