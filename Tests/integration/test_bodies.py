"""Request and response bodies through HTTPS, byte-exact (sha256 from the backend)."""

import json
import os
import tempfile

from harness import (GatehouseCase, HTTPClient, MiB, curl, pattern_bytes, random_bytes, sha256)

SIZES = [0, 1, 1 * MiB, 10 * MiB]
CHUNK_PLAN = [1, 5000, 3, 65536, 17, 1000003]  # irregular client chunk sizes


class BodyTransferTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.app = env.backend("A")
        env.domain("a.toml", ["a.test"], cls.app)
        cls.port = env.listener("https")
        env.start(workers=2)
        cls.bodies = {n: random_bytes(n, seed=n) for n in SIZES}
        cls.files_dir = tempfile.mkdtemp(dir=env.dir)
        cls.files = {}
        for n, data in cls.bodies.items():
            path = os.path.join(cls.files_dir, "body-%d" % n)
            with open(path, "wb") as f:
                f.write(data)
            cls.files[n] = path

    def url(self, path):
        return "https://a.test:%d%s" % (self.port, path)

    def check_echo(self, resp_json, method, n):
        self.assertEqual(resp_json["method"], method)
        self.assertEqual(resp_json["body_len"], n)
        self.assertEqual(resp_json["body_sha256"], sha256(self.bodies[n]))

    # --- uploads ------------------------------------------------------------------
    def test_upload_content_length_raw(self):
        with HTTPClient.tls(self.port, "a.test") as c:
            for method in ("POST", "PUT"):
                for n in SIZES:
                    with self.subTest(method=method, size=n):
                        r = c.request(method, "/echo", [("Host", "a.test")], body=self.bodies[n])
                        self.assertEqual(r.status, 200, r.summary())
                        self.check_echo(r.json(), method, n)
                        if n:
                            # Content-Length bodies are forwarded byte for byte.
                            hdrs = {k.lower(): v for k, v in r.json()["headers"]}
                            self.assertEqual(hdrs.get("content-length"), str(n))

    def test_upload_chunked_raw(self):
        with HTTPClient.tls(self.port, "a.test") as c:
            for n in SIZES:
                with self.subTest(size=n):
                    r = c.request("POST", "/echo", [("Host", "a.test")], body=self.bodies[n],
                                  chunked=CHUNK_PLAN)
                    self.assertEqual(r.status, 200, r.summary())
                    self.check_echo(r.json(), "POST", n)

    def test_upload_chunked_with_extensions_and_trailer(self):
        body = b"hello, chunked world"
        framed = (b"5;ext=1\r\nhello\r\n" b"f\r\n, chunked world\r\n" b"0\r\nX-Trailer: t\r\n\r\n")
        req = (b"POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n" + framed)
        with HTTPClient.tls(self.port, "a.test") as c:
            c.send(req)
            r = c.read_response()
            self.assertEqual(r.status, 200, r.summary())
            self.assertEqual(r.json()["body_sha256"], sha256(body))
            self.assertEqual(r.json()["body_len"], len(body))
            # and the connection is still usable afterwards
            r2 = c.request("GET", "/echo", [("Host", "a.test")])
            self.assertEqual(r2.status, 200)

    def test_get_without_body(self):
        with HTTPClient.tls(self.port, "a.test") as c:
            r = c.request("GET", "/echo", [("Host", "a.test")])
            self.assertEqual(r.status, 200, r.summary())
            self.check_echo(r.json(), "GET", 0)

    def test_upload_curl_content_length(self):
        for n in SIZES:
            with self.subTest(size=n):
                r = curl(self.url("/echo"), resolve=("a.test", self.port),
                         args=["--data-binary", "@" + self.files[n], "-H", "Content-Type: application/octet-stream"])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.status, 200)
                self.check_echo(json.loads(r.body), "POST", n)

    def test_upload_curl_chunked(self):
        for n in SIZES:
            with self.subTest(size=n):
                r = curl(self.url("/echo"), resolve=("a.test", self.port),
                         args=["--data-binary", "@" + self.files[n], "-H", "Transfer-Encoding: chunked"])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.status, 200)
                self.check_echo(json.loads(r.body), "POST", n)

    def test_upload_curl_put_expect_100(self):
        # curl sends `Expect: 100-continue` for large bodies; Gatehouse answers it.
        n = 10 * MiB
        r = curl(self.url("/echo"), resolve=("a.test", self.port),
                 args=["-T", self.files[n], "-H", "Expect: 100-continue"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.status, 200)
        self.check_echo(json.loads(r.body), "PUT", n)

    # --- downloads ----------------------------------------------------------------
    def test_download_raw(self):
        with HTTPClient.tls(self.port, "a.test") as c:
            for kind in ("bytes", "chunked"):
                for n in SIZES:
                    with self.subTest(kind=kind, size=n):
                        r = c.request("GET", "/%s/%d" % (kind, n), [("Host", "a.test")])
                        self.assertEqual(r.status, 200, r.summary())
                        self.assertEqual(len(r.body), n)
                        self.assertEqual(sha256(r.body), sha256(pattern_bytes(n)))

    def test_download_curl(self):
        for kind in ("bytes", "chunked"):
            for n in SIZES:
                with self.subTest(kind=kind, size=n):
                    r = curl(self.url("/%s/%d" % (kind, n)), resolve=("a.test", self.port))
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertEqual(r.status, 200)
                    self.assertEqual(sha256(r.body), sha256(pattern_bytes(n)))

    def test_head_has_no_body(self):
        with HTTPClient.tls(self.port, "a.test") as c:
            for target in ("/bytes/1000", "/chunked/1000", "/echo"):
                with self.subTest(target=target):
                    r = c.request("HEAD", target, [("Host", "a.test")])
                    self.assertEqual(r.status, 200)
            # if a HEAD response had leaked body bytes, this would not parse
            r = c.request("GET", "/bytes/10", [("Host", "a.test")])
            self.assertEqual(r.body, pattern_bytes(10))

    def test_status_204_304_no_body(self):
        with HTTPClient.tls(self.port, "a.test") as c:
            for code in (204, 304):
                with self.subTest(code=code):
                    r = c.request("GET", "/status/%d" % code, [("Host", "a.test")])
                    self.assertEqual(r.status, code)
                    self.assertEqual(r.body, b"")
            r = c.request("GET", "/status/404", [("Host", "a.test")])
            self.assertEqual((r.status, r.body), (404, b"404 Not Found\n"))
