// Byte classes and comparisons used by the parsers. All work on raw bytes in place.

@usableFromInline let CR: UInt8 = 0x0D
@usableFromInline let LF: UInt8 = 0x0A
@usableFromInline let SP: UInt8 = 0x20
@usableFromInline let HTAB: UInt8 = 0x09

/// RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
/// "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
@inline(__always) func isTChar(_ b: UInt8) -> Bool {
    switch b {
    case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
    case 0x21, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x5E, 0x5F, 0x60, 0x7C, 0x7E: true
    default: false
    }
}

/// RFC 9110 §5.6.3: OWS = *( SP / HTAB )
@inline(__always) func isOWS(_ b: UInt8) -> Bool { b == SP || b == HTAB }

/// RFC 9110 §5.5: field-value bytes are VCHAR, obs-text, SP and HTAB; every
/// other control (NUL, CR, LF, DEL, ...) is rejected, never replaced.
@inline(__always) func isFieldValueByte(_ b: UInt8) -> Bool {
    (b >= 0x21 && b != 0x7F) || b == SP || b == HTAB
}

@inline(__always) func isDigit(_ b: UInt8) -> Bool { b &- 0x30 < 10 }

@inline(__always) func hexValue(_ b: UInt8) -> UInt8? {
    switch b {
    case 0x30...0x39: b - 0x30
    case 0x41...0x46: b - 0x41 + 10
    case 0x61...0x66: b - 0x61 + 10
    default: nil
    }
}

@inline(__always) func lower(_ b: UInt8) -> UInt8 {
    b &- 0x41 < 26 ? b | 0x20 : b
}

extension UnsafeRawBufferPointer {
    /// Bytes [start, end) equal `literal` exactly.
    @inline(__always)
    func matches(_ start: Int, _ end: Int, _ literal: StaticString) -> Bool {
        let n = literal.utf8CodeUnitCount
        guard end - start == n else { return false }
        let l = literal.utf8Start
        for i in 0..<n where self[start + i] != l[i] { return false }
        return true
    }

    /// Bytes [start, end) equal the lowercase `literal` ignoring ASCII case.
    @inline(__always)
    func matchesIgnoringCase(_ start: Int, _ end: Int, _ literal: StaticString) -> Bool {
        let n = literal.utf8CodeUnitCount
        guard end - start == n else { return false }
        let l = literal.utf8Start
        for i in 0..<n where lower(self[start + i]) != l[i] { return false }
        return true
    }

    /// Bytes [start, end) begin with the lowercase `literal` ignoring ASCII case.
    @inline(__always)
    func hasPrefixIgnoringCase(_ start: Int, _ end: Int, _ literal: StaticString) -> Bool {
        let n = literal.utf8CodeUnitCount
        guard end - start >= n else { return false }
        return matchesIgnoringCase(start, start + n, literal)
    }

    /// Two spans of this buffer are equal ignoring ASCII case.
    @inline(__always)
    func equalIgnoringCase(_ a: ByteSpan, _ b: ByteSpan) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where lower(self[a.start + i]) != lower(self[b.start + i]) { return false }
        return true
    }
}

/// Splits a comma-separated list (RFC 9110 §5.6.1) in place: calls `body`
/// with each element's OWS-trimmed bounds, including empty ones (callers
/// decide whether empty elements are tolerated). Stops when `body` returns false.
@inline(__always)
func forEachListElement(_ p: UnsafeRawBufferPointer, _ span: ByteSpan, _ body: (Int, Int) -> Bool) -> Bool {
    var i = span.start
    while true {
        var s = i
        while s < span.end && isOWS(p[s]) { s += 1 }
        var e = s
        while e < span.end && p[e] != 0x2C { e += 1 }
        let next = e
        while e > s && isOWS(p[e - 1]) { e -= 1 }
        if !body(s, e) { return false }
        if next >= span.end { return true }
        i = next + 1
    }
}

/// RFC 9110 §5.6.2: a non-empty run of tchar.
@inline(__always)
func isToken(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Bool {
    guard start < end else { return false }
    for i in start..<end where !isTChar(p[i]) { return false }
    return true
}
