import Testing
@testable import GatehouseHTTP

// MARK: - Helpers

/// A decoded HTTP/2 field as nghttp2's on_header hands it over (raw bytes).
struct H2Field {
    var name: [UInt8]
    var value: [UInt8]
    init(_ name: String, _ value: String) { self.name = bytes(name); self.value = bytes(value) }
    init(raw name: [UInt8], _ value: [UInt8]) { self.name = name; self.value = value }
}

let h2Client = "203.0.113.7"

func h2Get(_ path: String = "/a?b=1", authority: String = "app.example.com") -> [H2Field] {
    [H2Field(":method", "GET"), H2Field(":scheme", "https"), H2Field(":authority", authority), H2Field(":path", path)]
}

func h2Request(_ method: String, _ path: String = "/", authority: String = "app.example.com") -> [H2Field] {
    [H2Field(":method", method), H2Field(":scheme", "https"), H2Field(":authority", authority), H2Field(":path", path)]
}

func h2WebSocket(_ extra: [H2Field] = []) -> [H2Field] {
    [H2Field(":method", "CONNECT"), H2Field(":protocol", "websocket"), H2Field(":scheme", "https"),
     H2Field(":path", "/chat"), H2Field(":authority", "server.example.com")] + extra
}

/// Feeds every field (add's own answers ignored, as a caller that waits for
/// the end of the block), then finishes.
@discardableResult
func feed(_ builder: inout H2RequestBuilder, _ fields: [H2Field], endStream: Bool = true,
          connectProtocol: Bool = true) -> Result<H2Request, H2RequestError> {
    for f in fields {
        f.name.withUnsafeBytes { n in f.value.withUnsafeBytes { v in _ = builder.add(name: n, value: v) } }
    }
    return builder.finish(endStream: endStream, connectProtocolEnabled: connectProtocol)
}

func h2Build(_ fields: [H2Field], endStream: Bool = true, connectProtocol: Bool = true,
             limits: HTTPLimits = HTTPLimits()) -> (H2RequestBuilder, Result<H2Request, H2RequestError>) {
    var b = H2RequestBuilder(limits: limits)
    let r = feed(&b, fields, endStream: endStream, connectProtocol: connectProtocol)
    return (b, r)
}

func h2Error(_ fields: [H2Field], endStream: Bool = true, connectProtocol: Bool = true,
             limits: HTTPLimits = HTTPLimits()) -> H2RequestError? {
    if case .failure(let e) = h2Build(fields, endStream: endStream, connectProtocol: connectProtocol, limits: limits).1 {
        return e
    }
    return nil
}

func h2Render(_ b: H2RequestBuilder, key: WebSocketKey? = nil) -> [UInt8] {
    var sink = ArraySink()
    Array(h2Client.utf8).withUnsafeBytes { addr in
        writeUpstreamRequestHead(b, clientAddress: addr, webSocketKey: key, into: &sink)
    }
    return sink.bytes
}

/// Rendered head of an accepted request, or nil.
func h2Upstream(_ fields: [H2Field], endStream: Bool = true, key: WebSocketKey? = nil) -> String? {
    let (b, r) = h2Build(fields, endStream: endStream)
    guard case .success = r else { return nil }
    return String(decoding: h2Render(b, key: key), as: UTF8.self)
}

func occurrences(_ needle: String, in hay: String) -> Int {
    let n = Array(needle.utf8), h = Array(hay.utf8)
    guard n.count <= h.count else { return 0 }
    return (0...(h.count - n.count)).filter { Array(h[$0..<$0 + n.count]) == n }.count
}

let generousLimits = HTTPLimits(maxRequestLineBytes: 1 << 20, maxHeaderBytes: 1 << 20, maxHeaderCount: 1 << 20)

/// The smuggling check: the bytes we send the backend are exactly one
/// request head, whose method, path, Host and framing are the validated
/// request's. Returns the parsed head.
@discardableResult
func expectOneRequest(_ b: H2RequestBuilder, _ out: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> RequestHead? {
    guard let req = b.request else {
        Issue.record("no request", sourceLocation: sourceLocation)
        return nil
    }
    guard case .complete(let head) = parseRequest(out, limits: generousLimits) else {
        Issue.record("rendered head does not parse: \(String(decoding: out, as: UTF8.self))", sourceLocation: sourceLocation)
        return nil
    }
    #expect(head.headLength == out.count, "bytes after the head", sourceLocation: sourceLocation)
    let method = req.isWebSocket ? "GET" : b.arena.withUnsafeBytes { String(decoding: $0[span: req.method], as: UTF8.self) }
    #expect(text(out, head.method) == method, sourceLocation: sourceLocation)
    #expect(text(out, head.path) == text(b.arena, req.path), sourceLocation: sourceLocation)
    #expect(head.host.map { text(out, $0) } == text(b.arena, req.authority), sourceLocation: sourceLocation)
    #expect(head.framing == req.framing, sourceLocation: sourceLocation)
    #expect(head.version == .http11 && head.keepAlive, sourceLocation: sourceLocation)
    #expect(head.wantsUpgrade == req.isWebSocket, sourceLocation: sourceLocation)
    let ours: [HeaderKind] = [.xForwardedFor, .xForwardedProto, .xForwardedHost]
    for kind in ours {
        #expect(head.headers.filter { $0.kind == kind }.count == 1, "one \(kind)", sourceLocation: sourceLocation)
    }
    return head
}

// MARK: - Accepted requests

@Suite struct H2AcceptedRequests {
    @Test func getRenderedByteForByte() throws {
        let fields = h2Get() + [H2Field("user-agent", "t/1"), H2Field("accept", "*/*")]
        let (b, r) = h2Build(fields)
        let req = try r.get()
        #expect(req.methodKind == .get && req.framing == .none && !req.isWebSocket && req.contentLength == nil)
        #expect(text(b.arena, req.authority) == "app.example.com")
        let out = h2Render(b)
        #expect(String(decoding: out, as: UTF8.self) == "GET /a?b=1 HTTP/1.1\r\n"
            + "Host: app.example.com\r\n"
            + "user-agent: t/1\r\n"
            + "accept: */*\r\n"
            + "X-Forwarded-For: 203.0.113.7\r\n"
            + "X-Forwarded-Proto: https\r\n"
            + "X-Forwarded-Host: app.example.com\r\n"
            + "\r\n")
        expectOneRequest(b, out)
    }

    @Test func postWithContentLength() throws {
        let (b, r) = h2Build(h2Request("POST", "/upload") + [H2Field("content-length", "5")], endStream: false)
        let req = try r.get()
        #expect(req.contentLength == 5 && req.framing == .contentLength(5))
        let out = h2Render(b)
        #expect(String(decoding: out, as: UTF8.self) == "POST /upload HTTP/1.1\r\nHost: app.example.com\r\n"
            + "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example.com\r\n"
            + "Content-Length: 5\r\n\r\n")
        expectOneRequest(b, out)
    }

    @Test func framingFollowsEndStreamAndContentLength() throws {
        func framing(_ method: String, _ extra: [H2Field] = [], endStream: Bool) -> BodyFraming? {
            if case .success(let r) = h2Build(h2Request(method) + extra, endStream: endStream).1 { return r.framing }
            return nil
        }
        // Body of unknown length: the caller chunk-frames DATA.
        #expect(framing("POST", endStream: false) == .chunked)
        #expect(framing("GET", endStream: false) == .chunked)
        // END_STREAM on HEADERS: no body.
        #expect(framing("GET", endStream: true) == BodyFraming.none)
        #expect(framing("DELETE", endStream: true) == BodyFraming.none)
        #expect(framing("HEAD", endStream: true) == BodyFraming.none)
        // RFC 9110 §8.6: methods with content say 0 (HTTP/1.1 servers may want 411 otherwise).
        #expect(framing("POST", endStream: true) == .contentLength(0))
        #expect(framing("PUT", endStream: true) == .contentLength(0))
        #expect(framing("PATCH", endStream: true) == .contentLength(0))
        // The client's content-length wins, also 0 with END_STREAM.
        #expect(framing("GET", [H2Field("content-length", "0")], endStream: true) == .contentLength(0))
        #expect(framing("PUT", [H2Field("content-length", "12")], endStream: false) == .contentLength(12))
        for (m, es) in [("POST", false), ("POST", true), ("GET", false), ("GET", true)] {
            let (b, r) = h2Build(h2Request(m, "/x"), endStream: es)
            _ = try r.get()
            expectOneRequest(b, h2Render(b))
        }
    }

    @Test func optionsAsterisk() throws {
        let (b, r) = h2Build(h2Request("OPTIONS", "*"))
        _ = try r.get()
        let out = h2Render(b)
        #expect(String(decoding: out, as: UTF8.self).hasPrefix("OPTIONS * HTTP/1.1\r\nHost: app.example.com\r\n"))
        expectOneRequest(b, out)
        #expect(h2Error(h2Request("GET", "*")) == .asteriskWithoutOptions)
        #expect(h2Error(h2Request("OPTIONS", "*x")) == .pathNotOriginForm)
    }

    @Test func extensionMethodPassesAsIs() throws {
        let (b, r) = h2Build(h2Request("PROPFIND", "/dav/"))
        #expect(try r.get().methodKind == .other)
        #expect(String(decoding: h2Render(b), as: UTF8.self).hasPrefix("PROPFIND /dav/ HTTP/1.1\r\n"))
        #expect(h2Error(h2Request("GE T")) == .invalidMethod)
        #expect(h2Error(h2Request("")) == .invalidMethod)
    }

    @Test func hostOnlyAndBothEqual() throws {
        // host instead of :authority (RFC 9113 §8.3.1 allows it): one Host upstream.
        let hostOnly = [H2Field(":method", "GET"), H2Field(":scheme", "https"), H2Field(":path", "/"),
                        H2Field("host", "a.example:8443")]
        let (b, r) = h2Build(hostOnly)
        #expect(text(b.arena, try r.get().authority) == "a.example:8443")
        let out = h2Render(b)
        #expect(String(decoding: out, as: UTF8.self) == "GET / HTTP/1.1\r\nHost: a.example:8443\r\n"
            + "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: a.example:8443\r\n\r\n")
        expectOneRequest(b, out)
        // Both, equal ignoring case: :authority's bytes are used, host is not repeated.
        let (b2, r2) = h2Build(h2Get("/", authority: "App.Example.com") + [H2Field("host", "app.example.COM")])
        #expect(text(b2.arena, try r2.get().authority) == "App.Example.com")
        let out2 = String(decoding: h2Render(b2), as: UTF8.self)
        #expect(occurrences("\r\nHost: ", in: out2) == 1 && occurrences("host:", in: out2) == 0)
        expectOneRequest(b2, h2Render(b2))
        #expect(try h2Build(h2Get("/", authority: "[2001:db8::1]:443")).1.get().authority.count == 17)
    }

    @Test func schemeIsHTTPSIgnoringCase() {
        var fields = h2Get()
        fields[1] = H2Field(":scheme", "HTTPS")
        #expect(h2Error(fields) == nil)
        fields[1] = H2Field(":scheme", "http")
        #expect(h2Error(fields) == .schemeNotHTTPS)
        fields[1] = H2Field(":scheme", "")
        #expect(h2Error(fields) == .schemeNotHTTPS)
    }

    @Test func pseudoHeadersInAnyOrder() {
        let fields = [H2Field(":path", "/"), H2Field(":authority", "a"), H2Field(":scheme", "https"), H2Field(":method", "GET")]
        #expect(h2Error(fields) == nil)
    }

    @Test func obsTextAndInnerSpacesPass() throws {
        let fields = h2Get() + [H2Field(raw: bytes("x-name"), bytes("caf") + [0xC3, 0xA9, 0x20, 0x09, 0x21])]
        let (b, r) = h2Build(fields)
        _ = try r.get()
        let head = try #require(expectOneRequest(b, h2Render(b)))
        let out = h2Render(b)
        #expect(Array(out[head.headers[1].value.start..<head.headers[1].value.end]) == bytes("caf") + [0xC3, 0xA9, 0x20, 0x09, 0x21])
    }
}

// MARK: - What goes upstream

@Suite struct H2UpstreamFields {
    @Test func droppedAsOnHTTP11() throws {
        let fields = h2Request("POST", "/api") + [
            H2Field("te", "trailers"),
            H2Field("x-forwarded-for", "6.6.6.6"),
            H2Field("x-forwarded-proto", "http"),
            H2Field("x-forwarded-host", "evil"),
            H2Field("transfer_encoding", "chunked"),
            H2Field("trailer", "x-t"),
            H2Field("expect", "100-continue"),
            H2Field("content-length", "3"),
            H2Field("accept", "*/*"),
            H2Field("strict-transport-security", "max-age=1"),
        ]
        let (b, r) = h2Build(fields, endStream: false)
        #expect(try r.get().expectContinue)
        let out = h2Render(b)
        #expect(String(decoding: out, as: UTF8.self) == "POST /api HTTP/1.1\r\nHost: app.example.com\r\n"
            + "accept: */*\r\nstrict-transport-security: max-age=1\r\n"
            + "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example.com\r\n"
            + "Content-Length: 3\r\n\r\n")
        expectOneRequest(b, out)
    }

    @Test func cookieCrumbsJoined() throws {
        let fields = h2Get("/") + [H2Field("cookie", "a=1"), H2Field("accept", "*/*"), H2Field("cookie", "b=2"),
                                   H2Field("cookie", ""), H2Field("cookie", "c=3; d=4")]
        let (b, r) = h2Build(fields)
        _ = try r.get()
        #expect(b.cookies.count == 4)
        let out = h2Render(b)
        #expect(String(decoding: out, as: UTF8.self) == "GET / HTTP/1.1\r\nHost: app.example.com\r\naccept: */*\r\n"
            + "Cookie: a=1; b=2; c=3; d=4\r\n"
            + "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example.com\r\n\r\n")
        let head = try #require(expectOneRequest(b, out))
        #expect(head.headers.filter { text(out, $0.name) == "Cookie" }.count == 1)
    }

    @Test func noCookieFieldForEmptyCrumbs() throws {
        let (b, r) = h2Build(h2Get("/") + [H2Field("cookie", "")])
        _ = try r.get()
        #expect(!String(decoding: h2Render(b), as: UTF8.self).contains("Cookie"))
    }

    @Test func unknownExpectationGets417() {
        #expect(h2Error(h2Request("PUT") + [H2Field("expect", "100-continue, x")]) == .unknownExpectation)
        #expect(H2RequestError.unknownExpectation.status == 417)
        // A head that is bad anyway gets its 400 first.
        #expect(h2Error(h2Request("PUT") + [H2Field("expect", "x"), H2Field("content-length", "x")]) == .invalidContentLength)
    }
}

// MARK: - WebSocket (RFC 8441)

@Suite struct H2WebSocket {
    @Test func extendedConnectBecomesUpgrade() throws {
        let extra = [H2Field("sec-websocket-protocol", "chat, superchat"), H2Field("sec-websocket-version", "13"),
                     H2Field("sec-websocket-key", "Y2xpZW50LXNlbnQta2V5IQ=="), H2Field("origin", "http://www.example.com")]
        let (b, r) = h2Build(h2WebSocket(extra), endStream: false)
        let req = try r.get()
        #expect(req.isWebSocket && req.methodKind == .connect && req.framing == .none)
        let out = h2Render(b, key: sampleKey)
        #expect(String(decoding: out, as: UTF8.self) == "GET /chat HTTP/1.1\r\nHost: server.example.com\r\n"
            + "sec-websocket-protocol: chat, superchat\r\nsec-websocket-version: 13\r\norigin: http://www.example.com\r\n"
            + "Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            + "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: server.example.com\r\n\r\n")
        let head = try #require(expectOneRequest(b, out))
        #expect(head.wantsUpgrade && head.framing == .none)
    }

    @Test func protocolCaseInsensitive() {
        var fields = h2WebSocket()
        fields[1] = H2Field(":protocol", "WebSocket")
        #expect(h2Error(fields) == nil)
    }

    @Test func onlyWhenEnabledAndOnlyWebsocket() {
        #expect(h2Error(h2WebSocket(), connectProtocol: false) == .protocolNotEnabled)
        #expect(H2RequestError.protocolNotEnabled.disposition == .protocolError)
        var other = h2WebSocket()
        other[1] = H2Field(":protocol", "connect-udp")
        #expect(h2Error(other) == .unsupportedProtocol)
        #expect(H2RequestError.unsupportedProtocol.disposition == .respond(status: 501))
        #expect(h2Error(h2Get() + [], connectProtocol: true) == nil)
        #expect(h2Error([H2Field(":protocol", "websocket")] + h2Get()) == .protocolWithoutConnect)
    }

    @Test func plainConnectRefused() {
        let plain = [H2Field(":method", "CONNECT"), H2Field(":authority", "internal.example:22")]
        #expect(h2Error(plain) == .plainConnect)
        #expect(h2Error(plain, connectProtocol: false) == .plainConnect)
        #expect(H2RequestError.plainConnect.disposition == .respond(status: 405))
        // Also with the pseudo-headers of a normal request.
        #expect(h2Error(h2Request("CONNECT", "/")) == .plainConnect)
    }

    @Test func extendedConnectNeedsSchemePathAuthority() {
        for drop in [":scheme", ":path", ":authority"] {
            let fields = h2WebSocket().filter { String(decoding: $0.name, as: UTF8.self) != drop }
            #expect(h2Error(fields) == .extendedConnectIncomplete, "without \(drop)")
        }
        // host does not stand in for :authority here (RFC 8441 §4).
        let withHost = h2WebSocket().filter { String(decoding: $0.name, as: UTF8.self) != ":authority" }
            + [H2Field("host", "server.example.com")]
        #expect(h2Error(withHost) == .extendedConnectIncomplete)
    }

    @Test func noContentLengthNoAsterisk() {
        #expect(h2Error(h2WebSocket([H2Field("content-length", "0")])) == .contentLengthOnConnect)
        var star = h2WebSocket()
        star[3] = H2Field(":path", "*")
        #expect(h2Error(star) == .asteriskWithoutOptions)
    }
}

// MARK: - Refused fields

@Suite struct H2FieldRejections {
    @Test(arguments: ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"])
    func connectionSpecific(_ name: String) {
        let e = h2Error(h2Get() + [H2Field(name, "x")])
        #expect(e == .connectionSpecificField)
        #expect(e?.disposition == .protocolError)
    }

    @Test func teOnlyTrailers() {
        #expect(h2Error(h2Get() + [H2Field("te", "trailers")]) == nil)
        #expect(h2Error(h2Get() + [H2Field("te", "TRAILERS")]) == nil)
        for v in ["gzip", "trailers, deflate", "trailers;q=1", ""] {
            #expect(h2Error(h2Get() + [H2Field("te", v)]) == .teNotTrailers, "te: \(v)")
        }
    }

    @Test(arguments: ["Accept", "x-A", "ACCEPT", "Host", "Content-Length"])
    func uppercaseName(_ name: String) {
        let e = h2Error(h2Get() + [H2Field(name, "1")])
        #expect(e == .uppercaseName)
        #expect(e?.disposition == .protocolError)
    }

    @Test func invalidNameBytes() {
        for raw: [UInt8] in [bytes("a b"), bytes("a:b"), [0x61, 0x00], [0x61, 0x7F], [0x63, 0xC3, 0xA9], bytes("a\tb"),
                             bytes("a\r\nb")] {
            #expect(h2Error(h2Get() + [H2Field(raw: raw, bytes("1"))]) == .invalidNameByte, "\(raw)")
        }
        // Allowed by RFC 9113 §8.2.1 but not a token: refused with 400.
        for name in ["a/b", "a\"b", "(x)", "a@b", "a{b}", "a,b", "a;b", "a=b", "[a]"] {
            let e = h2Error(h2Get() + [H2Field(name, "1")])
            #expect(e == .nonTokenName, "\(name)")
            #expect(e?.disposition == .respond(status: 400))
        }
        #expect(h2Error(h2Get() + [H2Field("", "1")]) == .emptyName)
        #expect(h2Error(h2Get() + [H2Field("a-b_c.d~e!#$%&'*+^`|", "1")]) == nil)
    }

    @Test func crLfNulInValue() {
        for v in ["a\rb", "a\nb", "a\u{0}b", "a\r\nx-injected: 1", "\r\n", "x\r\n\r\nGET /admin HTTP/1.1"] {
            let e = h2Error(h2Get() + [H2Field("x-a", v)])
            #expect(e == .forbiddenValueByte, "\(v.debugDescription)")
            #expect(e?.disposition == .protocolError)
        }
        // In pseudo-header values too.
        #expect(h2Error(h2Get("/a\r\nHost: evil")) == .forbiddenValueByte)
        var fields = h2Get()
        fields[2] = H2Field(":authority", "a\u{0}.example")
        #expect(h2Error(fields) == .forbiddenValueByte)
    }

    @Test func edgeWhitespace() {
        for v in [" a", "a ", "\ta", "a\t", " ", "\t"] {
            #expect(h2Error(h2Get() + [H2Field("x-a", v)]) == .valueEdgeWhitespace, "\(v.debugDescription)")
        }
        #expect(h2Error(h2Get(" /")) == .valueEdgeWhitespace)
        #expect(h2Error(h2Get() + [H2Field("x-a", "a b\tc")]) == nil)
        #expect(h2Error(h2Get() + [H2Field("x-a", "")]) == nil)
    }

    @Test func otherControlBytes() {
        for v in ["a\u{1}b", "a\u{7f}", "\u{1b}[31m", "a\u{b}b"] {
            let e = h2Error(h2Get() + [H2Field("x-a", v)])
            #expect(e == .controlInValue, "\(v.debugDescription)")
            #expect(e?.disposition == .respond(status: 400))
        }
    }
}

// MARK: - Pseudo-headers and the target

@Suite struct H2PseudoHeaderRejections {
    @Test func duplicate() {
        for (name, value) in [(":path", "/b"), (":method", "POST"), (":scheme", "https"), (":authority", "b"),
                              (":path", "/a?b=1")] {
            #expect(h2Error(h2Get() + [H2Field(name, value)]) == .duplicatePseudoHeader, "\(name)")
        }
        let ws = h2WebSocket()
        #expect(h2Error(Array(ws.prefix(2)) + [H2Field(":protocol", "websocket")] + Array(ws.dropFirst(2)))
            == .duplicatePseudoHeader)
    }

    @Test func afterRegularField() {
        let fields = [H2Field(":method", "GET"), H2Field(":scheme", "https"), H2Field("accept", "*/*"),
                      H2Field(":authority", "a"), H2Field(":path", "/")]
        let e = h2Error(fields)
        #expect(e == .pseudoHeaderAfterRegular)
        #expect(e?.disposition == .protocolError)
        // host counts as a regular field.
        #expect(h2Error([H2Field("host", "a")] + h2Get()) == .pseudoHeaderAfterRegular)
    }

    @Test(arguments: [":status", ":foo", ":", ":Path", ":METHOD", "::path", ":path "])
    func unknown(_ name: String) {
        #expect(h2Error(h2Get() + [H2Field(name, "/")]) == .unknownPseudoHeader)
    }

    @Test func missing() {
        let all = h2Get()
        for (i, e) in [(0, H2RequestError.missingMethod), (1, .missingScheme), (3, .missingPath)] {
            var fields = all
            fields.remove(at: i)
            let got = h2Error(fields)
            #expect(got == e)
            #expect(got?.disposition == .protocolError)
        }
        #expect(h2Error([]) == .missingMethod)
    }

    @Test func pathForms() {
        #expect(h2Error(h2Get("")) == .emptyPath)
        for path in ["https://app.example.com/a", "http://evil/x", "a/b", "?x", "app.example.com:443"] {
            let e = h2Error(h2Get(path))
            #expect(e == .pathNotOriginForm, "\(path)")
            #expect(e?.disposition == .protocolError)
        }
        // The HTTP/1.1 parser's request-target rule.
        for path in ["/a#frag", "/a b", "/a{b}", "/a\"b", "/a<b>", "/a\\b", "/a^b", "/a`b", "/a|b", "/caf\u{e9}"] {
            #expect(h2Error(h2Get(path)) == .invalidPathByte, "\(path.debugDescription)")
        }
        #expect(h2Error(h2Get("//a/../b;c?d=%2F&e=~!$'()*+,:@")) == nil)
    }

    @Test func requestLineLimit() {
        let limits = HTTPLimits(maxRequestLineBytes: 32)
        // "GET " + path + " HTTP/1.1\r\n" = 15 + path.
        #expect(h2Error(h2Get("/" + String(repeating: "a", count: 16)), limits: limits) == nil)
        #expect(h2Error(h2Get("/" + String(repeating: "a", count: 17)), limits: limits) == .uriTooLong)
        #expect(H2RequestError.uriTooLong.status == 414)
    }
}

// MARK: - Authority and Host

@Suite struct H2AuthorityRejections {
    @Test func hostMustEqualAuthority() {
        let e = h2Error(h2Get("/", authority: "app.example.com") + [H2Field("host", "admin.other.example")])
        #expect(e == .hostMismatch)
        #expect(e?.disposition == .protocolError)
        // Not normalized: another port, a trailing dot or a default port differ too.
        for host in ["app.example.com:443", "app.example.com.", "app.example.co"] {
            #expect(h2Error(h2Get("/", authority: "app.example.com") + [H2Field("host", host)]) == .hostMismatch)
        }
    }

    @Test func atLeastOne() {
        let noAuthority = [H2Field(":method", "GET"), H2Field(":scheme", "https"), H2Field(":path", "/")]
        let e = h2Error(noAuthority)
        #expect(e == .missingAuthority)
        #expect(e?.status == 400)
    }

    @Test func oneHostField() {
        #expect(h2Error(h2Get("/", authority: "a") + [H2Field("host", "a"), H2Field("host", "a")]) == .duplicateHost)
    }

    @Test func userinfoRefused() {
        #expect(h2Error(h2Get("/", authority: "user:pw@app.example.com")) == .userinfoInAuthority)
        #expect(h2Error(h2Get("/", authority: "@app.example.com")) == .userinfoInAuthority)
        let hostOnly = [H2Field(":method", "GET"), H2Field(":scheme", "https"), H2Field(":path", "/"),
                        H2Field("host", "evil@app.example.com")]
        #expect(h2Error(hostOnly) == .userinfoInAuthority)
    }

    @Test func hostCharacterRules() {
        for a in ["", "a b", "a%2e", "a.example:99999", "a.example:", "a.example:x", "[::1", "[zz::1]", "a,b", "a/b"] {
            #expect(h2Error(h2Get("/", authority: a)) == .invalidAuthority, "\(a.debugDescription)")
        }
        for a in ["a.example", "a.example:8443", "[::1]:443", "192.0.2.1", "x_y.example"] {
            #expect(h2Error(h2Get("/", authority: a)) == nil, "\(a)")
        }
    }
}

// MARK: - content-length

@Suite struct H2ContentLength {
    @Test func syntax() {
        for v in ["abc", "-1", "+1", "", "1 2", "0x10", "1.0", "12345678901234567890", "99999999999999999999", "5,,5", "5, 6"] {
            #expect(h2Error(h2Request("POST") + [H2Field("content-length", v)], endStream: false) == .invalidContentLength,
                    "\(v.debugDescription)")
        }
        func length(_ values: [String]) -> UInt64? {
            let fields = h2Request("POST") + values.map { H2Field("content-length", $0) }
            if case .success(let r) = h2Build(fields, endStream: false).1 { return r.contentLength }
            return nil
        }
        #expect(length(["5, 5"]) == 5)
        #expect(length(["5", "5"]) == 5)
        #expect(length(["007"]) == 7)
        #expect(length(["9999999999999999999"]) == 9_999_999_999_999_999_999)
        #expect(h2Error(h2Request("POST") + [H2Field("content-length", "5"), H2Field("content-length", "6")],
                        endStream: false) == .conflictingContentLength)
    }

    @Test func bodylessRequestCannotAnnounceOne() {
        let e = h2Error(h2Request("POST") + [H2Field("content-length", "5")], endStream: true)
        #expect(e == .contentLengthWithEndStream)
        #expect(e?.disposition == .protocolError)
        #expect(h2Error(h2Request("POST") + [H2Field("content-length", "0")], endStream: true) == nil)
    }
}

// MARK: - Caps and storage

@Suite struct H2Caps {
    @Test func fieldCountCap() {
        let limits = HTTPLimits(maxHeaderCount: 10)
        let ten = (0..<10).map { H2Field("x-\($0)", "v") }
        #expect(h2Error(h2Get() + ten, limits: limits) == nil)
        let e = h2Error(h2Get() + ten + [H2Field("x-10", "v")], limits: limits)
        #expect(e == .tooLarge)
        #expect(e?.disposition == .respond(status: 431))
        // Cookie crumbs are one field (the one Cookie line they become).
        let crumbs = (0..<50).map { H2Field("cookie", "c\($0)=1") }
        #expect(h2Error(h2Get() + ten.dropLast() + crumbs, limits: limits) == nil)
        #expect(h2Error(h2Get() + ten + crumbs, limits: limits) == .tooLarge)
    }

    @Test func listSizeCap() {
        // RFC 9113 §6.5.2: name + value + 32 per field, pseudo-headers included.
        let pseudo = h2Get("/", authority: "a")
        let pseudoBytes = pseudo.reduce(0) { $0 + $1.name.count + $1.value.count + 32 }
        let limit = pseudoBytes + 2 * (32 + 3 + 10)
        let limits = HTTPLimits(maxHeaderBytes: limit)
        let fit = pseudo + [H2Field("x-a", String(repeating: "v", count: 10)), H2Field("x-b", String(repeating: "v", count: 10))]
        #expect(h2Error(fit, limits: limits) == nil)
        let over = pseudo + [H2Field("x-a", String(repeating: "v", count: 10)), H2Field("x-b", String(repeating: "v", count: 11))]
        #expect(h2Error(over, limits: limits) == .tooLarge)
        // One huge value is refused without being stored.
        var b = H2RequestBuilder(limits: limits)
        let huge = [UInt8](repeating: 0x61, count: 1 << 20)
        bytes("x-big").withUnsafeBytes { n in huge.withUnsafeBytes { v in #expect(b.add(name: n, value: v) == .tooLarge) } }
        #expect(b.arena.isEmpty && b.arena.capacity < 1024)
    }

    @Test func floodStaysBounded() {
        // 100k small fields (a CONTINUATION flood): storage stops at the cap.
        for limits in [HTTPLimits(), HTTPLimits(maxHeaderBytes: 65536, maxHeaderCount: 1 << 30)] {
            var b = H2RequestBuilder(limits: limits)
            for f in h2Get() { f.name.withUnsafeBytes { n in f.value.withUnsafeBytes { v in _ = b.add(name: n, value: v) } } }
            let name = bytes("x-flood"), value = bytes("1")
            var firstError: Int?, otherErrors = 0
            name.withUnsafeBytes { n in
                value.withUnsafeBytes { v in
                    for i in 0..<100_000 {
                        if let e = b.add(name: n, value: v) {
                            if e != .tooLarge { otherErrors += 1 }
                            if firstError == nil { firstError = i }
                        }
                    }
                }
            }
            #expect(otherErrors == 0)
            #expect(firstError != nil && firstError! < 2000)
            #expect(b.arena.capacity <= 2 * limits.maxHeaderBytes, "arena \(b.arena.capacity)")
            #expect(b.fields.count <= min(limits.maxHeaderCount, limits.maxHeaderBytes / 32))
            #expect(b.fields.capacity <= 4096)
            #expect(b.finish(endStream: true, connectProtocolEnabled: false) == .failure(.tooLarge))
        }
        // Cookie crumbs too (they count once, so the byte cap stops them).
        var b = H2RequestBuilder()
        bytes("cookie").withUnsafeBytes { n in bytes("a").withUnsafeBytes { v in for _ in 0..<100_000 { b.add(name: n, value: v) } } }
        #expect(b.cookies.count < HTTPLimits().maxHeaderBytes / 32)
        #expect(b.arena.capacity <= 2 * HTTPLimits().maxHeaderBytes)
    }

    @Test func errorsAreStickyAndStopStorage() {
        var b = H2RequestBuilder()
        for f in h2Get() { f.name.withUnsafeBytes { n in f.value.withUnsafeBytes { v in #expect(b.add(name: n, value: v) == nil) } } }
        let stored = b.arena.count
        bytes("Bad").withUnsafeBytes { n in bytes("1").withUnsafeBytes { v in #expect(b.add(name: n, value: v) == .uppercaseName) } }
        bytes("x-ok").withUnsafeBytes { n in bytes("1").withUnsafeBytes { v in #expect(b.add(name: n, value: v) == .uppercaseName) } }
        #expect(b.arena.count == stored && b.fields.isEmpty)
        #expect(b.finish(endStream: true, connectProtocolEnabled: false) == .failure(.uppercaseName))
        #expect(b.request == nil)
    }

    @Test func resetReusesStorage() throws {
        var b = H2RequestBuilder()
        let fields = h2Get() + (0..<20).map { H2Field("x-field-\($0)", "value \($0)") } + [H2Field("cookie", "a=1")]
        let first = try feed(&b, fields).get()
        let out = h2Render(b)
        let capacity = (b.arena.capacity, b.fields.capacity, b.cookies.capacity)
        let base = b.arena.withUnsafeBytes { $0.baseAddress }
        for _ in 0..<3 {
            b.reset()
            #expect(b.request == nil && b.arena.isEmpty && b.fields.isEmpty && b.cookies.isEmpty)
            #expect(try feed(&b, fields).get() == first)
            #expect(h2Render(b) == out)
            #expect(b.arena.capacity == capacity.0 && b.fields.capacity == capacity.1 && b.cookies.capacity == capacity.2)
            #expect(b.arena.withUnsafeBytes { $0.baseAddress } == base)
        }
        // A failed request leaves nothing behind for the next one.
        b.reset()
        _ = feed(&b, h2Get() + [H2Field("connection", "x")])
        b.reset()
        #expect(try feed(&b, fields).get() == first)
    }
}

// MARK: - Trailers

@Suite struct H2Trailers {
    private func trailers(_ fields: [H2Field], endStream: Bool = true) -> (H2RequestError?, Int, Int) {
        var b = H2RequestBuilder()
        _ = feed(&b, h2Request("POST", "/u"), endStream: false)
        let before = b.arena.count
        b.beginTrailers()
        for f in fields { f.name.withUnsafeBytes { n in f.value.withUnsafeBytes { v in _ = b.add(name: n, value: v) } } }
        return (b.finishTrailers(endStream: endStream), before, b.arena.count)
    }

    @Test func validTrailersDropped() {
        let (e, before, after) = trailers([H2Field("x-checksum", "abc"), H2Field("grpc-status", "0")])
        #expect(e == nil)
        #expect(before == after)  // not stored, not forwarded
    }

    @Test func pseudoInTrailers() {
        let (e, _, _) = trailers([H2Field("x-a", "1"), H2Field(":path", "/admin")])
        #expect(e == .pseudoHeaderInTrailers)
        #expect(e?.disposition == .protocolError)
        #expect(trailers([H2Field(":status", "200")]).0 == .pseudoHeaderInTrailers)
    }

    @Test func sameFieldRules() {
        #expect(trailers([H2Field("X-A", "1")]).0 == .uppercaseName)
        #expect(trailers([H2Field("x-a", "1\r\n")]).0 == .forbiddenValueByte)
        #expect(trailers([H2Field("x-a", " 1")]).0 == .valueEdgeWhitespace)
        #expect(trailers([H2Field("transfer-encoding", "chunked")]).0 == .connectionSpecificField)
        #expect(trailers([H2Field("te", "gzip")]).0 == .teNotTrailers)
    }

    @Test func mustEndTheStream() {
        #expect(trailers([H2Field("x-a", "1")], endStream: false).0 == .trailersWithoutEndStream)
    }

    @Test func trailerCapsAreTheirOwn() {
        var b = H2RequestBuilder(limits: HTTPLimits(maxHeaderCount: 3))
        _ = feed(&b, h2Request("POST") + (0..<3).map { H2Field("x-\($0)", "v") }, endStream: false)
        #expect(b.request != nil)
        b.beginTrailers()
        for i in 0..<4 {
            bytes("x-t\(i)").withUnsafeBytes { n in bytes("v").withUnsafeBytes { v in _ = b.add(name: n, value: v) } }
        }
        #expect(b.finishTrailers(endStream: true) == .tooLarge)
    }
}

// MARK: - Error table

@Suite struct H2ErrorTable {
    @Test func everyRuleHasAReasonAndAnAction() {
        let statuses: Set<Int> = [400, 405, 414, 417, 431, 501]
        for e in H2RequestError.allCases {
            #expect(e.reason.utf8CodeUnitCount > 0)
            #expect(statuses.contains(e.status), "\(e)")
            if e.disposition == .protocolError { #expect(e.status == 400) }
        }
        let malformed = H2RequestError.allCases.filter { $0.disposition == .protocolError }.count
        #expect(malformed > 15 && malformed < H2RequestError.allCases.count)
    }
}
