"""Header rewriting in both directions: X-Forwarded-*, hop-by-hop fields, HSTS."""

import json

from harness import GatehouseCase, HTTPClient, curl, https_get

HSTS_A = "max-age=600; includeSubDomains"
HSTS_DEFAULT = "max-age=31536000"
HSTS_PRELOAD = "max-age=63072000; includeSubDomains; preload"


def backend_headers(resp):
    """The request fields the backend saw, from /echo: [(lower name, value)]."""
    return [(k.lower(), v) for k, v in resp.json()["headers"]]


def values(headers, name):
    return [v for k, v in headers if k == name]


class RequestHeaderTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        app = env.backend("A")
        env.domain("a.toml", ["a.test"], app, hsts_max_age=600, hsts_include_subdomains=True)
        cls.port = env.listener("https")
        env.start()

    def echo(self, headers, host="a.test", target="/echo"):
        with HTTPClient.tls(self.port, "a.test") as c:
            r = c.request("GET", target, [("Host", host)] + list(headers))
        self.assertEqual(r.status, 200, r.summary())
        return backend_headers(r), r

    def test_host_preserved(self):
        seen, _ = self.echo([])
        self.assertEqual(values(seen, "host"), ["a.test"])
        port_host = "a.test:%d" % self.port
        seen, _ = self.echo([], host=port_host)
        self.assertEqual(values(seen, "host"), [port_host])

    def test_forwarded_headers_added(self):
        seen, _ = self.echo([])
        self.assertEqual(values(seen, "x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(values(seen, "x-forwarded-proto"), ["https"])
        self.assertEqual(values(seen, "x-forwarded-host"), ["a.test"])

    def test_client_forwarded_headers_replaced(self):
        seen, _ = self.echo([("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "7.7.7.7, 8.8.8.8"),
                             ("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", "evil.example")])
        self.assertEqual(values(seen, "x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(values(seen, "x-forwarded-proto"), ["https"])
        self.assertEqual(values(seen, "x-forwarded-host"), ["a.test"])

    def test_hop_by_hop_removed(self):
        seen, _ = self.echo([
            ("Connection", "X-Foo, X-Forwarded-For"),
            ("X-Foo", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "websocket"),
            ("Proxy-Connection", "keep-alive"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Kept", "yes"),
        ])
        names = {k for k, _ in seen}
        for gone in ("x-foo", "keep-alive", "te", "upgrade", "connection", "proxy-connection"):
            self.assertNotIn(gone, names, "backend saw hop-by-hop field %s: %r" % (gone, seen))
        # Connection naming X-Forwarded-For must not strip Gatehouse's own.
        self.assertEqual(values(seen, "x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(values(seen, "x-kept"), ["yes"])

    def test_end_to_end_fields_kept_in_order(self):
        seen, _ = self.echo([("X-Multi", "1"), ("Accept", "*/*"), ("X-Multi", "2"),
                             ("Cookie", "a=b"), ("User-Agent", "it/1")])
        self.assertEqual(values(seen, "x-multi"), ["1", "2"])
        self.assertEqual(values(seen, "cookie"), ["a=b"])
        self.assertEqual(values(seen, "user-agent"), ["it/1"])

    def test_target_preserved(self):
        with HTTPClient.tls(self.port, "a.test") as c:
            target = "/echo?x=1&y=%20&z=%2F..%2F"
            r = c.request("GET", target, [("Host", "a.test")])
        self.assertEqual(r.json()["target"], target)
        self.assertEqual(r.json()["method"], "GET")

    def test_curl_sees_forwarded_headers(self):
        r = curl("https://a.test:%d/echo" % self.port, resolve=("a.test", self.port),
                 args=["-H", "X-Forwarded-For: 1.2.3.4"])
        self.assertEqual(r.returncode, 0, r.stderr)
        seen = [(k.lower(), v) for k, v in json.loads(r.body)["headers"]]
        self.assertEqual(values(seen, "x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(values(seen, "host"), ["a.test:%d" % self.port])


class ResponseHeaderTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        app = env.backend("A")
        env.domain("a.toml", ["a.test"], app, hsts_max_age=600, hsts_include_subdomains=True)
        env.domain("b.toml", ["b.test"], app)
        env.domain("p.toml", ["p.test"], app, hsts_max_age=63072000, hsts_include_subdomains=True,
                   hsts_preload=True)
        env.domain("n.toml", ["n.test"], app, hsts_max_age=0)
        cls.port = env.listener("https")
        env.start()

    def test_hop_response_fields_stripped(self):
        r = https_get(self.port, "a.test", "/hop")
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(r.body, b"hop\n")
        self.assertEqual(r.all("x-secret"), [], "field named in the backend's Connection leaked")
        self.assertEqual(r.all("keep-alive"), [])
        for v in r.all("connection"):
            self.assertNotIn("x-secret", v.lower())
        self.assertHSTS(r, HSTS_A)
        # the ordinary end-to-end fields still arrive
        self.assertEqual(r.get("x-backend-name"), "A")

    def test_hsts_values(self):
        for host, want in (("a.test", HSTS_A), ("b.test", HSTS_DEFAULT), ("p.test", HSTS_PRELOAD)):
            with self.subTest(host=host):
                r = https_get(self.port, host, "/echo")
                self.assertEqual(r.status, 200)
                self.assertHSTS(r, want)
                r = https_get(self.port, host, "/hop")  # the backend's own HSTS is replaced
                self.assertHSTS(r, want)

    def test_hsts_zero_disables(self):
        r = https_get(self.port, "n.test", "/echo")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.all("strict-transport-security"), [],
                         "hsts_max_age = 0: Gatehouse adds no HSTS")
        # With Gatehouse's HSTS off, the application's own header is its business.
        r = https_get(self.port, "n.test", "/hop")
        self.assertEqual(r.all("strict-transport-security"), ["max-age=1"])

    def test_hsts_on_every_response_of_a_connection(self):
        with HTTPClient.tls(self.port, "b.test") as c:
            for target in ("/echo", "/status/404", "/status/500", "/status/204", "/bytes/3"):
                with self.subTest(target=target):
                    r = c.request("GET", target, [("Host", "b.test")])
                    self.assertHSTS(r, HSTS_DEFAULT)
