import Testing
@testable import GatehouseACME

@Suite struct Base64URLTests {
    /// RFC 4648 §10, padding removed (RFC 7515 §2).
    @Test func rfc4648Vectors() {
        let vectors = [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"), ("foobar", "Zm9vYmFy")]
        for (plain, encoded) in vectors {
            #expect(Base64URL.encode(plain) == encoded)
            #expect(Base64URL.decode(encoded) == Array(plain.utf8))
        }
    }

    @Test func urlSafeAlphabet() {
        // 0xfb 0xff is "+/8" in base64.
        #expect(Base64URL.encode([0xfb, 0xff]) == "-_8")
        #expect(Base64URL.decode("-_8") == [0xfb, 0xff])
        #expect(Base64URL.decode("+/8") == nil)
    }

    @Test func everyByteRoundTrips() {
        for length in 0 ..< 70 {
            let bytes = (0 ..< length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ length) }
            #expect(Base64URL.decode(Base64URL.encode(bytes)) == bytes)
        }
        let all = (0 ... 255).map { UInt8($0) }
        #expect(Base64URL.decode(Base64URL.encode(all)) == all)
    }

    @Test func rejectsNonCanonicalText() {
        for bad in ["Zg==", "Zg=", "Z", "Zm9vY", "Zh", "Zm9=", "Zm 9v", "Zm9v\n", "Zm9vYm+", "é"] {
            #expect(Base64URL.decode(bad) == nil, "\(bad)")
        }
    }

    @Test func tokens() {
        #expect(Base64URL.isValidToken("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"))
        #expect(Base64URL.isValidToken(String(repeating: "a", count: 22)))
        #expect(Base64URL.isValidToken(String(repeating: "_", count: 256)))
        for bad in ["", "short", String(repeating: "a", count: 21), String(repeating: "a", count: 257),
                    "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-o=", "../../../../../../../../etc/passwd",
                    "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ/PCt92wr-oA", "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ%2fCt92wr-oA",
                    "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ.PCt92wr-oA"] {
            #expect(!Base64URL.isValidToken(bad), "\(bad)")
        }
    }
}
