import Testing
@testable import GatehouseHTTP

/// RFC 6455 §1.3's nonce.
let sampleKey: WebSocketKey = Array("the sample nonce".utf8).withUnsafeBytes { WebSocketKey(random: $0) }

private func sha1Hex(_ input: [UInt8]) -> String {
    var sha = SHA1()
    input.withUnsafeBytes { sha.update($0) }
    var out = [UInt8](repeating: 0, count: 20)
    out.withUnsafeMutableBytes { sha.finalize(into: $0) }
    let digits = Array("0123456789abcdef")
    return String(out.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] })
}

private func base64(_ s: String) -> String {
    let input = Array(s.utf8)
    var out = [UInt8](repeating: 0, count: (input.count + 2) / 3 * 4)
    let n = input.withUnsafeBytes { i in out.withUnsafeMutableBytes { base64Encode(i, into: $0) } }
    return String(decoding: out[0..<n], as: UTF8.self)
}

@Suite struct SHA1Vectors {
    // FIPS 180-4 examples (NIST CSRC "SHA1.pdf") and the empty message.
    @Test func knownAnswers() {
        #expect(sha1Hex([]) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(sha1Hex(bytes("abc")) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(sha1Hex(bytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
            == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
        #expect(sha1Hex([UInt8](repeating: 0x61, count: 1_000_000)) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
        #expect(sha1Hex(bytes("The quick brown fox jumps over the lazy dog")) == "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12")
    }

    /// Lengths around the padding boundary (55, 56, 63, 64, 65 bytes) give
    /// the same digest fed at once and byte by byte.
    @Test func paddingBoundariesAndSplitFeeding() {
        for n in [55, 56, 57, 63, 64, 65, 119, 120, 128] {
            let input = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            var split = SHA1()
            for b in input { [b].withUnsafeBytes { split.update($0) } }
            var out = [UInt8](repeating: 0, count: 20)
            out.withUnsafeMutableBytes { split.finalize(into: $0) }
            let digits = Array("0123456789abcdef")
            #expect(String(out.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }) == sha1Hex(input), "n=\(n)")
        }
        // 64 'a': a full block followed by a padding-only block.
        #expect(sha1Hex([UInt8](repeating: 0x61, count: 64)) == "0098ba824b5c16427bd7a1122a5a442a25ec644d")
    }
}

@Suite struct Base64Vectors {
    // RFC 4648 §10.
    @Test func rfc4648() {
        #expect(base64("") == "")
        #expect(base64("f") == "Zg==")
        #expect(base64("fo") == "Zm8=")
        #expect(base64("foo") == "Zm9v")
        #expect(base64("foob") == "Zm9vYg==")
        #expect(base64("fooba") == "Zm9vYmE=")
        #expect(base64("foobar") == "Zm9vYmFy")
    }

    @Test func allSixBitValues() {
        // 6-bit groups 62, 63, 62, 63, 0, 1, 2, 3: "+" and "/" included.
        let input: [UInt8] = [0xFB, 0xFF, 0xBF, 0x00, 0x10, 0x83]
        var out = [UInt8](repeating: 0, count: 8)
        _ = input.withUnsafeBytes { i in out.withUnsafeMutableBytes { base64Encode(i, into: $0) } }
        #expect(String(decoding: out, as: UTF8.self) == "+/+/ABCD")
    }
}

@Suite struct WebSocketKeys {
    /// RFC 6455 §1.3 and §4.2.2: the nonce "the sample nonce" gives this key and accept value.
    @Test func rfc6455Example() {
        #expect(sampleKey.withUnsafeBytes { String(decoding: $0, as: UTF8.self) } == "dGhlIHNhbXBsZSBub25jZQ==")
        #expect(sampleKey.withExpectedAccept { String(decoding: $0, as: UTF8.self) } == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        #expect(Array("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".utf8).withUnsafeBytes { sampleKey.acceptMatches($0) })
    }

    @Test func wrongAcceptRefused() {
        for bad in ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo= ", "S3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "",
                    "dGhlIHNhbXBsZSBub25jZQ=="] {
            #expect(!Array(bad.utf8).withUnsafeBytes { sampleKey.acceptMatches($0) }, "\(bad)")
        }
    }

    @Test func keysFromDifferentBytesDiffer() {
        let a = [UInt8](repeating: 0, count: 16).withUnsafeBytes { WebSocketKey(random: $0) }
        let b = ([UInt8](repeating: 0, count: 15) + [1]).withUnsafeBytes { WebSocketKey(random: $0) }
        #expect(a != b)
        #expect(a.withUnsafeBytes { String(decoding: $0, as: UTF8.self) } == "AAAAAAAAAAAAAAAAAAAAAA==")
        #expect(b.withUnsafeBytes { $0.count } == 24)
    }
}
