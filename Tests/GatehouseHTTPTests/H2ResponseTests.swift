import Testing
@testable import GatehouseHTTP

/// The backend's HTTP/1.1 response head as an HTTP/2 header block (RFC 9113 §8.2, §8.3.2).
private func h2Fields(_ raw: String, method: GatehouseHTTP.Method = .get, hsts: String? = nil,
                      csp: Bool = false) -> [(String, String)]? {
    let b = bytes(raw)
    guard case .complete(let head) = parseResponse(b, method: method) else { return nil }
    var block = H2FieldBlock()
    b.withUnsafeBytes { buf in
        let make = { (h: UnsafeRawBufferPointer?) in
            makeH2ResponseFields(head, in: buf, hsts: h, upgradeInsecureRequests: csp, into: &block)
        }
        if let hsts { Array(hsts.utf8).withUnsafeBytes { make($0) } } else { make(nil) }
    }
    return list(block)
}

private func list(_ block: H2FieldBlock) -> [(String, String)] {
    block.fields.map { (text(block.arena, $0.name), text(block.arena, $0.value)) }
}

@Suite struct H2ResponseFieldTests {
    @Test func statusFirstNamesLowercasedConnectionFieldsDropped() throws {
        let f = try #require(h2Fields("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-App: One\r\n"
            + "Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
            + "Transfer-Encoding: chunked\r\nUpgrade: h2c\r\nTrailer: X\r\n\r\n"))
        #expect(f.first! == (":status", "200"))
        let names = f.map(\.0)
        #expect(names == [":status", "content-type", "x-app"], "\(names)")
        #expect(f[2].1 == "One", "values keep their case")
        #expect(!names.contains("content-length"), "a chunked body has no length")
    }

    @Test func contentLengthDescribesTheBodyOrTheGETs() throws {
        let f = try #require(h2Fields("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n"))
        #expect(f.contains { $0 == ("content-length", "13") })
        // HEAD and 304 keep the length as metadata (RFC 9110 §8.6); 204 never has one.
        let head = try #require(h2Fields("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", method: .head))
        #expect(head.contains { $0 == ("content-length", "99") })
        let notModified = try #require(h2Fields("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"))
        #expect(notModified.contains { $0 == ("content-length", "99") })
        let noContent = try #require(h2Fields("HTTP/1.1 204 No Content\r\n\r\n"))
        #expect(!noContent.contains { $0.0 == "content-length" })
    }

    @Test func ourHSTSReplacesTheBackendsAndCSPIsAdded() throws {
        let f = try #require(h2Fields("HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=1\r\nContent-Length: 0\r\n\r\n",
                                      hsts: "max-age=31536000", csp: true))
        #expect(f.filter { $0.0 == "strict-transport-security" }.map(\.1) == ["max-age=31536000"])
        #expect(f.contains { $0 == ("content-security-policy", "upgrade-insecure-requests") })
        let kept = try #require(h2Fields("HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=1\r\n\r\n"))
        #expect(kept.filter { $0.0 == "strict-transport-security" }.map(\.1) == ["max-age=1"], "HSTS off: the app's own stays")
    }

    @Test func errorResponsesMatchTheHTTP11Body() {
        var block = H2FieldBlock()
        makeH2ErrorFields(status: 421, hsts: nil, upgradeInsecureRequests: false, into: &block)
        let f = list(block)
        #expect(f.first! == (":status", "421"))
        var body = ArraySink()
        writeErrorBody(status: 421, into: &body)
        #expect(body.string == "421 Misdirected Request\n")
        #expect(f.contains { $0 == ("content-length", String(body.bytes.count)) })
        var h1 = ArraySink()
        writeErrorResponse(status: 421, hsts: nil, close: true, into: &h1)
        #expect(h1.string.hasSuffix("\r\n\r\n421 Misdirected Request\n"))
    }

    @Test func blockIsReusedWithoutGrowing() {
        var block = H2FieldBlock()
        makeH2ErrorFields(status: 502, hsts: nil, upgradeInsecureRequests: false, into: &block)
        let capacity = block.arena.capacity
        for _ in 0..<100 { makeH2ErrorFields(status: 502, hsts: nil, upgradeInsecureRequests: false, into: &block) }
        #expect(block.arena.capacity == capacity)
        #expect(block.fields.count == 3)
    }
}
