"""Stop and drain (issue 13): on SIGTERM nothing in flight is lost. Connections in
their handshake, before their first request, behind a PROXY header or still in the
accept queue are served (with Connection: close); a keep-alive connection whose
response is streaming closes right after its last byte; the process exits as soon as
the last connection is gone. Also the graceful/abortive ends of a connection: a
lingering close after an early 413, no close_notify on a cut-off response, and a
tunnel's last client bytes reaching the backend."""

import os
import signal
import socket
import ssl
import struct
import time

from harness import (GatehouseCase, HTTPClient, MiB, client_context, strict_eof_context, free_port, pattern_bytes,
                     recv_until_close, sha256)


def read_all(sock, timeout=10):
    """Until the peer closes; a reset or TLS error fails the test."""
    try:
        return recv_until_close(sock, timeout)
    except (ConnectionError, ssl.SSLError, OSError) as e:
        raise AssertionError("connection failed: %r" % e)


class StopCase(GatehouseCase):
    """Each test starts its own Gatehouse, since SIGTERM ends it."""

    @classmethod
    def setUpEnv(cls, env):
        cls.app = env.backend("A")
        env.domain("a.toml", ["a.test"], cls.app)
        cls.https = env.listener("https")
        cls.http = env.listener("http")
        cls.proxied = env.listener("http")
        env.listeners[-1]["proxy_protocol"] = True

    def start(self, **config):
        config.setdefault("timeouts", {"drain": 20, "request_header": 10, "handshake": 10})
        g = self.env.start(**config)
        self.addCleanup(g.stop)
        return g

    def stop_and_time(self, g):
        t0 = time.monotonic()
        g.proc.send_signal(signal.SIGTERM)
        return t0

    def assertExitsSoon(self, g, t0, within=5):
        self.assertEqual(g.proc.wait(within + 5), 0, g.output())
        self.assertLess(time.monotonic() - t0, within, "the process waited for the drain deadline")


class DrainTests(StopCase):
    def test_streaming_keepalive_response_closes_after_its_last_byte(self):
        g = self.start()
        size = 40 * MiB
        c = HTTPClient.tls(self.https, "a.test")
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.send(b"GET /bytes/%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % size)
        while b"\r\n\r\n" not in c.buf:
            c._fill()
        head, rest = bytes(c.buf).split(b"\r\n\r\n", 1)
        self.assertNotIn(b"connection: close", head.lower())   # started before SIGTERM: keep-alive
        time.sleep(0.3)                                         # the body is streaming
        t0 = self.stop_and_time(g)
        body = rest + read_all(c.sock)
        self.assertEqual(len(body), size)
        self.assertEqual(sha256(body), sha256(pattern_bytes(size)))
        c.close()
        self.assertExitsSoon(g, t0)

    def test_connection_before_its_first_request_is_served(self):
        g = self.start()
        tls = HTTPClient.tls(self.https, "a.test")           # handshake done, nothing sent
        raw = socket.create_connection(("127.0.0.1", self.https), timeout=10)   # TCP only
        time.sleep(0.2)
        t0 = self.stop_and_time(g)
        time.sleep(0.3)
        r = tls.request("GET", "/echo", [("Host", "a.test")])
        self.assertEqual(r.status, 200, r.summary())
        self.assertIn("close", r.get("connection", "").lower())
        tls.close()
        s = client_context().wrap_socket(raw, server_hostname="a.test")   # handshake after SIGTERM
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: a.test\r\n\r\n")
        data = read_all(s)
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:100])
        self.assertIn(b"\r\nConnection: close\r\n", data)
        s.close()
        self.assertExitsSoon(g, t0)

    def test_accept_queue_is_served_before_the_listeners_close(self):
        # One connection per worker: the rest wait in the kernel's accept queue.
        g = self.start(limits={"max_connections": 1})
        holder = HTTPClient.tls(self.https, "a.test")
        holder.send(b"GET /sleep/1500 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        time.sleep(0.2)
        queued = []
        for i in range(3):
            s = socket.create_connection(("127.0.0.1", self.http), timeout=10)
            s.sendall(b"GET /q%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % i)
            queued.append(s)
        time.sleep(0.2)
        t0 = self.stop_and_time(g)
        for i, s in enumerate(queued):
            data = read_all(s)
            self.assertTrue(data.startswith(b"HTTP/1.1 301 "), data[:100])
            self.assertIn(b"Location: https://a.test/q%d\r\n" % i, data)
            self.assertIn(b"\r\nConnection: close\r\n", data)
            s.close()
        r = holder.read_response()
        self.assertEqual(r.status, 200, r.summary())
        holder.close()
        self.assertExitsSoon(g, t0)

    def test_proxy_header_after_sigterm_is_served(self):
        g = self.start()
        s = socket.create_connection(("127.0.0.1", self.proxied), timeout=10)
        time.sleep(0.2)
        t0 = self.stop_and_time(g)
        time.sleep(0.2)
        s.sendall(b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 80\r\nGET /p HTTP/1.1\r\nHost: a.test\r\n\r\n")
        data = read_all(s)
        self.assertTrue(data.startswith(b"HTTP/1.1 301 "), data[:100])
        s.close()
        self.assertExitsSoon(g, t0)

    def test_idle_keepalive_closes_at_once_and_process_exits(self):
        g = self.start()
        c = HTTPClient.tls(self.https, "a.test")
        self.assertEqual(c.request("GET", "/echo", [("Host", "a.test")]).status, 200)
        t0 = self.stop_and_time(g)
        self.assertTrue(c.closed_by_peer(timeout=3))
        c.close()
        self.assertExitsSoon(g, t0, within=3)


class StopDuringPreloadTests(GatehouseCase):
    """SIGTERM while the background preload still parses keys: the process joins
    that thread before OpenSSL's exit handlers run (was SIGSEGV / free() abort)."""

    DOMAINS = 3000

    @classmethod
    def setUpEnv(cls, env):
        cert, key = env.ca.leaf("fleet.test", ["fleet.test"], rsa=True)
        cls.port = env.listener("https")
        for i in range(cls.DOMAINS):
            path = os.path.join(env.domains_dir, "d%05d.toml" % i)
            with open(path, "w") as f:
                f.write('names = ["d%d.fleet.test"]\nbackend = "127.0.0.1:9"\ncertificate = "%s"\nkey = "%s"\n'
                        % (i, cert, key))

    def test_stop_right_after_start(self):
        for attempt in range(3):
            with self.subTest(attempt=attempt):
                g = self.env.start(tls={"certificate_cache": self.DOMAINS})
                g.proc.send_signal(signal.SIGTERM)
                code = g.proc.wait(20)
                out = g.output()
                g.stop()
                self.assertEqual(code, 0, out)
                self.assertNotIn("free()", out)
                self.assertIn("stopped", out)


class ConnectionEndTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.app = env.backend("A")
        env.domain("a.toml", ["a.test"], cls.app, max_body_bytes=1000)
        cls.cut_port = free_port()
        env.domain("cut.toml", ["cut.test"], "127.0.0.1:%d" % cls.cut_port)
        cls.https = env.listener("https")
        env.start()

    def test_early_413_is_read_before_any_reset(self):
        # The client is still sending a body Gatehouse will not read: without a
        # lingering close, the kernel's RST would destroy the 413 in flight.
        for attempt in range(5):
            with self.subTest(attempt=attempt):
                s = client_context().wrap_socket(socket.create_connection(("127.0.0.1", self.https)),
                                                 server_hostname="a.test")
                s.sendall(b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n" % (8 * MiB))
                try:
                    for _ in range(8):
                        s.sendall(b"x" * (256 * 1024))
                except (ConnectionError, ssl.SSLError, OSError):
                    pass   # Gatehouse stopped reading: fine, the answer must still be there
                data = read_all(s)
                self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data[:100])
                s.close()

    def serve_once(self, respond):
        """A one-shot backend on cut_port; `respond(conn)` answers the request."""
        import threading
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.cut_port))
        ls.listen(1)

        def run():
            conn, _ = ls.accept()
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            respond(conn)
            ls.close()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def fetch_close_delimited(self):
        s = strict_eof_context().wrap_socket(socket.create_connection(("127.0.0.1", self.https)),
                                             server_hostname="cut.test", suppress_ragged_eofs=False)
        s.sendall(b"GET / HTTP/1.1\r\nHost: cut.test\r\n\r\n")
        s.settimeout(10)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ssl.SSLEOFError:
                return out, "no close_notify"
            except ssl.SSLError as e:
                # Debian's Python reports it as UNEXPECTED_EOF_WHILE_READING.
                if "UNEXPECTED_EOF" in str(e):
                    return out, "no close_notify"
                raise
            if not chunk:
                return out, "close_notify"
            out += chunk

    def test_cut_off_response_ends_without_close_notify(self):
        def cut(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"y" * 5000)
            time.sleep(0.1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()   # RST: the body was cut off
        t = self.serve_once(cut)
        out, end = self.fetch_close_delimited()
        t.join(5)
        self.assertIn(b"y" * 100, out)
        self.assertEqual(end, "no close_notify", "a truncated close-delimited body must not end cleanly")

    def test_complete_close_delimited_response_ends_with_close_notify(self):
        def whole(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 5000)
            conn.close()   # FIN: the end of the body (RFC 9112 §6.3 rule 8)
        t = self.serve_once(whole)
        out, end = self.fetch_close_delimited()
        t.join(5)
        self.assertTrue(out.endswith(b"z" * 5000))
        self.assertEqual(end, "close_notify")

    def test_tunnel_client_eof_delivers_what_it_sent(self):
        from test_upgrade import read_head, upgrade_request
        s = client_context().wrap_socket(socket.create_connection(("127.0.0.1", self.https)),
                                         server_hostname="a.test")
        s.sendall(upgrade_request("/ws?sink"))
        status, _, _ = read_head(s)
        self.assertIn(" 101 ", status)
        s.sendall(b"t" * MiB)
        s.close()       # at once: part of the megabyte is still queued in Gatehouse
        deadline = time.monotonic() + 5
        while True:
            entries = [r for r in self.app.request_log()["requests"] if r["line"].startswith("GET /ws?sink")]
            got = entries[-1].get("tunnel_bytes") if entries else None
            if got is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(got, MiB)


class StopGraceTests(StopCase):
    def test_new_connections_are_served_during_stop_grace(self):
        g = self.start(timeouts={"drain": 10, "stop_grace": 1.0})
        t0 = self.stop_and_time(g)
        time.sleep(0.3)
        s = socket.create_connection(("127.0.0.1", self.http), timeout=5)   # still accepted
        s.sendall(b"GET /g HTTP/1.1\r\nHost: a.test\r\n\r\n")
        data = read_all(s)
        self.assertTrue(data.startswith(b"HTTP/1.1 301 "), data[:100])
        self.assertIn(b"\r\nConnection: close\r\n", data)
        s.close()
        self.assertEqual(g.proc.wait(10), 0, g.output())
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 0.9, "listeners closed before stop_grace ended")
        self.assertLess(elapsed, 4)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", self.http), timeout=2).close()
