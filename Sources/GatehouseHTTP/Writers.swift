/// Output side. The proxy implements ByteSink over a libevent evbuffer.
public protocol ByteSink {
    mutating func write(_ bytes: UnsafeRawBufferPointer)
}

extension ByteSink {
    @inlinable public mutating func write(_ s: StaticString) {
        write(UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    @inlinable public mutating func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    @inlinable public mutating func write(byte: UInt8) {
        withUnsafeBytes(of: byte) { write($0) }
    }

    /// Decimal digits of `value`, rendered on the stack.
    @inlinable public mutating func write(decimal value: UInt64) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { buf in
            var v = value
            var i = 20
            repeat {
                i -= 1
                buf[i] = UInt8(truncatingIfNeeded: v % 10) &+ 0x30
                v /= 10
            } while v > 0
            write(UnsafeRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buf)[i..<20]))
        }
    }

    /// Lowercase hex digits of `value`, rendered on the stack.
    @inlinable public mutating func write(hex value: UInt64) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 16) { buf in
            var v = value
            var i = 16
            repeat {
                i -= 1
                let d = UInt8(truncatingIfNeeded: v & 0xF)
                buf[i] = d < 10 ? d &+ 0x30 : d &+ 0x57
                v >>= 4
            } while v > 0
            write(UnsafeRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buf)[i..<16]))
        }
    }
}

extension HeaderKind {
    /// RFC 9110 §7.6.1 hop-by-hop fields (plus Trailer: trailers are dropped
    /// when re-framing), and the framing fields we always re-render.
    var isHopByHopOrFraming: Bool {
        switch self {
        case .connection, .keepAlive, .proxyConnection, .te, .trailer, .upgrade, .connectionListed,
             .contentLength, .transferEncoding:
            true
        case .other, .host, .expect, .xForwardedFor, .xForwardedProto, .xForwardedHost, .strictTransportSecurity,
             .underscored:
            false
        }
    }

    /// Not copied to the backend: hop-by-hop, framing, Expect (we answer it
    /// ourselves), and the X-Forwarded-* fields we set (a client's are lies).
    var isDroppedUpstream: Bool {
        switch self {
        case .expect, .xForwardedFor, .xForwardedProto, .xForwardedHost, .underscored: true
        default: isHopByHopOrFraming
        }
    }
}

extension ByteSink {
    @inline(__always) mutating func writeField(_ f: HeaderField, _ buffer: UnsafeRawBufferPointer) {
        write(buffer[span: f.name])
        write(": ")
        write(buffer[span: f.value])
        write("\r\n")
    }

    @inline(__always) mutating func writeStatusLine(_ status: Int, _ reason: UnsafeRawBufferPointer) {
        write("HTTP/1.1 ")
        write(decimal: UInt64(clamping: status))
        write(" ")
        write(reason)
        write("\r\n")
    }

    /// Our HSTS (RFC 6797 §6.1) and, when the domain asks for it, CSP's
    /// upgrade-insecure-requests as a field of its own: a browser enforces
    /// every CSP field it gets, so the app's own policy stays intact.
    @inline(__always) mutating func writeSecurityFields(hsts: UnsafeRawBufferPointer?, upgradeInsecureRequests: Bool) {
        if let hsts {
            write("Strict-Transport-Security: ")
            write(hsts)
            write("\r\n")
        }
        if upgradeInsecureRequests { write("Content-Security-Policy: upgrade-insecure-requests\r\n") }
    }

    /// Ours, written after the client's fields are filtered (a client's
    /// X-Forwarded-* are dropped, never appended to).
    @inline(__always) mutating func writeForwardingFields(clientAddress: UnsafeRawBufferPointer, scheme: Scheme,
                                                          host: UnsafeRawBufferPointer?) {
        write("X-Forwarded-For: ")
        write(clientAddress)
        write("\r\n")
        switch scheme {
        case .http: write("X-Forwarded-Proto: http\r\n")
        case .https: write("X-Forwarded-Proto: https\r\n")
        }
        if let host {
            write("X-Forwarded-Host: ")
            write(host)
            write("\r\n")
        }
    }

    @inline(__always) mutating func writeFraming(_ framing: BodyFraming) {
        switch framing {
        case .contentLength(let n):
            write("Content-Length: ")
            write(decimal: n)
            write("\r\n")
        case .chunked:
            write("Transfer-Encoding: chunked\r\n")
        case .none, .untilClose:
            break
        }
    }
}

/// Request to the backend, always HTTP/1.1 (RFC 9110 §7.6). Hop-by-hop fields
/// (including those named in Connection) are removed BEFORE ours are added,
/// so a client cannot strip ours with "Connection: X-Forwarded-For".
public func writeUpstreamRequestHead<S: ByteSink>(_ head: RequestHead, in buffer: UnsafeRawBufferPointer,
                                                  clientAddress: UnsafeRawBufferPointer, scheme: Scheme,
                                                  upgrade: Bool = false, defaultHost: UnsafeRawBufferPointer? = nil,
                                                  into sink: inout S) {
    sink.write(buffer[span: head.method])
    sink.write(" ")
    if !head.path.isEmpty {
        sink.write(buffer[span: head.path])
    } else {
        // RFC 9112 §3.2.4: an absolute-form OPTIONS without a path means "*".
        sink.write(head.methodKind == .options ? "*" : "/")
    }
    sink.write(" HTTP/1.1\r\n")
    // RFC 9112 §3.2: HTTP/1.1 needs Host. An HTTP/1.0 client may not have sent
    // one; the upstream request names the domain the request was routed to.
    if head.host == nil, let defaultHost {
        sink.write("Host: ")
        sink.write(defaultHost)
        sink.write("\r\n")
    }
    for field in head.headers where !field.kind.isDroppedUpstream || (upgrade && field.kind == .upgrade) {
        sink.writeField(field, buffer)
    }
    // RFC 9110 §7.8: Upgrade is hop-by-hop; a proxy that passes the upgrade on
    // says so in its own Connection field.
    if upgrade { sink.write("Connection: upgrade\r\n") }
    sink.writeForwardingFields(clientAddress: clientAddress, scheme: scheme,
                               host: head.host.map { buffer[span: $0] })
    sink.writeFraming(head.framing)
    sink.write("\r\n")
}

/// Response to the client. Status line always HTTP/1.1 (RFC 9110 §6.2: we
/// send our own version). Hop-by-hop and framing fields are dropped and the
/// framing re-rendered; with `hsts`, the backend's HSTS is replaced by ours.
public func writeClientResponseHead<S: ByteSink>(_ head: ResponseHead, in buffer: UnsafeRawBufferPointer,
                                                 framing: BodyFraming, keepAlive: Bool, clientVersion: HTTPVersion,
                                                 hsts: UnsafeRawBufferPointer?, upgradeInsecureRequests: Bool = false,
                                                 into sink: inout S) {
    sink.writeStatusLine(head.status, buffer[span: head.reason])
    for field in head.headers where !field.kind.isHopByHopOrFraming {
        if hsts != nil && field.kind == .strictTransportSecurity { continue }
        sink.writeField(field, buffer)
    }
    sink.writeSecurityFields(hsts: hsts, upgradeInsecureRequests: upgradeInsecureRequests)
    switch framing {
    case .none:
        // RFC 9110 §8.6: HEAD and 304 responses may carry the Content-Length
        // the GET would have had; 1xx and 204 must not carry one.
        if let n = head.contentLength, head.status >= 200, head.status != 204 {
            sink.write("Content-Length: ")
            sink.write(decimal: n)
            sink.write("\r\n")
        }
    default:
        sink.writeFraming(framing)
    }
    if !keepAlive {
        sink.write("Connection: close\r\n")
    } else if clientVersion == .http10 {
        sink.write("Connection: keep-alive\r\n")  // RFC 9112 §9.3: 1.0 needs it explicitly
    }
    sink.write("\r\n")
}

/// 1xx interim response (not 101) passed to the client (RFC 9110 §15.2).
public func writeInterimResponseHead<S: ByteSink>(_ head: ResponseHead, in buffer: UnsafeRawBufferPointer,
                                                  into sink: inout S) {
    sink.writeStatusLine(head.status, buffer[span: head.reason])
    for field in head.headers where !field.kind.isHopByHopOrFraming {
        sink.writeField(field, buffer)
    }
    sink.write("\r\n")
}

/// RFC 9110 §15.2.2: the backend's 101 to an upgrade request, with its Upgrade
/// field and our own Connection: upgrade; after it the connection is a tunnel.
public func writeSwitchingProtocolsHead<S: ByteSink>(_ head: ResponseHead, in buffer: UnsafeRawBufferPointer,
                                                     hsts: UnsafeRawBufferPointer?, into sink: inout S) {
    sink.writeStatusLine(head.status, buffer[span: head.reason])
    for field in head.headers where !field.kind.isHopByHopOrFraming || field.kind == .upgrade {
        if hsts != nil && field.kind == .strictTransportSecurity { continue }
        sink.writeField(field, buffer)
    }
    sink.writeSecurityFields(hsts: hsts, upgradeInsecureRequests: false)
    sink.write("Connection: upgrade\r\n\r\n")
}

/// RFC 9110 §10.1.1: "HTTP/1.1 100 Continue\r\n\r\n".
public func writeContinue<S: ByteSink>(into sink: inout S) {
    sink.write("HTTP/1.1 100 Continue\r\n\r\n")
}

/// 301 for the plain-HTTP listener. `host` is the Host value WITHOUT its port;
/// `path` is path+query byte for byte ("/" if empty or asterisk-form). Both
/// must come from the parser (already validated: no CR/LF can be injected).
public func writeRedirect<S: ByteSink>(host: UnsafeRawBufferPointer, httpsPort: UInt16,
                                       path: UnsafeRawBufferPointer, keepAlive: Bool, into sink: inout S) {
    sink.write("HTTP/1.1 301 Moved Permanently\r\nLocation: https://")
    sink.write(host)
    if httpsPort != 443 {
        sink.write(":")
        sink.write(decimal: UInt64(httpsPort))
    }
    if path.first == 0x2F { sink.write(path) } else { sink.write("/") }
    sink.write("\r\nContent-Length: 0\r\n")
    if !keepAlive { sink.write("Connection: close\r\n") }
    sink.write("\r\n")
}

/// RFC 8555 §8.3: the answer to an http-01 validation, the key
/// authorization as the body (no body for HEAD, RFC 9110 §9.3.2).
public func writeACMEChallengeAnswer<S: ByteSink>(_ keyAuthorization: [UInt8], head: Bool, keepAlive: Bool, into sink: inout S) {
    sink.write("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ")
    sink.write(decimal: UInt64(keyAuthorization.count))
    sink.write("\r\n")
    if !keepAlive { sink.write("Connection: close\r\n") }
    sink.write("\r\n")
    if !head { sink.write(keyAuthorization) }
}

/// Gatehouse's own error/notice responses: a small text/plain body "<code> <reason>\n".
public func writeErrorResponse<S: ByteSink>(status: Int, hsts: UnsafeRawBufferPointer?, close: Bool,
                                            upgradeInsecureRequests: Bool = false, retryAfter: UInt64? = nil,
                                            into sink: inout S) {
    let reason = reasonPhrase(for: status)
    let code = UInt64(clamping: status)
    sink.write("HTTP/1.1 ")
    sink.write(decimal: code)
    sink.write(" ")
    sink.write(reason)
    sink.write("\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ")
    sink.write(decimal: UInt64(errorBodyLength(status: status)))
    sink.write("\r\n")
    sink.writeSecurityFields(hsts: hsts, upgradeInsecureRequests: upgradeInsecureRequests)
    if let retryAfter {
        // RFC 9110 §10.2.3: delay-seconds.
        sink.write("Retry-After: ")
        sink.write(decimal: retryAfter)
        sink.write("\r\n")
    }
    if close { sink.write("Connection: close\r\n") }
    sink.write("\r\n")
    writeErrorBody(status: status, into: &sink)
}

@inline(__always) func decimalDigits(_ value: UInt64) -> Int {
    var v = value, n = 1
    while v >= 10 { v /= 10; n += 1 }
    return n
}

/// RFC 9110 §15 reason phrases for the statuses Gatehouse produces or relays.
public func reasonPhrase(for status: Int) -> StaticString {
    switch status {
    case 100: "Continue"
    case 101: "Switching Protocols"
    case 103: "Early Hints"
    case 200: "OK"
    case 201: "Created"
    case 204: "No Content"
    case 301: "Moved Permanently"
    case 302: "Found"
    case 304: "Not Modified"
    case 307: "Temporary Redirect"
    case 308: "Permanent Redirect"
    case 400: "Bad Request"
    case 403: "Forbidden"
    case 404: "Not Found"
    case 405: "Method Not Allowed"
    case 408: "Request Timeout"
    case 413: "Content Too Large"
    case 414: "URI Too Long"
    case 417: "Expectation Failed"
    case 421: "Misdirected Request"
    case 431: "Request Header Fields Too Large"
    case 500: "Internal Server Error"
    case 501: "Not Implemented"
    case 502: "Bad Gateway"
    case 503: "Service Unavailable"
    case 504: "Gateway Timeout"
    case 505: "HTTP Version Not Supported"
    default: "Unknown"
    }
}

/// Chunked re-framing: "<hex>\r\n" before a chunk's data (RFC 9112 §7.1).
public func writeChunkHeader<S: ByteSink>(size: UInt64, into sink: inout S) {
    sink.write(hex: size)
    sink.write("\r\n")
}

/// The "\r\n" after a chunk's data.
public func writeChunkDataEnd<S: ByteSink>(into sink: inout S) {
    sink.write("\r\n")
}

/// The last chunk and an empty trailer section: "0\r\n\r\n".
public func writeLastChunk<S: ByteSink>(into sink: inout S) {
    sink.write("0\r\n\r\n")
}

/// Splits a validated Host value "name", "name:port", "[v6]" or "[v6]:port"
/// into the host part (brackets kept for v6).
public func hostWithoutPort(_ host: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
    var end = host.count
    if host.first == 0x5B {
        if let close = host.firstIndex(of: 0x5D) { end = close + 1 }
    } else if let colon = host.firstIndex(of: 0x3A) {
        end = colon
    }
    return UnsafeRawBufferPointer(rebasing: host[0..<end])
}
