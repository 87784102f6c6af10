// libFuzzer target for GatehouseHTTP (the HTTP/1.1 parsers and writers; with
// GATEHOUSE_FUZZ_TARGET=h2 the HTTP/2 request builder, see H2Fuzzer.swift).
//
// Built by scripts/fuzz together with Sources/GatehouseHTTP/*.swift as one
// module; only the public API is used. Property violations call fatalError
// with a description, which libFuzzer reports as a crash ("deadly signal").
//
// Input layout: byte 0 is a control byte, the rest is the message.
//   bit 0     small limits instead of the defaults
//   bit 1     https listener (X-Forwarded-Proto: https, HSTS on responses)
//   bit 2     the client spoke HTTP/1.0 (response re-framing)
//   bit 3     the client connection is not kept alive
//   bits 4-5  largest split piece: 1, 3, 16 or 256 bytes
//   bits 4-7  also seed the split PRNG
//
// Properties checked on every input:
//   1. RequestHeadParser: whole input == fed in growing prefixes (random split
//      points) == again after reset(); a complete head's spans lie inside it,
//      its bytes are legal (no CR/LF/NUL can reach a writer).
//   2. Forwarding round trip: writeUpstreamRequestHead's output parses
//      completely, with the same method, target (the path), Host and framing,
//      the end-to-end fields unchanged and in order, exactly one of each
//      X-Forwarded-* (ours), no hop-by-hop field (but Upgrade + our
//      Connection: upgrade when a bodiless upgrade is passed on), no field
//      name with "_"; rendering is idempotent.
//   3. ResponseHeadParser for GET and HEAD: same split/reset consistency, the
//      RFC 9112 §6.3 framing rules, and the writeClientResponseHead (for 1xx
//      writeInterimResponseHead, for 101 writeSwitchingProtocolsHead) round
//      trip, as the proxy calls them.
//   4. ChunkedDecoder over the message (and over the body after a complete
//      chunked request or response head): whole vs. split feeding give the
//      same chunk sizes, data, end offset or error; a complete body re-framed
//      with writeChunkHeader/writeChunkDataEnd/writeLastChunk decodes to the
//      same chunks and data.

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Plumbing

/// A ByteSink over a Swift array (as GatehouseProxy's ByteArraySink).
struct ByteArraySink: ByteSink {
    var bytes: [UInt8] = []
    init() { bytes.reserveCapacity(1024) }
    mutating func write(_ b: UnsafeRawBufferPointer) { bytes.append(contentsOf: b) }
}

@inline(never)
func violation(_ what: String) -> Never {
    fatalError("fuzz property violated: \(what)")
}

@inline(__always)
func check(_ condition: Bool, _ what: @autoclosure () -> String) {
    if !condition { violation(what()) }
}

func hex<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    let digits: [Character] = Array("0123456789abcdef")
    var s = ""
    s.reserveCapacity(bytes.count * 2)
    for b in bytes.prefix(512) { s.append(digits[Int(b >> 4)]); s.append(digits[Int(b & 15)]) }
    if bytes.count > 512 { s += "..." }
    return s
}

@inline(__always)
func slice(_ p: UnsafeRawBufferPointer, _ span: ByteSpan) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(rebasing: p[span.start..<span.end])
}

@inline(__always)
func same(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    a.count == b.count && a.elementsEqual(b)
}

@inline(__always)
func same(_ a: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
    same(a, UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
}

func spanInside(_ s: ByteSpan, _ end: Int) -> Bool { s.start >= 0 && s.start <= s.end && s.end <= end }

/// Independent of the parser's own byte classes (RFC 9110 §5.6.2, §5.5).
func isTokenByte(_ b: UInt8) -> Bool {
    switch b {
    case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"):
        return true
    default:
        return "!#$%&'*+-.^_`|~".utf8.contains(b)
    }
}

func isLegalFieldValue(_ v: UnsafeRawBufferPointer) -> Bool {
    for b in v where !(b == 0x09 || b == 0x20 || (b >= 0x21 && b != 0x7F)) { return false }
    if let f = v.first, f == 0x20 || f == 0x09 { return false }
    if let l = v.last, l == 0x20 || l == 0x09 { return false }
    return true
}

func isToken(_ v: UnsafeRawBufferPointer) -> Bool { !v.isEmpty && v.allSatisfy(isTokenByte) }

/// SplitMix64: split sizes from the control byte.
struct Splitter {
    var state: UInt64
    let maxPiece: Int
    mutating func next() -> Int {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return 1 + Int(z % UInt64(maxPiece))
    }
}

struct Control {
    let limits: HTTPLimits
    let scheme: Scheme
    let clientVersion: HTTPVersion
    let clientKeepAlive: Bool
    let control: UInt8

    init(_ c: UInt8) {
        control = c
        limits = c & 1 == 0
            ? HTTPLimits()
            : HTTPLimits(maxRequestLineBytes: 48, maxHeaderBytes: 192, maxHeaderCount: 6, maxChunkLineBytes: 24)
        scheme = c & 2 == 0 ? .http : .https
        clientVersion = c & 4 == 0 ? .http11 : .http10
        clientKeepAlive = c & 8 == 0
    }

    func splitter() -> Splitter {
        Splitter(state: UInt64(control) &* 0x1000_0000_01B3, maxPiece: [1, 3, 16, 256][Int((control >> 4) & 3)])
    }
}

/// Limits large enough that a re-rendered head is never refused for size.
let generousLimits = HTTPLimits(maxRequestLineBytes: 1 << 20, maxHeaderBytes: 1 << 20, maxHeaderCount: 1 << 20,
                                maxChunkLineBytes: 4096)

let clientAddress: StaticString = "203.0.113.7"
let hstsValue: StaticString = "max-age=31536000; includeSubDomains"

func staticBytes(_ s: StaticString) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount)
}

// MARK: - Requests

/// Fields writeUpstreamRequestHead must not forward: hop-by-hop (RFC 9110
/// §7.6.1; Upgrade passes when the upgrade is), framing (re-rendered), Expect
/// (answered by Gatehouse), X-Forwarded-*, names with "_". Deliberately no
/// `default:`: a new HeaderKind must be classified here by hand.
func droppedUpstream(_ k: HeaderKind, upgrade: Bool) -> Bool {
    switch k {
    case .upgrade:
        return !upgrade
    case .connection, .keepAlive, .proxyConnection, .te, .trailer, .connectionListed,
         .contentLength, .transferEncoding, .expect, .xForwardedFor, .xForwardedProto, .xForwardedHost, .underscored:
        return true
    case .other, .host, .strictTransportSecurity:
        return false
    }
}

/// As ClientConnection: only a bodiless upgrade request is passed on.
func passesUpgrade(_ head: RequestHead) -> Bool { head.wantsUpgrade && head.framing == .none }

/// Parses ever longer prefixes of `all` (cut by the control byte's splitter)
/// while the parser answers `incomplete`, as bytes arriving from a socket
/// would; the last answer, or the one for all of `all`.
func feedGrowing<R: Equatable>(_ all: UnsafeRawBufferPointer, _ c: Control, until incomplete: R,
                               _ parse: (UnsafeRawBufferPointer) -> R) -> R {
    var rng = c.splitter()
    var n = 0
    while true {
        let fed = parse(UnsafeRawBufferPointer(rebasing: all[0..<n]))
        if fed != incomplete || n == all.count { return fed }
        n = min(all.count, n + rng.next())
    }
}

func checkRequest(_ all: UnsafeRawBufferPointer, _ c: Control) -> RequestHead? {
    var parser = RequestHeadParser(limits: c.limits)
    let once = parser.parse(all)
    check(parser.parse(all) == once, "request: second parse() differs")
    parser.reset()
    check(parser.parse(all) == once, "request: parse after reset() differs")

    var split = RequestHeadParser(limits: c.limits)
    let fed = feedGrowing(all, c, until: .incomplete) { split.parse($0) }
    check(fed == once, "request: split feeding gave \(fed), whole gave \(once)")

    guard case .complete(let head) = once else { return nil }
    check(head.headLength > 0 && head.headLength <= all.count && head.headLength <= c.limits.maxHeaderBytes,
          "request: headLength \(head.headLength)")
    var spans = [head.method, head.target, head.path]
    if let h = head.host { spans.append(h) }
    for f in head.headers { spans += [f.name, f.value] }
    for s in spans { check(spanInside(s, head.headLength), "request: span \(s) outside head") }
    check(head.headers.count <= c.limits.maxHeaderCount, "request: too many headers accepted")
    check(head.framing != .untilClose, "request: framed until close")
    check(isToken(slice(all, head.method)), "request: method not a token")
    check(!head.target.isEmpty && slice(all, head.target).allSatisfy { $0 >= 0x21 && $0 <= 0x7E && $0 != 0x23 },
          "request: illegal request-target byte")
    check(head.version == .http10 || head.host != nil, "request: HTTP/1.1 without Host accepted")
    for f in head.headers {
        check(isToken(slice(all, f.name)), "request: field name not a token")
        check(isLegalFieldValue(slice(all, f.value)), "request: illegal field value")
    }
    if case .contentLength = head.framing {
        check(!head.headers.contains { $0.kind == .transferEncoding }, "request: CL framing with Transfer-Encoding")
    }

    checkForwarded(all, head, c)
    return head
}

func renderUpstream(_ head: RequestHead, _ buffer: UnsafeRawBufferPointer, _ c: Control) -> [UInt8] {
    var sink = ByteArraySink()
    writeUpstreamRequestHead(head, in: buffer, clientAddress: staticBytes(clientAddress), scheme: c.scheme,
                             upgrade: passesUpgrade(head), into: &sink)
    return sink.bytes
}

/// What we forward must parse the same way.
func checkForwarded(_ all: UnsafeRawBufferPointer, _ head: RequestHead, _ c: Control) {
    // The proxy forwards a Host-less HTTP/1.0 request (routed by SNI on https)
    // as an HTTP/1.1 head without Host, which an RFC 9112 §3.2 parser rejects.
    // Reported; GATEHOUSE_FUZZ_STRICT_HOST=1 turns the check back on.
    if head.host == nil && !strictHost { return }

    let up = renderUpstream(head, all, c)
    up.withUnsafeBytes { u in
        var parser = RequestHeadParser(limits: generousLimits)
        let result = parser.parse(u)
        guard case .complete(let h2) = result else {
            violation("forwarded request head does not parse (\(result)): input \(hex(all)) forwarded \(hex(u))")
        }
        func ctx() -> String { "input \(hex(all)) forwarded \(hex(u))" }
        check(h2.headLength == u.count, "forwarded head length \(h2.headLength) != \(u.count): \(ctx())")
        check(same(slice(u, h2.method), slice(all, head.method)) && h2.methodKind == head.methodKind,
              "forwarded method differs: \(ctx())")
        // RFC 9112 §3.2.4: an absolute-form OPTIONS without a path is sent as "*".
        let path = head.path.isEmpty ? (head.methodKind == .options ? staticBytes("*") : staticBytes("/")) : slice(all, head.path)
        check(same(slice(u, h2.target), path) && same(slice(u, h2.path), path), "forwarded target differs: \(ctx())")
        check(h2.version == .http11, "forwarded version: \(ctx())")
        check(h2.framing == head.framing, "forwarded framing \(h2.framing) != \(head.framing): \(ctx())")
        switch (head.host, h2.host) {
        case (nil, nil): break
        case (let a?, let b?): check(same(slice(all, a), slice(u, b)), "forwarded Host differs: \(ctx())")
        default: violation("forwarded Host presence differs: \(ctx())")
        }
        let upgrade = passesUpgrade(head)
        let kept = head.headers.filter { !droppedUpstream($0.kind, upgrade: upgrade) }
        check(!h2.expectContinue && h2.keepAlive, "forwarded Expect/Connection: \(ctx())")
        check(h2.hasUpgrade == (upgrade && kept.contains { $0.kind == .upgrade }) && h2.wantsUpgrade == upgrade,
              "forwarded upgrade \(h2.hasUpgrade)/\(h2.wantsUpgrade), expected \(upgrade): \(ctx())")

        let framingFields = head.framing == .none ? 0 : 1
        check(h2.headers.count == kept.count + (upgrade ? 1 : 0) + 2 + (head.host == nil ? 0 : 1) + framingFields,
              "forwarded field count \(h2.headers.count), expected \(kept.count) kept: \(ctx())")
        for (i, f) in kept.enumerated() {
            let g = h2.headers[i]
            check(same(slice(all, f.name), slice(u, g.name)) && same(slice(all, f.value), slice(u, g.value))
                  && f.kind == g.kind, "forwarded field \(i) differs: \(ctx())")
        }
        var i = kept.count
        if upgrade {
            check(h2.headers[i].kind == .connection && same(slice(u, h2.headers[i].value), "upgrade"),
                  "forwarded Connection: upgrade: \(ctx())")
            i += 1
        }
        check(h2.headers[i].kind == .xForwardedFor && same(slice(u, h2.headers[i].value), staticBytes(clientAddress)),
              "X-Forwarded-For: \(ctx())")
        i += 1
        check(h2.headers[i].kind == .xForwardedProto
              && same(slice(u, h2.headers[i].value), c.scheme == .https ? "https" : "http"), "X-Forwarded-Proto: \(ctx())")
        i += 1
        if let host = head.host {
            check(h2.headers[i].kind == .xForwardedHost && same(slice(u, h2.headers[i].value), slice(all, host)),
                  "X-Forwarded-Host: \(ctx())")
            i += 1
        }
        switch head.framing {
        case .contentLength: check(h2.headers[i].kind == .contentLength, "forwarded Content-Length: \(ctx())")
        case .chunked:
            check(h2.headers[i].kind == .transferEncoding && same(slice(u, h2.headers[i].value), "chunked"),
                  "forwarded Transfer-Encoding: \(ctx())")
        case .none, .untilClose: break
        }
        for (j, g) in h2.headers.enumerated() {
            switch g.kind {
            case .connection where upgrade && j == kept.count, .upgrade where upgrade:
                break
            case .connection, .keepAlive, .proxyConnection, .te, .trailer, .upgrade, .connectionListed, .expect,
                 .underscored:
                violation("hop-by-hop or underscored field \(j) forwarded: \(ctx())")
            case .xForwardedFor, .xForwardedProto, .xForwardedHost:
                check(j >= kept.count, "client's X-Forwarded-* forwarded: \(ctx())")
            default: break
            }
        }
        // Forwarding what we forwarded changes nothing.
        check(renderUpstream(h2, u, c) == up, "upstream rendering not idempotent: \(ctx())")
    }
}

// MARK: - Responses

func checkResponse(_ all: UnsafeRawBufferPointer, method: Method, _ c: Control) -> ResponseHead? {
    var parser = ResponseHeadParser(limits: c.limits)
    let once = parser.parse(all, requestMethod: method)
    check(parser.parse(all, requestMethod: method) == once, "response: second parse() differs")
    parser.reset()
    check(parser.parse(all, requestMethod: method) == once, "response: parse after reset() differs")

    var split = ResponseHeadParser(limits: c.limits)
    let fed = feedGrowing(all, c, until: .incomplete) { split.parse($0, requestMethod: method) }
    check(fed == once, "response (\(method)): split feeding gave \(fed), whole gave \(once)")

    guard case .complete(let head) = once else { return nil }
    check(head.headLength > 0 && head.headLength <= all.count && head.headLength <= c.limits.maxHeaderBytes,
          "response: headLength \(head.headLength)")
    check((100...599).contains(head.status), "response: status \(head.status)")
    check(spanInside(head.reason, head.headLength), "response: reason span")
    for f in head.headers {
        check(spanInside(f.name, head.headLength) && spanInside(f.value, head.headLength), "response: field span")
        check(isToken(slice(all, f.name)), "response: field name not a token")
        check(isLegalFieldValue(slice(all, f.value)), "response: illegal field value")
    }
    check(head.headers.count <= c.limits.maxHeaderCount, "response: too many headers accepted")
    check(slice(all, head.reason).allSatisfy { $0 == 0x09 || $0 == 0x20 || ($0 >= 0x21 && $0 != 0x7F) },
          "response: illegal reason byte")
    // RFC 9112 §6.3 rule 1.
    if method == .head || head.status < 200 || head.status == 204 || head.status == 304 {
        check(head.framing == .none, "response: \(head.status) to \(method) has a body")
    }
    if case .contentLength(let n) = head.framing { check(head.contentLength == n, "response: CL framing mismatch") }
    if head.framing == .untilClose { check(!head.keepAlive, "response: keep-alive with close-delimited body") }

    if head.status == 101 {
        checkSwitchingProtocols(all, head, method: method, c)
    } else if head.status < 200 {
        checkInterim(all, head, method: method)
    } else {
        checkClientResponse(all, head, method: method, c)
    }
    return head
}

func checkInterim(_ all: UnsafeRawBufferPointer, _ head: ResponseHead, method: Method) {
    var sink = ByteArraySink()
    writeInterimResponseHead(head, in: all, into: &sink)
    sink.bytes.withUnsafeBytes { u in
        var parser = ResponseHeadParser(limits: generousLimits)
        let result = parser.parse(u, requestMethod: method)
        func ctx() -> String { "input \(hex(all)) relayed \(hex(u))" }
        guard case .complete(let h2) = result else { violation("relayed interim head does not parse (\(result)): \(ctx())") }
        check(h2.headLength == u.count && h2.status == head.status && h2.framing == .none
              && same(slice(u, h2.reason), slice(all, head.reason)), "relayed interim head differs: \(ctx())")
        let kept = head.headers.filter { !isHopByHopOrFramingResponse($0.kind) }
        check(h2.headers.count == kept.count, "relayed interim field count: \(ctx())")
        for (i, f) in kept.enumerated() {
            check(same(slice(all, f.name), slice(u, h2.headers[i].name))
                  && same(slice(all, f.value), slice(u, h2.headers[i].value)), "relayed interim field \(i): \(ctx())")
        }
    }
}

/// Not relayed to the client (no `default:`, as droppedUpstream).
func isHopByHopOrFramingResponse(_ k: HeaderKind) -> Bool {
    switch k {
    case .connection, .keepAlive, .proxyConnection, .te, .trailer, .upgrade, .connectionListed,
         .contentLength, .transferEncoding:
        return true
    case .other, .host, .expect, .xForwardedFor, .xForwardedProto, .xForwardedHost, .strictTransportSecurity,
         .underscored:
        return false
    }
}

func renderSwitching(_ head: ResponseHead, _ buffer: UnsafeRawBufferPointer, _ c: Control) -> [UInt8] {
    var sink = ByteArraySink()
    writeSwitchingProtocolsHead(head, in: buffer, hsts: c.scheme == .https ? staticBytes(hstsValue) : nil, into: &sink)
    return sink.bytes
}

/// The backend's 101 to a passed-on upgrade (ClientConnection.startTunnel).
func checkSwitchingProtocols(_ all: UnsafeRawBufferPointer, _ head: ResponseHead, method: Method, _ c: Control) {
    let hsts = c.scheme == .https
    let out = renderSwitching(head, all, c)
    out.withUnsafeBytes { u in
        var parser = ResponseHeadParser(limits: generousLimits)
        let result = parser.parse(u, requestMethod: method)
        func ctx() -> String { "input \(hex(all)) relayed \(hex(u))" }
        guard case .complete(let h2) = result else { violation("relayed 101 head does not parse (\(result)): \(ctx())") }
        check(h2.headLength == u.count && h2.status == 101 && h2.framing == .none
              && same(slice(u, h2.reason), slice(all, head.reason)), "relayed 101 head differs: \(ctx())")
        let kept = head.headers.filter {
            (!isHopByHopOrFramingResponse($0.kind) || $0.kind == .upgrade) && !(hsts && $0.kind == .strictTransportSecurity)
        }
        check(h2.headers.count == kept.count + (hsts ? 1 : 0) + 1, "relayed 101 field count: \(ctx())")
        for (i, f) in kept.enumerated() {
            check(same(slice(all, f.name), slice(u, h2.headers[i].name))
                  && same(slice(all, f.value), slice(u, h2.headers[i].value)), "relayed 101 field \(i): \(ctx())")
        }
        let last = h2.headers[h2.headers.count - 1]
        check(last.kind == .connection && same(slice(u, last.value), "upgrade"), "relayed 101 Connection: \(ctx())")
        check(renderSwitching(h2, u, c) == out, "101 rendering not idempotent: \(ctx())")
    }
}

func renderClient(_ head: ResponseHead, _ buffer: UnsafeRawBufferPointer, framing: BodyFraming, keepAlive: Bool,
                  _ c: Control) -> [UInt8] {
    var sink = ByteArraySink()
    writeClientResponseHead(head, in: buffer, framing: framing, keepAlive: keepAlive, clientVersion: c.clientVersion,
                            hsts: c.scheme == .https ? staticBytes(hstsValue) : nil, into: &sink)
    return sink.bytes
}

/// As ClientConnection.startResponse: chunked is re-framed for 1.1 clients,
/// delimited by close for 1.0 clients.
func checkClientResponse(_ all: UnsafeRawBufferPointer, _ head: ResponseHead, method: Method, _ c: Control) {
    let framing: BodyFraming = head.framing == .chunked && c.clientVersion == .http10 ? .untilClose : head.framing
    let keepAlive = c.clientKeepAlive && framing != .untilClose
    let hsts = c.scheme == .https
    let out = renderClient(head, all, framing: framing, keepAlive: keepAlive, c)
    out.withUnsafeBytes { u in
        var parser = ResponseHeadParser(limits: generousLimits)
        let result = parser.parse(u, requestMethod: method)
        func ctx() -> String { "input \(hex(all)) relayed \(hex(u))" }
        guard case .complete(let h2) = result else { violation("relayed response head does not parse (\(result)): \(ctx())") }
        check(h2.headLength == u.count, "relayed head length: \(ctx())")
        check(h2.version == .http11 && h2.status == head.status && same(slice(u, h2.reason), slice(all, head.reason)),
              "relayed status line differs: \(ctx())")
        check(h2.framing == framing, "relayed framing \(h2.framing) != \(framing): \(ctx())")
        check(h2.keepAlive == keepAlive, "relayed keep-alive \(h2.keepAlive) != \(keepAlive): \(ctx())")
        let expectedCL: UInt64?
        switch framing {
        case .contentLength(let n): expectedCL = n
        case .none: expectedCL = head.status != 204 ? head.contentLength : nil
        case .chunked, .untilClose: expectedCL = nil
        }
        check(h2.contentLength == expectedCL, "relayed Content-Length \(String(describing: h2.contentLength)): \(ctx())")

        let kept = head.headers.filter {
            !isHopByHopOrFramingResponse($0.kind) && !(hsts && $0.kind == .strictTransportSecurity)
        }
        for (i, f) in kept.enumerated() {
            check(i < h2.headers.count && same(slice(all, f.name), slice(u, h2.headers[i].name))
                  && same(slice(all, f.value), slice(u, h2.headers[i].value)), "relayed field \(i) differs: \(ctx())")
        }
        var stsCount = 0, connectionCount = 0
        for g in h2.headers {
            switch g.kind {
            case .strictTransportSecurity: stsCount += 1
            case .connection: connectionCount += 1
            case .keepAlive, .proxyConnection, .te, .trailer, .upgrade, .connectionListed:
                violation("hop-by-hop field relayed: \(ctx())")
            default: break
            }
        }
        if hsts {
            check(stsCount == 1, "relayed HSTS count \(stsCount): \(ctx())")
            check(h2.headers.contains { $0.kind == .strictTransportSecurity && same(slice(u, $0.value), staticBytes(hstsValue)) },
                  "our HSTS missing: \(ctx())")
        }
        check(connectionCount == (!keepAlive || c.clientVersion == .http10 ? 1 : 0), "relayed Connection: \(ctx())")
        check(renderClient(h2, u, framing: framing, keepAlive: keepAlive, c) == out,
              "client response rendering not idempotent: \(ctx())")
    }
}

// MARK: - Chunked bodies

enum ChunkOutcome: Equatable {
    /// Input exhausted in this state with this many bytes consumed.
    case needMore(consumed: Int, state: ChunkedDecoder.State)
    case end(offset: Int)
    case error(HTTPParseError)
}

struct ChunkTrace: Equatable {
    var sizes: [UInt64] = []
    var data: [UInt8] = []
    var outcome = ChunkOutcome.needMore(consumed: 0, state: .size)
}

/// Drives the decoder as the proxy does: framing lines from the front of
/// what has arrived, data moved by the caller. `rng == nil`: all at once.
func decodeChunked(_ all: UnsafeRawBufferPointer, limits: HTTPLimits, rng: inout Splitter?) -> ChunkTrace {
    var d = ChunkedDecoder(limits: limits)
    var trace = ChunkTrace()
    var offset = 0
    var arrived = rng == nil ? all.count : 0
    var steps = 0
    while true {
        steps += 1
        check(steps <= 4 * all.count + 64, "chunked: no progress (state \(d.state))")
        if case .data(let remaining) = d.state {
            let n = Int(min(remaining, UInt64(arrived - offset)))
            if n > 0 {
                trace.data += UnsafeRawBufferPointer(rebasing: all[offset..<offset + n])
                offset += n
                d.didConsumeData(n)
                if remaining == UInt64(n) { check(d.state == .dataCRLF, "chunked: state after data") }
                continue
            }
        } else {
            let input = UnsafeRawBufferPointer(rebasing: all[offset..<arrived])
            let step = d.advance(input)
            switch step {
            case .chunk(let size, let consumed):
                check(consumed >= 3 && consumed <= input.count, "chunked: chunk consumed \(consumed)")
                check(d.state == (size == 0 ? .trailers : .data(remaining: size)), "chunked: state after size line")
                trace.sizes.append(size)
                offset += consumed
                continue
            case .dataEnd(let consumed):
                check(consumed == 2 && d.state == .size, "chunked: dataEnd")
                offset += consumed
                continue
            case .end(let consumed):
                check(consumed >= 2 && consumed <= input.count && d.state == .done, "chunked: end consumed \(consumed)")
                check(d.advance(UnsafeRawBufferPointer(rebasing: all[(offset + consumed)...])) == .end(consumed: 0),
                      "chunked: not done after end")
                trace.outcome = .end(offset: offset + consumed)
                return trace
            case .error(let e):
                check(d.advance(input) == step, "chunked: error not sticky")
                trace.outcome = .error(e)
                return trace
            case .needMore:
                break
            }
        }
        if arrived == all.count {
            trace.outcome = .needMore(consumed: offset, state: d.state)
            return trace
        }
        arrived = min(all.count, arrived + rng!.next())
    }
}

func checkChunked(_ all: UnsafeRawBufferPointer, _ c: Control) {
    var none: Splitter? = nil
    let whole = decodeChunked(all, limits: c.limits, rng: &none)
    var rng: Splitter? = c.splitter()
    let split = decodeChunked(all, limits: c.limits, rng: &rng)
    check(whole == split, "chunked: split feeding \(split.sizes) \(split.outcome) != whole \(whole.sizes) \(whole.outcome)"
          + " input \(hex(all))")
    guard case .end = whole.outcome else { return }

    // Re-framed as the proxy does (extensions and trailers dropped).
    var sink = ByteArraySink()
    var at = 0
    for size in whole.sizes where size > 0 {
        writeChunkHeader(size: size, into: &sink)
        sink.bytes += whole.data[at..<at + Int(size)]
        at += Int(size)
        writeChunkDataEnd(into: &sink)
    }
    writeLastChunk(into: &sink)
    sink.bytes.withUnsafeBytes { u in
        var none: Splitter? = nil
        let again = decodeChunked(u, limits: c.limits, rng: &none)
        check(again.sizes == whole.sizes && again.data == whole.data && again.outcome == .end(offset: u.count),
              "chunked: re-framed body decodes differently: input \(hex(all)) re-framed \(hex(u))")
    }
}

// MARK: - Entry point

let strictHost: Bool = {
    guard let v = getenv("GATEHOUSE_FUZZ_STRICT_HOST") else { return false }
    return v.pointee == 0x31
}()

/// GATEHOUSE_FUZZ_TARGET=h2: the HTTP/2 request builder (H2Fuzzer.swift) instead.
let fuzzH2Target: Bool = {
    guard let v = getenv("GATEHOUSE_FUZZ_TARGET") else { return false }
    return String(cString: v) == "h2"
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    if fuzzH2Target {
        fuzzH2(UnsafeRawBufferPointer(start: data, count: size))
        return 0
    }
    guard size > 0 else { return 0 }
    let c = Control(data[0])
    let all = UnsafeRawBufferPointer(start: data + 1, count: size - 1)

    if let head = checkRequest(all, c), head.framing == .chunked {
        checkChunked(UnsafeRawBufferPointer(rebasing: all[head.headLength...]), c)
    }
    for method in [Method.get, .head] {
        if let head = checkResponse(all, method: method, c), head.framing == .chunked {
            checkChunked(UnsafeRawBufferPointer(rebasing: all[head.headLength...]), c)
        }
    }
    checkChunked(all, c)
    return 0
}
