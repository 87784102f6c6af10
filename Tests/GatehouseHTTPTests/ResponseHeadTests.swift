import Testing
@testable import GatehouseHTTP

@Suite struct ResponseFraming {
    @Test func contentLength() throws {
        let raw = bytes("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nServer: x\r\n\r\nhello world!")
        guard case .complete(let head) = parseResponse(raw) else { Issue.record("not complete"); return }
        #expect(head.status == 200)
        #expect(head.version == .http11)
        #expect(text(raw, head.reason) == "OK")
        #expect(head.framing == .contentLength(12))
        #expect(head.contentLength == 12)
        #expect(head.keepAlive)
        #expect(head.headLength == raw.count - 12)
        #expect(head.headers.map(\.kind) == [.contentLength, .other])
    }

    @Test func headRequestHasNoBody() {
        let head = responseHead("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", method: .head)
        #expect(head?.framing == BodyFraming.none)
        #expect(head?.contentLength == 99)
        #expect(head?.keepAlive == true)
        #expect(responseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", method: .head)?.framing == BodyFraming.none)
    }

    @Test func noContent204() {
        #expect(responseHead("HTTP/1.1 204 No Content\r\n\r\n")?.framing == BodyFraming.none)
        #expect(responseHead("HTTP/1.1 204 No Content\r\n\r\n")?.keepAlive == true)
    }

    @Test func notModified304() {
        let head = responseHead("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
        #expect(head?.framing == BodyFraming.none)
        #expect(head?.contentLength == 10)
    }

    @Test(arguments: [100, 102, 103, 101])
    func informational(_ status: Int) {
        let head = responseHead("HTTP/1.1 \(status) X\r\nLink: </a>\r\n\r\n")
        #expect(head?.status == status)
        #expect(head?.framing == BodyFraming.none)
    }

    @Test func chunked() {
        #expect(responseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?.framing == .chunked)
        #expect(responseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n")?.framing == .chunked)
        // Other codings would reach the client unnamed: refused (the proxy says 502).
        #expect(responseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n") == nil)
        #expect(responseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n") == nil)
        // ...but a bodiless response's framing fields do not matter.
        #expect(responseHead("HTTP/1.1 204 No Content\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")?.framing == BodyFraming.none)
    }

    @Test func untilClose() {
        let noLength = responseHead("HTTP/1.1 200 OK\r\n\r\n")
        #expect(noLength?.framing == .untilClose)
        #expect(noLength?.keepAlive == false)

    }

    @Test func http10KeepAlive() {
        let head = responseHead("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n")
        #expect(head?.version == .http10)
        #expect(head?.keepAlive == true)
        #expect(responseHead("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n")?.keepAlive == false)
        #expect(responseHead("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n")?.keepAlive == false)
    }

    @Test func emptyReason() {
        let a = responseHead("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")
        #expect(a?.status == 200)
        #expect(a?.reason.isEmpty == true)
        #expect(responseHead("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n")?.reason.isEmpty == true)
        #expect(responseHead("HTTP/1.1 404 Not \t Found \u{e9}\r\nContent-Length: 0\r\n\r\n")?.status == 404)
    }

    @Test func connectionListed() {
        let head = responseHead("HTTP/1.1 200 OK\r\nX-Secret: s\r\nConnection: x-secret\r\nContent-Length: 0\r\n\r\n")
        #expect(head?.headers.map(\.kind) == [.connectionListed, .connection, .contentLength])
    }

    @Test func hostIsNotSpecialInResponses() {
        #expect(responseHead("HTTP/1.1 200 OK\r\nHost: a b\r\nHost: c\r\nContent-Length: 0\r\n\r\n") != nil)
    }

    @Test func trickledEqualsAllAtOnce() {
        for raw in ["HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y\r\n\r\nabc", "HTTP/1.1 200 OK\r\nX: a\nb\r\n\r\n",
                    "HTTP/1.1 99 Bad\r\n\r\n"] {
            let b = bytes(raw)
            var parser = ResponseHeadParser()
            var result = ResponseHeadResult.incomplete
            for n in 0...b.count {
                result = Array(b[0..<n]).withUnsafeBytes { parser.parse($0, requestMethod: .get) }
                if result != .incomplete { break }
            }
            #expect(result == parseResponse(b))
        }
    }

    @Test func resetAfterInterimResponse() {
        var parser = ResponseHeadParser()
        let interim = bytes("HTTP/1.1 100 Continue\r\n\r\n")
        let final = bytes("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        guard case .complete(let a) = interim.withUnsafeBytes({ parser.parse($0, requestMethod: .post) }) else {
            Issue.record("interim"); return
        }
        #expect(a.status == 100)
        parser.reset()
        guard case .complete(let b) = final.withUnsafeBytes({ parser.parse($0, requestMethod: .post) }) else {
            Issue.record("final"); return
        }
        #expect(b.status == 201)
        #expect(b.framing == .contentLength(0))
    }
}

@Suite struct ResponseRejections {
    @Test func contentLengthWithTransferEncoding() {
        #expect(responseError("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
            == .badRequest("Content-Length with Transfer-Encoding"))
        // Even when neither would frame a body.
        #expect(responseError("HTTP/1.1 304 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n") != nil)
    }

    @Test(arguments: ["x", "-1", "1 1", "", "5, 6"])
    func invalidContentLength(_ value: String) {
        #expect(responseError("HTTP/1.1 200 OK\r\nContent-Length: \(value)\r\n\r\n") == .badRequest("invalid Content-Length"))
    }

    @Test func conflictingContentLength() {
        #expect(responseError("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 4\r\n\r\n")?.status == 400)
    }

    @Test(arguments: ["HTTP/1.1 099 X", "HTTP/1.1 600 X", "HTTP/1.1 000 X", "HTTP/1.1 20x OK", "HTTP/1.1 2000 OK",
                      "HTTP/1.1 200OK", "HTTP/1.1  200 OK", "HTTP/1.1", "HTTP/1.1 20", "http/1.1 200 OK", "HTTP/2.0 200 OK",
                      "HTTP/0.9 200 OK", "HTTP/1.1 200 O\u{1}K", "ICY 200 OK"])
    func badStatusLine(_ line: String) {
        #expect(responseError(line + "\r\nContent-Length: 0\r\n\r\n")?.status == 400, "\(line)")
    }

    @Test func bareLineEndings() {
        #expect(responseError("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n") == .badRequest("bare LF"))
        #expect(responseError("HTTP/1.1 200 OK\r\nContent-Length: 0\r\r\n\r\n") == .badRequest("bare CR"))
    }

    @Test func fieldLineRules() {
        #expect(responseError("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n") == .badRequest("obsolete line folding"))
        #expect(responseError("HTTP/1.1 200 OK\r\nX : a\r\n\r\n") == .badRequest("whitespace before colon"))
        #expect(responseError("HTTP/1.1 200 OK\r\nX: a\u{0}\r\n\r\n") == .badRequest("invalid byte in field value"))
    }

    @Test func transferEncodingInHTTP10() {
        #expect(responseError("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") == .badRequest("Transfer-Encoding in HTTP/1.0 response"))
    }

    @Test func chunkedTwice() {
        #expect(responseError("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n") == .badRequest("chunked applied twice"))
    }

    @Test func invalidTransferEncodingList() {
        #expect(responseError("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;x=1\r\n\r\n") == .badRequest("invalid Transfer-Encoding"))
        // RFC 9110 §5.6.1.2: an empty element is not an error.
        #expect(responseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n")?.framing == .chunked)
    }

    @Test func limits() {
        let limits = HTTPLimits(maxRequestLineBytes: 32, maxHeaderBytes: 128, maxHeaderCount: 3)
        #expect(responseError("HTTP/1.1 200 " + String(repeating: "k", count: 40) + "\r\n\r\n", limits: limits)
            == .badRequest("status line too long"))
        #expect(responseError("HTTP/1.1 200 OK\r\nX: " + String(repeating: "v", count: 200) + "\r\n\r\n", limits: limits)
            == .badRequest("response head too large"))
        #expect(responseError("HTTP/1.1 200 OK\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n", limits: limits)
            == .badRequest("too many response fields"))
    }
}
