import Testing
@testable import GatehouseProxy

/// PROXY protocol v1/v2 (haproxy.org proxy-protocol.txt) header parsing.
struct ProxyProtocolTests {
    private func parse(_ bytes: [UInt8]) -> ProxyProtocolHeader {
        bytes.withUnsafeBytes { ProxyProtocolHeader.parse($0) }
    }

    private func text(_ s: String) -> [UInt8] { Array(s.utf8) }

    @Test func v1TCP4AndTCP6() {
        let line = text("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n")
        #expect(parse(line + text("\u{16}\u{03}")) == .complete(length: line.count, source: text("192.0.2.7")))
        let six = text("PROXY TCP6 2001:DB8::0:1 2001:db8::2 1 65535\r\n")
        #expect(parse(six) == .complete(length: six.count, source: text("2001:db8::1")), "canonical form")
        #expect(parse(text("PROXY UNKNOWN whatever\r\n")) == .complete(length: 24, source: nil))
    }

    @Test func v1Incomplete() {
        #expect(parse(text("PRO")) == .incomplete(atLeast: 4))
        #expect(parse(text("PROXY TCP4 192.0.2.7 198.51.100.1 5 4")) == .incomplete(atLeast: 38))
    }

    @Test func v1Invalid() {
        for bad in ["PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n",      // bare LF
                    "PROXY TCP4 192.0.2.777 198.51.100.1 1 2\r\n",         // bad address
                    "PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",         // family mismatch
                    "PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n",       // port range
                    "PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n",          // leading zero
                    "PROXY TCP4 192.0.2.7  198.51.100.1 1 2\r\n",          // double space
                    "PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
                    "GET / HTTP/1.1\r\n"] {
            if case .invalid = parse(text(bad)) {} else { Issue.record("accepted \(bad.debugDescription)") }
        }
        let long = text("PROXY TCP4 ") + [UInt8](repeating: 0x31, count: 120)
        if case .invalid = parse(long) {} else { Issue.record("accepted a 131-byte line") }
    }

    private func v2(command: UInt8, family: UInt8, body: [UInt8]) -> [UInt8] {
        ProxyProtocolHeader.v2Signature + [0x20 | command, family, UInt8(body.count >> 8), UInt8(body.count & 0xff)] + body
    }

    @Test func v2ProxyAndLocal() {
        let ipv4 = v2(command: 1, family: 0x11, body: [192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb])
        #expect(parse(ipv4 + [0x16]) == .complete(length: 28, source: text("192.0.2.7")))
        var addr6 = [UInt8](repeating: 0, count: 36)
        addr6[0] = 0x20; addr6[1] = 0x01; addr6[2] = 0x0d; addr6[3] = 0xb8; addr6[15] = 1
        #expect(parse(v2(command: 1, family: 0x21, body: addr6)) == .complete(length: 52, source: text("2001:db8::1")))
        // TLVs after the addresses are skipped with the header.
        #expect(parse(v2(command: 1, family: 0x11, body: [192, 0, 2, 7, 198, 51, 100, 1, 0, 1, 0, 2, 0x04, 0x00, 0x01, 0x00]))
                == .complete(length: 32, source: text("192.0.2.7")))
        #expect(parse(v2(command: 0, family: 0x00, body: [])) == .complete(length: 16, source: nil))
    }

    @Test func v2IncompleteAndInvalid() {
        let full = v2(command: 1, family: 0x11, body: [192, 0, 2, 7, 198, 51, 100, 1, 0, 1, 0, 2])
        #expect(parse(Array(full.prefix(5))) == .incomplete(atLeast: 16))
        #expect(parse(Array(full.prefix(20))) == .incomplete(atLeast: 28))
        var badVersion = full
        badVersion[12] = 0x11
        if case .invalid = parse(badVersion) {} else { Issue.record("accepted version 1 in a v2 header") }
        if case .invalid = parse(v2(command: 1, family: 0x11, body: [1, 2, 3])) {} else { Issue.record("short IPv4 block") }
        if case .invalid = parse(v2(command: 1, family: 0x11, body: [UInt8](repeating: 0, count: 2000))) {} else {
            Issue.record("accepted a 2 KB header")
        }
        var badSignature = full
        badSignature[3] = 0
        if case .invalid = parse(badSignature) {} else { Issue.record("bad signature") }
    }
}
