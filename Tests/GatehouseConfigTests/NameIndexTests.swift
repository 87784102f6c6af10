import Testing
@testable import GatehouseConfig

@Suite struct NameIndexTests {
    let index = NameIndex([
        (name: "example.com", domain: 0),
        (name: "www.example.com", domain: 0),
        (name: "*.example.com", domain: 1),
        (name: "exact.example.com", domain: 2),
        (name: "*.b.example.org", domain: 3),
        (name: "localhost", domain: 4),
    ])

    @Test func exactMatch() {
        #expect(index.lookup("example.com") == 0)
        #expect(index.lookup("www.example.com") == 0)
        #expect(index.lookup("localhost") == 4)
        #expect(index.count == 6)
    }

    @Test func exactWinsOverWildcard() {
        #expect(index.lookup("exact.example.com") == 2)
    }

    @Test func wildcardMatchesOneLeftmostLabel() {
        #expect(index.lookup("a.example.com") == 1)
        #expect(index.lookup("x-y_z.example.com") == 1)
        #expect(index.lookup("c.b.example.org") == 3)
    }

    @Test func caseInsensitive() {
        #expect(index.lookup("EXAMPLE.COM") == 0)
        #expect(index.lookup("Www.Example.Com") == 0)
        #expect(index.lookup("FOO.EXAMPLE.COM") == 1)
    }

    @Test func trailingDotIgnored() {
        #expect(index.lookup("example.com.") == 0)
        #expect(index.lookup("a.example.com.") == 1)
        #expect(index.lookup("example.com..") == nil)
    }

    @Test func wildcardDoesNotMatchApex() {
        #expect(index.lookup("b.example.org") == nil)
        #expect(index.lookup("example.org") == nil)
    }

    @Test func wildcardDoesNotMatchTwoLabels() {
        #expect(index.lookup("a.b.example.com") == nil)
        #expect(index.lookup("a.c.b.example.org") == nil)
    }

    @Test func noMatch() {
        #expect(index.lookup("example.net") == nil)
        #expect(index.lookup("com") == nil)
        #expect(index.lookup("xexample.com") == nil)
        #expect(index.lookup("example.co") == nil)
    }

    @Test func garbageReturnsNil() {
        let garbage: [[UInt8]] = [
            [],
            Array(".".utf8),
            Array("..".utf8),
            Array(".example.com".utf8),
            Array("*.example.com".utf8),   // a literal wildcard is not a host name
            Array("*".utf8),
            Array("example.com\0".utf8),
            Array("exa\0mple.com".utf8),
            [0],
            [0xFF, 0xFE],
            Array("ex\u{e4}mple.com".utf8),
            Array("a.example.com\u{80}".utf8),
            [UInt8](repeating: UInt8(ascii: "a"), count: 100_000),
            Array((String(repeating: "a.", count: 127) + "example.com").utf8),
            Array("example.com:443".utf8),
            Array(" example.com".utf8),
            [UInt8](repeating: 0xFF, count: 300),
        ]
        for bytes in garbage {
            let result = bytes.withUnsafeBytes { index.lookup($0) }
            #expect(result == nil, "\(bytes.prefix(20))")
        }
        #expect(index.lookup(UnsafeRawBufferPointer(start: nil, count: 0)) == nil)
        #expect(index.lookup("") == nil)
    }

    @Test func rawBufferLookupMatchesString() {
        let bytes = Array("WWW.example.com.".utf8)
        #expect(bytes.withUnsafeBytes { index.lookup($0) } == 0)
        let slice = Array("xx.example.comGARBAGE".utf8)
        #expect(slice.withUnsafeBytes { index.lookup(UnsafeRawBufferPointer(rebasing: $0[0 ..< 14])) } == 1)
    }

    @Test func emptyIndex() {
        let empty = NameIndex([])
        #expect(empty.count == 0)
        #expect(empty.lookup("example.com") == nil)
        #expect(empty.lookup("") == nil)
    }

    @Test func firstDuplicateWins() {
        let dup = NameIndex([(name: "a.com", domain: 7), (name: "A.com.", domain: 8)])
        #expect(dup.count == 1)
        #expect(dup.lookup("a.com") == 7)
    }

    @Test func buildsFromDomains() {
        let domains = [
            DomainConfig(id: 0, file: "/d/a.toml", names: ["a.com", "*.a.com"], backend: .unix(path: "/s"), certificate: "/c", key: "/k"),
            DomainConfig(id: 1, file: "/d/b.toml", names: ["b.com"], backend: .tcp(host: "::1", port: 80), certificate: "/c", key: "/k"),
        ]
        let idx = NameIndex(domains: domains)
        #expect(idx.count == 3)
        #expect(idx.lookup("x.a.com") == 0)
        #expect(idx.lookup("b.com") == 1)
    }

    @Test func hundredThousandDomains() {
        let n = 100_000
        var entries: [(name: String, domain: Int)] = []
        entries.reserveCapacity(n * 2)
        for i in 0 ..< n {
            entries.append(("site\(i).example.com", i))
            entries.append(("www.site\(i).example.com", i))
            if i % 10 == 0 { entries.append(("*.w\(i).example.org", i)) }
        }
        let big = NameIndex(entries)
        #expect(big.count == n * 2 + n / 10)

        var mismatches = 0
        for i in 0 ..< n {
            if big.lookup("site\(i).example.com") != i { mismatches += 1 }
            if big.lookup("www.site\(i).example.com") != i { mismatches += 1 }
            if big.lookup("site\(i).example.net") != nil { mismatches += 1 }
            if big.lookup("a.www.site\(i).example.com") != nil { mismatches += 1 }
            if i % 10 == 0 {
                if big.lookup("x.w\(i).example.org") != i { mismatches += 1 }
                if big.lookup("w\(i).example.org") != nil { mismatches += 1 }
                if big.lookup("a.b.w\(i).example.org") != nil { mismatches += 1 }
            } else if big.lookup("x.w\(i).example.org") != nil {
                mismatches += 1
            }
        }
        #expect(mismatches == 0)
        #expect(big.lookup("SITE99999.EXAMPLE.COM.") == 99_999)
        #expect(big.lookup("site100000.example.com") == nil)
    }
}
