/// Half-open byte offsets into the buffer the parser was given.
///
/// Offsets, not pointers: the caller may hand the same bytes at another
/// address on the next call (an evbuffer pullup can move them).
public struct ByteSpan: Equatable, Sendable {
    public var start: Int
    public var end: Int
    public var count: Int { end - start }
    public var isEmpty: Bool { end == start }
    @inlinable public init(start: Int, end: Int) {
        self.start = start
        self.end = end
    }
}

extension UnsafeRawBufferPointer {
    /// The bytes of `span`, rebased so they index from 0.
    @inlinable public subscript(span span: ByteSpan) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self[span.start..<span.end])
    }
}

public enum HTTPVersion: Sendable, Equatable {
    case http10, http11
}

public enum Method: Sendable, Equatable {
    case get, head, post, put, delete, options, connect, trace, patch, other

    /// RFC 9110 §9.2.2: safe methods plus PUT and DELETE are idempotent.
    public var isIdempotent: Bool {
        switch self {
        case .get, .head, .options, .trace, .put, .delete: true
        case .post, .connect, .patch, .other: false
        }
    }
}

public enum Scheme: Sendable {
    case http, https
}

public enum HeaderKind: UInt8, Sendable {
    case other, host, contentLength, transferEncoding, connection, keepAlive, proxyConnection, te, trailer, upgrade, expect,
         xForwardedFor, xForwardedProto, xForwardedHost, strictTransportSecurity,
         /// A name with "_": dropped upstream, as nginx does by default, since
         /// CGI-style backends fold "_" and "-" together (Transfer_Encoding
         /// would become a second framing field there).
         underscored,
         /// Name appears as a token in some Connection header: hop-by-hop (RFC 9110 §7.6.1).
         connectionListed
}

public struct HeaderField: Sendable, Equatable {
    public var name: ByteSpan
    /// Leading and trailing OWS removed (RFC 9112 §5.1).
    public var value: ByteSpan
    public var kind: HeaderKind
    @inlinable public init(name: ByteSpan, value: ByteSpan, kind: HeaderKind) {
        self.name = name
        self.value = value
        self.kind = kind
    }
}

public enum BodyFraming: Equatable, Sendable {
    case none
    case contentLength(UInt64)
    case chunked
    /// Responses only (RFC 9112 §6.3 rules 4 and 8).
    case untilClose
}

public struct HTTPLimits: Sendable, Equatable {
    /// The request line (or status line) including its CRLF.
    public var maxRequestLineBytes: Int
    /// The whole head: skipped leading CRLFs, request line, fields and the final CRLF.
    /// Also bounds a chunked trailer section.
    public var maxHeaderBytes: Int
    /// Field lines in a head (and trailer lines in a chunked body).
    public var maxHeaderCount: Int
    /// A chunk-size line including extensions and CRLF, and each trailer line.
    public var maxChunkLineBytes: Int

    public init(maxRequestLineBytes: Int = 8192, maxHeaderBytes: Int = 32768, maxHeaderCount: Int = 100,
                maxChunkLineBytes: Int = 4096) {
        self.maxRequestLineBytes = maxRequestLineBytes
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderCount = maxHeaderCount
        self.maxChunkLineBytes = maxChunkLineBytes
    }
}

public enum HTTPParseError: Error, Equatable, Sendable {
    /// 400. The reason is a fixed literal for the log line (no allocation).
    case badRequest(String)
    /// 414
    case uriTooLong
    /// 431
    case headerFieldsTooLarge
    /// 505
    case versionNotSupported
    /// 413: a chunked body grew past the domain's max_body_bytes.
    case contentTooLarge
    /// 501: RFC 9112 §6.1, a transfer coding we do not implement (before the final chunked).
    case notImplemented(String)
    /// 417: RFC 9110 §10.1.1, an Expect member other than 100-continue.
    case expectationFailed

    public var status: Int {
        switch self {
        case .badRequest: 400
        case .uriTooLong: 414
        case .headerFieldsTooLarge: 431
        case .versionNotSupported: 505
        case .contentTooLarge: 413
        case .notImplemented: 501
        case .expectationFailed: 417
        }
    }
}
