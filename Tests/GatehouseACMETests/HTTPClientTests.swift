import Foundation
import Testing
@testable import GatehouseACME

/// A local HTTPS server (Python's http.server over ssl) with a certificate
/// from a CA made for the test, and what the client does against it.
final class TestHTTPSServer {
    let scratch: Scratch
    let process: Process
    let port: Int
    var ca: String { scratch.path + "/ca.pem" }

    static let script = #"""
import http.server, json, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers: self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD": self.wfile.write(body)
    def do_HEAD(self):
        self.reply(200, headers=[("Replay-Nonce", "head-nonce_1"), ("Cache-Control", "no-store")])
    def do_GET(self):
        if self.path == "/ok":
            self.reply(200, b"hello", [("Replay-Nonce", "n0nce-A_b"), ("Location", "https://acme.test/x"), ("Retry-After", "30"), ("X-Two", "a"), ("X-Two", "b")])
        elif self.path == "/redirect":
            self.reply(302, b"", [("Location", "/ok")])
        elif self.path == "/big":
            self.reply(200, b"x" * (2 << 20))
        elif self.path == "/stream":
            # No Content-Length: only the bytes can tell the size.
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"y" * (2 << 20))
            self.close_connection = True
        elif self.path == "/agent":
            self.reply(200, self.headers.get("User-Agent", "").encode())
        else:
            self.reply(404, b"no")
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        out = json.dumps({"type": self.headers.get("Content-Type"), "expect": self.headers.get("Expect"), "length": n, "body": body.decode("latin-1")}).encode()
        self.reply(201, out, [("Content-Type", "application/json"), ("Location", "https://acme.test/acct/1"), ("Replay-Nonce", "post-nonce")])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", srv.server_address[1], flush=True)
srv.serve_forever()
"""#

    init() throws {
        scratch = try Scratch()
        let d = scratch.path
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", d + "/ca.key",
                     "-out", d + "/ca.pem", "-days", "2", "-subj", "/CN=Gatehouse ACME client test CA",
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"])
        try openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", d + "/leaf.key",
                     "-out", d + "/leaf.csr", "-subj", "/CN=localhost"])
        try scratch.write("leaf.ext", Array("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n".utf8))
        try openssl(["x509", "-req", "-in", d + "/leaf.csr", "-CA", d + "/ca.pem", "-CAkey", d + "/ca.key", "-CAcreateserial",
                     "-days", "2", "-out", d + "/leaf.pem", "-extfile", d + "/leaf.ext"])
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", Self.script, d + "/leaf.pem", d + "/leaf.key"]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        var line = [UInt8]()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += chunk
        }
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix("ready "), let p = Int(text.dropFirst(6).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            kill(process.processIdentifier, SIGKILL)
            throw ACMEError("test server did not start: \(text)")
        }
        port = p
    }

    func url(_ path: String, host: String = "localhost") -> String { "https://\(host):\(port)\(path)" }

    func stop() {
        // SIGKILL: the child inherits the test runner's blocked signals, and
        // a blocked SIGTERM (Process.terminate) would never arrive.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        scratch.remove()
    }
}

@Suite(.serialized) struct HTTPClientTests {
    @Test func getPostHeadWithTrust() throws {
        let server = try TestHTTPSServer()
        defer { server.stop() }
        let client = try ACMEHTTPClient(options: .init(trust: server.ca, userAgent: "Gatehouse-test/1"))

        let r = try client.get(server.url("/ok"))
        #expect(r.status == 200)
        #expect(r.body == Array("hello".utf8))
        #expect(r.replayNonce == "n0nce-A_b")
        #expect(r.location == "https://acme.test/x")
        #expect(r.retryAfter() == 30)
        #expect(r.header("x-two") == "a")
        #expect(r.headers.filter { $0.name == "X-Two" }.map(\.value) == ["a", "b"])

        let h = try client.head(server.url("/new-nonce"))
        #expect(h.status == 200 && h.body.isEmpty && h.replayNonce == "head-nonce_1")

        // A body over 1 KiB, which curl would otherwise send after waiting for 100 Continue.
        let payload = Array(("{\"protected\":\"" + String(repeating: "a", count: 3000) + "\"}").utf8)
        let p = try client.post(server.url("/new-account"), jose: payload)
        #expect(p.status == 201)
        #expect(p.location == "https://acme.test/acct/1")
        #expect(p.replayNonce == "post-nonce")
        let echo = try #require(try JSONSerialization.jsonObject(with: Data(p.body)) as? [String: Any])
        #expect(echo["type"] as? String == "application/jose+json")
        #expect(echo["expect"] is NSNull)
        #expect(echo["length"] as? Int == payload.count)
        #expect(echo["body"] as? String == String(decoding: payload, as: UTF8.self))

        #expect(try client.get(server.url("/agent")).body == Array("Gatehouse-test/1".utf8))
        // Errors are answers, not failures.
        #expect(try client.get(server.url("/missing")).status == 404)
        // By IP address too (the certificate names 127.0.0.1).
        #expect(try client.get(server.url("/ok", host: "127.0.0.1")).status == 200)
    }

    @Test func redirectsAreNotFollowed() throws {
        let server = try TestHTTPSServer()
        defer { server.stop() }
        let client = try ACMEHTTPClient(options: .init(trust: server.ca))
        let r = try client.get(server.url("/redirect"))
        #expect(r.status == 302 && r.location == "/ok" && r.body.isEmpty)
    }

    @Test func serverIsVerified() throws {
        let server = try TestHTTPSServer()
        defer { server.stop() }
        // The system's CAs do not know the test CA.
        let system = try ACMEHTTPClient()
        #expect(throws: ACMEError.self) { try system.get(server.url("/ok")) }
        // A name the certificate does not carry.
        let trusting = try ACMEHTTPClient(options: .init(trust: server.ca))
        let wrongName = server.url("/ok").replacingOccurrences(of: "localhost", with: "127.0.0.2")
        #expect(throws: ACMEError.self) { try trusting.get(wrongName) }
        // Another CA's bundle.
        let other = try ACMEHTTPClient(options: .init(trust: "/etc/ssl/certs/ca-certificates.crt"))
        #expect(throws: ACMEError.self) { try other.get(server.url("/ok")) }
    }

    @Test func onlyHTTPS() throws {
        let client = try ACMEHTTPClient()
        do {
            _ = try client.get("http://127.0.0.1:1/directory")
            Issue.record("plain http was attempted")
        } catch {
            #expect(error.description.lowercased().contains("protocol"), "\(error)")
        }
        #expect(throws: ACMEError.self) { try client.get("file:///etc/passwd") }
    }

    @Test func bodyLimit() throws {
        let server = try TestHTTPSServer()
        defer { server.stop() }
        let client = try ACMEHTTPClient(options: .init(trust: server.ca, maxBodyBytes: 1 << 20))
        do {
            _ = try client.get(server.url("/big"))
            Issue.record("2 MiB body accepted")
        } catch {
            #expect(error.description.contains("larger than"), "\(error)")
        }
        do {
            _ = try client.get(server.url("/stream"))
            Issue.record("2 MiB streamed body accepted")
        } catch {
            #expect(error.description.contains("larger than"), "\(error)")
        }
        // The handle is still good afterwards.
        #expect(try client.get(server.url("/ok")).status == 200)
    }

    @Test func retryAfterForms() {
        func response(_ value: String) -> HTTPResponse { HTTPResponse(status: 503, headers: [("Retry-After", value)], body: []) }
        #expect(response("120").retryAfter() == 120)
        #expect(response(" 7 ").retryAfter() == 7)
        // RFC 9110 §5.6.7's example date: 784111777.
        #expect(HTTPDate.seconds(imfFixdate: "Sun, 06 Nov 1994 08:49:37 GMT") == 784_111_777)
        #expect(HTTPDate.seconds(imfFixdate: "Thu, 01 Jan 1970 00:00:00 GMT") == 0)
        #expect(HTTPDate.seconds(imfFixdate: "Tue, 29 Feb 2028 12:00:00 GMT") == 1_835_438_400)
        #expect(response("Sun, 06 Nov 1994 08:49:37 GMT").retryAfter(now: 784_111_677) == 100)
        #expect(response("Sun, 06 Nov 1994 08:49:37 GMT").retryAfter(now: 800_000_000) == 0)
        for bad in ["", "soon", "-5", "1.5", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 06 Foo 1994 08:49:37 GMT"] {
            #expect(response(bad).retryAfter() == nil, "\(bad)")
        }
        #expect(HTTPResponse(status: 200, headers: [], body: []).retryAfter() == nil)
    }
}
