"""Backend failures (502, 504) and unix-socket backends."""

import time

from harness import GatehouseCase, HTTPClient, free_port, https_get, pattern_bytes, random_bytes, sha256

HSTS = "max-age=31536000"


class BackendTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        env.domain("dead.toml", ["dead.test"], "127.0.0.1:%d" % free_port())   # nothing listens
        env.domain("gone.toml", ["gone.test"], "unix:" + env.dir + "/nothing.sock")
        env.domain("slow.toml", ["slow.test"], env.backend("S"))
        cls.unix_app = env.backend("U", unix=True)
        env.domain("unix.toml", ["unix.test"], cls.unix_app)
        cls.port = env.listener("https")
        env.start(timeouts={"backend_response": 1, "backend_connect": 2})

    def test_backend_down_502_quickly(self):
        for host in ("dead.test", "gone.test"):
            with self.subTest(host=host):
                t0 = time.monotonic()
                r = https_get(self.port, host, "/echo")
                elapsed = time.monotonic() - t0
                self.assertGatehouseError(r, 502)
                self.assertEqual(r.body, b"502 Bad Gateway\n")
                self.assertHSTS(r, HSTS)
                self.assertLess(elapsed, 1.5, "refused connection should fail fast")
        # A refused connect is logged as one, not as a backend that hung up.
        log = self.env.gatehouse.stderr()
        self.assertIn("cannot connect to backend 127.0.0.1:", log)
        self.assertNotIn("closed the connection before responding", log)

    def test_client_connection_survives_502(self):
        with HTTPClient.tls(self.port, "dead.test") as c:
            r = c.request("GET", "/", [("Host", "dead.test")])
            self.assertEqual(r.status, 502)
            if not any("close" in v.lower() for v in r.all("connection")):
                r = c.request("GET", "/", [("Host", "dead.test")])
                self.assertEqual(r.status, 502)

    def test_backend_slow_504(self):
        t0 = time.monotonic()
        r = https_get(self.port, "slow.test", "/sleep/3000")
        elapsed = time.monotonic() - t0
        self.assertGatehouseError(r, 504)
        self.assertEqual(r.body, b"504 Gateway Timeout\n")
        self.assertHSTS(r, HSTS)
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 2.5)

    def test_backend_fast_enough_is_fine(self):
        r = https_get(self.port, "slow.test", "/sleep/200")
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(r.body, b"slept 200 ms\n")

    def test_after_504_backend_still_usable(self):
        https_get(self.port, "slow.test", "/sleep/1500")
        r = https_get(self.port, "slow.test", "/bytes/5")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, pattern_bytes(5))

    def test_unix_backend(self):
        with HTTPClient.tls(self.port, "unix.test") as c:
            r = c.request("GET", "/echo", [("Host", "unix.test")])
            self.assertEqual(r.status, 200, r.summary())
            self.assertEqual(r.get("x-backend-name"), "U")
            seen = {k.lower(): v for k, v in r.json()["headers"]}
            self.assertEqual(seen.get("x-forwarded-for"), "127.0.0.1")
            self.assertEqual(seen.get("x-forwarded-proto"), "https")
            self.assertEqual(seen.get("host"), "unix.test")
            first_conn = r.get("x-backend-conn")
            body = random_bytes(300000, seed=9)
            r = c.request("POST", "/echo", [("Host", "unix.test")], body=body)
            self.assertEqual(r.json()["body_sha256"], sha256(body))
            r = c.request("POST", "/echo", [("Host", "unix.test")], body=body, chunked=[4096, 1])
            self.assertEqual(r.json()["body_sha256"], sha256(body))
            r = c.request("GET", "/chunked/100000", [("Host", "unix.test")])
            self.assertEqual(r.body, pattern_bytes(100000))
            self.assertEqual(r.get("x-backend-conn"), first_conn, "unix backend connection not pooled")
            self.assertHSTS(r, HSTS)
