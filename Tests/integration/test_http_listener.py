"""The plain-HTTP listener: 301 to https, 404s, ACME http-01 proxied, never HSTS."""

from harness import GatehouseCase, HTTPClient, curl, http_get, https_get

TARGET = "/a/b?x=1&y=%20"


class HTTPListenerTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        env.domain("n.toml", ["n.test"], env.backend("N"), redirect_http=False)
        env.domain("w.toml", ["*.w.test"], env.backend("W"))
        cls.https = env.listener("https")
        cls.http443 = env.listener("http")                    # https_port left at its default, 443
        cls.http8443 = env.listener("http", https_port=8443)
        env.start()

    def assertRedirect(self, resp, location):
        self.assertEqual(resp.status, 301, resp.summary())
        self.assertEqual(resp.all("location"), [location])
        self.assertEqual(resp.get("content-length"), "0")
        self.assertEqual(resp.body, b"")
        self.assertNoHSTS(resp)

    def test_redirect_default_https_port(self):
        self.assertRedirect(http_get(self.http443, "a.test", TARGET), "https://a.test" + TARGET)

    def test_redirect_https_port_8443(self):
        self.assertRedirect(http_get(self.http8443, "a.test", TARGET), "https://a.test:8443" + TARGET)

    def test_redirect_keeps_target_verbatim(self):
        for target in ("/", "/%7Euser/a%2Fb;p?q=%C3%A9&&r", "/x?", "/.well-known/other"):
            with self.subTest(target=target):
                self.assertRedirect(http_get(self.http443, "a.test", target), "https://a.test" + target)

    def test_host_port_dropped(self):
        self.assertRedirect(http_get(self.http443, "a.test:8080", TARGET), "https://a.test" + TARGET)
        self.assertRedirect(http_get(self.http8443, "a.test:8080", TARGET), "https://a.test:8443" + TARGET)

    def test_wildcard_domain_redirects(self):
        self.assertRedirect(http_get(self.http443, "x.w.test", "/p"), "https://x.w.test/p")

    def test_head_gets_301_without_body(self):
        with HTTPClient.plain(self.http443) as c:
            r = c.request("HEAD", TARGET, [("Host", "a.test")])
            self.assertEqual(r.status, 301, r.summary())
            self.assertEqual(r.all("location"), ["https://a.test" + TARGET])
            self.assertNoHSTS(r)
            # Either the connection is closed, or the next response parses cleanly
            # (a body after the HEAD response would corrupt it).
            try:
                c.send(HTTPClient.build("GET", "/next", [("Host", "a.test")]))
                r2 = c.read_response()
            except (ConnectionError, OSError):
                return
            self.assertRedirect(r2, "https://a.test/next")

    def test_keep_alive_on_http_listener(self):
        with HTTPClient.plain(self.http8443) as c:
            for i in range(3):
                r = c.request("GET", "/k%d" % i, [("Host", "a.test")])
                self.assertRedirect(r, "https://a.test:8443/k%d" % i)
                if any("close" in v.lower() for v in r.all("connection")):
                    break

    def test_unknown_host_404(self):
        r = http_get(self.http443, "unknown.test", TARGET)
        self.assertGatehouseError(r, 404)
        self.assertEqual(r.body, b"404 Not Found\n")
        self.assertNoHSTS(r)
        self.assertFalse(r.has("location"))

    def test_missing_host_400(self):
        with HTTPClient.plain(self.http443) as c:
            c.send(b"GET / HTTP/1.1\r\n\r\n")
            r = c.read_response()
        self.assertGatehouseError(r, 400)
        self.assertNoHSTS(r)

    def test_redirect_disabled_404(self):
        r = http_get(self.http443, "n.test", TARGET)
        self.assertGatehouseError(r, 404)
        self.assertNoHSTS(r)
        self.assertFalse(r.has("location"))

    def test_acme_challenge_proxied(self):
        for port in (self.http443, self.http8443):
            for host, backend in (("a.test", "A"), ("n.test", "N"), ("a.test:8080", "A"), ("z.w.test", "W")):
                with self.subTest(port=port, host=host):
                    r = http_get(port, host, "/.well-known/acme-challenge/tok")
                    self.assertEqual(r.status, 200, r.summary())
                    self.assertEqual(r.body, b"acme:tok")
                    self.assertEqual(r.get("x-backend-name"), backend)
                    self.assertEqual(r.get("x-seen-forwarded-proto"), "http")
                    self.assertEqual(r.get("x-seen-forwarded-for"), "127.0.0.1")
                    self.assertEqual(r.get("x-seen-host"), host)
                    self.assertNoHSTS(r)

    def test_acme_client_forwarded_headers_replaced(self):
        r = http_get(self.http443, "a.test", "/.well-known/acme-challenge/t2",
                     headers=[("X-Forwarded-Proto", "https"), ("X-Forwarded-For", "9.9.9.9")])
        self.assertEqual(r.body, b"acme:t2")
        self.assertEqual(r.get("x-seen-forwarded-proto"), "http")
        self.assertEqual(r.get("x-seen-forwarded-for"), "127.0.0.1")

    def test_acme_unknown_host_404(self):
        r = http_get(self.http443, "unknown.test", "/.well-known/acme-challenge/tok")
        self.assertGatehouseError(r, 404)
        self.assertNoHSTS(r)

    def test_curl_redirect(self):
        r = curl("http://a.test:%d/x?y=1" % self.http8443, resolve=("a.test", self.http8443))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.status, 301)
        self.assertEqual(r.get("location"), "https://a.test:8443/x?y=1")
        self.assertEqual(r.all("strict-transport-security"), [])
        # HEAD: curl -I writes the head to the output file; nothing may follow it.
        r = curl("http://a.test:%d/x?y=1" % self.http8443, resolve=("a.test", self.http8443), args=["-I"])
        self.assertEqual((r.returncode, r.status), (0, 301))
        self.assertTrue(r.body.startswith(b"HTTP/1.1 301 "), r.body)
        self.assertEqual(r.body.index(b"\r\n\r\n") + 4, len(r.body), r.body)

    def test_https_side_has_hsts(self):
        r = https_get(self.https, "a.test", "/echo")
        self.assertEqual(r.status, 200)
        self.assertHSTS(r, "max-age=31536000")
        r = https_get(self.https, "n.test", "/echo")   # redirect_http = false does not affect https
        self.assertEqual(r.status, 200)
        self.assertHSTS(r, "max-age=31536000")
