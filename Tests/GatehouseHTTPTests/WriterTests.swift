import Testing
@testable import GatehouseHTTP

private func upstream(_ raw: String, client: String = "203.0.113.7", scheme: Scheme = .https) -> String? {
    let b = bytes(raw)
    guard case .complete(let head) = parseRequest(b) else { return nil }
    var sink = ArraySink()
    b.withUnsafeBytes { buf in
        Array(client.utf8).withUnsafeBytes { addr in
            writeUpstreamRequestHead(head, in: buf, clientAddress: addr, scheme: scheme, into: &sink)
        }
    }
    return sink.string
}

private func clientResponse(_ raw: String, method: GatehouseHTTP.Method = .get, framing: BodyFraming? = nil,
                            keepAlive: Bool = true, clientVersion: HTTPVersion = .http11, hsts: String? = nil) -> String? {
    let b = bytes(raw)
    guard case .complete(let head) = parseResponse(b, method: method) else { return nil }
    var sink = ArraySink()
    b.withUnsafeBytes { buf in
        let write = { (h: UnsafeRawBufferPointer?) in
            writeClientResponseHead(head, in: buf, framing: framing ?? head.framing, keepAlive: keepAlive,
                                    clientVersion: clientVersion, hsts: h, into: &sink)
        }
        if let hsts { Array(hsts.utf8).withUnsafeBytes { write($0) } } else { write(nil) }
    }
    return sink.string
}

@Suite struct UpstreamRequestHead {
    @Test func hopByHopRemovedAndForwardingFieldsAdded() {
        let raw = "POST /api?x=1 HTTP/1.1\r\n"
            + "Host: app.example.com\r\n"
            + "User-Agent: ua\r\n"
            + "Connection: X-Forwarded-For, X-Drop, keep-alive\r\n"
            + "X-Forwarded-For: 6.6.6.6\r\n"
            + "X-Forwarded-Proto: http\r\n"
            + "X-Forwarded-Host: evil\r\n"
            + "X-Drop: secret\r\n"
            + "Keep-Alive: timeout=5\r\n"
            + "Proxy-Connection: keep-alive\r\n"
            + "TE: trailers\r\n"
            + "Trailer: X-T\r\n"
            + "Upgrade: h2c\r\n"
            + "Expect: 100-continue\r\n"
            + "Content-Length: 5\r\n"
            + "Accept:  */*  \r\n"
            + "\r\nhello"
        #expect(upstream(raw) == "POST /api?x=1 HTTP/1.1\r\n"
            + "Host: app.example.com\r\n"
            + "User-Agent: ua\r\n"
            + "Accept: */*\r\n"
            + "X-Forwarded-For: 203.0.113.7\r\n"
            + "X-Forwarded-Proto: https\r\n"
            + "X-Forwarded-Host: app.example.com\r\n"
            + "Content-Length: 5\r\n"
            + "\r\n")
    }

    @Test func clientCannotStripOurFields() throws {
        let out = try #require(upstream("GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n",
                                        scheme: .http))
        #expect(out == "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n\r\n")
        #expect(!out.contains("1.1.1.1"))
    }

    @Test func chunkedAndAbsoluteForm() {
        #expect(upstream("PUT http://a:81 HTTP/1.1\r\nHost: a:81\r\nTransfer-Encoding: chunked\r\n\r\n")
            == "PUT / HTTP/1.1\r\nHost: a:81\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: a:81\r\nTransfer-Encoding: chunked\r\n\r\n")
    }

    @Test func asteriskAndHTTP10() {
        #expect(upstream("OPTIONS * HTTP/1.0\r\n\r\n")
            == "OPTIONS * HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n")
    }
}

@Suite struct ClientResponseHead {
    @Test func secretsRemovedAndHSTSReplaced() {
        let raw = "HTTP/1.1 200 OK\r\nServer: app\r\nConnection: X-Secret\r\nX-Secret: s\r\n"
            + "Strict-Transport-Security: max-age=1\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n"
            + "Trailer: X\r\nUpgrade: h2\r\nProxy-Connection: x\r\nSet-Cookie: a=b\r\n\r\nhello"
        #expect(clientResponse(raw, hsts: "max-age=63072000")
            == "HTTP/1.1 200 OK\r\nServer: app\r\nSet-Cookie: a=b\r\n"
            + "Strict-Transport-Security: max-age=63072000\r\nContent-Length: 5\r\n\r\n")
    }

    @Test func backendHSTSKeptWithoutOurs() {
        #expect(clientResponse("HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=1\r\nContent-Length: 0\r\n\r\n")
            == "HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=1\r\nContent-Length: 0\r\n\r\n")
    }

    @Test func chunkedReframed() {
        #expect(clientResponse("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", framing: .chunked)
            == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        #expect(clientResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    }

    @Test func untilCloseAndConnectionHeaders() {
        #expect(clientResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", framing: .untilClose, keepAlive: false,
                               clientVersion: .http10)
            == "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        #expect(clientResponse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", keepAlive: true, clientVersion: .http10)
            == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n")
    }

    @Test func noneKeepsContentLengthMetadata() {
        #expect(clientResponse("HTTP/1.1 200 OK\r\nContent-Length: 0042\r\n\r\n", method: .head)
            == "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")
        #expect(clientResponse("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 7\r\n\r\n")
            == "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 7\r\n\r\n")
        #expect(clientResponse("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n")
            == "HTTP/1.1 204 No Content\r\n\r\n")
        #expect(clientResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", method: .head)
            == "HTTP/1.1 200 OK\r\n\r\n")
    }

    @Test func emptyReasonKeepsSeparator() {
        #expect(clientResponse("HTTP/1.0 404\r\nContent-Length: 0\r\n\r\n", keepAlive: false)
            == "HTTP/1.1 404 \r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    @Test func interim() {
        let b = bytes("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\nConnection: x\r\nX: 1\r\nKeep-Alive: 1\r\n\r\n")
        guard case .complete(let head) = parseResponse(b) else { Issue.record("parse"); return }
        var sink = ArraySink()
        b.withUnsafeBytes { writeInterimResponseHead(head, in: $0, into: &sink) }
        #expect(sink.string == "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
    }

    @Test func continueLine() {
        var sink = ArraySink()
        writeContinue(into: &sink)
        #expect(sink.string == "HTTP/1.1 100 Continue\r\n\r\n")
    }
}

@Suite struct RedirectAndErrors {
    @Test(arguments: [
        ("example.com", UInt16(443), "/a/b?x=%20y&z", true, "https://example.com/a/b?x=%20y&z"),
        ("example.com", 8443, "/", true, "https://example.com:8443/"),
        ("example.com", 443, "", true, "https://example.com/"),
        ("[2001:db8::1]", 443, "/p", false, "https://[2001:db8::1]/p"),
        ("[::1]", 4443, "/?", true, "https://[::1]:4443/?"),
        ("a", 443, "*", true, "https://a/"),
    ])
    func location(_ host: String, _ port: UInt16, _ path: String, _ keepAlive: Bool, _ expected: String) {
        var sink = ArraySink()
        Array(host.utf8).withUnsafeBytes { h in
            Array(path.utf8).withUnsafeBytes { p in
                writeRedirect(host: h, httpsPort: port, path: p, keepAlive: keepAlive, into: &sink)
            }
        }
        #expect(sink.string == "HTTP/1.1 301 Moved Permanently\r\nLocation: \(expected)\r\nContent-Length: 0\r\n"
            + (keepAlive ? "" : "Connection: close\r\n") + "\r\n")
    }

    @Test func redirectFromParsedRequest() {
        let b = bytes("GET /x?q=%2F HTTP/1.1\r\nHost: Example.com:80\r\n\r\n")
        guard case .complete(let head) = parseRequest(b), let host = head.host else { Issue.record("parse"); return }
        var sink = ArraySink()
        b.withUnsafeBytes { buf in
            writeRedirect(host: hostWithoutPort(buf[span: host]), httpsPort: 443, path: buf[span: head.path], keepAlive: true, into: &sink)
        }
        #expect(sink.string == "HTTP/1.1 301 Moved Permanently\r\nLocation: https://Example.com/x?q=%2F\r\nContent-Length: 0\r\n\r\n")
    }

    @Test func errorResponseExactBytes() {
        var sink = ArraySink()
        Array("max-age=1".utf8).withUnsafeBytes { writeErrorResponse(status: 400, hsts: $0, close: true, into: &sink) }
        #expect(sink.string == "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\n"
            + "Strict-Transport-Security: max-age=1\r\nConnection: close\r\n\r\n400 Bad Request\n")
    }

    @Test(arguments: [400, 404, 408, 413, 414, 421, 431, 500, 502, 503, 504, 505])
    func errorResponseBodyMatchesLength(_ status: Int) throws {
        var sink = ArraySink()
        writeErrorResponse(status: status, hsts: nil, close: false, into: &sink)
        let s = sink.string
        let reason = "\(reasonPhrase(for: status))"
        #expect(reason != "Unknown")
        #expect(s.hasPrefix("HTTP/1.1 \(status) \(reason)\r\n"))
        #expect(!s.contains("Connection"))
        let parts = s.split(separator: "\r\n\r\n", maxSplits: 1, omittingEmptySubsequences: false)
        #expect(parts.count == 2)
        #expect(parts[1] == "\(status) \(reason)\n")
        #expect(s.contains("Content-Length: \(parts[1].utf8.count)\r\n"))
        // Our own output is a valid response.
        #expect(responseHead(s)?.framing == .contentLength(UInt64(parts[1].utf8.count)))
    }

    @Test func reasonPhrases() {
        #expect("\(reasonPhrase(for: 413))" == "Content Too Large")
        #expect("\(reasonPhrase(for: 421))" == "Misdirected Request")
        #expect("\(reasonPhrase(for: 599))" == "Unknown")
    }
}

@Suite struct SmallHelpers {
    @Test(arguments: [(UInt64(0), "0\r\n"), (1, "1\r\n"), (255, "ff\r\n"), (4096, "1000\r\n"), (.max, "ffffffffffffffff\r\n")])
    func chunkHeader(_ size: UInt64, _ expected: String) {
        var sink = ArraySink()
        writeChunkHeader(size: size, into: &sink)
        #expect(sink.string == expected)
    }

    @Test func chunkConstants() {
        var sink = ArraySink()
        writeChunkDataEnd(into: &sink)
        writeLastChunk(into: &sink)
        #expect(sink.string == "\r\n0\r\n\r\n")
    }

    @Test func decimal() {
        var sink = ArraySink()
        sink.write(decimal: 0)
        sink.write(" ")
        sink.write(decimal: .max)
        sink.write([0x20, 0x41])
        sink.write(byte: 0x42)
        #expect(sink.string == "0 18446744073709551615 AB")
    }

    @Test(arguments: [("example.com", "example.com"), ("example.com:8080", "example.com"), ("[::1]", "[::1]"),
                      ("[2001:db8::1]:443", "[2001:db8::1]"), ("10.0.0.1:80", "10.0.0.1"), ("", "")])
    func hostPart(_ host: String, _ expected: String) {
        let out = Array(host.utf8).withUnsafeBytes { Array(hostWithoutPort($0)) }
        #expect(String(decoding: out, as: UTF8.self) == expected)
    }

    @Test func spans() {
        let span = ByteSpan(start: 2, end: 5)
        #expect(span.count == 3)
        #expect(!span.isEmpty)
        #expect(ByteSpan(start: 4, end: 4).isEmpty)
        let out = Array("abcdefg".utf8).withUnsafeBytes { buf -> [UInt8] in
            let slice = buf[span: span]
            #expect(slice.count == 3)
            #expect(slice[0] == UInt8(ascii: "c"))  // rebased
            return Array(slice)
        }
        #expect(out == Array("cde".utf8))
    }

    @Test func methods() {
        for (m, kind) in [("GET", GatehouseHTTP.Method.get), ("HEAD", .head), ("POST", .post), ("PUT", .put), ("DELETE", .delete),
                          ("OPTIONS", .options), ("TRACE", .trace), ("PATCH", .patch), ("get", .other), ("PURGE", .other)] {
            let target = m == "OPTIONS" ? "*" : "/"
            #expect(requestHead("\(m) \(target) HTTP/1.1\r\nHost: a\r\n\r\n")?.methodKind == kind, "\(m)")
        }
        #expect(GatehouseHTTP.Method.get.isIdempotent && GatehouseHTTP.Method.put.isIdempotent && GatehouseHTTP.Method.delete.isIdempotent)
        #expect(GatehouseHTTP.Method.options.isIdempotent && GatehouseHTTP.Method.head.isIdempotent && GatehouseHTTP.Method.trace.isIdempotent)
        #expect(!GatehouseHTTP.Method.post.isIdempotent && !GatehouseHTTP.Method.patch.isIdempotent && !GatehouseHTTP.Method.other.isIdempotent)
    }

    @Test func errorStatuses() {
        #expect(HTTPParseError.badRequest("x").status == 400)
        #expect(HTTPParseError.uriTooLong.status == 414)
        #expect(HTTPParseError.headerFieldsTooLarge.status == 431)
        #expect(HTTPParseError.versionNotSupported.status == 505)
    }
}

@Suite struct UnderscoreFieldTests {
    /// nginx's default (underscores_in_headers off): CGI-style backends fold "_"
    /// into "-", so `Transfer_Encoding` could become a second framing field there.
    @Test func underscoredNamesAreNotForwarded() throws {
        let raw = bytes("POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nX_Real_IP: 1.2.3.4\r\nX-Ok: 1\r\nContent-Length: 0\r\n\r\n")
        let head = try #require(raw.withUnsafeBytes { buf -> RequestHead? in
            var parser = RequestHeadParser()
            if case .complete(let h) = parser.parse(buf) { return h }
            return nil
        })
        #expect(head.framing == .contentLength(0))
        var sink = ArraySink()
        raw.withUnsafeBytes { buf in
            Array("192.0.2.1".utf8).withUnsafeBytes { addr in
                writeUpstreamRequestHead(head, in: buf, clientAddress: addr, scheme: .https, into: &sink)
            }
        }
        #expect(!sink.string.contains("_"))
        #expect(sink.string.contains("\r\nX-Ok: 1\r\n"))
    }
}

/// Found by the fuzzer (Fuzz/ParserFuzzer.swift): what we forward must parse.
@Suite struct FuzzerRegressionTests {
    private func forward(_ text: String, defaultHost: String? = "a.example") throws -> String {
        let raw = bytes(text)
        let head = try #require(raw.withUnsafeBytes { buf -> RequestHead? in
            var parser = RequestHeadParser()
            if case .complete(let h) = parser.parse(buf) { return h }
            return nil
        })
        var sink = ArraySink()
        var host = defaultHost.map { Array($0.utf8) } ?? []
        raw.withUnsafeBytes { buf in
            Array("192.0.2.1".utf8).withUnsafeBytes { addr in
                host.withUnsafeMutableBytes { h in
                    writeUpstreamRequestHead(head, in: buf, clientAddress: addr, scheme: .https,
                                             defaultHost: defaultHost == nil ? nil : UnsafeRawBufferPointer(h), into: &sink)
                }
            }
        }
        return sink.string
    }

    @Test func http10WithoutHostGetsTheRoutedDomainsHost() throws {
        let out = try forward("GET / HTTP/1.0\r\n\r\n")
        #expect(out.hasPrefix("GET / HTTP/1.1\r\nHost: a.example\r\n"))
        #expect(requestHead(out) != nil, "the upstream head parses as HTTP/1.1")
    }

    @Test func absoluteFormOptionsWithoutPathIsAsterisk() throws {
        #expect(try forward("OPTIONS http://a HTTP/1.1\r\nHost: a\r\n\r\n").hasPrefix("OPTIONS * HTTP/1.1\r\n"))
        #expect(try forward("GET http://a HTTP/1.1\r\nHost: a\r\n\r\n").hasPrefix("GET / HTTP/1.1\r\n"))
    }

    @Test(arguments: ["\"", "<", ">", "\\", "^", "`", "{", "|", "}"])
    func nonURICharactersInTheTargetAreRefused(_ c: String) {
        #expect(requestStatus("GET /a\(c)b HTTP/1.1\r\nHost: a\r\n\r\n") == 400)
    }

    @Test func responseCodingsOtherThanChunkedAreRefused() {
        #expect(responseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") == nil)
        #expect(responseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n") == nil)
        #expect(responseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?.framing == .chunked)
    }
}

@Suite struct SecurityFieldTests {
    @Test func upgradeInsecureRequestsIsItsOwnField() {
        var sink = ArraySink()
        Array("max-age=1".utf8).withUnsafeBytes {
            writeErrorResponse(status: 421, hsts: $0, close: true, upgradeInsecureRequests: true, into: &sink)
        }
        let text = String(decoding: sink.bytes, as: UTF8.self)
        #expect(text.contains("\r\nStrict-Transport-Security: max-age=1\r\nContent-Security-Policy: upgrade-insecure-requests\r\n"))
        var plain = ArraySink()
        writeErrorResponse(status: 404, hsts: nil, close: false, into: &plain)
        #expect(!String(decoding: plain.bytes, as: UTF8.self).contains("Content-Security-Policy"))
    }
}
