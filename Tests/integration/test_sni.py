"""Certificate and backend selection by SNI and Host; 421; unknown names; default_domain."""

import re
import ssl

from harness import (GatehouseCase, HTTPClient, curl, peer_info, s_client, s_client_handshake_ok,
                     tls_connect)


class SNIRoutingTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        env.domain("b.toml", ["b.test", "www.b.test"], env.backend("B"))
        env.domain("c.toml", ["*.c.test"], env.backend("C"))
        cls.port = env.listener("https")
        env.start()

    def handshake(self, sni, **kw):
        s = tls_connect(self.port, sni, **kw)
        try:
            return peer_info(s)
        finally:
            s.close()

    def request(self, sni, host, target="/echo", **kw):
        with HTTPClient.tls(self.port, sni, **kw) as c:
            return c.request("GET", target, [("Host", host)])

    def test_each_domain_gets_its_certificate_and_backend(self):
        for sni, backend in (("a.test", "A"), ("b.test", "B"), ("www.b.test", "B")):
            with self.subTest(sni=sni):
                info = self.handshake(sni)   # verifies chain + hostname against the test CA
                self.assertIn(sni, info["san"])
                r = self.request(sni, sni)
                self.assertEqual(r.status, 200, r.summary())
                self.assertEqual(r.get("x-backend-name"), backend)
        self.assertNotIn("b.test", self.handshake("a.test")["san"])
        self.assertNotIn("a.test", self.handshake("b.test")["san"])

    def test_wildcard(self):
        for name in ("x.c.test", "other-1.c.test"):
            with self.subTest(name=name):
                info = self.handshake(name)
                self.assertEqual(info["san"], ["*.c.test"])
                r = self.request(name, name)
                self.assertEqual(r.get("x-backend-name"), "C")

    def test_wildcard_covers_one_label_only(self):
        for name in ("c.test", "a.b.c.test"):
            with self.subTest(name=name):
                with self.assertRaises((ssl.SSLError, OSError)):
                    self.handshake(name, check_hostname=False)

    def test_case_insensitive_sni_and_host(self):
        # openssl sends the server name exactly as given.
        rc, out = s_client(self.port, "A.TeSt", ["-CAfile", self.env.ca.ca_pem])
        self.assertTrue(s_client_handshake_ok(rc, out), out)
        self.assertRegex(out, r"subject=\s*CN\s*=\s*a\.test")
        # Python: an upper-case SNI (hostname check off, chain still verified)
        s = tls_connect(self.port, "B.TEST", check_hostname=False)
        with HTTPClient(s) as c:
            self.assertIn("b.test", peer_info(s)["san"])
            r = c.request("GET", "/echo", [("Host", "B.Test")])
            self.assertEqual(r.status, 200, r.summary())
            self.assertEqual(r.get("x-backend-name"), "B")

    def test_trailing_dot_host(self):
        r = self.request("a.test", "a.test.")
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(r.get("x-backend-name"), "A")
        r = self.request("x.c.test", "X.C.Test.")
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(r.get("x-backend-name"), "C")

    def test_host_with_port(self):
        r = self.request("a.test", "a.test:%d" % self.port)
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(r.get("x-backend-name"), "A")

    def test_host_of_another_domain_is_421(self):
        for sni, host in (("a.test", "b.test"), ("b.test", "x.c.test"), ("x.c.test", "a.test")):
            with self.subTest(sni=sni, host=host):
                r = self.request(sni, host)
                self.assertGatehouseError(r, 421)
                self.assertEqual(r.body, b"421 Misdirected Request\n")
                self.assertHSTS(r)
                self.assertFalse(r.has("x-backend-name"), "a 421 must not reach a backend")

    def test_421_with_curl(self):
        r = curl("https://a.test:%d/echo" % self.port, resolve=("a.test", self.port),
                 args=["-H", "Host: b.test"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.status, 421)

    def test_unknown_host_is_misdirected(self):
        # An IP or a name no domain claims is not one of the handshake domain's
        # names: 421, so an app never builds links from a Host it did not configure.
        for sni, host in (("a.test", "127.0.0.1:%d" % self.port), ("b.test", "nobody.test")):
            with self.subTest(host=host):
                r = self.request(sni, host)
                self.assertGatehouseError(r, 421)
                self.assertFalse(r.has("x-backend-name"))

    def test_other_name_of_same_domain_is_fine(self):
        r = self.request("b.test", "www.b.test")
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(r.get("x-backend-name"), "B")

    def test_unknown_sni_refused_without_default_domain(self):
        for sni in ("unknown.test", None):
            with self.subTest(sni=sni):
                with self.assertRaises((ssl.SSLError, OSError)):
                    self.handshake(sni, check_hostname=False)
        rc, out = s_client(self.port, "unknown.test")
        self.assertFalse(s_client_handshake_ok(rc, out), out)

    def test_curl_end_to_end(self):
        for name, backend in (("a.test", "A"), ("b.test", "B"), ("q.c.test", "C")):
            with self.subTest(name=name):
                r = curl("https://%s:%d/" % (name, self.port), resolve=(name, self.port))
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.get("x-backend-name"), backend)
                # "/" echoes the request head as the backend received it
                self.assertTrue(r.body.startswith(b"GET / HTTP/1.1\r\n"), r.body[:200])
                self.assertRegex(r.body.decode("latin-1"), r"(?im)^host: %s:%d\r$" % (re.escape(name), self.port))


class DefaultDomainTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        env.domain("b.toml", ["b.test"], env.backend("B"))
        cls.port = env.listener("https")
        env.start(tls={"default_domain": "b.test"})

    def test_unknown_sni_gets_default_certificate(self):
        s = tls_connect(self.port, "unknown.test", check_hostname=False)
        try:
            self.assertIn("b.test", peer_info(s)["san"])
        finally:
            s.close()

    def test_no_sni_gets_default_certificate(self):
        s = tls_connect(self.port, None)
        try:
            self.assertIn("b.test", peer_info(s)["san"])
            with HTTPClient(s) as c:
                r = c.request("GET", "/echo", [("Host", "b.test")])
            self.assertEqual(r.status, 200, r.summary())
            self.assertEqual(r.get("x-backend-name"), "B")
        finally:
            s.close()

    def test_known_sni_still_selects_its_certificate(self):
        s = tls_connect(self.port, "a.test")
        try:
            self.assertIn("a.test", peer_info(s)["san"])
        finally:
            s.close()

    def test_default_domain_does_not_bypass_421(self):
        # A client without SNI lands on b.test's entry; asking for a.test is misdirected.
        with HTTPClient.tls(self.port, None) as c:
            r = c.request("GET", "/echo", [("Host", "a.test")])
        self.assertGatehouseError(r, 421)
