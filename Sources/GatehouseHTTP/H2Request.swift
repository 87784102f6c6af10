// One HTTP/2 request's decoded header list -> a validated request (RFC 9113
// §8.2, §8.3; RFC 8441 for WebSockets). The framing layer (nghttp2) has done
// HPACK; every rule that keeps the HTTP/1.1 request we forward unambiguous is
// enforced here, not trusted to it.

/// What the caller does about a refused request.
public enum H2RequestDisposition: Equatable, Sendable {
    /// RFC 9113 §8.1.1: malformed. Stream error PROTOCOL_ERROR (RST_STREAM);
    /// a server MAY answer 400 before resetting.
    case protocolError
    /// Well-formed HTTP/2 that Gatehouse refuses: answer this status on the
    /// stream. Nothing reaches a backend.
    case respond(status: Int)
}

/// The rule a request broke. `reason` is a fixed literal for the
/// rate-limited log line; `disposition` says what the caller does.
public enum H2RequestError: Error, Equatable, Sendable, CaseIterable {
    // RFC 9113 §8.2.1 field names.
    case emptyName
    case uppercaseName
    /// A byte §8.2.1 forbids in names (CTL, SP, DEL, non-ASCII, ":" in a regular name).
    case invalidNameByte
    /// Allowed by §8.2.1 but not an RFC 9110 §5.6.2 token (e.g. `"`, `(`, `/`).
    case nonTokenName
    // RFC 9113 §8.2.1 field values.
    case forbiddenValueByte  // NUL, CR or LF
    case valueEdgeWhitespace
    /// Another CTL or DEL: invalid per RFC 9110 §5.5, and our HTTP/1.1 parser refuses it too.
    case controlInValue
    // RFC 9113 §8.2.2.
    case connectionSpecificField
    case teNotTrailers
    // RFC 9113 §8.3.
    case unknownPseudoHeader
    case duplicatePseudoHeader
    case pseudoHeaderAfterRegular
    case pseudoHeaderInTrailers
    // RFC 9113 §8.3.1.
    case missingMethod
    case missingScheme
    case missingPath
    case emptyPath
    case pathNotOriginForm
    case invalidMethod
    case invalidPathByte
    case asteriskWithoutOptions
    case schemeNotHTTPS
    case missingAuthority
    case duplicateHost
    case hostMismatch
    case userinfoInAuthority
    case invalidAuthority
    // Content-Length (RFC 9110 §8.6, RFC 9113 §8.1.1).
    case invalidContentLength
    case conflictingContentLength
    case contentLengthWithEndStream
    case contentLengthOnConnect
    // CONNECT (RFC 9113 §8.5, RFC 8441).
    case plainConnect
    case protocolNotEnabled
    case protocolWithoutConnect
    case extendedConnectIncomplete
    case unsupportedProtocol
    // Trailers (RFC 9113 §8.1).
    case trailersWithoutEndStream
    // Parity with the HTTP/1.1 path.
    case uriTooLong
    case unknownExpectation
    /// RFC 9113 §6.5.2 list size or the field count cap.
    case tooLarge

    public var disposition: H2RequestDisposition {
        switch self {
        case .emptyName, .uppercaseName, .invalidNameByte, .forbiddenValueByte, .valueEdgeWhitespace,
             .connectionSpecificField, .teNotTrailers, .unknownPseudoHeader, .duplicatePseudoHeader,
             .pseudoHeaderAfterRegular, .pseudoHeaderInTrailers, .missingMethod, .missingScheme, .missingPath,
             .emptyPath, .pathNotOriginForm, .hostMismatch, .contentLengthWithEndStream, .protocolNotEnabled,
             .protocolWithoutConnect, .extendedConnectIncomplete, .trailersWithoutEndStream:
            .protocolError
        case .nonTokenName, .controlInValue, .invalidMethod, .invalidPathByte, .asteriskWithoutOptions,
             .schemeNotHTTPS, .missingAuthority, .duplicateHost, .userinfoInAuthority, .invalidAuthority,
             .invalidContentLength, .conflictingContentLength, .contentLengthOnConnect:
            .respond(status: 400)
        // A plain CONNECT is never tunnelled. 405 needs an Allow field (RFC 9110 §15.5.6).
        case .plainConnect: .respond(status: 405)
        // RFC 9220 §3: an unsupported :protocol SHOULD get 501.
        case .unsupportedProtocol: .respond(status: 501)
        case .uriTooLong: .respond(status: 414)
        case .unknownExpectation: .respond(status: 417)
        // RFC 6585 §5; the caller may reset the stream instead.
        case .tooLarge: .respond(status: 431)
        }
    }

    /// The status to answer with, also for a malformed request (§8.1.1 allows a 400).
    public var status: Int {
        switch disposition {
        case .protocolError: 400
        case .respond(let status): status
        }
    }

    public var reason: StaticString {
        switch self {
        case .emptyName: "empty field name"
        case .uppercaseName: "uppercase field name"
        case .invalidNameByte: "invalid byte in field name"
        case .nonTokenName: "field name not a token"
        case .forbiddenValueByte: "NUL, CR or LF in field value"
        case .valueEdgeWhitespace: "whitespace around field value"
        case .controlInValue: "control byte in field value"
        case .connectionSpecificField: "connection-specific field"
        case .teNotTrailers: "TE other than trailers"
        case .unknownPseudoHeader: "unknown pseudo-header"
        case .duplicatePseudoHeader: "repeated pseudo-header"
        case .pseudoHeaderAfterRegular: "pseudo-header after a regular field"
        case .pseudoHeaderInTrailers: "pseudo-header in trailers"
        case .missingMethod: "missing :method"
        case .missingScheme: "missing :scheme"
        case .missingPath: "missing :path"
        case .emptyPath: "empty :path"
        case .pathNotOriginForm: ":path not origin-form"
        case .invalidMethod: "invalid :method"
        case .invalidPathByte: "invalid byte in :path"
        case .asteriskWithoutOptions: ":path * without OPTIONS"
        case .schemeNotHTTPS: ":scheme not https"
        case .missingAuthority: "missing :authority and host"
        case .duplicateHost: "multiple host fields"
        case .hostMismatch: "host differs from :authority"
        case .userinfoInAuthority: "userinfo in authority"
        case .invalidAuthority: "invalid authority"
        case .invalidContentLength: "invalid content-length"
        case .conflictingContentLength: "conflicting content-length"
        case .contentLengthWithEndStream: "content-length on a request without body"
        case .contentLengthOnConnect: "content-length on CONNECT"
        case .plainConnect: "CONNECT not supported"
        case .protocolNotEnabled: ":protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL"
        case .protocolWithoutConnect: ":protocol without CONNECT"
        case .extendedConnectIncomplete: "extended CONNECT without :scheme, :path or :authority"
        case .unsupportedProtocol: ":protocol not websocket"
        case .trailersWithoutEndStream: "trailers without END_STREAM"
        case .uriTooLong: "request line too long"
        case .unknownExpectation: "unsupported expectation"
        case .tooLarge: "header list too large"
        }
    }
}

/// A validated request. Spans index `H2RequestBuilder.arena`; no storage of
/// its own, so a stream can keep it for its whole life at no cost.
public struct H2Request: Sendable, Equatable {
    /// :method as received ("CONNECT" for a WebSocket, which goes upstream as GET).
    public var method: ByteSpan
    public var methodKind: Method
    /// Origin-form path+query, or "*" for OPTIONS.
    public var path: ByteSpan
    /// :authority, else the host field; valid by the HTTP/1.1 Host rules.
    public var authority: ByteSpan
    /// The client's content-length: the caller checks DATA against it (RFC 9113 §8.1.1).
    public var contentLength: UInt64?
    /// Upstream framing: .none, .contentLength or .chunked (the caller
    /// chunk-frames DATA); never .untilClose.
    public var framing: BodyFraming
    /// RFC 8441 extended CONNECT with :protocol websocket.
    public var isWebSocket: Bool
    /// expect: 100-continue (dropped upstream, as on HTTP/1.1).
    public var expectContinue: Bool
}

/// Collects one stream's header fields as nghttp2's on_header delivers them,
/// validating each on arrival. Bytes go to one arena, reused by `reset()`, so
/// a pooled builder allocates nothing per request in steady state; past the
/// size caps nothing more is stored.
///
///     reset(); add(...)...; finish(endStream:connectProtocolEnabled:)
///     [beginTrailers(); add(...)...; finishTrailers(endStream:)]
public struct H2RequestBuilder: Sendable {
    /// maxHeaderBytes: RFC 9113 §6.5.2 list size (name + value + 32 per
    /// field, pseudo-headers included) per header block. maxHeaderCount:
    /// regular fields (cookie crumbs count once, as the one Cookie line they
    /// become). maxRequestLineBytes: the HTTP/1.1 request line we would write.
    public let limits: HTTPLimits
    /// Field bytes; every span in `fields`, `cookies` and `request` indexes it.
    public private(set) var arena: [UInt8] = []
    /// Regular fields in arrival order, except host and cookie.
    public private(set) var fields: [HeaderField] = []
    /// RFC 9113 §8.2.3: cookie crumbs, joined with "; " when written.
    public private(set) var cookies: [ByteSpan] = []
    /// Set by a successful `finish`.
    public private(set) var request: H2Request?

    private enum Phase { case headers, finished, trailers, trailersFinished }
    private var phase = Phase.headers
    private var failure: H2RequestError?
    private var trailerFailure: H2RequestError?
    private var listBytes = 0
    private var fieldCount = 0
    private var cookieCounted = false
    private var sawRegular = false
    private var method: ByteSpan?
    private var scheme: ByteSpan?
    private var authority: ByteSpan?
    private var path: ByteSpan?
    private var proto: ByteSpan?
    private var host: ByteSpan?
    private var contentLength: UInt64?
    private var expectContinue = false
    private var unknownExpectation = false

    public init(limits: HTTPLimits = HTTPLimits()) {
        self.limits = limits
    }

    /// Before the next request; keeps the storage's capacity.
    public mutating func reset() {
        arena.removeAll(keepingCapacity: true)
        fields.removeAll(keepingCapacity: true)
        cookies.removeAll(keepingCapacity: true)
        request = nil
        phase = .headers
        failure = nil
        trailerFailure = nil
        listBytes = 0
        fieldCount = 0
        cookieCounted = false
        sawRegular = false
        method = nil
        scheme = nil
        authority = nil
        path = nil
        proto = nil
        host = nil
        contentLength = nil
        expectContinue = false
        unknownExpectation = false
    }

    /// One field of the current block (request head or trailers). Returns the
    /// first error of the block, sticky: after it nothing is stored, and the
    /// caller may stop early (a `.protocolError` can reset the stream at once)
    /// or keep feeding until the block ends (HPACK state must still be kept).
    @discardableResult
    public mutating func add(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> H2RequestError? {
        switch phase {
        case .headers:
            if let failure { return failure }
            failure = addField(name, value, trailers: false)
            return failure
        case .trailers:
            if let trailerFailure { return trailerFailure }
            trailerFailure = addField(name, value, trailers: true)
            return trailerFailure
        case .finished, .trailersFinished:
            preconditionFailure("H2RequestBuilder.add outside a header block")
        }
    }

    /// End of the request's header block. `endStream`: END_STREAM was on
    /// HEADERS (no body). `connectProtocolEnabled`: we sent
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441 §3).
    public mutating func finish(endStream: Bool, connectProtocolEnabled: Bool) -> Result<H2Request, H2RequestError> {
        precondition(phase == .headers, "H2RequestBuilder.finish twice")
        phase = .finished
        if let failure { return .failure(failure) }
        let result = arena.withUnsafeBytes { validate($0, endStream: endStream, connectProtocolEnabled: connectProtocolEnabled) }
        switch result {
        case .success(let r): request = r
        case .failure(let e): failure = e
        }
        return result
    }

    /// A second header block (RFC 9113 §8.1). Trailers are validated and
    /// dropped: the HTTP/1.1 path drops chunked trailers too, and with a
    /// Content-Length body there is nowhere to put them.
    public mutating func beginTrailers() {
        precondition(phase == .finished, "H2RequestBuilder.beginTrailers before finish")
        phase = .trailers
        trailerFailure = nil
        listBytes = 0
        fieldCount = 0
        cookieCounted = false
    }

    /// End of the trailer block: nil if it was valid.
    public mutating func finishTrailers(endStream: Bool) -> H2RequestError? {
        precondition(phase == .trailers, "H2RequestBuilder.finishTrailers without beginTrailers")
        phase = .trailersFinished
        if let trailerFailure { return trailerFailure }
        // RFC 9113 §8.1: a second HEADERS without END_STREAM is malformed.
        if !endStream { trailerFailure = .trailersWithoutEndStream }
        return trailerFailure
    }

    // MARK: - Fields

    private mutating func store(_ bytes: UnsafeRawBufferPointer) -> ByteSpan {
        let start = arena.count
        arena.append(contentsOf: bytes)
        return ByteSpan(start: start, end: arena.count)
    }

    private mutating func addField(_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer,
                                   trailers: Bool) -> H2RequestError? {
        // RFC 9113 §6.5.2 accounting first: a flood is refused before any work.
        guard name.count <= limits.maxHeaderBytes && value.count <= limits.maxHeaderBytes else { return .tooLarge }
        listBytes += name.count + value.count + 32
        guard listBytes <= limits.maxHeaderBytes else { return .tooLarge }
        guard let first = name.first else { return .emptyName }
        if first == UInt8(ascii: ":") {
            // RFC 9113 §8.3: pseudo-headers only in the request head, before regular fields.
            if trailers { return .pseudoHeaderInTrailers }
            if sawRegular { return .pseudoHeaderAfterRegular }
            if let error = checkValue(value) { return error }
            return addPseudo(name, value)
        }
        if let error = checkName(name) { return error }
        if let error = checkValue(value) { return error }
        let all = ByteSpan(start: 0, end: name.count)
        let kind = classifyField(name, all)
        let isCookie = name.matches(0, name.count, "cookie")
        if !(isCookie && cookieCounted) {
            fieldCount += 1
            guard fieldCount <= limits.maxHeaderCount else { return .tooLarge }
            if isCookie { cookieCounted = true }
        }
        switch kind {
        // RFC 9113 §8.2.2: connection-specific fields make the message malformed.
        case .connection, .keepAlive, .proxyConnection, .transferEncoding, .upgrade:
            return .connectionSpecificField
        case .te:
            guard value.matchesIgnoringCase(0, value.count, "trailers") else { return .teNotTrailers }
        default:
            break
        }
        if trailers { return nil }  // validated, not kept
        sawRegular = true
        let v = ByteSpan(start: 0, end: value.count)
        switch kind {
        case .host:
            guard host == nil else { return .duplicateHost }
            host = store(value)
            return nil
        case .contentLength:
            // RFC 9110 §8.6: one value (a list of identical ones is one value), digits only.
            guard let n = parseContentLength(value, v) else { return .invalidContentLength }
            if let old = contentLength, old != n { return .conflictingContentLength }
            contentLength = n
        case .expect:
            parseExpect(value, v, &expectContinue, &unknownExpectation)
        default:
            break
        }
        if isCookie {
            cookies.append(store(value))
            return nil
        }
        let n = store(name)
        fields.append(HeaderField(name: n, value: store(value), kind: kind))
        return nil
    }

    private mutating func addPseudo(_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> H2RequestError? {
        let n = name.count
        // Each at most once (RFC 9113 §8.3.1); :protocol is RFC 8441 §4's,
        // whether it was enabled is checked at the end.
        if name.matches(0, n, ":method") {
            guard method == nil else { return .duplicatePseudoHeader }
            method = store(value)
        } else if name.matches(0, n, ":scheme") {
            guard scheme == nil else { return .duplicatePseudoHeader }
            scheme = store(value)
        } else if name.matches(0, n, ":authority") {
            guard authority == nil else { return .duplicatePseudoHeader }
            authority = store(value)
        } else if name.matches(0, n, ":path") {
            guard path == nil else { return .duplicatePseudoHeader }
            path = store(value)
        } else if name.matches(0, n, ":protocol") {
            guard proto == nil else { return .duplicatePseudoHeader }
            proto = store(value)
        } else {
            return .unknownPseudoHeader
        }
        return nil
    }

    /// RFC 9113 §8.2.1 plus RFC 9110 §5.6.2: lowercase tokens.
    private func checkName(_ name: UnsafeRawBufferPointer) -> H2RequestError? {
        var upper = false, nonToken = false
        for b in name {
            if b &- 0x41 < 26 {
                upper = true
            } else if !isTChar(b) {
                if b <= SP || b >= 0x7F || b == UInt8(ascii: ":") { return .invalidNameByte }
                nonToken = true
            }
        }
        if upper { return .uppercaseName }
        return nonToken ? .nonTokenName : nil
    }

    /// RFC 9113 §8.2.1, then RFC 9110 §5.5 for the other controls (which the
    /// HTTP/1.1 parser refuses as well, so nothing we forward can differ).
    private func checkValue(_ value: UnsafeRawBufferPointer) -> H2RequestError? {
        guard let first = value.first, let last = value.last else { return nil }
        var control = false
        for b in value where !isFieldValueByte(b) {
            if b == 0 || b == CR || b == LF { return .forbiddenValueByte }
            control = true
        }
        if isOWS(first) || isOWS(last) { return .valueEdgeWhitespace }
        return control ? .controlInValue : nil
    }

    // MARK: - The whole request

    private func validate(_ p: UnsafeRawBufferPointer, endStream: Bool,
                          connectProtocolEnabled: Bool) -> Result<H2Request, H2RequestError> {
        // RFC 9113 §8.3.1: :method always.
        guard let method else { return .failure(.missingMethod) }
        guard isToken(p, method.start, method.end) else { return .failure(.invalidMethod) }  // RFC 9110 §9.1
        let methodKind = classifyMethod(p, method)
        if proto != nil {
            // RFC 9113 §8.3: a pseudo-header of an extension not enabled is unknown.
            guard connectProtocolEnabled else { return .failure(.protocolNotEnabled) }
            guard methodKind == .connect else { return .failure(.protocolWithoutConnect) }  // RFC 8441 §4
        }
        var isWebSocket = false
        if methodKind == .connect {
            // A plain CONNECT (RFC 9113 §8.5) would be a tunnel to anywhere: never.
            guard let proto else { return .failure(.plainConnect) }
            // RFC 8441 §4: extended CONNECT carries :scheme, :path and :authority.
            guard scheme != nil, path != nil, authority != nil else { return .failure(.extendedConnectIncomplete) }
            guard p.matchesIgnoringCase(proto.start, proto.end, "websocket") else { return .failure(.unsupportedProtocol) }
            isWebSocket = true
        }
        guard let scheme else { return .failure(.missingScheme) }
        guard let path else { return .failure(.missingPath) }
        // HTTP/2 is only offered over TLS (ALPN h2): any other scheme asks for another origin.
        guard p.matchesIgnoringCase(scheme.start, scheme.end, "https") else { return .failure(.schemeNotHTTPS) }
        // RFC 9113 §8.3.1: origin-form, or "*" for OPTIONS; never absolute-form.
        guard !path.isEmpty else { return .failure(.emptyPath) }
        if p[path.start] != UInt8(ascii: "/") {
            guard path.count == 1 && p[path.start] == UInt8(ascii: "*") else { return .failure(.pathNotOriginForm) }
            guard methodKind == .options else { return .failure(.asteriskWithoutOptions) }
        }
        // The HTTP/1.1 parser's request-target rule (no "#", no `"<>\^`{|}`, visible ASCII).
        for i in path.start..<path.end where !isRequestTargetByte(p[i]) { return .failure(.invalidPathByte) }
        // What an HTTP/1.1 client gets 414 for: our request line "METHOD path HTTP/1.1\r\n".
        let lineBytes = (isWebSocket ? 3 : method.count) + 1 + path.count + 11
        guard lineBytes <= limits.maxRequestLineBytes else { return .failure(.uriTooLong) }

        // RFC 9113 §8.3.1: a host field naming another origin than :authority
        // makes the request malformed; compared exactly (ASCII case aside), so
        // the backend's Host and what routing saw are the same bytes.
        let target: ByteSpan
        switch (authority, host) {
        case (nil, nil): return .failure(.missingAuthority)  // RFC 9110 §7.2: 400, as HTTP/1.1 without Host
        case (let a?, let h?):
            guard p.equalIgnoringCase(a, h) else { return .failure(.hostMismatch) }
            target = a
        case (let a?, nil): target = a
        case (nil, let h?): target = h
        }
        // RFC 9113 §8.3.1: no userinfo; then the HTTP/1.1 Host rules.
        for i in target.start..<target.end where p[i] == UInt8(ascii: "@") { return .failure(.userinfoInAuthority) }
        guard isValidHost(p, target) else { return .failure(.invalidAuthority) }

        if contentLength != nil && isWebSocket { return .failure(.contentLengthOnConnect) }
        // RFC 9113 §8.1.1: content-length must equal the DATA that follows, and none does.
        if endStream, let n = contentLength, n != 0 { return .failure(.contentLengthWithEndStream) }
        // Checked last, as on HTTP/1.1: a request that is bad anyway gets its 400.
        if unknownExpectation { return .failure(.unknownExpectation) }

        let framing: BodyFraming
        if isWebSocket {
            framing = .none  // DATA is the tunnel after the backend's 101
        } else if let n = contentLength {
            framing = .contentLength(n)
        } else if endStream {
            // RFC 9110 §8.6: a POST/PUT/PATCH says Content-Length: 0 even when
            // empty; HTTP/2 clients leave it out and some HTTP/1.1 servers
            // answer 411 without it.
            switch methodKind {
            case .post, .put, .patch: framing = .contentLength(0)
            default: framing = .none
            }
        } else {
            framing = .chunked  // length unknown until END_STREAM
        }
        return .success(H2Request(method: method, methodKind: methodKind, path: path, authority: target,
                                  contentLength: contentLength, framing: framing, isWebSocket: isWebSocket,
                                  expectContinue: expectContinue))
    }
}

/// The HTTP/1.1 head for the backend, by the same policy as the HTTP/1.1
/// path's writeUpstreamRequestHead: Host from the authority, the client's
/// fields minus hop-by-hop, framing, Expect and X-Forwarded-* (isDroppedUpstream),
/// then ours, then the framing of `request.framing`. A WebSocket goes as
/// `GET` + `Upgrade: websocket` + `Connection: upgrade` + `Sec-WebSocket-Key`
/// (`webSocketKey`, required then; a client's sec-websocket-key is never
/// forwarded, RFC 8441 §5). Every byte written was validated by the builder.
public func writeUpstreamRequestHead<S: ByteSink>(_ builder: H2RequestBuilder, clientAddress: UnsafeRawBufferPointer,
                                                  webSocketKey: WebSocketKey? = nil, into sink: inout S) {
    guard let request = builder.request else { preconditionFailure("writeUpstreamRequestHead: no validated request") }
    precondition(!request.isWebSocket || webSocketKey != nil, "writeUpstreamRequestHead: a WebSocket needs a key")
    builder.arena.withUnsafeBytes { p in
        if request.isWebSocket {
            sink.write("GET ")
        } else {
            sink.write(p[span: request.method])
            sink.write(" ")
        }
        sink.write(p[span: request.path])
        sink.write(" HTTP/1.1\r\nHost: ")
        sink.write(p[span: request.authority])
        sink.write("\r\n")
        for field in builder.fields where !field.kind.isDroppedUpstream {
            if request.isWebSocket && p.matches(field.name.start, field.name.end, "sec-websocket-key") { continue }
            sink.writeField(field, p)
        }
        // RFC 9113 §8.2.3: one Cookie field for HTTP/1.1 (empty crumbs skipped).
        var wroteCookie = false
        for crumb in builder.cookies where !crumb.isEmpty {
            sink.write(wroteCookie ? "; " : "Cookie: ")
            sink.write(p[span: crumb])
            wroteCookie = true
        }
        if wroteCookie { sink.write("\r\n") }
        if request.isWebSocket {
            sink.write("Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: ")
            webSocketKey?.withUnsafeBytes { sink.write($0) }
            sink.write("\r\n")
        }
        sink.writeForwardingFields(clientAddress: clientAddress, scheme: .https, host: p[span: request.authority])
        sink.writeFraming(request.framing)
        sink.write("\r\n")
    }
}
