import Foundation
import Testing
@testable import GatehouseACME

/// renewalInfo over HTTP (pebble 2.4 has no ARI): a Python HTTPS server
/// with a directory that names a renewalInfo, answering RFC 9773 §4.2's
/// example for the RFC's certID and 404 for others; it also echoes the
/// Accept field a POST carries.
@Suite struct RenewalInfoHTTPTests {
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
        self.wfile.write(body)
    def do_GET(self):
        base = "https://127.0.0.1:%d" % self.server.server_address[1]
        if self.path == "/dir":
            self.reply(200, json.dumps({"newNonce": base + "/nonce", "newAccount": base + "/acct", "newOrder": base + "/order",
                                        "renewalInfo": base + "/ari"}).encode())
        elif self.path == "/ari/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE":
            self.reply(200, json.dumps({"suggestedWindow": {"start": "2025-01-02T04:00:00Z", "end": "2025-01-03T04:00:00Z"},
                                        "explanationURL": "https://acme.example.com/docs/ari"}).encode(),
                       [("Content-Type", "application/json"), ("Retry-After", "21600")])
        else:
            self.reply(404, json.dumps({"type": "urn:ietf:params:acme:error:malformed", "detail": "no " + self.path}).encode(),
                       [("Content-Type", "application/problem+json")])
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.reply(200, (self.headers.get("Accept") or "none").encode())
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", srv.server_address[1], flush=True)
srv.serve_forever()
"""#

    /// The server up with a certificate from a CA made here; stopped after `body`.
    func withServer(_ body: (_ port: Int, _ ca: String) throws -> Void) throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let d = scratch.path
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", d + "/ca.key",
                     "-out", d + "/ca.pem", "-days", "2", "-subj", "/CN=Gatehouse ARI test CA",
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"])
        try openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", d + "/leaf.key",
                     "-out", d + "/leaf.csr", "-subj", "/CN=localhost"])
        try scratch.write("leaf.ext", Array("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n".utf8))
        try openssl(["x509", "-req", "-in", d + "/leaf.csr", "-CA", d + "/ca.pem", "-CAkey", d + "/ca.key", "-set_serial", "2",
                     "-days", "2", "-out", d + "/leaf.pem", "-extfile", d + "/leaf.ext"])
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", Self.script, d + "/leaf.pem", d + "/leaf.key"]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        defer {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        var line = [UInt8]()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += chunk
        }
        let words = String(decoding: line, as: UTF8.self).split(whereSeparator: \.isWhitespace)
        guard words.count == 2, words[0] == "ready", let port = Int(words[1]) else { throw ACMEError("ARI test server did not start") }
        try body(port, d + "/ca.pem")
    }

    @Test func renewalInfoByGET() throws {
        try withServer { port, ca in
            let client = ACMEClient(directoryURL: "https://127.0.0.1:\(port)/dir", accountKey: try PrivateKey.generateP256(),
                                    http: try ACMEHTTPClient(options: .init(trust: ca)))
            let info = try client.renewalInfo(certID: "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")
            #expect(info == RenewalInfo(windowStart: 1_735_790_400, windowEnd: 1_735_876_800,
                                        explanationURL: "https://acme.example.com/docs/ari", retryAfter: 21600))
            do {
                _ = try client.renewalInfo(certID: "AQID.BA")
                Issue.record("an unknown certID answered")
            } catch let error as ACMERequestError {
                #expect(error.status == 404 && error.problem?.type == "urn:ietf:params:acme:error:malformed")
            }
            // Not a certID: nothing is requested.
            for bad in ["", "abc", "a.b.c", "a/../b.c", "a.b?x=1", "a+b.c"] {
                #expect(throws: ACMEError.self, "\(bad)") { try client.renewalInfo(certID: bad) }
            }
        }
    }

    /// §7.4.2's media type reaches the server; otherwise curl's default.
    @Test func acceptField() throws {
        try withServer { port, ca in
            let http = try ACMEHTTPClient(options: .init(trust: ca))
            let asked = try http.post("https://127.0.0.1:\(port)/cert", jose: Array("{}".utf8), accept: "application/pem-certificate-chain")
            #expect(String(decoding: asked.body, as: UTF8.self) == "application/pem-certificate-chain")
            let plain = try http.post("https://127.0.0.1:\(port)/cert", jose: Array("{}".utf8))
            #expect(String(decoding: plain.body, as: UTF8.self) == "*/*")
            #expect(throws: ACMEError.self) { try http.post("https://127.0.0.1:\(port)/cert", jose: [], accept: "a\r\nX-Evil: 1") }
        }
    }
}
