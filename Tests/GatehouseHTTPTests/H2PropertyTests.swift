import Testing
@testable import GatehouseHTTP

// Random HTTP/2 field lists, valid ones mutated and hostile bytes mixed in:
// each is either refused, or becomes an HTTP/1.1 head that our own HTTP/1.1
// parser reads as exactly one request for the same authority.

private let namePool: [String] = [
    ":method", ":scheme", ":authority", ":path", ":protocol", ":status", ":Path", ":",
    "host", "cookie", "content-length", "te", "transfer-encoding", "connection", "upgrade", "keep-alive",
    "proxy-connection", "x-forwarded-for", "x-forwarded-host", "x_forwarded_for", "expect", "trailer",
    "sec-websocket-key", "sec-websocket-version", "accept", "Accept", "HOST", "a b", "a:b", "a/b", "", "x-a",
]

private let valuePool: [String] = [
    "", "0", "1", "5", "5, 5", "05", "-1", "trailers", "gzip", "chunked", "100-continue", "websocket", "WebSocket",
    "GET", "POST", "OPTIONS", "CONNECT", "HEAD", "PUT", "https", "http", "/", "/x?y=1", "*", "//a", "https://a.example/x",
    "a.example", "A.EXAMPLE", "b.example", "a.example:443", "user@a.example", "[::1]:8443", "a.example\r\nx: 1",
    " a", "a ", "a\u{0}b", "a\nb", "a\rb", "\u{7f}", "a\u{1}b", "x-a", "a=1", "a=1; b=2", "close", "/a#b", "/a b",
]

private let hostile: [UInt8] = [0, 0x09, 0x0A, 0x0D, 0x20, 0x22, 0x23, 0x25, 0x2C, 0x2F, 0x3A, 0x3B, 0x40, 0x41, 0x5A,
                                0x5B, 0x5D, 0x5F, 0x61, 0x7A, 0x7B, 0x7F, 0x80, 0xFF, 0x2A, 0x3F, 0x2E, 0x30, 0x35]

private func pick<T>(_ a: [T], _ rng: inout SplitMix64) -> T { a[Int(rng.next() % UInt64(a.count))] }

private func randomBytes(_ rng: inout SplitMix64) -> [UInt8] {
    (0..<Int(rng.next() % 12)).map { _ in rng.next() % 3 == 0 ? UInt8(truncatingIfNeeded: rng.next()) : pick(hostile, &rng) }
}

private func randomName(_ rng: inout SplitMix64) -> [UInt8] {
    rng.next() % 5 == 0 ? randomBytes(&rng) : bytes(pick(namePool, &rng))
}

private func randomValue(_ rng: inout SplitMix64) -> [UInt8] {
    switch rng.next() % 6 {
    case 0: return randomBytes(&rng)
    case 1: return bytes(pick(valuePool, &rng)) + randomBytes(&rng)
    default: return bytes(pick(valuePool, &rng))
    }
}

private let seeds: [[H2Field]] = [
    h2Get(),
    h2Request("POST", "/api") + [H2Field("content-length", "5"), H2Field("cookie", "a=1"), H2Field("cookie", "b=2")],
    h2Request("OPTIONS", "*") + [H2Field("host", "app.example.com")],
    h2WebSocket([H2Field("sec-websocket-version", "13"), H2Field("origin", "https://app.example.com")]),
    [H2Field(":method", "PUT"), H2Field(":scheme", "https"), H2Field(":path", "/u"), H2Field("host", "a.example"),
     H2Field("te", "trailers"), H2Field("expect", "100-continue")],
]

private func mutate(_ input: [H2Field], _ rng: inout SplitMix64) -> [H2Field] {
    var f = input
    for _ in 0..<(1 + Int(rng.next() % 3)) {
        let i = f.isEmpty ? 0 : Int(rng.next() % UInt64(f.count))
        switch rng.next() % 7 {
        case 0 where !f.isEmpty: f.remove(at: i)
        case 1 where !f.isEmpty: f.insert(f[i], at: Int(rng.next() % UInt64(f.count + 1)))  // duplicate, maybe late
        case 2 where !f.isEmpty: f[i].name = randomName(&rng)
        case 3 where !f.isEmpty: f[i].value = randomValue(&rng)
        case 4 where f.count > 1: f.swapAt(i, Int(rng.next() % UInt64(f.count)))
        default: f.insert(H2Field(raw: randomName(&rng), randomValue(&rng)), at: Int(rng.next() % UInt64(f.count + 1)))
        }
    }
    return f
}

private func lowered(_ b: [UInt8]) -> [UInt8] { b.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 } }

/// Facts about the input any accepted request must respect, computed
/// without the builder's code.
private func mustBeRefused(_ fields: [H2Field]) -> String? {
    var authority: [UInt8]?, host: [UInt8]?
    for f in fields {
        if f.value.contains(where: { $0 == 0 || $0 == 0x0A || $0 == 0x0D }) { return "NUL/CR/LF" }
        if let first = f.value.first, first == 0x20 || first == 0x09 { return "leading whitespace" }
        if let last = f.value.last, last == 0x20 || last == 0x09 { return "trailing whitespace" }
        if f.name.first != 0x3A && f.name.contains(where: { $0 >= 0x41 && $0 <= 0x5A }) { return "uppercase" }
        let name = String(decoding: f.name, as: UTF8.self)
        if ["connection", "upgrade", "transfer-encoding", "keep-alive", "proxy-connection"].contains(name) {
            return "connection-specific"
        }
        if name == ":authority" { authority = f.value }
        if name == "host" { host = f.value }
    }
    if let a = authority, let h = host, lowered(a) != lowered(h) { return "host differs" }
    if authority == nil && host == nil { return "no authority" }
    return nil
}

private func check(_ fields: [H2Field], endStream: Bool, connectProtocol: Bool, pooled: inout H2RequestBuilder) -> Bool {
    let (fresh, result) = h2Build(fields, endStream: endStream, connectProtocol: connectProtocol, limits: pooled.limits)
    #expect(fresh.arena.count <= pooled.limits.maxHeaderBytes)
    pooled.reset()
    let again = feed(&pooled, fields, endStream: endStream, connectProtocol: connectProtocol)
    #expect(again == result, "a reused builder agrees")
    guard case .success(let req) = result else { return false }
    if let why = mustBeRefused(fields) {
        Issue.record("accepted although \(why): \(fields.map { (String(decoding: $0.name, as: UTF8.self), $0.value) })")
        return true
    }
    let out = h2Render(fresh, key: sampleKey)
    #expect(h2Render(pooled, key: sampleKey) == out)
    guard let head = expectOneRequest(fresh, out) else {
        Issue.record("input \(fields.map { (String(decoding: $0.name, as: UTF8.self), $0.value) })")
        return true
    }
    // Host equals the authority routing saw, and so does X-Forwarded-Host.
    let authority = Array(fresh.arena[req.authority.start..<req.authority.end])
    #expect(head.host.map { Array(out[$0.start..<$0.end]) } == authority)
    let xfh = head.headers.first { $0.kind == .xForwardedHost }
    #expect(xfh.map { Array(out[$0.value.start..<$0.value.end]) } == authority)
    // Only our framing, only our hop-by-hop fields.
    #expect(head.headers.filter { $0.kind == .contentLength || $0.kind == .transferEncoding }.count <= 1)
    for h in head.headers {
        switch h.kind {
        case .keepAlive, .proxyConnection, .te, .trailer, .expect, .underscored, .connectionListed:
            Issue.record("forwarded \(text(out, h.name))")
        case .connection, .upgrade:
            #expect(req.isWebSocket)
        default:
            break
        }
    }
    return true
}

@Suite struct H2RequestProperties {
    @Test func mutatedFieldListsAreRefusedOrForwardedAsOneRequest() {
        var rng = SplitMix64(state: 0x48_3252_4551)
        var pooled = H2RequestBuilder()
        var accepted = 0, refused = 0
        for k in 0..<4000 {
            let fields = mutate(seeds[k % seeds.count], &rng)
            let endStream = rng.next() % 2 == 0
            if check(fields, endStream: endStream, connectProtocol: rng.next() % 4 != 0, pooled: &pooled) {
                accepted += 1
            } else {
                refused += 1
            }
        }
        // The mutations explore both sides of the boundary.
        #expect(accepted > 300 && refused > 300, "accepted \(accepted), refused \(refused)")
    }

    @Test func randomFieldListsNeverCrash() {
        var rng = SplitMix64(state: 7)
        var pooled = H2RequestBuilder(limits: HTTPLimits(maxHeaderBytes: 600, maxHeaderCount: 8))
        for _ in 0..<3000 {
            let fields = (0..<Int(rng.next() % 10)).map { _ in H2Field(raw: randomName(&rng), randomValue(&rng)) }
            _ = check(fields, endStream: rng.next() % 2 == 0, connectProtocol: true, pooled: &pooled)
            #expect(pooled.arena.count <= 600)
        }
    }
}
