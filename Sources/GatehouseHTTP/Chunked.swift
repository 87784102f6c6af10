/// RFC 9112 §7.1 chunked transfer coding, decoded incrementally. Chunk DATA is
/// moved by the caller (between libevent evbuffers, never through Swift); the
/// decoder only parses the framing lines.
public struct ChunkedDecoder: Sendable {
    public enum State: Equatable, Sendable {
        case size
        case data(remaining: UInt64)
        case dataCRLF
        case trailers
        case done
    }

    public private(set) var state: State
    public let limits: HTTPLimits
    /// Line scan state over the bytes of the current `advance` input; kept
    /// across `.needMore` so a trickled line is scanned once.
    private var lines = LineScanner()
    private var trailerCount = 0
    /// Sticky: once the framing is broken the message is unusable.
    private var failure: HTTPParseError?

    public init(limits: HTTPLimits = HTTPLimits()) {
        self.limits = limits
        self.state = .size
    }

    public mutating func reset() {
        state = .size
        lines = LineScanner()
        trailerCount = 0
        failure = nil
    }

    /// Call in .size, .dataCRLF or .trailers with the next unconsumed input
    /// bytes (contiguous; may be a prefix of what is buffered). After
    /// `.needMore`, call again with at least the same bytes.
    public mutating func advance(_ bytes: UnsafeRawBufferPointer) -> ChunkedStep {
        if let failure { return .error(failure) }
        if bytes.count < lines.scanPos {
            lines = LineScanner()
            trailerCount = 0
        }
        switch state {
        case .size:
            return sizeLine(bytes)
        case .dataCRLF:
            // RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
            if bytes.count >= 1 && bytes[0] != CR { return fail("missing CRLF after chunk data") }
            guard bytes.count >= 2 else { return .needMore }
            guard bytes[1] == LF else { return fail("missing CRLF after chunk data") }
            state = .size
            return .dataEnd(consumed: 2)
        case .trailers:
            return trailerSection(bytes)
        case .data:
            return fail("chunk data must be moved by the caller")
        case .done:
            return .end(consumed: 0)
        }
    }

    /// In .data the caller moved `n` (<= remaining) data bytes itself; the
    /// state becomes .dataCRLF when remaining hits 0.
    public mutating func didConsumeData(_ n: Int) {
        guard case .data(let remaining) = state, n > 0 else { return }
        let left = remaining - min(UInt64(n), remaining)
        state = left == 0 ? .dataCRLF : .data(remaining: left)
    }

    /// Errors leave `state` where it was and repeat on every later call.
    private mutating func fail(_ reason: String) -> ChunkedStep {
        fail(.badRequest(reason))
    }

    private mutating func fail(_ error: HTTPParseError) -> ChunkedStep {
        failure = error
        return .error(error)
    }

    /// RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF, the whole line bounded by
    /// maxChunkLineBytes.
    private mutating func sizeLine(_ p: UnsafeRawBufferPointer) -> ChunkedStep {
        let limit = min(p.count, limits.maxChunkLineBytes)
        switch lines.next(p, limit: limit) {
        case .error(let error):
            return fail(error)
        case .incomplete:
            if p.count >= limits.maxChunkLineBytes { return fail("chunk size line too long") }
            return .needMore
        case .line(let line):
            lines = LineScanner()
            // chunk-size = 1*HEXDIG; strict: at most 16 digits, so no overflow.
            var i = line.start
            var size: UInt64 = 0
            while i < line.end, let h = hexValue(p[i]) {
                guard i - line.start < 16 else { return fail("chunk size too large") }
                size = size << 4 | UInt64(h)
                i += 1
            }
            guard i > line.start else { return fail("invalid chunk size") }
            guard validExtensions(p, i, line.end) else { return fail("invalid chunk extension") }
            state = size == 0 ? .trailers : .data(remaining: size)
            return .chunk(size: size, consumed: line.end + 2)
        }
    }

    /// RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name
    /// [ BWS "=" BWS chunk-ext-val ] ); names are tokens, values token or
    /// quoted-string. Extensions are validated, then ignored.
    private func validExtensions(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Bool {
        var i = start
        while i < end {
            while i < end && isOWS(p[i]) { i += 1 }
            guard i < end, p[i] == 0x3B else { return false }
            i += 1
            while i < end && isOWS(p[i]) { i += 1 }
            let nameStart = i
            while i < end && isTChar(p[i]) { i += 1 }
            guard i > nameStart else { return false }
            var j = i
            while j < end && isOWS(p[j]) { j += 1 }
            guard j < end, p[j] == 0x3D else { continue }  // no value
            j += 1
            while j < end && isOWS(p[j]) { j += 1 }
            guard j < end else { return false }
            if p[j] == 0x22 {
                // RFC 9110 §5.6.4: quoted-string
                j += 1
                var closed = false
                while j < end {
                    let b = p[j]
                    if b == 0x22 { closed = true; j += 1; break }
                    if b == 0x5C {
                        j += 1
                        guard j < end, isFieldValueByte(p[j]) else { return false }
                    } else if !isFieldValueByte(b) {
                        return false
                    }
                    j += 1
                }
                guard closed else { return false }
            } else {
                let valueStart = j
                while j < end && isTChar(p[j]) { j += 1 }
                guard j > valueStart else { return false }
            }
            i = j
        }
        return true
    }

    /// RFC 9112 §7.1.2: trailer-section = *( field-line CRLF ) CRLF. Lines
    /// follow the field-line rules, are bounded by maxChunkLineBytes each,
    /// maxHeaderCount in number and maxHeaderBytes in total; then discarded.
    private mutating func trailerSection(_ p: UnsafeRawBufferPointer) -> ChunkedStep {
        let view = min(p.count, limits.maxHeaderBytes)
        while true {
            let limit = min(view, lines.lineStart + limits.maxChunkLineBytes)
            switch lines.next(p, limit: limit) {
            case .error(let error):
                return fail(error)
            case .incomplete:
                if lines.lineStart + limits.maxChunkLineBytes <= view || p.count > limits.maxHeaderBytes {
                    return fail(.headerFieldsTooLarge)
                }
                return .needMore
            case .line(let line):
                if line.isEmpty {
                    lines = LineScanner()
                    trailerCount = 0
                    state = .done
                    return .end(consumed: line.end + 2)
                }
                trailerCount += 1
                guard trailerCount <= limits.maxHeaderCount else { return fail(.headerFieldsTooLarge) }
                var name = ByteSpan(start: 0, end: 0), value = name
                if let error = parseFieldLine(p, line, &name, &value) { return fail(error) }
            }
        }
    }
}

public enum ChunkedStep: Equatable, Sendable {
    /// Line incomplete (an error instead if it already exceeds maxChunkLineBytes).
    case needMore
    /// Size line consumed; state -> .data(size), or .trailers when size == 0.
    case chunk(size: UInt64, consumed: Int)
    /// The CRLF after chunk data; state -> .size.
    case dataEnd(consumed: Int)
    /// Trailer section + final CRLF consumed (validated, then discarded); state -> .done.
    case end(consumed: Int)
    case error(HTTPParseError)
}
