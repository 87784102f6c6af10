// libFuzzer target for the HTTP/2 request builder and its HTTP/1.1 writer
// (H2Request.swift). Selected with GATEHOUSE_FUZZ_TARGET=h2 (scripts/fuzz
// sets it for FUZZ_TARGET=h2); the HTTP/1.1 target stays the default.
//
// Input layout: byte 0 is a control byte, then records
//   [name length: 1 byte][name][value length: 1 byte, or 0xFF + 2 bytes big-endian][value]
// A name length of 0xFF ends the request's header block: the records after it
// are a trailer block. A truncated record ends the input.
//   bit 0     small limits instead of the defaults
//   bit 1     END_STREAM on the request HEADERS
//   bit 2     SETTINGS_ENABLE_CONNECT_PROTOCOL was sent
//   bit 3     END_STREAM on the trailer HEADERS
//   bits 4-7  the WebSocket key's random bytes
//
// Properties checked on every input:
//   1. add() answers are sticky: after the first error every later field of
//      the block gets the same one; stored bytes never exceed maxHeaderBytes,
//      fields never exceed maxHeaderCount; a builder reused after reset()
//      gives the same result and the same rendered head.
//   2. Independent of the builder's code: nothing with NUL/CR/LF or edge
//      whitespace in a value, an uppercase or empty regular name, a
//      connection-specific field, a pseudo-header after a regular field, or
//      host != :authority is accepted; trailers with a pseudo-header are not.
//   3. An accepted request renders into exactly one HTTP/1.1 request head
//      (RequestHeadParser: complete, nothing after it) with the same method
//      (GET for a WebSocket), path, Host == X-Forwarded-Host == authority,
//      framing, upgrade; the client's fields in order minus the dropped ones;
//      one Cookie of the joined crumbs; one of each X-Forwarded-*.
//   4. Same policy as HTTP/1.1: writeUpstreamRequestHead (the HTTP/1.1
//      path's) run on that parsed head reproduces the bytes exactly (not for
//      WebSockets, whose Upgrade fields the HTTP/1.1 path orders differently).
//   5. Trailers never change the stored request.

struct H2Record {
    var name: [UInt8]
    var value: [UInt8]
}

struct H2Input {
    var control: UInt8 = 0
    var head: [H2Record] = []
    var trailers: [H2Record]?

    init(_ data: UnsafeRawBufferPointer) {
        guard let c = data.first else { return }
        control = c
        var i = 1
        var inTrailers = false
        while i < data.count {
            let nameLength = Int(data[i])
            i += 1
            if nameLength == 0xFF {
                if inTrailers { break }
                inTrailers = true
                trailers = []
                continue
            }
            guard i + nameLength < data.count else { break }
            let name = Array(data[i..<i + nameLength])
            i += nameLength
            var valueLength = Int(data[i])
            i += 1
            if valueLength == 0xFF {
                guard i + 2 <= data.count else { break }
                valueLength = Int(data[i]) << 8 | Int(data[i + 1])
                i += 2
            }
            guard i + valueLength <= data.count else { break }
            let record = H2Record(name: name, value: Array(data[i..<i + valueLength]))
            i += valueLength
            if inTrailers { trailers!.append(record) } else { head.append(record) }
        }
    }

    var limits: HTTPLimits {
        control & 1 == 0
            ? HTTPLimits()
            : HTTPLimits(maxRequestLineBytes: 40, maxHeaderBytes: 400, maxHeaderCount: 6, maxChunkLineBytes: 24)
    }
    var endStream: Bool { control & 2 != 0 }
    var connectProtocol: Bool { control & 4 != 0 }
    var trailersEndStream: Bool { control & 8 != 0 }
    var key: WebSocketKey {
        [UInt8](repeating: control >> 4, count: 16).withUnsafeBytes { WebSocketKey(random: $0) }
    }
}

struct H2Outcome: Equatable {
    var result: Result<H2Request, H2RequestError>
    var trailers: H2RequestError?
    var rendered: [UInt8]?
}

/// Feeds one input as the HTTP/2 codec would; checks property 1 on the way.
func runH2(_ input: H2Input, _ b: inout H2RequestBuilder) -> H2Outcome {
    var first: H2RequestError?
    for r in input.head {
        let answer = r.name.withUnsafeBytes { n in r.value.withUnsafeBytes { v in b.add(name: n, value: v) } }
        if let first { check(answer == first, "h2: add() not sticky: \(first) then \(String(describing: answer))") }
        first = first ?? answer
        check(b.arena.count <= b.limits.maxHeaderBytes, "h2: arena \(b.arena.count) past maxHeaderBytes")
        check(b.fields.count <= b.limits.maxHeaderCount, "h2: \(b.fields.count) fields stored")
    }
    let result = b.finish(endStream: input.endStream, connectProtocolEnabled: input.connectProtocol)
    if let first { check(result == .failure(first), "h2: finish \(result) after add error \(first)") }
    var rendered: [UInt8]?
    if case .success = result {
        var sink = ByteArraySink()
        writeUpstreamRequestHead(b, clientAddress: staticBytes(clientAddress), webSocketKey: input.key, into: &sink)
        rendered = sink.bytes
    }
    var trailerError: H2RequestError?
    if let trailers = input.trailers {
        let arena = b.arena, request = b.request, fieldCount = b.fields.count, cookieCount = b.cookies.count
        b.beginTrailers()
        var firstTrailer: H2RequestError?
        for r in trailers {
            let answer = r.name.withUnsafeBytes { n in r.value.withUnsafeBytes { v in b.add(name: n, value: v) } }
            if let firstTrailer { check(answer == firstTrailer, "h2: trailer add() not sticky") }
            firstTrailer = firstTrailer ?? answer
        }
        trailerError = b.finishTrailers(endStream: input.trailersEndStream)
        check(b.arena == arena && b.request == request && b.fields.count == fieldCount && b.cookies.count == cookieCount,
              "h2: trailers changed the request")
        if trailers.contains(where: { $0.name.first == 0x3A }) {
            check(trailerError != nil, "h2: pseudo-header in trailers accepted")
        }
        if !input.trailersEndStream { check(trailerError != nil, "h2: trailers without END_STREAM accepted") }
    }
    return H2Outcome(result: result, trailers: trailerError, rendered: rendered)
}

func lowercased(_ b: [UInt8]) -> [UInt8] { b.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 } }

/// Property 2: reasons the input must have been refused, from the input alone.
func h2MustRefuse(_ head: [H2Record]) -> String? {
    var authority: [UInt8]?, host: [UInt8]?, sawRegular = false, pseudo: [[UInt8]] = []
    for f in head {
        if f.value.contains(where: { $0 == 0 || $0 == 0x0A || $0 == 0x0D }) { return "NUL/CR/LF in value" }
        if let b = f.value.first, b == 0x20 || b == 0x09 { return "leading whitespace" }
        if let b = f.value.last, b == 0x20 || b == 0x09 { return "trailing whitespace" }
        guard let first = f.name.first else { return "empty name" }
        if first == 0x3A {
            if sawRegular { return "pseudo-header after a regular field" }
            let known = [":method", ":scheme", ":authority", ":path", ":protocol"]
            guard known.contains(where: { f.name == Array($0.utf8) }) else { return "unknown pseudo-header" }
            if pseudo.contains(f.name) { return "repeated pseudo-header" }
            pseudo.append(f.name)
            if f.name == Array(":authority".utf8) { authority = f.value }
            continue
        }
        sawRegular = true
        if f.name.contains(where: { $0 >= 0x41 && $0 <= 0x5A }) { return "uppercase name" }
        if !f.name.allSatisfy(isTokenByte) { return "name not a token" }
        for c in ["connection", "upgrade", "transfer-encoding", "keep-alive", "proxy-connection"]
        where f.name == Array(c.utf8) {
            return "connection-specific field"
        }
        if f.name == Array("host".utf8) {
            if host != nil { return "two host fields" }
            host = f.value
        }
    }
    if let a = authority, let h = host, lowercased(a) != lowercased(h) { return "host != :authority" }
    if authority == nil && host == nil { return "no authority" }
    return nil
}

/// Whether the writer forwards an accepted client field of this (lowercase)
/// name: not host (rendered from the authority), framing, hop-by-hop, Expect,
/// X-Forwarded-* or a name with "_" (README: Forwarding rules).
func h2ExpectForwarded(_ name: [UInt8]) -> Bool {
    if name.contains(UInt8(ascii: "_")) { return false }
    let dropped = ["host", "content-length", "te", "trailer", "expect", "x-forwarded-for", "x-forwarded-proto",
                   "x-forwarded-host"]
    return !dropped.contains { name == Array($0.utf8) }
}

/// Property 3 and 4.
func checkH2Rendered(_ input: H2Input, _ b: H2RequestBuilder, _ req: H2Request, _ out: [UInt8]) {
    let arena = b.arena
    func ctx() -> String { "rendered \(hex(out))" }
    out.withUnsafeBytes { u in
        var parser = RequestHeadParser(limits: generousLimits)
        let parsed = parser.parse(u)
        guard case .complete(let head) = parsed else { violation("h2: rendered head does not parse (\(parsed)): \(ctx())") }
        check(head.headLength == u.count, "h2: bytes after the rendered head: \(ctx())")
        check(head.version == .http11 && head.keepAlive, "h2: version/keep-alive: \(ctx())")
        let method: [UInt8] = req.isWebSocket ? Array("GET".utf8) : Array(arena[req.method.start..<req.method.end])
        check(Array(slice(u, head.method)) == method, "h2: method differs: \(ctx())")
        check(Array(slice(u, head.path)) == Array(arena[req.path.start..<req.path.end]), "h2: path differs: \(ctx())")
        let authority = Array(arena[req.authority.start..<req.authority.end])
        check(head.host.map { Array(slice(u, $0)) } == authority, "h2: Host != authority: \(ctx())")
        check(head.framing == req.framing, "h2: framing \(head.framing) != \(req.framing): \(ctx())")
        check(head.wantsUpgrade == req.isWebSocket, "h2: upgrade differs: \(ctx())")
        switch req.framing {
        case .contentLength(let n):
            check(req.contentLength == n || (req.contentLength == nil && n == 0 && input.endStream), "h2: CL framing")
        case .chunked: check(!input.endStream && req.contentLength == nil && !req.isWebSocket, "h2: chunked framing")
        case .none: check(req.contentLength == nil && (input.endStream || req.isWebSocket), "h2: no framing")
        case .untilClose: violation("h2: request framed until close")
        }

        // The client's fields, in order, minus the dropped ones.
        var expected: [(name: [UInt8], value: [UInt8])] = []
        var crumbs: [[UInt8]] = []
        for f in input.head where f.name.first != 0x3A {
            if f.name == Array("cookie".utf8) {
                if !f.value.isEmpty { crumbs.append(f.value) }
                continue
            }
            if req.isWebSocket && f.name == Array("sec-websocket-key".utf8) { continue }
            if h2ExpectForwarded(f.name) { expected.append((f.name, f.value)) }
        }
        var i = 1  // after Host
        check(head.headers.first?.kind == .host, "h2: Host not first: \(ctx())")
        for e in expected {
            check(i < head.headers.count && Array(slice(u, head.headers[i].name)) == e.name
                  && Array(slice(u, head.headers[i].value)) == e.value, "h2: forwarded field \(i) differs: \(ctx())")
            i += 1
        }
        if !crumbs.isEmpty {
            var joined: [UInt8] = []
            for (k, c) in crumbs.enumerated() { joined += (k == 0 ? [] : Array("; ".utf8)) + c }
            check(i < head.headers.count && same(slice(u, head.headers[i].name), "Cookie")
                  && Array(slice(u, head.headers[i].value)) == joined, "h2: Cookie differs: \(ctx())")
            i += 1
        }
        var counts = (xff: 0, xfp: 0, xfh: 0)
        for h in head.headers {
            switch h.kind {
            case .xForwardedFor: counts.xff += 1
            case .xForwardedProto: counts.xfp += 1; check(same(slice(u, h.value), "https"), "h2: X-Forwarded-Proto")
            case .xForwardedHost: counts.xfh += 1; check(Array(slice(u, h.value)) == authority, "h2: X-Forwarded-Host")
            case .keepAlive, .proxyConnection, .te, .trailer, .expect, .underscored, .connectionListed:
                violation("h2: hop-by-hop field forwarded: \(ctx())")
            case .connection, .upgrade:
                check(req.isWebSocket, "h2: Connection/Upgrade without a WebSocket: \(ctx())")
            default: break
            }
        }
        check(counts.xff == 1 && counts.xfp == 1 && counts.xfh == 1, "h2: X-Forwarded-* counts \(counts): \(ctx())")

        // Property 4: the HTTP/1.1 path's writer agrees byte for byte.
        if !req.isWebSocket {
            var sink = ByteArraySink()
            writeUpstreamRequestHead(head, in: u, clientAddress: staticBytes(clientAddress), scheme: .https, into: &sink)
            check(sink.bytes == out, "h2: HTTP/1.1 writer re-renders differently: \(ctx()) vs \(hex(sink.bytes))")
        }
    }
}

func fuzzH2(_ data: UnsafeRawBufferPointer) {
    let input = H2Input(data)
    var b = H2RequestBuilder(limits: input.limits)
    let outcome = runH2(input, &b)

    // Property 1: a builder reused after other work agrees.
    var pooled = H2RequestBuilder(limits: input.limits)
    let junk = H2Input(UnsafeRawBufferPointer(rebasing: data[min(1, data.count)...]))
    _ = runH2(junk, &pooled)
    pooled.reset()
    let again = runH2(input, &pooled)
    check(again == outcome, "h2: reused builder differs: \(again.result) vs \(outcome.result)")

    guard case .success(let req) = outcome.result, let out = outcome.rendered else { return }
    if let why = h2MustRefuse(input.head) { violation("h2: accepted although \(why): input \(hex(data))") }
    checkH2Rendered(input, b, req, out)
}
