import Testing
@testable import GatehouseHTTP

@Suite struct RequestHappyPaths {
    @Test func getOriginForm() throws {
        let raw = bytes("GET /a/b?c=d&e HTTP/1.1\r\nHost: Example.com\r\nUser-Agent:  curl/8  \r\nAccept: */*\r\n\r\n")
        guard case .complete(let head) = parseRequest(raw) else { Issue.record("not complete"); return }
        #expect(head.methodKind == .get)
        #expect(text(raw, head.method) == "GET")
        #expect(text(raw, head.target) == "/a/b?c=d&e")
        #expect(text(raw, head.path) == "/a/b?c=d&e")
        #expect(head.version == .http11)
        #expect(text(raw, try #require(head.host)) == "Example.com")
        #expect(head.framing == BodyFraming.none)
        #expect(head.keepAlive)
        #expect(!head.expectContinue)
        #expect(!head.hasUpgrade)
        #expect(head.headLength == raw.count)
        #expect(head.headers.count == 3)
        #expect(head.headers.map(\.kind) == [.host, .other, .other])
        #expect(text(raw, head.headers[1].name) == "User-Agent")
        #expect(text(raw, head.headers[1].value) == "curl/8")  // OWS trimmed
    }

    @Test func absoluteForm() throws {
        let raw = bytes("GET hTTp://Example.COM:8080/x/y?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
        let head = try #require(requestHead(String(decoding: raw, as: UTF8.self)))
        #expect(text(raw, head.path) == "/x/y?q=1")
        #expect(text(raw, head.target) == "hTTp://Example.COM:8080/x/y?q=1")
    }

    @Test func absoluteFormHTTPSWithoutPath() throws {
        let head = try #require(requestHead("GET https://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n"))
        #expect(head.path.isEmpty)
    }

    @Test func optionsAsterisk() throws {
        let raw = bytes("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
        guard case .complete(let head) = parseRequest(raw) else { Issue.record("not complete"); return }
        #expect(head.methodKind == .options)
        #expect(text(raw, head.path) == "*")
    }

    @Test func http10KeepAlive() {
        let head = requestHead("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        #expect(head?.version == .http10)
        #expect(head?.keepAlive == true)
        #expect(head?.host == nil)  // Host is optional in 1.0
        #expect(requestHead("GET / HTTP/1.0\r\n\r\n")?.keepAlive == false)
        #expect(requestHead("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n")?.keepAlive == false)
    }

    @Test func http11Close() {
        #expect(requestHead("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n")?.keepAlive == false)
        #expect(requestHead("GET / HTTP/1.1\r\nHost: a\r\nConnection: ,, keep-alive ,\r\n\r\n")?.keepAlive == true)
    }

    @Test func contentLengthBody() throws {
        let raw = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        let head = try #require(requestHead(raw))
        #expect(head.framing == .contentLength(5))
        #expect(head.headLength == raw.utf8.count - 5)
        #expect(head.methodKind == .post)
    }

    @Test func contentLengthZeroAndMaximum() {
        #expect(requestHead("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")?.framing == .contentLength(0))
        #expect(requestHead("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999999999999999\r\n\r\n")?.framing
            == .contentLength(9_999_999_999_999_999_999))
    }

    @Test func repeatedIdenticalContentLength() {
        #expect(requestHead("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n")?.framing == .contentLength(7))
        #expect(requestHead("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7 ,7,  7\r\n\r\n")?.framing == .contentLength(7))
    }

    @Test func chunked() {
        #expect(requestHead("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")?.framing == .chunked)
        #expect(requestHead("POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: \t CHUNKED \r\n\r\n")?.framing == .chunked)
    }

    @Test func leadingEmptyLinesSkipped() throws {
        let raw = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
        let head = try #require(requestHead(raw))
        #expect(head.headLength == raw.utf8.count)
        #expect(head.method == ByteSpan(start: 4, end: 7))
        #expect(requestHead(String(repeating: "\r\n", count: RequestHeadParser.maxLeadingEmptyLines) + "GET / HTTP/1.1\r\nHost: a\r\n\r\n") != nil)
    }

    @Test func minorVersionsTreatedAs11() {
        #expect(requestHead("GET / HTTP/1.2\r\nHost: a\r\n\r\n")?.version == .http11)
        #expect(requestHead("GET / HTTP/1.9\r\nHost: a\r\n\r\n")?.version == .http11)
    }

    @Test func expectContinue() {
        #expect(requestHead("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")?.expectContinue == true)
        #expect(requestHead("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, \r\n\r\n")?.expectContinue == true)
        // RFC 9110 §10.1.1: ignored in HTTP/1.0.
        #expect(requestHead("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")?.expectContinue == false)
    }

    @Test func upgrade() {
        #expect(requestHead("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")?.hasUpgrade == true)
    }

    @Test func valueBytes() throws {
        let raw = bytes("GET / HTTP/1.1\r\nHost: a\r\nX-Bin: caf\u{e9} \t x\t\r\nX-Empty:\r\n\r\n")
        guard case .complete(let head) = parseRequest(raw) else { Issue.record("not complete"); return }
        #expect(text(raw, head.headers[1].value) == "caf\u{e9} \t x")  // obs-text ok, inner SP/HTAB kept
        #expect(head.headers[2].value.isEmpty)
    }

    @Test func headerKinds() throws {
        let raw = "GET / HTTP/1.1\r\nHOST: a\r\nte: trailers\r\nTrailer: x\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\n"
            + "X-Forwarded-For: 1\r\nx-forwarded-proto: h\r\nX-FORWARDED-HOST: h\r\nStrict-Transport-Security: x\r\n"
            + "Upgrade: y\r\nExpect: 100-continue\r\nConnection: keep-alive\r\nX-Other: 1\r\n\r\n"
        let head = try #require(requestHead(raw))
        #expect(head.headers.map(\.kind) == [.host, .te, .trailer, .keepAlive, .proxyConnection, .xForwardedFor,
                                             .xForwardedProto, .xForwardedHost, .strictTransportSecurity, .upgrade,
                                             .expect, .connection, .other])
    }

    @Test func connectionListedRegardlessOfOrder() throws {
        let raw = "GET / HTTP/1.1\r\nX-A: 1\r\nHost: a\r\nConnection: x-a, close\r\nx-b: 2\r\nX-C: 3\r\nConnection: X-B, host\r\n\r\n"
        let head = try #require(requestHead(raw))
        #expect(head.headers.map(\.kind) == [.connectionListed, .host, .connection, .connectionListed, .other, .connection])
        #expect(!head.keepAlive)
    }

    @Test func validHosts() {
        for host in ["a", "example.com", "EXAMPLE.com:443", "x-y_z~.a", "10.0.0.1:8080", "[::1]", "[2001:db8::1]:8443",
                     "[::ffff:1.2.3.4]", "a:65535", "a:0"] {
            #expect(requestHead("GET / HTTP/1.1\r\nHost: \(host)\r\n\r\n") != nil, "\(host)")
        }
    }

    @Test func incompleteUntilFinalCRLF() {
        let full = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        for n in 0..<full.utf8.count {
            #expect(parseRequest(Array(full.utf8.prefix(n))) == .incomplete)
        }
    }

    @Test func resultIsStickyAndResetReusesParser() {
        var parser = RequestHeadParser()
        let a = bytes("GET /one HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n")
        let b = bytes("POST /two HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\n")
        let first = a.withUnsafeBytes { parser.parse($0) }
        #expect(a.withUnsafeBytes { parser.parse($0) } == first)
        parser.reset()
        guard case .complete(let head) = b.withUnsafeBytes({ parser.parse($0) }) else { Issue.record("b"); return }
        #expect(text(b, head.path) == "/two")
        #expect(head.headers.count == 2)
        #expect(head.framing == .contentLength(3))
        parser.reset()
        #expect(bytes("GET\n").withUnsafeBytes { parser.parse($0) } == .error(.badRequest("bare LF")))
        #expect(a.withUnsafeBytes { parser.parse($0) } == .error(.badRequest("bare LF")))  // sticky
    }

    /// A head trickled byte by byte is scanned once; a quadratic parser would
    /// take ~10^9 steps here.
    @Test func trickleIsLinear() {
        var raw = bytes("GET / HTTP/1.1\r\nHost: a\r\n")
        let line = bytes("X-Pad: " + String(repeating: "p", count: 300) + "\r\n")
        for _ in 0..<99 where raw.count + line.count < 32000 { raw += line }
        raw += bytes("\r\n")
        var parser = RequestHeadParser()
        var result = RequestHeadResult.incomplete
        raw.withUnsafeBytes { all in
            for n in 1...all.count {
                result = parser.parse(UnsafeRawBufferPointer(rebasing: all[0..<n]))
                if result != .incomplete { break }
            }
        }
        guard case .complete(let head) = result else { Issue.record("not complete"); return }
        #expect(head.headLength == raw.count)
    }

    @Test func trickledEqualsAllAtOnce() {
        let cases = [
            "GET /a HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n",
            "\r\nPOST http://a/b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: x\r\nX: 1\r\n\r\n",
            "OPTIONS * HTTP/1.0\r\nContent-Length: 3, 3\r\n\r\nabc",
            "GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
            "GET /" + String(repeating: "x", count: 9000) + " HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n" + String(repeating: "X: 1\r\n", count: 120) + "\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]
        for c in cases {
            let b = bytes(c)
            #expect(parseRequestTrickled(b) == parseRequest(b), "\(c.prefix(60))")
        }
    }
}
