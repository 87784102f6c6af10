// The pure parts of turning an HTTP/2 WebSocket (RFC 8441 extended CONNECT)
// into an HTTP/1.1 upgrade: RFC 8441 §5 drops Sec-WebSocket-Key and
// Sec-WebSocket-Accept from the HTTP/2 handshake, but an RFC 6455 backend
// needs a key and answers with the accept value derived from it.

/// RFC 6455 §4.1: the base64 of 16 random bytes (24 ASCII bytes), made by the
/// proxy for the HTTP/1.1 side. Kept so the backend's 101 can be checked.
public struct WebSocketKey: Sendable, Equatable {
    // 24 bytes inline: no allocation per handshake.
    private var storage: (UInt64, UInt64, UInt64) = (0, 0, 0)

    /// `random` must be 16 bytes from a CSPRNG (the caller's; this module does no I/O).
    public init(random: UnsafeRawBufferPointer) {
        precondition(random.count == 16, "a WebSocket key is 16 random bytes")
        withUnsafeMutableBytes(of: &storage) { out in
            _ = base64Encode(random, into: out)
        }
    }

    public static func == (a: WebSocketKey, b: WebSocketKey) -> Bool {
        a.storage.0 == b.storage.0 && a.storage.1 == b.storage.1 && a.storage.2 == b.storage.2
    }

    /// The key as sent in Sec-WebSocket-Key.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try Swift.withUnsafeBytes(of: storage) { try body($0) }
    }

    /// RFC 6455 §4.1 (client side, item 4 of the response checks): the
    /// backend's Sec-WebSocket-Accept must be exactly
    /// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")).
    public func acceptMatches(_ value: UnsafeRawBufferPointer) -> Bool {
        withExpectedAccept { expected in
            expected.count == value.count && expected.elementsEqual(value)
        }
    }

    /// The 28-byte accept value the backend must send for this key.
    public func withExpectedAccept<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var sha = SHA1()
        withUnsafeBytes { sha.update($0) }
        let guid: StaticString = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        sha.update(UnsafeRawBufferPointer(start: guid.utf8Start, count: guid.utf8CodeUnitCount))
        var digest: (UInt64, UInt64, UInt32) = (0, 0, 0)  // 20 bytes
        var accept: (UInt64, UInt64, UInt64, UInt32) = (0, 0, 0, 0)  // 28 bytes
        Swift.withUnsafeMutableBytes(of: &digest) { sha.finalize(into: $0) }
        Swift.withUnsafeBytes(of: digest) { d in
            Swift.withUnsafeMutableBytes(of: &accept) { out in _ = base64Encode(d, into: out) }
        }
        return try Swift.withUnsafeBytes(of: accept) { try body(UnsafeRawBufferPointer(rebasing: $0[0..<28])) }
    }
}

/// RFC 4648 §4 base64 with padding. `out` must hold 4 * ceil(n / 3) bytes;
/// returns how many were written.
func base64Encode(_ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) -> Int {
    let alphabet: StaticString = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    let a = alphabet.utf8Start
    let n = input.count
    precondition(out.count >= (n + 2) / 3 * 4)
    var i = 0, o = 0
    while i + 3 <= n {
        let v = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
        out[o] = a[Int(v >> 18)]
        out[o + 1] = a[Int(v >> 12 & 63)]
        out[o + 2] = a[Int(v >> 6 & 63)]
        out[o + 3] = a[Int(v & 63)]
        i += 3
        o += 4
    }
    let rest = n - i
    if rest > 0 {
        let v = UInt32(input[i]) << 16 | (rest == 2 ? UInt32(input[i + 1]) << 8 : 0)
        out[o] = a[Int(v >> 18)]
        out[o + 1] = a[Int(v >> 12 & 63)]
        out[o + 2] = rest == 2 ? a[Int(v >> 6 & 63)] : UInt8(ascii: "=")
        out[o + 3] = UInt8(ascii: "=")
        o += 4
    }
    return o
}

/// SHA-1 as specified in FIPS 180-4 §5.1.1 (padding), §5.3.1 (initial
/// value), §6.1.2 (computation). Used only for the RFC 6455 accept value,
/// where it is a fixed derivation, not a security primitive.
struct SHA1 {
    private var h: (UInt32, UInt32, UInt32, UInt32, UInt32) =
        (0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0)
    private var block: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    private var buffered = 0
    private var length: UInt64 = 0  // bytes

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        length &+= UInt64(bytes.count)
        for b in bytes {
            Swift.withUnsafeMutableBytes(of: &block) { $0[buffered] = b }
            buffered += 1
            if buffered == 64 { compress() }
        }
    }

    /// Writes the 20-byte digest (big-endian words, §6.1.2 step 4).
    mutating func finalize(into out: UnsafeMutableRawBufferPointer) {
        precondition(out.count >= 20)
        let bits = length &* 8
        // §5.1.1: a 1 bit, zeros to 56 mod 64 bytes, then the 64-bit length.
        Swift.withUnsafeMutableBytes(of: &block) { $0[buffered] = 0x80 }
        buffered += 1
        if buffered > 56 {
            Swift.withUnsafeMutableBytes(of: &block) { for i in buffered..<64 { $0[i] = 0 } }
            buffered = 64
            compress()
        }
        Swift.withUnsafeMutableBytes(of: &block) { p in
            for i in buffered..<56 { p[i] = 0 }
            for i in 0..<8 { p[56 + i] = UInt8(truncatingIfNeeded: bits >> (56 - 8 * i)) }
        }
        buffered = 64
        compress()
        func put(_ i: Int, _ w: UInt32) {
            out[4 * i] = UInt8(truncatingIfNeeded: w >> 24)
            out[4 * i + 1] = UInt8(truncatingIfNeeded: w >> 16)
            out[4 * i + 2] = UInt8(truncatingIfNeeded: w >> 8)
            out[4 * i + 3] = UInt8(truncatingIfNeeded: w)
        }
        put(0, h.0)
        put(1, h.1)
        put(2, h.2)
        put(3, h.3)
        put(4, h.4)
    }

    @inline(__always) private static func rotl(_ x: UInt32, _ n: UInt32) -> UInt32 { x << n | x >> (32 - n) }

    /// One 512-bit block (§6.1.2 steps 1-4).
    private mutating func compress() {
        buffered = 0
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 80) { w in
            Swift.withUnsafeBytes(of: block) { m in
                for t in 0..<16 {
                    w[t] = UInt32(m[4 * t]) << 24 | UInt32(m[4 * t + 1]) << 16 | UInt32(m[4 * t + 2]) << 8 | UInt32(m[4 * t + 3])
                }
            }
            for t in 16..<80 { w[t] = Self.rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1) }
            var (a, b, c, d, e) = h
            for t in 0..<80 {
                let f: UInt32, k: UInt32
                switch t {
                case 0..<20: f = (b & c) ^ (~b & d); k = 0x5A82_7999          // Ch
                case 20..<40: f = b ^ c ^ d; k = 0x6ED9_EBA1                  // Parity
                case 40..<60: f = (b & c) ^ (b & d) ^ (c & d); k = 0x8F1B_BCDC // Maj
                default: f = b ^ c ^ d; k = 0xCA62_C1D6                       // Parity
                }
                let temp = Self.rotl(a, 5) &+ f &+ e &+ k &+ w[t]
                e = d
                d = c
                c = Self.rotl(b, 30)
                b = a
                a = temp
            }
            h = (h.0 &+ a, h.1 &+ b, h.2 &+ c, h.3 &+ d, h.4 &+ e)
        }
    }
}
