import Testing
@testable import GatehouseHTTP

/// RFC 9110 §7.8 and §15.2.2: what an upgrade request is, and what goes
/// upstream and back when one is passed on.
struct UpgradeTests {
    private let ws = "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n"

    @Test func upgradeNeedsTheConnectionTokenAndHTTP11() {
        #expect(requestHead(ws)?.wantsUpgrade == true)
        #expect(requestHead("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")?.wantsUpgrade == false)
        #expect(requestHead("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n")?.wantsUpgrade == false)
        #expect(requestHead("GET / HTTP/1.0\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")?.wantsUpgrade == false)
    }

    @Test func upstreamHeadCarriesUpgradeOnlyWhenAsked() throws {
        let raw = bytes(ws)
        let head = try #require(requestHead(ws))
        func render(_ upgrade: Bool) -> String {
            var sink = ArraySink()
            raw.withUnsafeBytes { buf in
                Array("192.0.2.1".utf8).withUnsafeBytes { addr in
                    writeUpstreamRequestHead(head, in: buf, clientAddress: addr, scheme: .https, upgrade: upgrade, into: &sink)
                }
            }
            return sink.string
        }
        let passed = render(true)
        #expect(passed.contains("\r\nUpgrade: websocket\r\n"))
        #expect(passed.contains("\r\nConnection: upgrade\r\n"))
        #expect(!passed.contains("keep-alive"))
        let plain = render(false)
        #expect(!plain.contains("Upgrade"))
        #expect(!plain.contains("Connection"))
    }

    @Test func switchingProtocolsHeadKeepsUpgradeAndAddsOurConnection() throws {
        let text = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Private\r\nX-Private: 1\r\nSec-WebSocket-Accept: abc\r\nStrict-Transport-Security: max-age=1\r\n\r\n"
        let raw = bytes(text)
        let head = try #require(responseHead(text))
        var sink = ArraySink()
        raw.withUnsafeBytes { buf in
            Array("max-age=60".utf8).withUnsafeBytes { hsts in
                writeSwitchingProtocolsHead(head, in: buf, hsts: hsts, into: &sink)
            }
        }
        #expect(sink.string == "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: abc\r\nStrict-Transport-Security: max-age=60\r\nConnection: upgrade\r\n\r\n")
    }
}
