"""Client keep-alive, pipelining, and backend connection pooling (X-Backend-Conn)."""

import threading
import time

from harness import GatehouseCase, HTTPClient, pattern_bytes, random_bytes, sha256


class KeepAliveTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.app = env.backend("A")
        env.domain("a.toml", ["a.test"], cls.app)
        # Pools are per backend: each pooling test gets a backend no other test touches,
        # so an idle pool of exactly one connection makes reuse observable.
        env.domain("p1.toml", ["p1.test"], env.backend("P1"))
        env.domain("p2.toml", ["p2.test"], env.backend("P2"))
        cls.port = env.listener("https")
        env.start(workers=1)  # one worker: one backend pool, so reuse is deterministic

    def get(self, c, target="/echo", host="a.test"):
        r = c.request("GET", target, [("Host", host)])
        self.assertEqual(r.status, 200, r.summary())
        return r

    def test_many_requests_one_client_connection(self):
        with HTTPClient.tls(self.port, "p1.test") as c:
            conns = []
            for i in range(8):
                r = self.get(c, "/bytes/%d" % (100 + i), host="p1.test")
                self.assertEqual(r.body, pattern_bytes(100 + i))
                conns.append(r.get("x-backend-conn"))
            # mixed bodies on the same connection
            body = random_bytes(70000, seed=3)
            r = c.request("POST", "/echo", [("Host", "p1.test")], body=body)
            self.assertEqual(r.json()["body_sha256"], sha256(body))
            conns.append(r.get("x-backend-conn"))
            r = c.request("POST", "/echo", [("Host", "p1.test")], body=body, chunked=[1000, 7])
            self.assertEqual(r.json()["body_sha256"], sha256(body))
            conns.append(r.get("x-backend-conn"))
            r = self.get(c, "/chunked/5000", host="p1.test")
            self.assertEqual(r.body, pattern_bytes(5000))
            conns.append(r.get("x-backend-conn"))
        self.assertEqual(len(set(conns)), 1, "sequential requests should reuse one pooled backend "
                                             "connection, got X-Backend-Conn %r" % conns)

    def test_backend_connection_reused_across_client_connections(self):
        seen = []
        for _ in range(3):
            with HTTPClient.tls(self.port, "p2.test") as c:
                r = self.get(c, host="p2.test")
                seen.append(r.get("x-backend-conn"))
            time.sleep(0.1)  # let the previous exchange settle back into the pool
        self.assertEqual(len(set(seen)), 1, "backend connection not reused across client "
                                            "connections: X-Backend-Conn %r" % seen)
        # and the backend counts requests on that one connection
        self.assertGreater(int(r.get("x-backend-req")), 1)

    def test_pipelined_requests_answered_in_order(self):
        reqs = b"".join(HTTPClient.build("GET", t, [("Host", "a.test")])
                        for t in ("/bytes/10", "/chunked/20", "/echo?n=3", "/bytes/0"))
        reqs += HTTPClient.build("POST", "/echo?n=5", [("Host", "a.test")], body=b"x" * 1000)
        with HTTPClient.tls(self.port, "a.test") as c:
            c.send(reqs)
            r1, r2, r3, r4, r5 = (c.read_response() for _ in range(5))
            self.assertEqual(r1.body, pattern_bytes(10))
            self.assertEqual(r2.body, pattern_bytes(20))
            self.assertEqual(r3.json()["target"], "/echo?n=3")
            self.assertEqual((r4.status, r4.body), (200, b""))
            self.assertEqual(r5.json()["target"], "/echo?n=5")
            self.assertEqual(r5.json()["body_len"], 1000)
            # still open and usable
            self.assertEqual(self.get(c, "/bytes/1").body, pattern_bytes(1))

    def test_connection_close_honoured(self):
        with HTTPClient.tls(self.port, "a.test") as c:
            r = c.request("GET", "/echo", [("Host", "a.test"), ("Connection", "close")])
            self.assertEqual(r.status, 200)
            self.assertTrue(any("close" in v.lower() for v in r.all("connection")),
                            "response to Connection: close should say close: %r" % r.headers)
            self.assertTrue(c.closed_by_peer(), "Gatehouse kept the connection open after close")

    def test_http10_client(self):
        with HTTPClient.tls(self.port, "a.test") as c:
            c.send(b"GET /echo HTTP/1.0\r\nHost: a.test\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200, r.summary())
            self.assertEqual(r.json()["target"], "/echo")
            self.assertTrue(c.closed_by_peer(), "HTTP/1.0 without keep-alive: connection must close")

    def test_parallel_clients(self):
        errors = []

        def worker(k):
            try:
                with HTTPClient.tls(self.port, "a.test") as c:
                    for i in range(5):
                        n = 1000 * k + i
                        r = c.request("GET", "/bytes/%d" % n, [("Host", "a.test")])
                        if r.body != pattern_bytes(n):
                            errors.append("client %d request %d: wrong body" % (k, i))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("client %d: %r" % (k, e))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
