/// An HTTP/2 header block being built: names and values in one reusable
/// arena, as the framing layer takes them (RFC 9113 §8.2: names lowercase).
public struct H2FieldBlock: Sendable {
    public struct Field: Sendable, Equatable {
        public var name: ByteSpan
        public var value: ByteSpan
    }

    public private(set) var arena: [UInt8] = []
    public private(set) var fields: [Field] = []

    public init() {}

    /// Keeps the storage.
    public mutating func reset() {
        arena.removeAll(keepingCapacity: true)
        fields.removeAll(keepingCapacity: true)
    }

    /// `lowercase`: the name came from an HTTP/1.1 message, where case does
    /// not matter (RFC 9110 §5.1); HTTP/2 requires lowercase.
    public mutating func add(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, lowercase: Bool = false) {
        let nameStart = arena.count
        arena.append(contentsOf: name)
        let valueStart = arena.count
        if lowercase {
            arena.withUnsafeMutableBufferPointer { a in
                for i in nameStart ..< valueStart where a[i] >= 0x41 && a[i] <= 0x5A { a[i] |= 0x20 }
            }
        }
        arena.append(contentsOf: value)
        fields.append(Field(name: ByteSpan(start: nameStart, end: valueStart),
                            value: ByteSpan(start: valueStart, end: arena.count)))
    }

    public mutating func add(_ name: StaticString, _ value: UnsafeRawBufferPointer) {
        add(name: UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount), value: value)
    }

    public mutating func add(_ name: StaticString, _ value: StaticString) {
        add(name, UnsafeRawBufferPointer(start: value.utf8Start, count: value.utf8CodeUnitCount))
    }

    public mutating func add(_ name: StaticString, decimal value: UInt64) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { raw in
            var n = value
            var i = raw.count
            repeat {
                i -= 1
                raw[i] = UInt8(ascii: "0") + UInt8(n % 10)
                n /= 10
            } while n > 0
            add(name, UnsafeRawBufferPointer(rebasing: raw[i...]))
        }
    }
}

/// The backend's HTTP/1.1 response head as an HTTP/2 header block (RFC 9113
/// §8.3.2): `:status` first, names lowercased, connection-specific fields
/// dropped (§8.2.2), HSTS replaced by ours, Content-Length kept where it
/// describes the body or the GET's (HEAD, 304; RFC 9110 §8.6).
///
/// `webSocket`: the head is the backend's 101 to an HTTP/2 WebSocket
/// (extended CONNECT): the client gets 200 and no Sec-WebSocket-Accept
/// (RFC 8441 §5), which Gatehouse checked itself.
public func makeH2ResponseFields(_ head: ResponseHead, in buffer: UnsafeRawBufferPointer,
                                 hsts: UnsafeRawBufferPointer?, upgradeInsecureRequests: Bool,
                                 webSocket: Bool = false, into block: inout H2FieldBlock) {
    block.reset()
    block.add(":status", decimal: webSocket ? 200 : UInt64(head.status))
    for field in head.headers where !field.kind.isHopByHopOrFraming {
        if hsts != nil && field.kind == .strictTransportSecurity { continue }
        if webSocket, buffer.matchesIgnoringCase(field.name.start, field.name.end, "sec-websocket-accept") { continue }
        block.add(name: buffer[span: field.name], value: buffer[span: field.value], lowercase: true)
    }
    if let hsts { block.add("strict-transport-security", hsts) }
    if upgradeInsecureRequests { block.add("content-security-policy", "upgrade-insecure-requests") }
    if let n = head.contentLength, head.status >= 200, head.status != 204 {
        block.add("content-length", decimal: n)
    }
}

/// Gatehouse's own response on a stream (an error, a refusal): the header
/// block; the body is `errorBody(status:)`.
public func makeH2ErrorFields(status: Int, hsts: UnsafeRawBufferPointer?, upgradeInsecureRequests: Bool,
                              extra: (name: StaticString, value: StaticString)? = nil,
                              into block: inout H2FieldBlock) {
    block.reset()
    block.add(":status", decimal: UInt64(status))
    block.add("content-type", "text/plain; charset=utf-8")
    block.add("content-length", decimal: UInt64(errorBodyLength(status: status)))
    if let extra { block.add(extra.name, extra.value) }
    if let hsts { block.add("strict-transport-security", hsts) }
    if upgradeInsecureRequests { block.add("content-security-policy", "upgrade-insecure-requests") }
}

/// The small text body of Gatehouse's own responses: "<code> <reason>\n".
public func writeErrorBody<S: ByteSink>(status: Int, into sink: inout S) {
    sink.write(decimal: UInt64(clamping: status))
    sink.write(" ")
    sink.write(reasonPhrase(for: status))
    sink.write("\n")
}

public func errorBodyLength(status: Int) -> Int {
    decimalDigits(UInt64(clamping: status)) + 1 + reasonPhrase(for: status).utf8CodeUnitCount + 1
}
