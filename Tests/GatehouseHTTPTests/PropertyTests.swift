import Testing
@testable import GatehouseHTTP

private let alphabet = bytes("GET POST HTTP/1.1 /?*:;,=\"-_.~[]0123456789abcdefxyzXYZ\r\n\r\n\t \u{7f}") + [0, 0x80, 0xFF, 0x0D, 0x0A]

private let seeds = [
    "GET /a?b HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
    "POST http://a:8/x HTTP/1.1\r\nHost: a:8\r\nContent-Length: 3\r\nConnection: close, X-A\r\nX-A: 1\r\n\r\nabc",
    "PUT /u HTTP/1.1\r\nHost: [::1]:80\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    "\r\nOPTIONS * HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
]

private func randomBytes(_ rng: inout SplitMix64) -> [UInt8] {
    let n = Int(rng.next() % 200)
    return (0..<n).map { _ in
        rng.next() % 4 == 0 ? UInt8(truncatingIfNeeded: rng.next()) : alphabet[Int(rng.next() % UInt64(alphabet.count))]
    }
}

private func mutate(_ input: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
    var b = input
    for _ in 0..<(1 + Int(rng.next() % 3)) where !b.isEmpty {
        let i = Int(rng.next() % UInt64(b.count))
        switch rng.next() % 5 {
        case 0: b[i] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
        case 1: b.remove(at: i)
        case 2: b.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: i)
        case 3: b[i] = UInt8(truncatingIfNeeded: rng.next())
        default:
            let j = min(b.count, i + Int(rng.next() % 20))
            b.insert(contentsOf: b[i..<j], at: i)  // duplicate a run (lines, digits, separators)
        }
    }
    return b
}

/// Every span of a complete head lies inside the head.
private func checkInvariants(_ head: RequestHead, count: Int) {
    #expect(head.headLength > 0 && head.headLength <= count)
    var spans = [head.method, head.target, head.path] + head.headers.flatMap { [$0.name, $0.value] }
    if let host = head.host { spans.append(host) }
    for s in spans { #expect(s.start >= 0 && s.start <= s.end && s.end <= head.headLength) }
    #expect(head.headers.count <= HTTPLimits().maxHeaderCount)
    #expect(!head.method.isEmpty && !head.target.isEmpty)
    if case .untilClose = head.framing { Issue.record("request framed until close") }
}

/// At once, trickled through one parser (prefixes of one buffer), and again
/// after reset: the parser never crashes and always agrees with itself.
private func checkRequest(_ input: [UInt8]) {
    let once = parseRequest(input)
    var parser = RequestHeadParser()
    var trickled = RequestHeadResult.incomplete
    input.withUnsafeBytes { all in
        for n in 0...all.count {
            trickled = parser.parse(UnsafeRawBufferPointer(rebasing: all[0..<n]))
            if trickled != .incomplete { break }
        }
        parser.reset()
        #expect(parser.parse(all) == once)
    }
    #expect(trickled == once)
    if case .complete(let head) = once { checkInvariants(head, count: input.count) }
}

@Suite struct ParserProperties {
    @Test func randomBytesNeverCrashAndAgree() {
        var rng = SplitMix64(state: 0x6A7E_4005)
        for _ in 0..<3000 { checkRequest(randomBytes(&rng)) }
    }

    @Test func mutatedRequestsNeverCrashAndAgree() {
        var rng = SplitMix64(state: 0xC0FFEE)
        var outcomes = (complete: 0, error: 0, incomplete: 0)
        for k in 0..<3000 {
            let input = mutate(bytes(seeds[k % seeds.count]), &rng)
            checkRequest(input)
            switch parseRequest(input) {
            case .complete: outcomes.complete += 1
            case .error: outcomes.error += 1
            case .incomplete: outcomes.incomplete += 1
            }
        }
        // The mutations explore both sides of the boundary.
        #expect(outcomes.complete > 100 && outcomes.error > 100)
    }

    @Test func responsesAndChunksNeverCrash() {
        var rng = SplitMix64(state: 42)
        let responseSeed = bytes("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: X\r\nX: y\r\n\r\n")
        let chunkSeed = bytes("5;a=\"b\"\r\nhello\r\n0\r\nT: v\r\n\r\n")
        for k in 0..<3000 {
            let input = k % 2 == 0 ? mutate(responseSeed, &rng) : randomBytes(&rng)
            let once = parseResponse(input)
            if case .complete(let head) = once {
                #expect(head.headLength <= input.count)
                #expect((100...599).contains(head.status))
            }
            var parser = ResponseHeadParser()
            var trickled = ResponseHeadResult.incomplete
            input.withUnsafeBytes { all in
                for n in 0...all.count {
                    trickled = parser.parse(UnsafeRawBufferPointer(rebasing: all[0..<n]), requestMethod: .get)
                    if trickled != .incomplete { break }
                }
            }
            #expect(trickled == once)

            let body = k % 2 == 0 ? mutate(chunkSeed, &rng) : randomBytes(&rng)
            var decoder = ChunkedDecoder()
            var offset = 0
            body.withUnsafeBytes { all in
                var steps = 0
                while offset < all.count && steps < 1000 {
                    steps += 1
                    if case .data(let remaining) = decoder.state {
                        let n = Int(min(remaining, UInt64(all.count - offset)))
                        offset += n
                        decoder.didConsumeData(n)
                        continue
                    }
                    let step = decoder.advance(UnsafeRawBufferPointer(rebasing: all[offset...]))
                    switch step {
                    case .chunk(_, let c), .dataEnd(let c):
                        #expect(c > 0 && offset + c <= all.count)
                        offset += c
                    case .end(let c):
                        #expect(offset + c <= all.count)
                        return
                    case .needMore, .error:
                        return
                    }
                }
            }
        }
    }
}
