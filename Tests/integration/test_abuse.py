"""Clients that stall, trickle, vanish or pull huge bodies cannot stall or crash
Gatehouse, nor make it buffer whole bodies.

- slowloris: 300 connections (plain HTTP and HTTPS) trickling a head get 408 and are
  closed after [timeouts] request_header, while a normal client is served in < 1 s
- handshake timeout, keep-alive idle timeout, stalled upload (backend exchange aborted)
- abrupt disconnects mid-handshake, mid-head, mid-body and mid-response, 50 of each:
  the process lives, serves, and never reuses a backend connection whose exchange
  was aborted (sample_app's X-Backend-Conn and its request log, GET /_requests)
- 50 MiB download and 50 MiB upload (to a backend that reads slowly) through HTTPS
  with bounded proxy memory (VmRSS of the gatehouse process) and exact bytes
"""

import hashlib
import re
import select
import socket
import ssl
import threading
import time
import unittest

from harness import GatehouseCase, HTTPClient, MiB, client_context, pattern_bytes, tls_connect

HOST = "a.test"
SLOW_HOST = "slow.test"
HANDSHAKE = 1
REQUEST_HEADER = 2
IDLE = 2
RSS_BUDGET = 20 * MiB
BIG = 50 * MiB


def vm_rss(pid):
    with open("/proc/%d/status" % pid) as f:
        m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) * 1024


class RSSSampler:
    """Samples a process's VmRSS every `interval` seconds in a thread."""

    def __init__(self, pid, interval=0.02):
        self.pid = pid
        self.interval = interval
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(vm_rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.samples.append(vm_rss(self.pid))

    @property
    def peak(self):
        return max(self.samples)


def wait_closed(sock, timeout):
    """Reads until EOF/reset: (bytes received, seconds until closed or None if still open)."""
    t0 = time.monotonic()
    got = b""
    sock.settimeout(0.2)
    while time.monotonic() - t0 < timeout:
        try:
            data = sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except (ssl.SSLError, OSError):
            return got, time.monotonic() - t0
        if not data:
            return got, time.monotonic() - t0
        got += data
    return got, None


def client_hello(sni=HOST):
    """The bytes of a real TLS ClientHello for `sni` (from a memory-BIO handshake)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context().wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


class SlowReadingBackend:
    """A minimal HTTP/1.1 backend that reads a request body slowly: the first
    `first` bytes, then a pause of `pause` s, then the rest; answers the body's
    sha256. Records (length, sha256) per request."""

    def __init__(self, first=1 * MiB, pause=1.0):
        self.first = first
        self.pause = pause
        self.received = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.backend = "127.0.0.1:%d" % self.port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(30)
        # Small receive buffer, so the proxy really has to wait for us.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, body = buf.split(b"\r\n\r\n", 1)
            m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
            length = int(m.group(1)) if m else 0
            digest = hashlib.sha256(body[:length])
            got = len(body[:length])
            paused = False
            while got < length:
                if not paused and got >= self.first:
                    paused = True
                    time.sleep(self.pause)
                data = conn.recv(min(length - got, 1024 * 1024 if paused else 64 * 1024))
                if not data:
                    self.received.append((got, None))
                    return
                digest.update(data)
                got += len(data)
            hexdigest = digest.hexdigest().encode()
            self.received.append((got, hexdigest.decode()))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % len(hexdigest) + hexdigest)

    def close(self):
        self.listener.close()


class AbuseTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.app = env.backend("A")
        env.domain("a.toml", [HOST], cls.app)
        cls.slow_backend = SlowReadingBackend()
        cls.addClassCleanup(cls.slow_backend.close)
        env.domain("slow.toml", [SLOW_HOST], cls.slow_backend.backend)
        cls.port = env.listener("https")
        cls.http_port = env.listener("http", https_port=cls.port)
        env.start(timeouts={"handshake": HANDSHAKE, "request_header": REQUEST_HEADER, "idle": IDLE})
        cls.pid = env.gatehouse.proc.pid

    def tearDown(self):
        self.assertTrue(self.env.gatehouse.alive(), "gatehouse exited:\n" + self.env.gatehouse.output())

    def get(self, target="/echo", **kw):
        with HTTPClient.tls(self.port, HOST, timeout=10, **kw) as c:
            return c.request("GET", target, [("Host", HOST)])

    def assertServes(self):
        r = self.get("/bytes/1000")
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(r.body, pattern_bytes(1000))
        return r

    # --- slowloris ------------------------------------------------------------------------
    def test_slowloris(self):
        head = b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX-Slow: " + b"a" * 4000
        # dicts: sock, tls, first (monotonic time of the first byte), sent, data, closed_at.
        # Each connection sends its first byte at once: from then on its head timer runs.
        # The attackers come from 127.0.0.2-4 (100 connections each, under a per-client
        # connection cap), the normal client from 127.0.0.1.
        ctx = client_context()
        conns = []
        for i in range(300):
            tls = i % 2 == 1
            source = ("127.0.0.%d" % (2 + i % 3), 0)
            sock = socket.create_connection(("127.0.0.1", self.port if tls else self.http_port), timeout=5,
                                            source_address=source)
            if tls:
                sock = ctx.wrap_socket(sock, server_hostname=HOST)
            sock.sendall(head[:1])
            conns.append({"sock": sock, "tls": tls, "first": time.monotonic(), "sent": 1, "data": b"",
                          "closed_at": None})
            sock.setblocking(False)

        stop = threading.Event()
        tick = 0.2

        def trickle():
            deadline = time.monotonic() + REQUEST_HEADER + 4.0
            while not stop.is_set() and time.monotonic() < deadline:
                now = time.monotonic()
                open_ = [c for c in conns if c["closed_at"] is None]
                if not open_:
                    return
                for c in open_:
                    try:
                        c["sock"].send(head[c["sent"]:c["sent"] + 1])
                        c["sent"] += 1
                    except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                        pass
                    except (ssl.SSLError, OSError):
                        c["closed_at"] = time.monotonic()
                end = now + tick
                while True:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    by_fd = {c["sock"].fileno(): c for c in conns if c["closed_at"] is None}
                    if not by_fd:
                        return
                    readable, _, _ = select.select(list(by_fd), [], [], left)
                    for fd in readable:
                        c = by_fd[fd]
                        try:
                            data = c["sock"].recv(65536)
                        except (ssl.SSLWantReadError, BlockingIOError):
                            continue
                        except (ssl.SSLError, OSError):
                            c["closed_at"] = time.monotonic()
                            continue
                        if data:
                            c["data"] += data
                        else:
                            c["closed_at"] = time.monotonic()

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        try:
            # A normal client is served promptly while all of that goes on.
            latencies = []
            for _ in range(6):
                time.sleep(0.25)
                t0 = time.monotonic()
                r = self.get("/echo")
                latencies.append(time.monotonic() - t0)
                self.assertEqual(r.status, 200, r.summary())
            t.join(REQUEST_HEADER + 6.0)
        finally:
            stop.set()
            t.join(5)
            for c in conns:
                c["sock"].close()
        self.assertLess(max(latencies), 1.0, "normal requests during slowloris took %r s" % latencies)

        still_open = [c for c in conns if c["closed_at"] is None]
        self.assertEqual(len(still_open), 0, "%d trickling connections still open after %.1f s"
                         % (len(still_open), REQUEST_HEADER + 4.0))
        durations = sorted(c["closed_at"] - c["first"] for c in conns)
        # RFC 9110 §15.5.9: 408 when the head does not arrive in time; the timer is a
        # total for the head, trickled bytes do not extend it.
        self.assertGreater(durations[0], REQUEST_HEADER - 0.3, "closed too early: %r" % durations[:5])
        self.assertLess(durations[-1], REQUEST_HEADER + 1.5, "closed too late: %r" % durations[-5:])
        for kind in (False, True):
            got = [c["data"] for c in conns if c["tls"] == kind]
            with self.subTest(tls=kind):
                bad = [d[:80] for d in got if not d.startswith(b"HTTP/1.1 408 ")]
                self.assertEqual(bad, [], "%d of %d slow connections got no 408" % (len(bad), len(got)))
                self.assertTrue(all(b"\r\nConnection: close\r\n" in d for d in got))
        self.assertServes()

    # --- timeouts -------------------------------------------------------------------------
    def test_handshake_timeout(self):
        """[timeouts] handshake: silent, partial-ClientHello and trickling clients are cut off."""
        hello = client_hello()
        self.assertGreater(len(hello), 100)

        def silent(s):
            pass

        def partial(s):
            s.sendall(hello[:len(hello) // 2])

        def trickling(s):
            for i in range(20):  # one byte every 0.1 s: 2 s, twice the handshake timeout
                try:
                    s.sendall(hello[i:i + 1])
                except OSError:
                    return
                time.sleep(0.1)

        results = {}

        def run(name, behaviour):
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                t0 = time.monotonic()
                behaviour(s)
                got, after = wait_closed(s, HANDSHAKE + 4.0)
                results[name] = (got, time.monotonic() - t0 if after is not None else None)

        threads = [threading.Thread(target=run, args=(n, b)) for n, b in
                   (("silent", silent), ("partial", partial), ("trickling", trickling))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(HANDSHAKE + 10)
        for name, (got, elapsed) in sorted(results.items()):
            with self.subTest(client=name):
                self.assertIsNotNone(elapsed, "%s client still connected" % name)
                self.assertGreater(elapsed, HANDSHAKE - 0.3)
                self.assertLess(elapsed, HANDSHAKE + 1.5)
                self.assertFalse(got.startswith(b"HTTP/"), got[:100])
        self.assertEqual(len(results), 3)
        self.assertServes()

    def test_keepalive_idle_timeout(self):
        """After a response, an idle keep-alive connection is closed after [timeouts] idle
        (https, and the http listener after a redirect), with nothing sent."""
        tls = HTTPClient.tls(self.port, HOST, timeout=10)
        plain = HTTPClient.plain(self.http_port, timeout=10)
        results = {}

        def idle(name, c, host, want):
            with c:
                r = c.request("GET", "/x", [("Host", host)])
                results[name] = (r.status, want) + wait_closed(c.sock, IDLE + 4.0)

        threads = [threading.Thread(target=idle, args=a) for a in
                   (("https", tls, HOST, 200), ("http", plain, HOST, 301))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(IDLE + 10)
        self.assertEqual(sorted(results), ["http", "https"])
        for name, (status, want, got, after) in sorted(results.items()):
            with self.subTest(listener=name):
                self.assertEqual(status, want)
                self.assertIsNotNone(after, "idle keep-alive connection not closed")
                self.assertEqual(got, b"", "nothing is sent to an idle connection")
                self.assertGreater(after, IDLE - 0.3)
                self.assertLess(after, IDLE + 1.5)

    def test_idle_before_first_request(self):
        """A TLS connection that never sends a request is closed after request_header."""
        with tls_connect(self.port, HOST, timeout=10) as s:
            got, after = wait_closed(s, REQUEST_HEADER + 4.0)
        self.assertIsNotNone(after)
        self.assertGreater(after, REQUEST_HEADER - 0.3)
        self.assertLess(after, REQUEST_HEADER + 1.5)

    def test_stalled_upload(self):
        """Head and 10 of 1000 body bytes, then silence: closed after ~idle, and the
        backend's exchange is aborted (it never gets a complete request, and its
        connection is not reused)."""
        marker = "stall%d" % int(time.time() * 1000)
        with HTTPClient.tls(self.port, HOST, timeout=10) as c:
            c.send(b"POST /echo?m=%s HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1000\r\n\r\n" % marker.encode()
                   + b"0123456789")
            t0 = time.monotonic()
            got, after = wait_closed(c.sock, IDLE + 4.0)
        self.assertIsNotNone(after, "stalled upload not cut off")
        self.assertGreater(after, IDLE - 0.3)
        self.assertLess(after, IDLE + 1.5)
        self.assertTrue(got == b"" or got.startswith(b"HTTP/1.1 408 "), got[:200])
        time.sleep(0.3)
        r = self.assertServes()
        log = self.app.request_log()["requests"]
        mine = [e for e in log if marker in e["line"]]
        self.assertEqual(len(mine), 1, mine)
        self.assertFalse(mine[0]["complete"], "backend got a complete request from a stalled upload")
        self.assertEqual(mine[0]["body_prefix"], "0123456789")
        later = [e for e in log if e["conn"] == mine[0]["conn"] and e["req"] > mine[0]["req"]]
        self.assertEqual(later, [], "aborted backend connection was reused")
        self.assertNotEqual(r.get("x-backend-conn"), str(mine[0]["conn"]))

    # --- abrupt disconnects ------------------------------------------------------------
    def test_abrupt_disconnects(self):
        hello = client_hello()
        n = 50
        aborted_conns = set()
        markers = {}
        errors = []

        def mid_handshake():
            for i in range(n):
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    if i % 2:
                        s.sendall(hello[:len(hello) // 2])
                    else:
                        s.sendall(hello)      # full ClientHello; leave while the server answers
                        s.recv(100)

        def mid_head():
            for i in range(n):
                with tls_connect(self.port, HOST, timeout=5) as s:
                    s.sendall(b"GET /echo?m=head%d HTTP/1.1\r\nHost: a.te" % i)

        def mid_body():
            for i in range(n):
                m = "body%03d" % i
                markers[m] = "body"
                with tls_connect(self.port, HOST, timeout=5) as s:
                    s.sendall(b"POST /echo?m=%s HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100000\r\n\r\n"
                              % m.encode() + b"x" * 5000)
                    time.sleep(0.01)

        def mid_response():
            for i in range(n):
                target = "/bytes/50000000" if i % 5 == 0 else "/chunked/50000000"
                with HTTPClient.tls(self.port, HOST, timeout=10) as c:
                    c.send(b"GET %s?m=resp%03d HTTP/1.1\r\nHost: a.test\r\n\r\n" % (target.encode(), i))
                    while b"\r\n\r\n" not in c.buf:
                        c._fill()
                    head = bytes(c.buf).split(b"\r\n\r\n", 1)[0]
                    m = re.search(rb"(?im)^x-backend-conn: (\d+)", head)
                    if not head.startswith(b"HTTP/1.1 200") or not m:
                        errors.append(head[:300])
                        continue
                    aborted_conns.add(int(m.group(1)))
                    got = len(c.buf)
                    while got < 200000:   # a little of the body, then vanish
                        data = c.sock.recv(65536)
                        if not data:
                            break
                        got += len(data)

        def guard(fn):
            def run():
                try:
                    fn()
                except Exception as e:  # reported below
                    errors.append("%s: %r" % (fn.__name__, e))
            return run

        threads = [threading.Thread(target=guard(f)) for f in (mid_handshake, mid_head, mid_body, mid_response)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        self.assertEqual(errors, [])
        self.assertTrue(self.env.gatehouse.alive(), self.env.gatehouse.output())
        time.sleep(0.3)

        # Still serving; pooled backend connections are never ones whose exchange was aborted.
        with HTTPClient.tls(self.port, HOST, timeout=10) as c:
            after = []
            for _ in range(5):
                r = c.request("GET", "/bytes/1000", [("Host", HOST)])
                self.assertEqual(r.status, 200, r.summary())
                self.assertEqual(r.body, pattern_bytes(1000))
                after.append(int(r.get("x-backend-conn")))
        self.assertEqual(aborted_conns & set(after), set(),
                         "a backend connection from an aborted response was reused")
        self.assertEqual(len(aborted_conns), n, "each mid-response abort should have its own backend connection")

        log = self.app.request_log()["requests"]
        by_conn = {}
        for e in log:
            by_conn.setdefault(e["conn"], []).append(e)
        resp_entries = [e for e in log if "m=resp" in e["line"]]
        self.assertEqual(len(resp_entries), n)
        for e in resp_entries:
            self.assertEqual([x["line"] for x in by_conn[e["conn"]] if x["req"] > e["req"]], [],
                             "backend connection %d was reused after an aborted response" % e["conn"])
        body_entries = [e for e in log if "m=body" in e["line"]]
        self.assertLessEqual(len(body_entries), n)
        for e in body_entries:
            self.assertFalse(e["complete"], e["line"])
            self.assertEqual([x["line"] for x in by_conn[e["conn"]] if x["req"] > e["req"]], [],
                             "backend connection %d was reused after an aborted upload" % e["conn"])
        self.assertEqual([e["line"] for e in log if "m=head" in e["line"]], [],
                         "an incomplete head reached the backend")

    # --- big bodies, bounded memory ------------------------------------------------------
    def test_download_50mib_bounded_memory(self):
        """A fast backend and a client that first reads slowly: Gatehouse must apply
        backpressure (stop reading the backend), not buffer the body."""
        want = hashlib.sha256(pattern_bytes(BIG)).hexdigest()
        for target in ("/bytes/%d" % BIG, "/chunked/%d" % BIG):
            with self.subTest(target=target):
                before = vm_rss(self.pid)
                digest = hashlib.sha256()
                total = 0
                with RSSSampler(self.pid) as rss:
                    with HTTPClient.tls(self.port, HOST, timeout=30) as c:
                        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                        c.send(b"GET %s HTTP/1.1\r\nHost: a.test\r\n\r\n" % target.encode())
                        # read the head by hand, then the body as it comes
                        while b"\r\n\r\n" not in c.buf:
                            c._fill()
                        head, rest = bytes(c.buf).split(b"\r\n\r\n", 1)
                        c.buf.clear()
                        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
                        chunked = b"transfer-encoding: chunked" in head.lower()
                        raw = bytearray(rest)

                        def take(limit):
                            nonlocal raw
                            while len(raw) < limit:
                                data = c.sock.recv(256 * 1024)
                                if not data:
                                    break
                                raw += data

                        if chunked:
                            # decode incrementally: slow for the first MiB, then fast
                            slow_done = False
                            while True:
                                while b"\r\n" not in raw:
                                    take(len(raw) + 1)
                                line, _, after = bytes(raw).partition(b"\r\n")
                                size = int(line.split(b";")[0], 16)
                                raw = bytearray(after)
                                if size == 0:
                                    break
                                take(size + 2)
                                digest.update(raw[:size])
                                total += size
                                del raw[:size + 2]
                                if not slow_done and total >= MiB:
                                    slow_done = True
                                    time.sleep(1.0)
                        else:
                            take(MiB)
                            time.sleep(1.0)   # the backend keeps writing; Gatehouse must pause it
                            while total + len(raw) < BIG:
                                digest.update(raw)
                                total += len(raw)
                                raw = bytearray()
                                take(1)
                                if not raw:
                                    break
                            digest.update(raw)
                            total += len(raw)
                self.assertEqual(total, BIG)
                self.assertEqual(digest.hexdigest(), want)
                growth = rss.peak - before
                self.assertLess(growth, RSS_BUDGET, "gatehouse RSS grew by %.1f MiB (before %.1f MiB) for a %d MiB body"
                                % (growth / MiB, before / MiB, BIG // MiB))

    def test_upload_50mib_slow_backend_bounded_memory(self):
        body_sha = hashlib.sha256()
        block = pattern_bytes(MiB)
        for _ in range(BIG // MiB):
            body_sha.update(block)
        before = vm_rss(self.pid)
        with RSSSampler(self.pid) as rss:
            with HTTPClient.tls(self.port, SLOW_HOST, timeout=30) as c:
                c.send(b"POST /upload HTTP/1.1\r\nHost: slow.test\r\nContent-Length: %d\r\n\r\n" % BIG)
                for _ in range(BIG // MiB):
                    c.send(block)
                r = c.read_response()
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(r.body.decode(), body_sha.hexdigest())
        self.assertIn((BIG, body_sha.hexdigest()), self.slow_backend.received)
        growth = rss.peak - before
        self.assertLess(growth, RSS_BUDGET, "gatehouse RSS grew by %.1f MiB for a %d MiB upload to a slow backend"
                        % (growth / MiB, BIG // MiB))


if __name__ == "__main__":
    unittest.main()
