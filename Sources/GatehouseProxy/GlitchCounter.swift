/// Per HTTP/2 connection: what a client makes Gatehouse do for nothing
/// (protocol errors, streams Gatehouse had to reset, streams the client reset
/// while their exchange was in flight). Debian's libnghttp2 1.52 has no glitch
/// limiter (upstream added one in 1.67), so MadeYouReset (CVE-2025-8671) and
/// Rapid Reset (CVE-2023-44487) are bounded here: past `limit` glitches in one
/// window the connection gets GOAWAY ENHANCE_YOUR_CALM (RFC 9113 §11.1 code
/// 0xb) and stays marked. Pure; tested alone.
public struct GlitchCounter: Sendable, Equatable {
    public enum Kind: Sendable { case protocolError, serverReset, clientReset }

    public let limit: Int
    public let window: Double
    public private(set) var count = 0
    private var windowStart = -Double.infinity
    public private(set) var exceeded = false

    /// A browser that navigates away cancels tens of streams at once; an
    /// attack needs thousands per second to matter.
    public init(limit: Int = 200, window: Double = 10) {
        self.limit = limit
        self.window = window
    }

    public mutating func count(_ kind: Kind, now: Double) {
        if now - windowStart >= window {
            windowStart = now
            count = 0
        }
        count += 1
        if count > limit { exceeded = true }
    }
}
