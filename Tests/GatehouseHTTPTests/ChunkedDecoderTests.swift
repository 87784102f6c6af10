import Testing
@testable import GatehouseHTTP

/// Drives the decoder the way the proxy does: the body arrives in pieces of
/// `piece` bytes; framing lines are handed over from the front of what is
/// buffered, data bytes are "moved" by the caller. Returns the data and the
/// final step (end or error), or nil if the input ran out.
private func decode(_ input: [UInt8], piece: Int, limits: HTTPLimits = HTTPLimits())
    -> (data: [UInt8], step: ChunkedStep?, rest: Int) {
    var decoder = ChunkedDecoder(limits: limits)
    var buffered: [UInt8] = []
    var data: [UInt8] = []
    var offset = 0
    while true {
        // Process what is buffered.
        var progressed = true
        while progressed {
            progressed = false
            if case .data(let remaining) = decoder.state {
                let n = Int(min(remaining, UInt64(buffered.count)))
                if n > 0 {
                    data += buffered[0..<n]
                    buffered.removeFirst(n)
                    decoder.didConsumeData(n)
                    progressed = true
                }
                continue
            }
            guard !buffered.isEmpty else { break }
            let step = buffered.withUnsafeBytes { decoder.advance($0) }
            switch step {
            case .needMore:
                break
            case .chunk(_, let consumed), .dataEnd(let consumed):
                buffered.removeFirst(consumed)
                progressed = true
            case .end(let consumed):
                buffered.removeFirst(consumed)
                return (data, step, buffered.count + input.count - offset)
            case .error:
                return (data, step, 0)
            }
        }
        guard offset < input.count else { return (data, nil, buffered.count) }
        let n = min(piece, input.count - offset)
        buffered += input[offset..<offset + n]
        offset += n
    }
}

private func decodeError(_ s: String, limits: HTTPLimits = HTTPLimits()) -> HTTPParseError? {
    if case .error(let e)? = decode(bytes(s), piece: 1 << 20, limits: limits).step { return e }
    return nil
}

@Suite struct ChunkedDecoding {
    @Test func stepByStep() {
        var d = ChunkedDecoder()
        #expect(d.state == .size)
        #expect(bytes("5\r\nhel").withUnsafeBytes { d.advance($0) } == .chunk(size: 5, consumed: 3))
        #expect(d.state == .data(remaining: 5))
        d.didConsumeData(3)
        #expect(d.state == .data(remaining: 2))
        d.didConsumeData(2)
        #expect(d.state == .dataCRLF)
        #expect(bytes("\r").withUnsafeBytes { d.advance($0) } == .needMore)
        #expect(bytes("\r\n0\r\n").withUnsafeBytes { d.advance($0) } == .dataEnd(consumed: 2))
        #expect(bytes("0\r").withUnsafeBytes { d.advance($0) } == .needMore)
        #expect(bytes("0\r\n\r").withUnsafeBytes { d.advance($0) } == .chunk(size: 0, consumed: 3))
        #expect(d.state == .trailers)
        #expect(bytes("\r").withUnsafeBytes { d.advance($0) } == .needMore)
        #expect(bytes("\r\nNEXT").withUnsafeBytes { d.advance($0) } == .end(consumed: 2))
        #expect(d.state == .done)
        d.reset()
        #expect(d.state == .size)
    }

    @Test func splitInputsGiveSameResult() {
        let body = "4\r\nWiki\r\n5;name=val\r\npedia\r\nE ; a = \"q\\\"x;y\" ; b\r\n in\r\n\r\nchunks.\r\n"
            + "000\r\nExpires: never\r\nX-Sum: 1\r\n\r\nGET"
        let whole = decode(bytes(body), piece: 1 << 20)
        #expect(String(decoding: whole.data, as: UTF8.self) == "Wikipedia in\r\n\r\nchunks.")
        #expect(whole.step == .end(consumed: 28))  // both trailer lines + CRLF
        #expect(whole.rest == 3)
        for piece in 1...9 {
            let split = decode(bytes(body), piece: piece)
            #expect(split.data == whole.data, "piece \(piece)")
            #expect(split.rest == 3, "piece \(piece)")
            if case .end? = split.step {} else { Issue.record("piece \(piece): \(String(describing: split.step))") }
        }
    }

    @Test func hexDigits() {
        #expect(decode(bytes("A\r\n0123456789\r\n0\r\n\r\n"), piece: 100).data.count == 10)
        #expect(decode(bytes("0000a\r\n0123456789\r\n0\r\n\r\n"), piece: 100).data.count == 10)
        var d = ChunkedDecoder()
        #expect(bytes("ffffffffffffffff\r\n").withUnsafeBytes { d.advance($0) } == .chunk(size: .max, consumed: 18))
    }

    @Test func maxLineAccepted() {
        let limits = HTTPLimits(maxChunkLineBytes: 16)
        var d = ChunkedDecoder(limits: limits)
        // 16 bytes including CRLF.
        #expect(bytes("1;abcdefghijk\r\n").count == 15)
        #expect(bytes("1;abcdefghijkl\r\n").withUnsafeBytes { d.advance($0) } == .chunk(size: 1, consumed: 16))
    }
}

@Suite struct ChunkedRejections {
    @Test(arguments: ["\r\n", "g\r\n", "-1\r\n", "+1\r\n", " 1\r\n", "0x1\r\n", "1 \r\n", "1;\r\n", "1;=x\r\n",
                      "1;a=\r\n", "1;a=\"x\r\n", "1;a=b c\r\n", "1;a b\r\n", "1;a=\"\u{1}\"\r\n", "1,a\r\n"])
    func invalidSizeLine(_ line: String) {
        #expect(decodeError(line + "x\r\n0\r\n\r\n")?.status == 400, "\(line)")
    }

    @Test func tooManyDigits() {
        #expect(decodeError("00000000000000001\r\nx\r\n0\r\n\r\n") == .badRequest("chunk size too large"))
    }

    @Test func bareLF() {
        #expect(decodeError("1\nx\r\n0\r\n\r\n") == .badRequest("bare LF"))
        #expect(decodeError("1\r\nx\r\n0\r\nX: 1\n\r\n") == .badRequest("bare LF"))
        #expect(decodeError("1\r\nx\r\n0\r\n\n") == .badRequest("bare LF"))
    }

    @Test func bareCR() {
        #expect(decodeError("1\rx\r\n0\r\n\r\n") == .badRequest("bare CR"))
    }

    @Test(arguments: ["1\r\nxy\r\n0\r\n\r\n", "1\r\nx\n0\r\n\r\n", "1\r\nx\r0\r\n\r\n", "1\r\nx0\r\n\r\n"])
    func dataNotFollowedByCRLF(_ body: String) {
        #expect(decodeError(body) == .badRequest("missing CRLF after chunk data"))
    }

    @Test func sizeLineTooLong() {
        let limits = HTTPLimits(maxChunkLineBytes: 16)
        var d = ChunkedDecoder(limits: limits)
        let line = bytes("1;abcdefghijklm\r\n")  // 17 bytes
        #expect(Array(line.prefix(15)).withUnsafeBytes { d.advance($0) } == .needMore)
        #expect(Array(line.prefix(16)).withUnsafeBytes { d.advance($0) } == .error(.badRequest("chunk size line too long")))
        #expect(decodeError("1;abcdefghijklm\r\nx\r\n0\r\n\r\n", limits: limits) == .badRequest("chunk size line too long"))
        // Detected without a line end in sight.
        #expect(decodeError("1;" + String(repeating: "a", count: 100), limits: limits) == .badRequest("chunk size line too long"))
    }

    @Test(arguments: ["X: 1\r\n y\r\n\r\n", "X : 1\r\n\r\n", "NoColon\r\n\r\n", ": v\r\n\r\n", "X: \u{7f}\r\n\r\n"])
    func invalidTrailer(_ trailers: String) {
        #expect(decodeError("0\r\n" + trailers)?.status == 400)
    }

    @Test func trailerLineTooLong() {
        let limits = HTTPLimits(maxChunkLineBytes: 16)
        #expect(decodeError("0\r\nX: 12345678901\r\n\r\n", limits: limits) == nil)  // 16 bytes
        #expect(decodeError("0\r\nX: 123456789012\r\n\r\n", limits: limits) == .headerFieldsTooLarge)
    }

    @Test func tooManyTrailers() {
        let limits = HTTPLimits(maxHeaderCount: 2)
        #expect(decodeError("0\r\nA: 1\r\nB: 2\r\n\r\n", limits: limits) == nil)
        #expect(decodeError("0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits: limits) == .headerFieldsTooLarge)
    }

    @Test func trailerSectionTooLarge() {
        let limits = HTTPLimits(maxHeaderBytes: 64)
        let trailers = String(repeating: "X: 123456789\r\n", count: 6)  // 84 bytes
        #expect(decodeError("0\r\n" + trailers + "\r\n", limits: limits) == .headerFieldsTooLarge)
    }

    @Test func errorsAreSticky() {
        var d = ChunkedDecoder()
        #expect(bytes("z\r\n").withUnsafeBytes { d.advance($0) } == .error(.badRequest("invalid chunk size")))
        #expect(bytes("1\r\n").withUnsafeBytes { d.advance($0) } == .error(.badRequest("invalid chunk size")))
        d.reset()
        #expect(bytes("1\r\n").withUnsafeBytes { d.advance($0) } == .chunk(size: 1, consumed: 3))
    }

    @Test func advanceInDataStateIsMisuse() {
        var d = ChunkedDecoder()
        _ = bytes("1\r\n").withUnsafeBytes { d.advance($0) }
        if case .error = bytes("x").withUnsafeBytes({ d.advance($0) }) {} else { Issue.record("expected error") }
    }
}
