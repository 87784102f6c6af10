import Testing
import GatehouseHTTP
@testable import GatehouseProxy

private struct Sink: ByteSink {
    var bytes: [UInt8] = []
    mutating func write(_ b: UnsafeRawBufferPointer) { bytes.append(contentsOf: b) }
    var text: String { String(decoding: bytes, as: UTF8.self) }
}

struct AccessLogLineTests {
    private func record() -> AccessRecord {
        var r = AccessRecord(start: 1_796_166_691.25, client: Array("192.0.2.7".utf8))
        r.sni = Array("a.test".utf8)
        r.tlsVersion = Array("TLSv1.3".utf8)
        r.cipher = Array("TLS_AES_128_GCM_SHA256".utf8)
        r.host = Array("a.test".utf8)
        r.method = Array("GET".utf8)
        r.target = Array("/p?q=\"x\"".utf8)
        r.userAgent = [0x63, 0x75, 0x72, 0x6c, 0x0a, 0xff]   // "curl\n\xff"
        r.status = 200
        r.bytesIn = 77
        r.bytesOut = 1234
        r.totalSeconds = 0.0125
        r.backendSeconds = 0.002
        return r
    }

    @Test func combinedFormatEscapesLikeNginx() {
        var sink = Sink()
        AccessLogLine.write(record(), format: .combined, into: &sink)
        #expect(sink.text == "192.0.2.7 - - [01/Dec/2026:23:11:31 +0000] \"GET /p?q=\\x22x\\x22 HTTP/1.1\" 200 1234 \"-\" \"curl\\x0a\\xff\" host=a.test sni=a.test tls=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256 in=77 time=0.013 backend_time=0.002\n")
    }

    @Test func jsonFormatIsOneValidObject() {
        var r = record()
        r.backendSeconds = nil
        r.status = 0   // client went away before a response
        var sink = Sink()
        AccessLogLine.write(r, format: .json, into: &sink)
        #expect(sink.text == "{\"time\":\"2026-12-01T23:11:31.250Z\",\"client\":\"192.0.2.7\",\"sni\":\"a.test\",\"tls_version\":\"TLSv1.3\",\"cipher\":\"TLS_AES_128_GCM_SHA256\",\"host\":\"a.test\",\"method\":\"GET\",\"target\":\"/p?q=\\\"x\\\"\",\"protocol\":\"HTTP/1.1\",\"status\":499,\"bytes_in\":77,\"bytes_out\":1234,\"time_total\":0.013,\"time_backend\":null,\"referer\":\"\",\"user_agent\":\"curl\\u000a\\u00ff\"}\n")
    }

    @Test func secondsHaveMillisecondPrecision() {
        for (value, text) in [(0.0, "0.000"), (0.0004, "0.000"), (0.0015, "0.002"), (1.05, "1.050"), (12.3456, "12.346")] {
            var sink = Sink()
            AccessLogLine.writeSeconds(value, into: &sink)
            #expect(sink.text == text)
        }
    }
}
