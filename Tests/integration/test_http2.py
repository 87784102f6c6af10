"""HTTP/2 to clients (issue 14): ALPN, streams proxied to the HTTP/1.1 backend under the
same rules as HTTP/1.1 requests, flow control both ways, malformed requests refused
before anything reaches a backend, GOAWAY on drain. Clients: curl --http2, nghttp and
Python's h2 (python3-h2) over ssl."""

import json
import os
import signal
import socket
import ssl
import subprocess
import time
import uuid

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from harness import GatehouseCase, MiB, KiB, SocketClient, ca, client_context, curl, pattern_bytes, sha256, free_port
from h2wire import Wire


def marker():
    return "/probe-" + uuid.uuid4().hex


class H2Client(SocketClient):
    """One TLS connection speaking HTTP/2 through the h2 library. `validate=False`
    lets tests send what a well-behaved client never would."""

    def __init__(self, port, sni, validate=True, alpn=("h2", "http/1.1"), timeout=15, **ctx_args):
        ctx = client_context(**ctx_args)
        ctx.set_alpn_protocols(list(alpn))
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=sni)
        self.alpn = self.sock.selected_alpn_protocol()
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                        validate_outbound_headers=validate, normalize_outbound_headers=validate,
                                        validate_inbound_headers=True)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.flush()
        self.responses = {}
        self.terminated = None
        self.closed = False

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method, path, authority, headers=(), body=None, end_stream=True):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "https"), (":authority", authority), (":path", path)] + list(headers)
        self.conn.send_headers(sid, hdrs, end_stream=body is None and end_stream)
        self.responses[sid] = {"status": None, "headers": [], "body": bytearray(), "ended": False, "reset": None,
                               "interim": []}
        if body is not None:
            self.send_body(sid, body, end_stream=end_stream)
        self.flush()
        return sid

    def send_body(self, sid, body, end_stream=True):
        """Sends as the peer's windows allow, reading meanwhile."""
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.flush()
                self.read_once()
                r = self.responses.get(sid)
                if r and (r["reset"] is not None or r["ended"]):
                    return
                continue
            n = min(window, len(view))
            self.conn.send_data(sid, bytes(view[:n]))
            view = view[n:]
            self.flush()
        if end_stream:
            self.conn.end_stream(sid)
            self.flush()

    def read_once(self):
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return
        for ev in self.conn.receive_data(data):
            self.handle(ev)
        self.flush()

    def handle(self, ev):
        r = self.responses.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived):
            r["headers"] = [(k.decode(), v.decode()) for k, v in ev.headers]
            r["status"] = int(dict(r["headers"])[":status"])
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            r["interim"].append([(k.decode(), v.decode()) for k, v in ev.headers])
        elif isinstance(ev, h2.events.DataReceived):
            r["body"] += ev.data
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            r["ended"] = True
        elif isinstance(ev, h2.events.StreamReset):
            if r is not None:
                r["reset"] = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.terminated = ev

    def wait(self, sids, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(self.responses[s]["ended"] or self.responses[s]["reset"] is not None for s in sids):
                return [self.responses[s] for s in sids]
            if self.closed:
                break
            self.read_once()
        return [self.responses[s] for s in sids]

    def get(self, path, authority, **kw):
        sid = self.request("GET", path, authority, **kw)
        return self.wait([sid])[0]


def header(resp, name):
    return [v for (k, v) in resp["headers"] if k == name]


class ALPNTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.A = env.backend("A")
        env.domain("a.toml", ["a.test"], cls.A)
        env.domain("off.toml", ["off.test"], cls.A, http2=False)
        env.domain("old.toml", ["old.test"], cls.A, tls_profile="legacy")
        cls.port = env.listener("https")
        env.start()

    def alpn(self, sni, **ctx):
        with H2Client(self.port, sni, **ctx) as c:
            return c.alpn

    def test_h2_is_chosen_when_offered(self):
        self.assertEqual(self.alpn("a.test"), "h2")
        self.assertEqual(self.alpn("a.test", alpn=("http/1.1", "h2")), "h2", "the server's preference")
        self.assertEqual(self.alpn("a.test", alpn=("http/1.1",)), "http/1.1")

    def test_http2_false_keeps_a_domain_on_http11(self):
        self.assertEqual(self.alpn("off.test"), "http/1.1")

    def test_legacy_versions_and_non_aead_suites_never_get_h2(self):
        # RFC 9113 §9.2: TLS 1.2 or later, and at 1.2 an AEAD suite with ephemeral keys.
        self.assertEqual(self.alpn("old.test"), "h2", "TLS 1.3 on a legacy domain is fine")
        ctx12 = client_context(max_version=ssl.TLSVersion.TLSv1_2)
        ctx12.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
        ctx12.set_alpn_protocols(["h2", "http/1.1"])
        with ctx12.wrap_socket(socket.create_connection(("127.0.0.1", self.port)), server_hostname="old.test") as s:
            self.assertEqual(s.version(), "TLSv1.2")
            self.assertEqual(s.selected_alpn_protocol(), "h2")
        cbc = client_context(max_version=ssl.TLSVersion.TLSv1_2)
        cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA")
        cbc.set_alpn_protocols(["h2", "http/1.1"])
        with cbc.wrap_socket(socket.create_connection(("127.0.0.1", self.port)), server_hostname="old.test") as s:
            self.assertEqual(s.version(), "TLSv1.2")
            self.assertIn("SHA", s.cipher()[0])
            self.assertEqual(s.selected_alpn_protocol(), "http/1.1", "CBC suite: no h2")

    def test_curl_speaks_http2(self):
        out = subprocess.run(["curl", "-sS", "--http2", "--noproxy", "*", "--cacert", ca().ca_pem,
                              "--resolve", "a.test:%d:127.0.0.1" % self.port, "-o", "/dev/null",
                              "-w", "%{http_version} %{http_code}", "https://a.test:%d/echo" % self.port],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, "2 200")
        r = curl("https://a.test:%d/echo" % self.port, resolve=("a.test", self.port), args=["--http2"])
        self.assertEqual(json.loads(r.body)["version"], "HTTP/1.1", "the backend gets HTTP/1.1")


class StreamTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.A = env.backend("A")
        cls.B = env.backend("B")
        env.domain("a.toml", ["a.test", "www.a.test"], cls.A, max_body_bytes=2 * MiB)
        env.domain("b.toml", ["b.test"], cls.B)
        env.domain("down.toml", ["down.test"], "127.0.0.1:%d" % free_port())
        cls.port = env.listener("https")
        cls.log = os.path.join(env.dir, "access.log")
        cls.metrics_port = free_port()
        env.start(metrics={"address": "127.0.0.1:%d" % cls.metrics_port},
                  extra_sections={"access_log": {"path": cls.log, "format": "json"}})

    def echo(self, resp):
        self.assertEqual(resp["status"], 200, resp)
        return json.loads(bytes(resp["body"]))

    def test_get_reaches_the_backend_as_one_http11_request(self):
        with H2Client(self.port, "a.test") as c:
            r = c.get("/echo?x=1", "a.test", headers=[("user-agent", "h2-test"), ("cookie", "a=1"), ("cookie", "b=2")])
        doc = self.echo(r)
        self.assertEqual(doc["method"], "GET")
        self.assertEqual(doc["target"], "/echo?x=1")
        self.assertEqual(doc["version"], "HTTP/1.1")
        h = [(k.lower(), v) for k, v in doc["headers"]]
        self.assertIn(("host", "a.test"), h)
        self.assertIn(("x-forwarded-proto", "https"), h)
        self.assertIn(("x-forwarded-for", "127.0.0.1"), h)
        self.assertIn(("x-forwarded-host", "a.test"), h)
        self.assertIn(("cookie", "a=1; b=2"), h, "RFC 9113 §8.2.3: crumbs joined")
        self.assertEqual(len(header(r, "strict-transport-security")), 1)
        self.assertEqual(header(r, "content-type"), ["application/json"])

    def test_bodies_both_ways_with_and_without_content_length(self):
        for size in (0, 1, 100 * KiB, 1 * MiB + 7):
            body = pattern_bytes(size)
            with H2Client(self.port, "a.test") as c:
                sid = c.request("POST", "/echo", "a.test", headers=[("content-length", str(size))], body=body)
                with_length = c.wait([sid])[0]
                sid = c.request("POST", "/echo", "a.test", body=body)
                without = c.wait([sid])[0]
            for resp, name in ((with_length, "content-length"), (without, "no content-length")):
                doc = self.echo(resp)
                self.assertEqual(doc["body_len"], size, name)
                self.assertEqual(doc["body_sha256"], sha256(body), name)

    def test_large_download_with_flow_control(self):
        for kind in ("bytes", "chunked"):
            with H2Client(self.port, "a.test") as c:
                r = c.get("/%s/%d" % (kind, 10 * MiB), "a.test")
            self.assertEqual(r["status"], 200)
            self.assertTrue(r["ended"])
            self.assertEqual(len(r["body"]), 10 * MiB, kind)
            self.assertEqual(sha256(bytes(r["body"])), sha256(pattern_bytes(10 * MiB)), kind)

    def test_many_streams_on_one_connection(self):
        with H2Client(self.port, "a.test") as c:
            sids = [c.request("GET", "/bytes/%d" % (1000 + i), "a.test") for i in range(40)]
            got = c.wait(sids, timeout=30)
        for i, r in enumerate(got):
            self.assertEqual(r["status"], 200)
            self.assertEqual(bytes(r["body"]), pattern_bytes(1000 + i))

    def test_authority_of_another_domain_is_421_and_never_forwarded(self):
        path = marker()
        with H2Client(self.port, "a.test") as c:
            r = c.get(path, "b.test")
            r2 = c.get(path, "nobody.test")
            ok = c.get("/echo", "www.a.test")
        self.assertEqual(r["status"], 421)
        self.assertEqual(r2["status"], 421)
        self.assertEqual(len(header(r, "strict-transport-security")), 1)
        self.assertEqual(ok["status"], 200, "the connection goes on")
        self.assertBackendNeverSaw(self.B, path)
        self.assertBackendNeverSaw(self.A, path)

    def test_malformed_requests_are_reset_and_never_forwarded(self):
        path = marker()
        cases = [
            [("connection", "keep-alive")],
            [("transfer-encoding", "chunked")],
            [("te", "gzip")],
            [("Upper", "x")],
            [("host", "b.test")],
            [("x", "a\x00b")],
        ]
        for extra in cases:
            with H2Client(self.port, "a.test", validate=False) as c:
                r = c.get(path, "a.test", headers=extra)
                self.assertEqual(r["reset"], 1, "%r: PROTOCOL_ERROR, got %r" % (extra, r))
        self.assertBackendNeverSaw(self.A, path)

    def test_content_length_that_disagrees_with_data_is_reset(self):
        path = marker()
        with H2Client(self.port, "a.test") as c:
            sid = c.request("POST", path, "a.test", headers=[("content-length", "10")], body=b"0123456789abc")
            r = c.wait([sid])[0]
        self.assertIsNotNone(r["reset"], r)

    def test_plain_connect_is_refused(self):
        with H2Client(self.port, "a.test", validate=False) as c:
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", "a.test:443")], end_stream=True)
            c.responses[sid] = {"status": None, "headers": [], "body": bytearray(), "ended": False, "reset": None,
                                "interim": []}
            c.flush()
            r = c.wait([sid])[0]
        self.assertTrue(r["status"] == 405 or r["reset"] is not None, r)

    def test_body_over_max_body_bytes_is_413(self):
        with H2Client(self.port, "a.test") as c:
            declared = c.get("/echo", "a.test", headers=[("content-length", str(3 * MiB))], end_stream=False)
        self.assertEqual(declared["status"], 413)
        with H2Client(self.port, "a.test") as c:
            sid = c.request("POST", "/echo", "a.test", body=pattern_bytes(3 * MiB))
            streamed = c.wait([sid])[0]
        self.assertTrue(streamed["status"] == 413 or streamed["reset"] is not None, streamed)

    def test_backend_down_is_502(self):
        with H2Client(self.port, "down.test") as c:
            r = c.get("/", "down.test")
        self.assertEqual(r["status"], 502)
        self.assertEqual(len(header(r, "strict-transport-security")), 1)

    def test_metrics_count_requests_by_protocol(self):
        from test_metrics import scrape
        before = scrape(self.metrics_port)
        with H2Client(self.port, "a.test") as c:
            c.wait([c.request("GET", "/echo", "a.test") for _ in range(5)])
            malformed = c.conn.get_next_available_stream_id()
        with H2Client(self.port, "a.test", validate=False) as c:
            c.get("/echo", "a.test", headers=[("connection", "close")])
        after = scrape(self.metrics_port)

        def delta(name, labels=""):
            return after.get((name, labels), 0) - before.get((name, labels), 0)
        self.assertGreaterEqual(delta("gatehouse_http_requests_total", '{protocol="HTTP/2"}'), 5)
        self.assertEqual(delta("gatehouse_http_requests_total", '{protocol="HTTP/1.1"}'), 0)
        self.assertEqual(delta("gatehouse_http2_connections_total"), 2)
        self.assertGreaterEqual(delta("gatehouse_http2_streams_reset_total"), 1)
        self.assertEqual(after.get(("gatehouse_http2_glitch_goaways_total", ""), 0), 0)

    def test_access_log_says_http2_and_the_stream(self):
        path = marker()
        with H2Client(self.port, "a.test") as c:
            c.get(path, "a.test")
        deadline = time.time() + 5
        entry = None
        while time.time() < deadline and entry is None:
            try:
                with open(self.log) as f:
                    for line in f:
                        if path in line:
                            entry = json.loads(line)
            except FileNotFoundError:
                pass
            if entry is None:
                time.sleep(0.2)
        self.assertIsNotNone(entry, "no access log line")
        self.assertEqual(entry["protocol"], "HTTP/2.0")
        self.assertEqual(entry["stream"], 1)
        self.assertEqual(entry["status"], 200)


class DrainTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.A = env.backend("A")
        env.domain("a.toml", ["a.test"], cls.A)
        cls.port = env.listener("https")
        env.start(timeouts={"drain": 20})

    def test_sigterm_sends_goaway_and_finishes_streams_in_flight(self):
        with Wire(self.port, sni="a.test") as c:
            fields = [(":method", "GET"), (":scheme", "https"), (":authority", "a.test")]
            c.headers(1, fields + [(":path", "/sleep/1500")])
            c.headers(3, fields + [(":path", "/sleep/1500")])
            c.read(timeout=0.3)
            self.env.gatehouse.proc.send_signal(signal.SIGTERM)
            c.read(lambda c: c.goaways(), timeout=5)
            self.assertEqual([(last, code) for (last, code, _) in c.goaways()], [(3, 0)],
                             "GOAWAY NO_ERROR names the last stream taken (RFC 9113 §6.8)")
            c.read(lambda c: c.closed, timeout=10)
            for sid in (1, 3):
                self.assertEqual(c.status(sid), 200)
                self.assertEqual(c.body(sid), b"slept 1500 ms\n", "stream %d finishes after GOAWAY" % sid)
                self.assertTrue(c.ended(sid))
            self.assertTrue(c.closed, "the connection ends after its last stream")
        self.env.gatehouse.proc.wait(timeout=10)


class WebSocketTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.A = env.backend("A")
        env.domain("a.toml", ["a.test"], cls.A)
        cls.port = env.listener("https")
        env.start()

    def test_websocket_over_http2_becomes_an_http11_upgrade_and_a_tunnel(self):
        # RFC 8441: extended CONNECT on a stream; the backend sees a GET with Upgrade.
        with Wire(self.port, sni="a.test") as c:
            c.read(lambda c: 8 in c.server_settings(), timeout=5)
            self.assertEqual(c.server_settings().get(8), 1, "SETTINGS_ENABLE_CONNECT_PROTOCOL")
            c.headers(1, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                          (":path", "/ws"), (":authority", "a.test"), ("sec-websocket-version", "13")],
                      end_stream=False)
            c.read(lambda c: c.status(1) is not None, timeout=5)
            self.assertEqual(c.status(1), 200)
            fields = dict(c.response_headers(1))
            self.assertNotIn("sec-websocket-accept", fields)
            self.assertNotIn("upgrade", fields)
            c.data(1, b"hello over h2", end_stream=False)
            c.read(lambda c: c.body(1) == b"hello over h2", timeout=5)
            self.assertEqual(c.body(1), b"hello over h2", "echoed through the tunnel")
            c.data(1, b"close-from-backend", end_stream=False)
            c.read(lambda c: c.ended(1), timeout=5)
            self.assertTrue(c.ended(1), "the backend's close ends the stream")
            # The connection goes on.
            c.headers(3, [(":method", "GET"), (":scheme", "https"), (":path", "/echo"), (":authority", "a.test")])
            c.read(lambda c: c.ended(3), timeout=5)
            self.assertEqual(c.status(3), 200)
        log = [r for r in self.A.request_log()["requests"] if "/ws" in r["line"]]
        self.assertEqual(len(log), 1, log)
        self.assertIn("GET /ws HTTP/1.1", log[0]["line"])
        self.assertEqual(log[0].get("tunnel_bytes"), len(b"hello over h2"), "the app does not count its close command")


class ReloadTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.A = env.backend("A")
        cls.B = env.backend("B")
        env.domain("a.toml", ["a.test"], cls.A)
        cls.port = env.listener("https")
        env.start()

    def test_an_http2_connection_keeps_its_runtime_across_a_reload(self):
        def backend(resp):
            self.assertEqual(resp["status"], 200, resp)
            return header(resp, "x-backend-name")[0]
        with H2Client(self.port, "a.test") as old:
            self.assertEqual(backend(old.get("/echo", "a.test")), "A")
            self.env.domain("a.toml", ["a.test"], self.B)
            before = self.env.gatehouse.stderr().count("reloaded:")
            self.env.gatehouse.proc.send_signal(signal.SIGHUP)
            deadline = time.time() + 10
            while self.env.gatehouse.stderr().count("reloaded:") == before and time.time() < deadline:
                time.sleep(0.05)
            self.assertGreater(self.env.gatehouse.stderr().count("reloaded:"), before)
            with H2Client(self.port, "a.test") as new:
                self.assertEqual(backend(new.get("/echo", "a.test")), "B", "new connections: the new config")
            self.assertEqual(backend(old.get("/echo", "a.test")), "A", "the open connection: its own snapshot")
