import Testing
@testable import GatehouseHTTP

/// Wraps a request line into an otherwise valid head.
private func withLine(_ line: String) -> String { line + "\r\nHost: a\r\n\r\n" }
/// Wraps field lines into an otherwise valid head.
private func withFields(_ fields: String, version: String = "HTTP/1.1") -> String {
    "GET / \(version)\r\n" + fields + "\r\n"
}

@Suite struct RequestLineRejections {
    @Test(arguments: [
        "GET  / HTTP/1.1",        // two spaces
        "GET / HTTP/1.1 ",        // trailing space
        " GET / HTTP/1.1",        // leading space
        "GET\t/ HTTP/1.1",        // HTAB separator
        "GET /",                  // no version
        "GET / ",                 // empty version
        "GET",                    // method only
        "G(T / HTTP/1.1",         // method not a token
        "G\u{e9}T / HTTP/1.1",    // non-ASCII method
    ])
    func malformedRequestLine(_ line: String) {
        #expect(requestStatus(withLine(line)) == 400)
    }

    @Test(arguments: ["/a\u{1}b", "/caf\u{e9}", "/a\u{7f}", "/a#frag", "/a\tb"])
    func invalidTargetBytes(_ target: String) {
        #expect(requestStatus(withLine("GET \(target) HTTP/1.1")) == 400)
    }

    @Test func tooManyLeadingEmptyLines() {
        let raw = String(repeating: "\r\n", count: RequestHeadParser.maxLeadingEmptyLines + 1) + withLine("GET / HTTP/1.1")
        #expect(requestError(raw) == .badRequest("too many empty lines"))
    }

    @Test func leadingBareLF() {
        #expect(requestStatus("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n") == 400)
    }
}

@Suite struct TargetFormRejections {
    @Test func authorityForm() {
        #expect(requestStatus(withLine("GET example.com:443 HTTP/1.1")) == 400)
    }

    @Test func connectMethod() {
        #expect(requestError(withLine("CONNECT example.com:443 HTTP/1.1")) == .badRequest("CONNECT not supported"))
        #expect(requestStatus(withLine("CONNECT / HTTP/1.1")) == 400)
    }

    @Test func asteriskWithoutOptions() {
        #expect(requestError(withLine("GET * HTTP/1.1")) == .badRequest("asterisk-form without OPTIONS"))
        #expect(requestStatus(withLine("OPTIONS *x HTTP/1.1")) == 400)
    }

    @Test(arguments: ["ftp://a/", "a/b", "?x", "http:/a/b", "*/"])
    func otherForms(_ target: String) {
        #expect(requestStatus(withLine("GET \(target) HTTP/1.1")) == 400)
    }

    @Test func absoluteAuthorityMustMatchHost() {
        #expect(requestError("GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n") == .badRequest("absolute-form authority differs from Host"))
        #expect(requestStatus("GET http://a:80/ HTTP/1.1\r\nHost: a\r\n\r\n") == 400)
        #expect(requestStatus("GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n") == 400)
        #expect(requestStatus("GET http://a/ HTTP/1.0\r\n\r\n") == 400)  // no Host to match
    }

    @Test func absoluteFormEdgeCases() {
        #expect(requestStatus("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n") == 400)
        #expect(requestError("GET http://a?x=1 HTTP/1.1\r\nHost: a\r\n\r\n") == .badRequest("absolute-form query without path"))
    }
}

@Suite struct VersionRejections {
    @Test(arguments: ["HTTP/2.0", "HTTP/3.0", "HTTP/0.9", "HTTP/9.9"])
    func unsupported(_ version: String) {
        #expect(requestError("GET / \(version)\r\nHost: a\r\n\r\n") == .versionNotSupported)
        #expect(requestStatus("GET / \(version)\r\nHost: a\r\n\r\n") == 505)
    }

    @Test(arguments: ["HTTP/1", "HTTP/1.", "HTTP/1.10", "HTTP/11", "http/1.1", "HTTX/1.1", "HTTP/1.1.1", "HTTP/a.b", "HTTP/1,1"])
    func malformed(_ version: String) {
        #expect(requestStatus("GET / \(version)\r\nHost: a\r\n\r\n") == 400)
    }
}

@Suite struct LineEndingRejections {
    @Test(arguments: [
        "GET / HTTP/1.1\nHost: a\r\n\r\n",       // request line
        "GET / HTTP/1.1\r\nHost: a\n\r\n",       // field line
        "GET / HTTP/1.1\r\nHost: a\r\n\n",       // final empty line
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\nb\r\n\r\n",
    ])
    func bareLF(_ raw: String) {
        #expect(requestError(raw) == .badRequest("bare LF"))
    }

    @Test(arguments: [
        "GET / HTTP/1.1\rHost: a\r\n\r\n",
        "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
    ])
    func bareCR(_ raw: String) {
        #expect(requestError(raw) == .badRequest("bare CR"))
    }
}

@Suite struct FieldLineRejections {
    @Test func emptyName() {
        #expect(requestStatus(withFields("Host: a\r\n: x\r\n")) == 400)
    }

    @Test(arguments: ["Host : a\r\n", "Host: a\r\nX\t: b\r\n"])
    func whitespaceBeforeColon(_ fields: String) {
        #expect(requestError(withFields(fields)) == .badRequest("whitespace before colon"))
    }

    @Test(arguments: ["Host: a\r\nX: b\r\n c\r\n", "Host: a\r\nX: b\r\n\tc\r\n", " Host: a\r\n"])
    func obsFold(_ fields: String) {
        #expect(requestError(withFields(fields)) == .badRequest("obsolete line folding"))
    }

    @Test(arguments: ["X(a): b", "X\u{e9}: b", "NoColon", "X/Y: b", "\"X\": b"])
    func invalidName(_ line: String) {
        #expect(requestStatus(withFields("Host: a\r\n" + line + "\r\n")) == 400)
    }

    @Test(arguments: [UInt8(0x00), 0x01, 0x08, 0x0B, 0x0C, 0x1F, 0x7F])
    func controlByteInValue(_ byte: UInt8) {
        var raw = bytes("GET / HTTP/1.1\r\nHost: a\r\nX: a")
        raw.append(byte)
        raw += bytes("b\r\n\r\n")
        #expect(parseRequest(raw) == .error(.badRequest("invalid byte in field value")))
    }
}

@Suite struct HostRejections {
    @Test func missingIn11() {
        #expect(requestError("GET / HTTP/1.1\r\nX: a\r\n\r\n") == .badRequest("missing Host"))
    }

    @Test func duplicate() {
        #expect(requestError(withFields("Host: a\r\nHost: a\r\n")) == .badRequest("multiple Host fields"))
        #expect(requestStatus(withFields("Host: a\r\nhost: b\r\n", version: "HTTP/1.0")) == 400)
    }

    @Test(arguments: ["", "a b", "a,b", "a@b", "a%41", "a!b", "a:", "a:x", "a:123456", "a:65536", ":80", "[::1",
                      "[::1]x", "[::1]:", "[]", "[1.2.3.4]", "[v1.x]", "[::g]", "a:1:2", "caf\u{e9}"])
    func invalid(_ host: String) {
        #expect(requestError(withFields("Host: \(host)\r\n")) == .badRequest("invalid Host"), "\(host)")
    }
}

@Suite struct ContentLengthRejections {
    @Test(arguments: ["-1", "+1", "1 2", "abc", "0x10", "", "12345678901234567890", "1,", ",1", "1,,1", "1;a", "1.0"])
    func invalid(_ value: String) {
        #expect(requestError(withFields("Host: a\r\nContent-Length: \(value)\r\n")) == .badRequest("invalid Content-Length"))
    }

    @Test func differingValuesInOneField() {
        #expect(requestStatus(withFields("Host: a\r\nContent-Length: 5, 6\r\n")) == 400)
    }

    @Test func differingFields() {
        #expect(requestError(withFields("Host: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n")) == .badRequest("conflicting Content-Length"))
    }
}

@Suite struct TransferEncodingRejections {
    @Test func inHTTP10() {
        #expect(requestError("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n") == .badRequest("Transfer-Encoding in HTTP/1.0"))
    }

    @Test func withContentLength() {
        #expect(requestError(withFields("Host: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"))
            == .badRequest("Content-Length with Transfer-Encoding"))
        #expect(requestStatus(withFields("Host: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n")) == 400)
    }

    /// RFC 9112 §6.3 rule 4: without chunked as the one final coding the length is unknown: 400.
    @Test(arguments: ["gzip", "chunked, gzip", "chunked, chunked", "identity", "chunkedx", "", ","])
    func framingUnknown(_ value: String) {
        #expect(requestError(withFields("Host: a\r\nTransfer-Encoding: \(value)\r\n")) == .badRequest("Transfer-Encoding not ending in one chunked"))
    }

    /// RFC 9112 §6.1: chunked is final (framing known) but a coding before it is
    /// one we do not implement: 501.
    @Test(arguments: ["gzip, chunked", "deflate,chunked"])
    func codingNotImplemented(_ value: String) {
        #expect(requestError(withFields("Host: a\r\nTransfer-Encoding: \(value)\r\n"))?.status == 501)
    }

    /// RFC 9110 §5.6.1.2: empty list elements are accepted and do not count.
    @Test(arguments: ["chunked,", ", chunked", " ,chunked, ,"])
    func emptyListElementsIgnored(_ value: String) {
        #expect(requestHead(withFields("Host: a\r\nTransfer-Encoding: \(value)\r\n"))?.framing == .chunked)
    }

    @Test func chunkedInTwoFields() {
        #expect(requestStatus(withFields("Host: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")) == 400)
        #expect(requestStatus(withFields("Host: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n")) == 501)
    }

    @Test(arguments: ["chunked;q=1", "\"chunked\"", "chunked ;x"])
    func malformedList(_ value: String) {
        #expect(requestError(withFields("Host: a\r\nTransfer-Encoding: \(value)\r\n")) == .badRequest("invalid Transfer-Encoding"))
    }
}

@Suite struct ConnectionRejections {
    @Test(arguments: ["close;x", "a b", "\"close\""])
    func nonTokenElements(_ value: String) {
        #expect(requestError(withFields("Host: a\r\nConnection: \(value)\r\n")) == .badRequest("invalid Connection"))
    }
}

@Suite struct LimitRejections {
    let limits = HTTPLimits(maxRequestLineBytes: 64, maxHeaderBytes: 256, maxHeaderCount: 5, maxChunkLineBytes: 32)

    @Test func requestLineAtLimitAccepted() {
        // "GET /xxx HTTP/1.1\r\n" is exactly 64 bytes including CRLF.
        let line = "GET /" + String(repeating: "x", count: 48) + " HTTP/1.1"
        #expect(line.utf8.count + 2 == 64)
        #expect(requestHead(withLine(line), limits: limits) != nil)
    }

    @Test func requestLineTooLong() {
        let line = "GET /" + String(repeating: "x", count: 49) + " HTTP/1.1"
        #expect(requestError(withLine(line), limits: limits) == .uriTooLong)
        #expect(requestStatus(withLine(line), limits: limits) == 414)
    }

    @Test func requestLineTooLongDetectedBeforeCRLF() {
        let partial = "GET /" + String(repeating: "x", count: 59)  // 64 bytes, no CRLF yet
        #expect(parseRequest(String(partial.dropLast()), limits: limits) == .incomplete)
        #expect(parseRequest(partial, limits: limits) == .error(.uriTooLong))
    }

    @Test func headTooLarge() {
        let raw = withFields("Host: a\r\nX: " + String(repeating: "v", count: 300) + "\r\n")
        #expect(requestError(raw, limits: limits) == .headerFieldsTooLarge)
        #expect(requestStatus(raw, limits: limits) == 431)
    }

    @Test func headTooLargeDetectedWhileIncomplete() {
        let partial = "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "v", count: 300)
        // UTF-8 prefixes: "\r\n" is a single Character.
        #expect(parseRequest(Array(partial.utf8.prefix(256)), limits: limits) == .incomplete)
        #expect(parseRequest(Array(partial.utf8.prefix(257)), limits: limits) == .error(.headerFieldsTooLarge))
    }

    @Test func headExactlyAtLimit() {
        let base = "GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n"
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "v", count: 256 - base.utf8.count) + "\r\n\r\n"
        #expect(raw.utf8.count == 256)
        #expect(requestHead(raw, limits: limits)?.headLength == 256)
    }

    @Test func tooManyFields() {
        let five = withFields("Host: a\r\n" + String(repeating: "X: 1\r\n", count: 4))
        #expect(requestHead(five, limits: limits) != nil)
        let six = withFields("Host: a\r\n" + String(repeating: "X: 1\r\n", count: 5))
        #expect(requestError(six, limits: limits) == .headerFieldsTooLarge)
    }

    @Test func tooManyFieldsDetectedWhileIncomplete() {
        let partial = "GET / HTTP/1.1\r\nHost: a\r\n" + String(repeating: "X: 1\r\n", count: 5)  // no final CRLF
        #expect(parseRequest(partial, limits: limits) == .error(.headerFieldsTooLarge))
    }
}

@Suite struct ExpectationRejections {
    @Test(arguments: ["something", "100-continue, foo", "100-continue;x=1", "100-continued", "continue"])
    func unknownExpectationIs417(_ value: String) {
        for version in ["HTTP/1.1", "HTTP/1.0"] {
            #expect(requestError(withFields("Host: a\r\nExpect: \(value)\r\n", version: version)) == .expectationFailed)
        }
    }

    @Test func continueIsAcceptedAndOnlyMeaningfulIn11() {
        let fields = "Host: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n"
        guard case .complete(let h11) = parseRequest(withFields(fields)),
              case .complete(let h10) = parseRequest(withFields(fields, version: "HTTP/1.0")) else {
            Issue.record("100-continue refused")
            return
        }
        #expect(h11.expectContinue)
        #expect(!h10.expectContinue)   // RFC 9110 §10.1.1: an HTTP/1.0 expectation is ignored
    }

    @Test func malformedHeadWinsOverExpect() {
        #expect(requestStatus("GET / HTTP/1.1\r\nExpect: x\r\n\r\n") == 400)   // no Host
    }
}
