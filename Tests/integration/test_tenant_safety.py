"""A customer's app sees only requests for its own names (issue 12): 421 for a Host
the handshake's domain does not own, accept_any_host, strict ACME passthrough, no 1xx
to HTTP/1.0, 417, upgrade-insecure-requests, refusals counted and their log lines
rate-limited, /healthz on the metrics listener."""

import signal
import socket
import time
import urllib.error
import urllib.request
import uuid

from harness import GatehouseCase, HTTPClient, curl, free_port, http_get, recv_until_close
from test_metrics import scrape


def marker():
    """A path no other test sends: finding it in a backend's log means it got through."""
    return "/probe-" + uuid.uuid4().hex


def raw_exchange(port, data, sni=None, timeout=5):
    """Sends `data` (plain, or TLS when sni is given) and reads until the peer closes."""
    if sni:
        c = HTTPClient.tls(port, sni)
        s = c.sock
    else:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.settimeout(timeout)
        s.sendall(data)
        return recv_until_close(s)
    finally:
        s.close()


class TenantSafetyCase(GatehouseCase):
    def scrape(self):
        return scrape(self.metrics_port)

    def refused(self, reason):
        return self.scrape().get(("gatehouse_requests_refused_total", '{reason="%s"}' % reason), 0)


class HostPolicyTests(TenantSafetyCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.A = env.backend("A")
        cls.B = env.backend("B")
        cls.C = env.backend("C")
        cls.ANY = env.backend("ANY")
        cls.CSP = env.backend("CSP")
        env.domain("a.toml", ["a.test"], cls.A)
        env.domain("b.toml", ["b.test", "www.b.test"], cls.B)
        env.domain("c.toml", ["*.c.test"], cls.C)
        env.domain("any.toml", ["any.test"], cls.ANY, accept_any_host=True)
        env.domain("csp.toml", ["csp.test"], cls.CSP, upgrade_insecure_requests=True)
        env.domain("n.toml", ["n.test"], cls.A, redirect_http=False)
        cls.port = env.listener("https")
        cls.http = env.listener("http")
        cls.metrics_port = free_port()
        env.start(metrics={"address": "127.0.0.1:%d" % cls.metrics_port})

    def get(self, sni, host, target, version="HTTP/1.1", headers=()):
        with HTTPClient.tls(self.port, sni) as c:
            c.send(HTTPClient.build("GET", target, [("Host", host), *headers], version=version))
            return c.read_response()

    # -- 1. HTTPS: only the handshake domain's names
    def test_stray_host_is_421_and_never_forwarded(self):
        cases = (("a.test", "nobody.test", self.A), ("a.test", "127.0.0.1:%d" % self.port, self.A),
                 ("a.test", "127.0.0.1", self.A), ("a.test", "[::1]:%d" % self.port, self.A),
                 ("b.test", "evil.example", self.B), ("a.test", "b.test", self.A),
                 ("x.c.test", "c.test", self.C), ("x.c.test", "a.b.c.test", self.C))
        for sni, host, app in cases:
            with self.subTest(sni=sni, host=host):
                path = marker()
                r = self.get(sni, host, path)
                self.assertGatehouseError(r, 421)
                self.assertEqual(r.body, b"421 Misdirected Request\n")
                self.assertHSTS(r)
                self.assertIn("close", r.get("connection", "").lower())
                self.assertFalse(r.has("x-backend-name"))
                self.assertBackendNeverSaw(app, path)

    def test_absolute_form_authority_is_checked_too(self):
        path = marker()
        with HTTPClient.tls(self.port, "a.test") as c:
            c.send(("GET https://nobody.test%s HTTP/1.1\r\nHost: nobody.test\r\n\r\n" % path).encode())
            r = c.read_response()
        self.assertGatehouseError(r, 421)
        self.assertBackendNeverSaw(self.A, path)
        with HTTPClient.tls(self.port, "a.test") as c:
            c.send(("GET https://a.test%s HTTP/1.1\r\nHost: a.test\r\n\r\n" % path).encode())
            r = c.read_response()
        self.assertEqual((r.status, r.get("x-backend-name")), (200, "A"))

    def test_curl_with_a_foreign_host_header(self):
        # The reproduction, as a new user would type it.
        path = marker()
        r = curl("https://a.test:%d%s" % (self.port, path), resolve=("a.test", self.port),
                 args=["-H", "Host: evil.example"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.status, 421)
        self.assertBackendNeverSaw(self.A, path)

    def test_own_names_still_forwarded(self):
        for sni, host, name in (("a.test", "a.test", "A"), ("a.test", "A.TEST.", "A"), ("a.test", "a.test:443", "A"),
                                ("b.test", "www.b.test", "B"), ("x.c.test", "y.c.test", "C")):
            with self.subTest(sni=sni, host=host):
                r = self.get(sni, host, "/echo")
                self.assertEqual(r.status, 200, r.summary())
                self.assertEqual(r.get("x-backend-name"), name)

    def test_http10_without_host_goes_to_the_handshake_domain(self):
        # No Host means no stray name to poison: upstream it names the domain.
        with HTTPClient.tls(self.port, "b.test") as c:
            c.send(b"GET /echo HTTP/1.0\r\n\r\n")
            r = c.read_response()
        self.assertEqual(r.status, 200, r.summary())
        hosts = [v for k, v in r.json()["headers"] if k.lower() == "host"]
        self.assertEqual(hosts, ["b.test"])

    # -- 2. accept_any_host
    def test_accept_any_host_takes_unclaimed_names_only(self):
        r = self.get("any.test", "nobody.test", "/echo")
        self.assertEqual((r.status, r.get("x-backend-name")), (200, "ANY"), r.summary())
        self.assertIn(["Host", "nobody.test"], r.json()["headers"])
        r = self.get("any.test", "127.0.0.1", "/echo")
        self.assertEqual(r.status, 200, r.summary())
        # Another customer's name stays misdirected even here.
        path = marker()
        r = self.get("any.test", "a.test", path)
        self.assertGatehouseError(r, 421)
        self.assertBackendNeverSaw(self.ANY, path)
        self.assertBackendNeverSaw(self.A, path)

    # -- 4. ACME passthrough only for a token
    def test_acme_token_passes_through(self):
        for token in ("tok", "Ab-_09xyzXYZ", "A" * 86):
            with self.subTest(token=token):
                r = http_get(self.http, "a.test", "/.well-known/acme-challenge/" + token)
                self.assertEqual((r.status, r.body), (200, ("acme:" + token).encode()), r.summary())
                self.assertEqual(r.get("x-backend-name"), "A")

    def test_acme_lookalikes_are_ordinary_paths(self):
        before = self.refused("acme_path")
        bad = ("../admin", "%2e%2e/admin", "%2E%2E", "tok/extra", "tok.en", ".", "..", "tok?x=1", "",
               "tok%41", "./tok", "t~k")
        for tail in bad:
            target = "/.well-known/acme-challenge/" + tail
            with self.subTest(target=target):
                r = http_get(self.http, "a.test", target)
                self.assertEqual(r.status, 301, r.summary())
                self.assertEqual(r.get("location"), "https://a.test" + target)
                r = http_get(self.http, "n.test", target)   # redirect_http = false: 404, still not proxied
                self.assertGatehouseError(r, 404)
        acme_lines = [l["line"] for l in self.A.request_log()["requests"] if "acme-challenge" in l["line"]]
        for line in acme_lines:
            self.assertRegex(line, r"^GET /\.well-known/acme-challenge/[A-Za-z0-9_-]+ HTTP/1\.1$")
        self.assertEqual(self.refused("acme_path") - before, 2 * len(bad))

    def test_port80_unknown_host_is_still_404(self):
        r = http_get(self.http, "nobody.test", "/x")
        self.assertGatehouseError(r, 404)
        self.assertNoHSTS(r)

    # -- 5. HTTP/1.0 and Expect
    def test_no_interim_response_for_http10(self):
        with HTTPClient.tls(self.port, "a.test") as c:
            c.send(HTTPClient.build("GET", "/early-hints", [("Host", "a.test")]))
            first = c.read_response(skip_interim=False)
            self.assertEqual(first.status, 103)
            self.assertEqual(first.get("link"), "</style.css>; rel=preload; as=style")
            self.assertEqual(c.read_response().body, b"hinted\n")
        data = raw_exchange(self.port, b"GET /early-hints HTTP/1.0\r\nHost: a.test\r\n\r\n", sni="a.test")
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:200])
        self.assertNotIn(b" 103 ", data)
        self.assertTrue(data.endswith(b"hinted\n"), data[-100:])

    def test_http10_expect_continue_gets_no_100(self):
        body = b"x" * 1000
        data = raw_exchange(self.port, b"POST /echo HTTP/1.0\r\nHost: a.test\r\nExpect: 100-continue\r\n"
                            b"Content-Length: 1000\r\n\r\n" + body, sni="a.test")
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:200])
        self.assertNotIn(b"100 Continue", data)
        self.assertIn(b'"body_len": 1000', data)

    def test_unknown_expectation_is_417(self):
        before = self.refused("expectation")
        for version in ("HTTP/1.1", "HTTP/1.0"):
            for value in ("something-else", "100-continue, foo", "100-continue;x=1"):
                with self.subTest(version=version, value=value):
                    path = marker()
                    r = self.get("a.test", "a.test", path, version=version, headers=[("Expect", value)])
                    self.assertGatehouseError(r, 417)
                    self.assertHSTS(r)
                    self.assertBackendNeverSaw(self.A, path)
        self.assertEqual(self.refused("expectation") - before, 6)
        r = self.get("a.test", "a.test", "/echo", headers=[("Expect", "100-Continue")])
        self.assertEqual(r.status, 200, r.summary())

    # -- 6. upgrade-insecure-requests
    def test_upgrade_insecure_requests_is_a_field_of_its_own(self):
        r = self.get("csp.test", "csp.test", "/csp")
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(sorted(r.all("content-security-policy")), ["default-src 'self'", "upgrade-insecure-requests"])
        r = self.get("csp.test", "csp.test", "/echo")
        self.assertEqual(r.all("content-security-policy"), ["upgrade-insecure-requests"])
        # Gatehouse's own answers on that domain's connection carry it too.
        r = self.get("csp.test", "a.test", "/echo")
        self.assertGatehouseError(r, 421)
        self.assertEqual(r.all("content-security-policy"), ["upgrade-insecure-requests"])
        # Never on plain HTTP, never for another domain.
        r = http_get(self.http, "csp.test", "/x")
        self.assertEqual(r.status, 301)
        self.assertEqual(r.all("content-security-policy"), [])
        r = self.get("a.test", "a.test", "/echo")
        self.assertEqual(r.all("content-security-policy"), [])

    # -- 8. refusals counted, log lines rate-limited
    def test_refusals_are_counted_and_logged_at_most_once_per_second(self):
        time.sleep(1.1)   # no line of an earlier test in this window
        log_before = self.env.gatehouse.stderr().count("unknown_host:")
        before = self.refused("unknown_host")
        t0 = time.monotonic()
        with HTTPClient.plain(self.http) as c:
            for i in range(200):
                r = c.request("GET", "/scan%d" % i, [("Host", "scan%d.test" % i)])
                self.assertEqual(r.status, 404)
        elapsed = time.monotonic() - t0
        time.sleep(0.2)
        self.assertEqual(self.refused("unknown_host") - before, 200)
        lines = self.env.gatehouse.stderr().count("unknown_host:") - log_before
        self.assertGreaterEqual(lines, 1)
        self.assertLessEqual(lines, int(elapsed) + 1, "200 refusals in %.2f s logged %d lines" % (elapsed, lines))
        misdirected = self.refused("misdirected")
        self.get("a.test", "nobody.test", "/")
        self.assertEqual(self.refused("misdirected") - misdirected, 1)


class DefaultDomainHostTests(TenantSafetyCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.A = env.backend("A")
        cls.B = env.backend("B")
        env.domain("a.toml", ["a.test"], cls.A)
        env.domain("b.toml", ["b.test"], cls.B)
        cls.port = env.listener("https")
        env.start(tls={"default_domain": "b.test"})

    def test_unknown_sni_and_unknown_host_is_421(self):
        for sni in (None, "unknown.test"):
            with self.subTest(sni=sni):
                path = marker()
                with HTTPClient.tls(self.port, sni, check_hostname=False) as c:
                    r = c.request("GET", path, [("Host", "unknown.test")])
                self.assertGatehouseError(r, 421)
                self.assertBackendNeverSaw(self.B, path)
                with HTTPClient.tls(self.port, sni, check_hostname=False) as c:
                    r = c.request("GET", "/echo", [("Host", "b.test")])
                self.assertEqual((r.status, r.get("x-backend-name")), (200, "B"))


class HealthTests(GatehouseCase):
    """/healthz: 200 while serving, 503 from SIGTERM on while connections drain."""

    @classmethod
    def setUpEnv(cls, env):
        cls.app = env.backend("A")
        env.domain("a.toml", ["a.test"], cls.app)
        cls.port = env.listener("https")   # started per test, with its own metrics port

    def start(self, drain):
        self.metrics_port = free_port()
        self.env.start(timeouts={"drain": drain}, metrics={"address": "127.0.0.1:%d" % self.metrics_port})
        self.addCleanup(self.env.gatehouse.stop)
        return self.env.gatehouse

    def health(self, method="GET"):
        req = urllib.request.Request("http://127.0.0.1:%d/healthz" % self.metrics_port, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def test_healthz_turns_503_when_draining(self):
        g = self.start(drain=10)
        self.assertEqual(self.health(), (200, b"ok\n"))
        self.assertEqual(self.health("HEAD"), (200, b""))
        c = HTTPClient.tls(self.port, "a.test")
        c.send(HTTPClient.build("GET", "/sleep/1500", [("Host", "a.test")]))
        time.sleep(0.2)
        g.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        self.assertEqual(self.health(), (503, b"draining\n"))
        self.assertTrue(g.alive())
        r = c.read_response()     # the request in flight still gets its answer
        self.assertEqual(r.status, 200, r.summary())
        self.assertIn("close", r.get("connection", "").lower())
        c.close()
        g.proc.wait(5)
        self.assertEqual(g.proc.returncode, 0, g.output())

    def test_second_sigterm_exits_at_once(self):
        g = self.start(drain=30)
        c = HTTPClient.tls(self.port, "a.test")
        c.send(HTTPClient.build("GET", "/sleep/20000", [("Host", "a.test")]))
        time.sleep(0.2)
        g.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        self.assertTrue(g.alive(), "the first SIGTERM drains")
        t0 = time.monotonic()
        g.proc.send_signal(signal.SIGTERM)
        g.proc.wait(5)
        self.assertLess(time.monotonic() - t0, 2)
        self.assertIn("second signal", g.stderr())
        c.close()
