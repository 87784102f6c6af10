"""The Prometheus endpoint ([metrics] address): scraped with a real HTTP client
and parsed; handshakes by version, failures by reason, responses by class."""

import re
import socket
import time
import urllib.request

from harness import GatehouseCase, HTTPClient, free_port, https_get, s_client

LEGACY = ["-cipher", "DEFAULT@SECLEVEL=0"]


def scrape(port):
    """The metrics endpoint's samples, parsed and checked by parse_prometheus."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        return parse_prometheus(r.read().decode())


def parse_prometheus(text):
    """{(name, labels): value}; checks every sample line is well-formed and typed."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = re.fullmatch(r'([a-z_][a-z0-9_]*)(\{[^}]*\})? (\d+(?:\.\d+)?(?:e-?\d+)?)', line)
        assert m, "malformed sample line %r" % line
        family = re.sub(r"_(bucket|sum|count)$", "", m.group(1)) if m.group(1) not in types else m.group(1)
        assert family in types, "sample %r without # TYPE" % line
        samples[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return samples


class MetricsTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        app = env.backend("A")
        env.domain("modern.toml", ["modern.test"], app)
        env.domain("legacy.toml", ["legacy.test"], app, tls_profile="legacy")
        cls.port = env.listener("https")
        cls.metrics_port = free_port()
        env.start(workers=2, metrics={"address": "127.0.0.1:%d" % cls.metrics_port})

    def scrape(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=5) as r:
            self.assertEqual(r.status, 200)
            self.assertTrue(r.headers["Content-Type"].startswith("text/plain; version=0.0.4"))
            return parse_prometheus(r.read().decode())

    def delta(self, before, after, name, labels=""):
        return after.get((name, labels), 0) - before.get((name, labels), 0)

    def settled(self):
        """A scrape once nothing is in flight: the harness's readiness probes
        (TCP connect + close) may still be on their way through a worker."""
        last = None
        for _ in range(50):
            m = self.scrape()
            key = m.get(("gatehouse_connections_accepted_total", ""))
            if m.get(("gatehouse_connections_open", "")) == 0 and key == last:
                return m
            last = key
            time.sleep(0.05)
        return m

    def test_handshakes_failures_and_responses_are_counted(self):
        before = self.settled()
        # Completed handshakes: TLS 1.3 and 1.2 on modern, TLS 1.0 on legacy.
        self.assertEqual(https_get(self.port, "modern.test", "/echo").status, 200)
        self.assertEqual(s_client(self.port, "modern.test", ["-tls1_2"])[0], 0)
        self.assertEqual(s_client(self.port, "legacy.test", ["-tls1"] + LEGACY)[0], 0)
        # Failures, one of each reason.
        self.assertNotEqual(s_client(self.port, "modern.test", ["-tls1"] + LEGACY)[0], 0)
        self.assertNotEqual(s_client(self.port, "modern.test", ["-tls1_2", "-cipher", "AES128-SHA"])[0], 0)
        self.assertNotEqual(s_client(self.port, "unknown.test")[0], 0)
        self.assertNotEqual(s_client(self.port, "legacy.test", ["-tls1_1", "-fallback_scsv"] + LEGACY)[0], 0)
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")   # plain HTTP on the TLS port
            s.settimeout(5)
            try:
                s.recv(100)
            except ConnectionResetError:
                pass
        with socket.create_connection(("127.0.0.1", self.port)):
            pass                                               # connect and leave
        # Responses: a 404 from the backend and Gatehouse's own 421.
        with HTTPClient.tls(self.port, "modern.test") as c:
            self.assertEqual(c.request("GET", "/status/404", [("Host", "modern.test")]).status, 404)
            self.assertEqual(c.request("GET", "/", [("Host", "legacy.test")]).status, 421)
        time.sleep(0.3)
        after = self.scrape()

        d = lambda name, labels="": self.delta(before, after, name, labels)
        self.assertGreaterEqual(d("gatehouse_tls_handshakes_total", '{version="TLSv1.3"}'), 2)
        self.assertEqual(d("gatehouse_tls_handshakes_total", '{version="TLSv1.2"}'), 1)
        self.assertEqual(d("gatehouse_tls_handshakes_total", '{version="TLSv1"}'), 1)
        self.assertEqual(d("gatehouse_tls_handshakes_total", '{version="TLSv1.1"}'), 0)
        for reason in ("protocol_version", "no_shared_cipher", "unrecognized_name", "inappropriate_fallback", "other"):
            with self.subTest(reason=reason):
                self.assertEqual(d("gatehouse_tls_handshake_failures_total", '{reason="%s"}' % reason), 1)
        self.assertEqual(d("gatehouse_tls_handshake_failures_total", '{reason="aborted"}'), 1)
        self.assertGreaterEqual(d("gatehouse_http_responses_total", '{class="2xx"}'), 1)
        self.assertEqual(d("gatehouse_http_responses_total", '{class="4xx"}'), 2)
        self.assertEqual(d("gatehouse_connections_accepted_total"), 10)
        dom = lambda name, version: d("gatehouse_domain_tls_handshakes_total", '{domain="%s",version="%s"}' % (name, version))
        self.assertEqual(dom("legacy.test", "TLSv1"), 1)
        self.assertEqual(dom("modern.test", "TLSv1.2"), 1)
        self.assertGreaterEqual(dom("modern.test", "TLSv1.3"), 2)
        self.assertEqual(dom("legacy.test", "TLSv1.2"), 0)
        # backend latency histogram: cumulative buckets, +Inf == _count
        self.assertGreaterEqual(d("gatehouse_backend_response_seconds_count"), 2)
        buckets = sorted((float(k[1][5:-2]) if "+Inf" not in k[1] else float("inf"), v)
                         for k, v in after.items() if k[0] == "gatehouse_backend_response_seconds_bucket")
        self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
        self.assertEqual(buckets[-1][1], after[("gatehouse_backend_response_seconds_count", "")])
        self.assertEqual(after[("gatehouse_domains", "")], 2)
        self.assertEqual(after[("gatehouse_workers", "")], 2)

    def test_open_connections_gauge(self):
        with HTTPClient.tls(self.port, "modern.test") as c1, HTTPClient.tls(self.port, "modern.test") as c2:
            for c in (c1, c2):
                self.assertEqual(c.request("GET", "/echo", [("Host", "modern.test")]).status, 200)
            self.assertGreaterEqual(self.scrape()[("gatehouse_connections_open", "")], 2)
        time.sleep(0.3)
        self.assertEqual(self.scrape()[("gatehouse_connections_open", "")], 0)

    def test_other_paths_and_bad_requests(self):
        for raw, status in ((b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404),
                            (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
                            (b"GET /metrics HTTP/1.1\r\n\r\n", 400)):
            with self.subTest(raw=raw), socket.create_connection(("127.0.0.1", self.metrics_port)) as s:
                s.sendall(raw)
                s.settimeout(5)
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.assertTrue(data.startswith(b"HTTP/1.1 %d " % status), data)


class MetricsAcrossReloadTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.app = env.backend("A")
        env.domain("a.toml", ["a.test"], cls.app)
        cls.port = env.listener("https")
        cls.metrics_port = free_port()
        env.start(metrics={"address": "127.0.0.1:%d" % cls.metrics_port})

    def test_domain_counters_survive_reload(self):
        import signal
        for _ in range(3):
            self.assertEqual(https_get(self.port, "a.test", "/echo").status, 200)
        self.env.domain("b.toml", ["b.test"], self.app)
        self.env.gatehouse.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "reloaded" not in self.env.gatehouse.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(https_get(self.port, "b.test", "/echo").status, 200)
        m = scrape(self.metrics_port)
        self.assertEqual(m[("gatehouse_domain_tls_handshakes_total", '{domain="a.test",version="TLSv1.3"}')], 3)
        self.assertEqual(m[("gatehouse_domain_tls_handshakes_total", '{domain="b.test",version="TLSv1.3"}')], 1)
        self.assertEqual(m[("gatehouse_reloads_total", '{result="success"}')], 1)
        self.assertEqual(m[("gatehouse_domains", "")], 2)
