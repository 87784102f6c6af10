"""HTTP/2 with real clients and hostile ones (issue 14, the tests part): curl --http2
(GET, HEAD, POST bodies byte-exact, 421, HSTS), nghttp (many concurrent streams on one
connection), and raw frames (hpack by hand where the libraries refuse) for every refusal
of the h2 -> h1 downgrade rules and every attack: Rapid Reset, MadeYouReset, CONTINUATION
flood, HPACK bomb, SETTINGS/PING/WINDOW_UPDATE floods, a zero-window reader, more streams
than SETTINGS_MAX_CONCURRENT_STREAMS, plain CONNECT, a stream opened after GOAWAY.

Each test checks what the backend received (its /_requests log), that the gatehouse
process is alive and answers a normal request on a new connection afterwards, and for
the floods its resident memory (VmRSS) before and after.

What a test observed (GOAWAY codes, how far a flood got) is written to stderr as
"[h2-abuse] ..." lines, for the record."""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid

import hpack

from harness import GatehouseCase, KiB, MiB, client_context, curl, pattern_bytes, random_bytes, sha256
from test_http2 import H2Client, marker

from h2wire import *  # noqa: F401,F403 (frame constants, HPACK helpers, Wire)
from h2wire import PREFACE, Wire, error_name, frame, settings_frame

# Growth of the process's VmRSS an attack may cause (generous: a debug build, one worker).
MEMORY_BOUND = 64 * MiB
# Rapid Reset / MadeYouReset: at most this many requests may reach the backend
# (the glitch limit is 200 per 10 s; nghttp2's reset limiter 1000 burst).
BACKEND_BOUND = 300


def note(msg):
    sys.stderr.write("  [h2-abuse] %s\n" % msg)
    sys.stderr.flush()


def rss(pid):
    """VmRSS of a process, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for %d" % pid)


# --------------------------------------------------------------------------- base

class AbuseCase(GatehouseCase):
    """Shared checks. Subclasses set cls.port (the https listener) and cls.A (the
    backend of a.test, used for the health probe)."""

    def gatehouse_tail(self, n=1500):
        return self.env.gatehouse.stderr()[-n:]

    def rss(self):
        return rss(self.env.gatehouse.proc.pid)

    def assertHealthy(self, rss_before=None, what=""):
        """The process lives, answers a normal request on a new connection, and
        grew at most MEMORY_BOUND since rss_before."""
        self.assertTrue(self.env.gatehouse.alive(), "gatehouse died %s:\n%s" % (what, self.gatehouse_tail()))
        with H2Client(self.port, "a.test") as c:
            r = c.get("/bytes/1000", "a.test")
        self.assertEqual(r["status"], 200, "after %s, a new connection: %r" % (what, r))
        self.assertEqual(bytes(r["body"]), pattern_bytes(1000))
        if rss_before is not None:
            after = self.rss()
            note("%s: VmRSS %.1f -> %.1f MiB" % (what, rss_before / MiB, after / MiB))
            self.assertLess(after - rss_before, MEMORY_BOUND,
                            "%s: VmRSS grew %.1f MiB" % (what, (after - rss_before) / MiB))


# --------------------------------------------------------------------------- 1. curl --http2

class CurlTests(AbuseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.A = env.backend("A")
        cls.B = env.backend("B")
        env.domain("a.toml", ["a.test"], cls.A, max_body_bytes=16 * MiB)
        env.domain("b.toml", ["b.test"], cls.B)
        cls.port = env.listener("https")
        env.start()

    def curl(self, path, args=(), host="a.test"):
        r = curl("https://%s:%d%s" % (host, self.port, path), resolve=(host, self.port),
                 args=["--http2"] + list(args))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.version, "2", "curl did not speak HTTP/2")
        return r

    def test_curl_get_and_hsts(self):
        r = self.curl("/bytes/%d" % (300 * KiB + 3))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, pattern_bytes(300 * KiB + 3))
        self.assertEqual(r.get("content-length"), str(300 * KiB + 3))
        self.assertEqual(len(r.all("strict-transport-security")), 1, r.headers)
        self.assertRegex(r.get("strict-transport-security"), r"^max-age=\d+")
        # A backend's error carries it too (Gatehouse's own 421: test_curl_foreign_authority_is_421_with_hsts).
        self.assertEqual(len(self.curl("/status/404").all("strict-transport-security")), 1)

    def test_curl_head_keeps_content_length_and_sends_no_body(self):
        path = "/bytes/5000?" + uuid.uuid4().hex
        r = self.curl(path, ["-I"])
        self.assertEqual(r.status, 200)
        self.assertEqual(r.get("content-length"), "5000", "HEAD keeps the length a GET would have")
        # (curl -I writes the head where the body would go: the wire check below is the one.)
        self.assertEqual(self.backend_lines(self.A, path), ["HEAD %s HTTP/1.1" % path])
        # On the wire: HEADERS with END_STREAM, no DATA at all (RFC 9113 §8.1).
        with Wire(self.port) as w:
            w.request(1, path, method="HEAD")
            w.read(lambda w: w.finished(1))
            self.assertEqual(w.status(1), 200, w.summary(1))
            self.assertIn(("content-length", "5000"), w.response_headers(1))
            self.assertTrue(w.ended(1), w.summary(1))
            w.drain(quiet=0.2)
            self.assertEqual(w.of(1, DATA), [], "no DATA on a HEAD response")

    def test_curl_posts_0_1m_10m_byte_exact(self):
        d = tempfile.mkdtemp(prefix="gatehouse-h2-post-")
        try:
            for size in (0, 1 * MiB, 10 * MiB):
                body = random_bytes(size, seed=size + 1)
                path = os.path.join(d, "body-%d" % size)
                with open(path, "wb") as f:
                    f.write(body)
                r = self.curl("/echo", ["--data-binary", "@" + path, "-H", "content-type: application/octet-stream"])
                self.assertEqual(r.status, 200, r.body[:200])
                doc = json.loads(r.body)
                self.assertEqual(doc["method"], "POST")
                self.assertEqual(doc["version"], "HTTP/1.1")
                self.assertEqual(doc["body_len"], size)
                self.assertEqual(doc["body_sha256"], sha256(body), "%d bytes arrived changed" % size)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_curl_foreign_authority_is_421_with_hsts(self):
        path = marker()
        # SNI a.test, :authority b.test (curl turns a Host header into :authority).
        r = self.curl(path, ["-H", "Host: b.test"])
        self.assertEqual(r.status, 421, r.body)
        self.assertEqual(len(r.all("strict-transport-security")), 1, r.headers)
        self.assertBackendNeverSaw(self.A, path)
        self.assertBackendNeverSaw(self.B, path)
        self.assertHealthy(what="421")


# --------------------------------------------------------------------------- 2. nghttp

class NghttpTests(AbuseCase):
    """nghttp has no --resolve and sends no SNI for an IP literal: a.test is the
    [tls] default_domain, and each request names it in :authority (-H)."""

    @classmethod
    def setUpEnv(cls, env):
        cls.A = env.backend("A")
        env.domain("a.toml", ["a.test"], cls.A)
        cls.port = env.listener("https")
        env.start(tls={"default_domain": "a.test"})

    def nghttp(self, uris, args=()):
        cmd = ["nghttp", "-v", "-n", "-H", ":authority: a.test", *args,
               *["https://127.0.0.1:%d%s" % (self.port, u) for u in uris]]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        return r, self.parse(r.stdout)

    @staticmethod
    def parse(out):
        """{stream: {path, authority, status, body, end, rst}} from nghttp -v."""
        streams = {}
        current = None
        for line in out.splitlines():
            m = re.search(r"send HEADERS frame <.*stream_id=(\d+)>", line)
            if m:
                current = streams.setdefault(int(m.group(1)), {"body": 0, "status": None, "end": False, "rst": None})
                continue
            if line.startswith("["):
                current = None
            m = re.match(r"^\s+(:path|:authority): (.*)$", line)
            if m and current is not None:
                current[m.group(1)[1:]] = m.group(2)
            m = re.search(r"recv \(stream_id=(\d+)\) :status: (\d+)", line)
            if m and int(m.group(1)) in streams:
                streams[int(m.group(1))]["status"] = int(m.group(2))
            m = re.search(r"recv (DATA|HEADERS) frame <length=(\d+), flags=0x([0-9a-f]+), stream_id=(\d+)>", line)
            if m and int(m.group(4)) in streams:
                s = streams[int(m.group(4))]
                if m.group(1) == "DATA":
                    s["body"] += int(m.group(2))
                if int(m.group(3), 16) & END_STREAM:
                    s["end"] = True
            m = re.search(r"recv RST_STREAM frame <.*stream_id=(\d+)>", line)
            if m and int(m.group(1)) in streams:
                streams[int(m.group(1))]["rst"] = True
        return streams

    def test_nghttp_fifty_streams_on_one_connection(self):
        tag = uuid.uuid4().hex
        sizes = [0, 1, 1000, 16 * KiB + 1, 70 * KiB, 300 * KiB + 7, 1 * MiB, 33, 4096, 123457]
        uris = ["/bytes/%d?%s" % (n, tag) for n in sizes]
        r, streams = self.nghttp(uris, ["-m", "5"])
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertEqual(len(streams), 50, "nghttp sent %d streams" % len(streams))
        for sid, s in sorted(streams.items()):
            n = int(s["path"].split("/")[2].split("?")[0])
            self.assertEqual(s["authority"], "a.test")
            self.assertEqual(s["status"], 200, "stream %d %s: %r" % (sid, s["path"], s))
            self.assertEqual(s["body"], n, "stream %d %s: body size" % (sid, s["path"]))
            self.assertTrue(s["end"] and not s["rst"], "stream %d ended cleanly" % sid)
        entries = [e for e in self.A.request_log()["requests"] if tag in e["line"]]
        self.assertEqual(len(entries), 50, "the backend saw each stream once")
        for e in entries:
            self.assertIn("\r\nHost: a.test\r\n", e["head"].replace("host:", "Host:"))

    def test_nghttp_streams_run_concurrently(self):
        # 40 streams of 400 ms each: one after another would take 16 s.
        tag = uuid.uuid4().hex
        t0 = time.monotonic()
        r, streams = self.nghttp(["/sleep/400?" + tag], ["-m", "40"])
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertEqual(sorted(s["status"] for s in streams.values()), [200] * 40)
        self.assertTrue(all(s["body"] == len(b"slept 400 ms\n") for s in streams.values()))
        note("nghttp: 40 x /sleep/400 on one connection in %.2f s" % took)
        self.assertLess(took, 8.0, "streams were not served concurrently")
        entries = [e for e in self.A.request_log()["requests"] if tag in e["line"]]
        self.assertEqual(len(entries), 40)
        self.assertGreater(len({e["conn"] for e in entries}), 1, "concurrent streams need several backend connections")


# --------------------------------------------------------------------------- 3. refusals

class RefusalTests(AbuseCase):
    """RFC 9113 §8.1.1/§8.2/§8.3 (issue item 4): each malformed stream is reset (or
    answered 400) and the backend never sees it. A fresh connection per case, so that
    a connection error in one cannot hide another."""

    @classmethod
    def setUpEnv(cls, env):
        cls.A = env.backend("A")
        cls.B = env.backend("B")
        env.domain("a.toml", ["a.test"], cls.A)
        env.domain("b.toml", ["b.test"], cls.B)
        cls.port = env.listener("https")
        env.start()

    def refused(self, label, send):
        """Runs send(wire, path) on stream 1 of a fresh connection; asserts a reset or a
        400 and that the connection (if still open) serves stream 3."""
        path = marker()
        with Wire(self.port) as w:
            send(w, path)
            w.read(lambda w: w.finished(1), timeout=5)
            codes, status = w.rst_codes(1), w.status(1)
            self.assertTrue(codes or status == 400, "%s: want RST_STREAM or 400; %s" % (label, w.summary(1)))
            if status is not None:
                self.assertEqual(status, 400, "%s: %s" % (label, w.summary(1)))
            if codes:
                self.assertIn(codes[0], (PROTOCOL_ERROR,), "%s: %s" % (label, w.summary(1)))
            if not w.goaways() and not w.closed:
                w.request(3, "/bytes/10")
                w.read(lambda w: w.finished(3), timeout=5)
                self.assertEqual(w.status(3), 200, "%s: the connection goes on; %s" % (label, w.summary(3)))
            else:
                note("%s: the connection ended: %s" % (label, w.summary(1)))
        return path

    def test_connection_specific_fields_are_refused(self):
        paths = []
        for name, value in (("connection", "keep-alive"), ("keep-alive", "timeout=5"),
                            ("proxy-connection", "keep-alive"), ("transfer-encoding", "chunked"),
                            ("upgrade", "websocket"), ("te", "gzip"), ("te", "trailers, gzip")):
            with self.subTest(field=name, value=value):
                paths.append(self.refused("%s: %s" % (name, value),
                                          lambda w, p: w.request(1, p, extra=[(name, value)])))
        # te: trailers is the one allowed value.
        with Wire(self.port) as w:
            w.request(1, "/echo", extra=[("te", "trailers")])
            w.read(lambda w: w.finished(1))
            self.assertEqual(w.status(1), 200, w.summary(1))
        for p in paths:
            self.assertBackendNeverSaw(self.A, p)
        self.assertHealthy(what="connection-specific fields")

    def test_bad_names_and_values_are_refused(self):
        paths = []
        smuggled = marker()
        cases = [
            ("uppercase name", [(b"X-Upper", b"x")]),
            ("space in name", [(b"x y", b"1")]),
            ("colon in name", [(b"x:y", b"1")]),
            ("CR in value", [(b"x-v", b"a\rb")]),
            ("LF in value", [(b"x-v", b"a\nb")]),
            ("NUL in value", [(b"x-v", b"a\x00b")]),
            ("CRLF request in value", [(b"x-v", ("a\r\n\r\nGET %s HTTP/1.1\r\nHost: a.test\r\n\r\n" % smuggled).encode())]),
            ("CRLF field in value", [(b"x-v", b"a\r\nTransfer-Encoding: chunked")]),
        ]
        for label, extra in cases:
            with self.subTest(case=label):
                def send(w, p, extra=extra):
                    block = hpack_request(p) + b"".join(hpack_literal(k, v) for k, v in extra)
                    w.headers(1, None, block=block)
                paths.append(self.refused(label, send))
        for p in paths + [smuggled]:
            self.assertBackendNeverSaw(self.A, p)
        self.assertBackendNeverSaw(self.A, "Transfer-Encoding")
        self.assertHealthy(what="bad names and values")

    def test_bad_paths_and_pseudo_headers_are_refused(self):
        paths = []

        def pseudo(fields):
            return lambda w, p: w.headers(1, None, block=b"".join(
                hpack_literal(k, v.replace("REL", p[1:]).replace("MARK", p)) for k, v in fields))

        base = [(":method", "GET"), (":scheme", "https"), (":authority", "a.test")]
        cases = [
            ("absolute-form :path", pseudo(base + [(":path", "https://a.test/MARK")])),
            ("authority-form :path", pseudo(base + [(":path", "a.test:443")]) ),
            ("relative :path", pseudo(base + [(":path", "REL")])),
            ("empty :path", pseudo(base + [(":path", "")])),
            ("* :path for GET", pseudo(base + [(":path", "*")])),
            ("missing :path", pseudo(base)),
            ("duplicate :path", pseudo(base + [(":path", "MARK"), (":path", "/other")])),
            ("duplicate :path, both origin-form", pseudo(base + [(":path", "/MARK-1"), (":path", "/MARK-2")])),
            ("duplicate :method", pseudo([(":method", "GET"), (":method", "POST")] + base[1:] + [(":path", "MARK")])),
            ("pseudo-header after a regular field",
             pseudo(base[:2] + [("x-regular", "1"), (":authority", "a.test"), (":path", "MARK")])),
            (":path after a regular field", pseudo(base + [("x-regular", "1"), (":path", "MARK")])),
            ("unknown pseudo-header", pseudo(base + [(":path", "MARK"), (":foo", "bar")])),
            ("host differs from :authority", pseudo(base + [(":path", "MARK"), ("host", "b.test")])),
            ("two host fields", pseudo(base + [(":path", "MARK"), ("host", "a.test"), ("host", "b.test")])),
            ("space in :path", pseudo(base + [(":path", "MARK x")])),
        ]
        for label, send in cases:
            with self.subTest(case=label):
                paths.append(self.refused(label, send))
        for p in paths:
            self.assertBackendNeverSaw(self.A, p)
            self.assertBackendNeverSaw(self.B, p)
        self.assertHealthy(what="bad pseudo-headers")

    def test_content_length_disagreeing_with_data_is_refused(self):
        """A stream's DATA must add up to its content-length (RFC 9113 §8.1.1): more or
        less is a reset, and what the client sent beyond its length never becomes a
        request of its own on the backend connection."""
        smuggle = marker()
        tail = ("GET %s HTTP/1.1\r\nHost: a.test\r\n\r\n" % smuggle).encode()
        cases = [
            ("larger than DATA", 100, [b"0123456789"]),
            ("smaller than DATA, one frame", 5, [b"01234" + tail]),
            ("smaller than DATA, two frames", 5, [b"01234", tail]),
            ("zero with DATA", 0, [b"x"]),
        ]
        for label, length, chunks in cases:
            # An idle pooled backend connection, as under any load: an exchange can
            # write its head at once (with a fresh connect it would still be connecting).
            with H2Client(self.port, "a.test") as c:
                self.assertEqual(c.get("/bytes/10", "a.test")["status"], 200)
            with self.subTest(case=label):
                def send(w, p, length=length, chunks=chunks):
                    blob = w.request(1, p, method="POST", extra=[("content-length", str(length))],
                                     end_stream=False, send=False)
                    for i, c in enumerate(chunks):
                        blob += w.data(1, c, end_stream=i == len(chunks) - 1, send=False)
                    w.send(blob)
                p = self.refused(label, send)
                time.sleep(0.2)
                entries = [e for e in self.A.request_log()["requests"] if p in e["line"]]
                note("content-length %s: the backend saw %r" % (
                    label, [(e["line"], "complete" if e["complete"] else "incomplete", e["body_len"]) for e in entries]))
            with self.subTest(case=label, check="the backend never completes a request the stream contradicts"):
                # A reset stream's request must not become a complete HTTP/1.1 message upstream
                # (e.g. the last byte of a content-length body held back until END_STREAM).
                self.assertEqual([e["line"] for e in entries if e["complete"]], [],
                                 "%s: the backend got a complete request for a reset stream" % label)
            if len(chunks) == 1:
                with self.subTest(case=label, check="nothing forwarded when all arrived in one TLS record"):
                    # HEADERS and the contradicting DATA came in one read: nothing needs to reach a backend.
                    self.assertEqual([e["line"] for e in entries], [], "%s: the backend saw the stream" % label)
        self.assertBackendNeverSaw(self.A, smuggle)
        self.assertHealthy(what="content-length mismatches")


# --------------------------------------------------------------------------- 4. header limits

class HeaderLimitTests(AbuseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.A = env.backend("A")
        env.domain("a.toml", ["a.test"], cls.A)
        cls.port = env.listener("https")
        env.start(limits={"max_header_bytes": 4096, "max_header_count": 50})

    def assertTooLarge(self, w, sid, label):
        w.read(lambda w: w.finished(sid), timeout=5)
        status, codes = w.status(sid), w.rst_codes(sid)
        self.assertTrue(status == 431 or codes, "%s: want 431 or RST_STREAM: %s" % (label, w.summary(sid)))
        if status is not None:
            self.assertEqual(status, 431, "%s: %s" % (label, w.summary(sid)))
            self.assertTrue(w.ended(sid) or codes, w.summary(sid))

    def test_header_block_over_max_header_bytes(self):
        paths = []
        for label, extra in (("one 8 KiB field", [("x-big", "b" * 8192)]),
                             ("40 fields of 200 bytes", [("x-f%d" % i, "v" * 200) for i in range(40)]),
                             ("60 small fields (max_header_count 50)", [("x-n%d" % i, "1") for i in range(60)])):
            with self.subTest(case=label):
                path = marker()
                paths.append(path)
                with Wire(self.port) as w:
                    w.request(1, path, extra=extra)
                    self.assertTooLarge(w, 1, label)
                    note("%s: %s" % (label, w.summary(1)))
                    if not w.goaways() and not w.closed:
                        w.request(3, "/bytes/10")
                        w.read(lambda w: w.finished(3))
                        self.assertEqual(w.status(3), 200, "%s: the connection goes on: %s" % (label, w.summary(3)))
        # The same over HEADERS + CONTINUATION (3 frames of 4 KiB).
        path = marker()
        paths.append(path)
        with Wire(self.port) as w:
            w.settle()
            block = hpack_request(path) + b"".join(hpack_literal("x-c%d" % i, "c" * 1000) for i in range(12))
            parts = [block[i:i + 4096] for i in range(0, len(block), 4096)]
            blob = frame(HEADERS, END_STREAM, 1, parts[0])
            for i, part in enumerate(parts[1:]):
                blob += frame(CONTINUATION, END_HEADERS if i == len(parts) - 2 else 0, 1, part)
            w.send(blob)
            self.assertTooLarge(w, 1, "12 KiB over CONTINUATION")
        for p in paths:
            self.assertBackendNeverSaw(self.A, p)
        self.assertHealthy(what="oversized header blocks")

    def test_hpack_bomb_is_refused_with_bounded_memory(self):
        """One 3000-byte field enters the dynamic table; then each stream's block names it
        4000 times by its 1-byte index: 12 MB of decoded fields per 4 KB block."""
        tag = uuid.uuid4().hex
        before = self.rss()
        streams = 40
        with Wire(self.port, timeout=20) as w:
            seed = "/bytes/10?seed-" + tag
            w.headers(1, None, block=hpack_request(seed) + hpack_literal("x-bomb", "b" * 3000, index=True))
            w.read(lambda w: w.finished(1))
            self.assertEqual(w.status(1), 200, "a single 3000-byte field is within 4096: %s" % w.summary(1))
            t0 = time.monotonic()
            blob = b""
            for i in range(streams):
                sid = 3 + 2 * i
                blob += frame(HEADERS, END_STREAM | END_HEADERS, sid,
                              hpack_request("/bomb-%s-%d" % (tag, i)) + hpack_indexed(62) * 4000)
            w.send(blob)
            last = 3 + 2 * (streams - 1)
            w.read(lambda w: all(w.finished(3 + 2 * i) for i in range(streams)) or w.goaways(), timeout=30)
            took = time.monotonic() - t0
            note("HPACK bomb: %d streams x 4000 x 3 KB decoded in %.2f s; %s" % (streams, took, w.summary(last)))
            for i in range(streams):
                sid = 3 + 2 * i
                if w.goaways() and sid > w.goaways()[0][0]:
                    continue   # not processed: fine
                self.assertTrue(w.status(sid) == 431 or w.rst_codes(sid),
                                "stream %d: want 431 or a reset: %s" % (sid, w.summary(sid)))
            if not w.goaways() and not w.closed:
                w.headers(last + 2, None, block=hpack_request("/bytes/10"))
                w.read(lambda w: w.finished(last + 2))
                self.assertEqual(w.status(last + 2), 200, "the connection goes on: %s" % w.summary(last + 2))
        self.assertBackendNeverSaw(self.A, "/bomb-" + tag)
        self.assertHealthy(rss_before=before, what="HPACK bomb")


# --------------------------------------------------------------------------- 5. attacks

class AttackTests(AbuseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.A = env.backend("A")
        cls.R = env.backend("R")     # Rapid Reset
        cls.M = env.backend("M")     # MadeYouReset
        cls.S = env.backend("S")     # max concurrent streams
        cls.C = env.backend("C")     # CONNECT
        env.domain("a.toml", ["a.test"], cls.A)
        env.domain("r.toml", ["r.test"], cls.R)
        env.domain("m.toml", ["m.test"], cls.M)
        env.domain("s.toml", ["s.test"], cls.S)
        env.domain("c.toml", ["c.test"], cls.C)
        cls.port = env.listener("https")
        env.start()

    def flood(self, w, make, total, batch, stop=lambda w: bool(w.goaways())):
        """Sends `total` units made by make(i) in batches, reading what arrived between
        batches; stops at `stop(w)`, a closed connection or a failed send. Returns how
        many units were sent."""
        sent = 0
        while sent < total:
            blob = b"".join(make(i) for i in range(sent, min(total, sent + batch)))
            if not w.send(blob):
                break
            sent = min(total, sent + batch)
            w.read(timeout=0.005)
            if stop(w) or w.closed:
                break
        return sent

    # -- Rapid Reset (CVE-2023-44487)

    def test_rapid_reset_costs_bounded_backend_requests_and_gets_goaway(self):
        path = marker()
        before = self.rss()
        total = 5000
        conns_before = self.R.request_log()["connections"]
        with Wire(self.port, sni="r.test") as w:
            w.read(lambda w: w.count(SETTINGS) > 0, timeout=2)

            def pair(i):
                sid = 1 + 2 * i
                return w.request(sid, "%s?%d" % (path, i), authority="r.test", send=False) + rst_frame(sid, CANCEL)
            sent = self.flood(w, pair, total, 100)
            w.read(lambda w: w.goaways(), timeout=10)
            w.read(lambda w: w.closed, timeout=3)
            note("Rapid Reset: %d HEADERS+RST_STREAM sent; %s" % (sent, w.summary()))
            time.sleep(0.5)
            seen = self.backend_lines(self.R, path)
            conns = self.R.request_log()["connections"] - conns_before
            note("Rapid Reset: the backend saw %d requests on %d new connections" % (len(seen), conns))
            self.assertLessEqual(len(seen), BACKEND_BOUND, "backend requests")
            # Each stream may have started a backend connection; nghttp2's own limiter
            # alone (1000 resets burst) would allow about 1000.
            self.assertLessEqual(conns, 2 * BACKEND_BOUND, "backend connections")
            self.assertTrue(w.goaways(), "no GOAWAY after %d rapid resets: %s" % (sent, w.summary()))
            self.assertEqual(w.goaways()[-1][1], ENHANCE_YOUR_CALM, w.summary())
            self.assertLess(sent, total, "GOAWAY came only after the whole flood was sent")
        self.assertHealthy(rss_before=before, what="Rapid Reset")

    def test_cancelling_a_few_streams_is_not_an_attack(self):
        # A browser navigating away cancels tens of streams: no GOAWAY.
        with Wire(self.port, sni="r.test") as w:
            blob = b""
            for i in range(30):
                sid = 1 + 2 * i
                blob += w.request(sid, "/sleep/300", authority="r.test", send=False) + rst_frame(sid)
            w.send(blob)
            w.request(61, "/bytes/100", authority="r.test")
            w.read(lambda w: w.finished(61))
            self.assertEqual(w.status(61), 200, w.summary(61))
            self.assertEqual(w.goaways(), [])

    # -- MadeYouReset (CVE-2025-8671): streams the server must reset itself

    def made_you_reset(self, label, make, total=1000, window=50):
        """Streams the server has to reset itself, `window` at a time: a careful attacker
        stays under SETTINGS_MAX_CONCURRENT_STREAMS and waits for the resets."""
        before = self.rss()
        conns_before = self.M.request_log()["connections"]
        with Wire(self.port, sni="m.test") as w:
            w.read(lambda w: w.count(SETTINGS) > 0, timeout=2)
            sent = 0
            while sent < total and not w.goaways() and not w.closed:
                sids = [1 + 2 * i for i in range(sent, min(total, sent + window))]
                if not w.send(b"".join(make(w, sid) for sid in sids)):
                    break
                sent += len(sids)
                w.read(lambda w: w.goaways() or all(w.finished(sid) for sid in sids), timeout=3)
            w.read(lambda w: w.goaways(), timeout=5)
            w.read(lambda w: w.closed, timeout=3)
            codes = {}
            for (t, _, _, p) in w.frames:
                if t == RST_STREAM:
                    c = error_name(int.from_bytes(p[:4], "big"))
                    codes[c] = codes.get(c, 0) + 1
            note("MadeYouReset (%s): %d streams sent, server resets %s; %s" % (label, sent, codes, w.summary()))
            time.sleep(0.5)
            seen = self.backend_lines(self.M, label)
            conns = self.M.request_log()["connections"] - conns_before
            note("MadeYouReset (%s): the backend saw %d requests on %d new connections" % (label, len(seen), conns))
            self.assertLessEqual(len(seen), BACKEND_BOUND, "%s: backend requests" % label)
            self.assertTrue(w.goaways(), "%s: no GOAWAY after %d server-side resets: %s" % (label, sent, w.summary()))
            code = w.goaways()[-1][1]
            note("MadeYouReset (%s): GOAWAY %s after %d streams" % (label, error_name(code), sent))
            self.assertNotEqual(code, NO_ERROR, w.summary())
            self.assertLess(sent, total, "%s: GOAWAY only after the whole flood" % label)
        self.assertHealthy(rss_before=before, what="MadeYouReset " + label)

    def test_made_you_reset_window_update_zero(self):
        # (nghttp2 1.52 makes this a connection error at once.)
        tag = "wu0-" + uuid.uuid4().hex

        def make(w, sid):
            return (w.request(sid, "/sleep/100?%s" % tag, authority="m.test", send=False)
                    + window_update_frame(sid, 0))
        self.made_you_reset(tag, make)

    def test_made_you_reset_stream_window_overflow(self):
        # RFC 9113 §6.9.1: a stream window above 2^31-1 is a stream error FLOW_CONTROL_ERROR.
        tag = "wov-" + uuid.uuid4().hex

        def make(w, sid):
            return (w.request(sid, "/sleep/100?%s" % tag, authority="m.test", send=False)
                    + window_update_frame(sid, 0x7FFFFFFF))
        self.made_you_reset(tag, make)

    def test_made_you_reset_data_after_end_stream(self):
        # RFC 9113 §5.1: DATA on a half-closed (remote) stream is a stream error STREAM_CLOSED.
        tag = "des-" + uuid.uuid4().hex

        def make(w, sid):
            return (w.request(sid, "/sleep/100?%s" % tag, authority="m.test", send=False)
                    + w.data(sid, b"x", send=False))
        self.made_you_reset(tag, make)

    def test_made_you_reset_data_beyond_content_length(self):
        tag = "cl-" + uuid.uuid4().hex

        def make(w, sid):
            return (w.request(sid, "/echo?%s" % tag, authority="m.test", method="POST",
                              extra=[("content-length", "1")], end_stream=False, send=False)
                    + w.data(sid, b"xy", send=False))
        self.made_you_reset(tag, make)

    def test_made_you_reset_malformed_headers(self):
        # The stream is reset before any exchange starts: still a glitch (a protocol error).
        tag = "te-" + uuid.uuid4().hex

        def make(w, sid):
            return w.request(sid, "/echo?%s" % tag, authority="m.test", extra=[("te", "gzip")], send=False)
        self.made_you_reset(tag, make)

    # -- CONTINUATION flood (CVE-2024-28182)

    def test_continuation_flood(self):
        before = self.rss()
        path = marker()
        with Wire(self.port, timeout=5) as w:
            w.settle()
            w.send(frame(HEADERS, END_STREAM, 1, hpack_request(path)))
            # 10 000 CONTINUATION frames of 1 KB each, END_HEADERS never set.
            chunk = lambda i: frame(CONTINUATION, 0, 1, hpack_literal("x-flood-%d" % i, "f" * 1000))
            sent = self.flood(w, chunk, 10000, 200, stop=lambda w: bool(w.goaways()) or bool(w.rst_codes(1)))
            w.read(lambda w: w.goaways() or w.closed, timeout=5)
            note("CONTINUATION flood: %d frames (%d KiB) sent; %s" % (sent, w.bytes_sent // KiB, w.summary(1)))
            self.assertTrue(w.goaways() or w.closed, "the connection outlived the flood: %s" % w.summary(1))
            self.assertLess(sent, 10000, "the whole flood was read")
            self.assertIsNone(w.status(1), w.summary(1))
        self.assertBackendNeverSaw(self.A, path)
        self.assertHealthy(rss_before=before, what="CONTINUATION flood")

    def test_empty_continuation_flood(self):
        before = self.rss()
        path = marker()
        with Wire(self.port, timeout=5) as w:
            w.settle()
            w.send(frame(HEADERS, END_STREAM, 1, hpack_request(path)))
            sent = self.flood(w, lambda i: frame(CONTINUATION, 0, 1), 100000, 2000)
            w.read(lambda w: w.goaways() or w.closed, timeout=5)
            note("empty CONTINUATION flood: %d frames sent; %s" % (sent, w.summary(1)))
            self.assertTrue(w.goaways() or w.closed, w.summary(1))
            self.assertLess(sent, 100000)
        self.assertBackendNeverSaw(self.A, path)
        self.assertHealthy(rss_before=before, what="empty CONTINUATION flood")

    # -- control frame floods

    def control_flood(self, label, make, total, batch):
        """Floods without reading; the connection may end, or stay usable."""
        before = self.rss()
        with Wire(self.port, timeout=3) as w:
            sent = 0
            while sent < total:
                blob = b"".join(make(i) for i in range(sent, min(total, sent + batch)))
                if not w.send(blob):
                    break
                sent += batch
            t0 = time.monotonic()
            w.drain(quiet=0.5, limit=10)
            outcome = "send stopped: %r" % w.send_error if w.send_error else "all sent"
            note("%s: %d frames sent (%s) in; then read %d frames in %.1f s; %s"
                 % (label, min(sent, total), outcome, len(w.frames), time.monotonic() - t0, w.summary()))
            if w.goaways() or w.closed:
                note("%s: the connection ended (%s)" % (label, [error_name(c) for (_, c, _) in w.goaways()]))
            else:
                # Still open: it must still work.
                w.request(1, "/bytes/100")
                w.read(lambda w: w.finished(1), timeout=5)
                self.assertEqual(w.status(1), 200, "%s: still open but not answering: %s" % (label, w.summary(1)))
                self.assertEqual(w.body(1), pattern_bytes(100))
        self.assertHealthy(rss_before=before, what=label)

    def test_settings_flood(self):
        self.control_flood("SETTINGS flood", lambda i: settings_frame([(SETTINGS_INITIAL_WINDOW_SIZE, 65535 + i % 7)]),
                           50000, 2000)

    def test_ping_flood(self):
        self.control_flood("PING flood", lambda i: ping_frame(i.to_bytes(8, "big")), 50000, 2000)

    def test_window_update_flood(self):
        self.control_flood("WINDOW_UPDATE flood", lambda i: window_update_frame(0, 1), 100000, 5000)

    def test_settings_with_many_entries(self):
        # nghttp2_option_set_max_settings(32): a SETTINGS frame of 1000 entries is refused.
        with Wire(self.port) as w:
            w.read(lambda w: w.count(SETTINGS) > 0, timeout=2)
            w.send(settings_frame([(SETTINGS_HEADER_TABLE_SIZE, 4096)] * 1000))
            w.read(lambda w: w.goaways() or w.closed, timeout=5)
            note("SETTINGS with 1000 entries: %s" % w.summary())
            self.assertTrue(w.goaways(), w.summary())
            self.assertEqual(w.goaways()[-1][1], ENHANCE_YOUR_CALM, w.summary())
        self.assertHealthy(what="SETTINGS with 1000 entries")

    # -- more streams than SETTINGS_MAX_CONCURRENT_STREAMS

    def too_many_streams(self, acknowledged):
        tag = uuid.uuid4().hex
        n = 130
        with Wire(self.port, sni="s.test", timeout=15) as w:
            if acknowledged:
                # The server's SETTINGS read and ACKed first: its limit is in force.
                w.read(lambda w: any(f[0] == SETTINGS and f[1] & ACK for f in w.frames), timeout=3)
                adv = [f for f in w.frames if f[0] == SETTINGS and not f[1] & ACK][0][3]
                entries = {int.from_bytes(adv[i:i + 2], "big"): int.from_bytes(adv[i + 2:i + 6], "big")
                           for i in range(0, len(adv), 6)}
                self.assertEqual(entries.get(SETTINGS_MAX_CONCURRENT_STREAMS), 100)
                time.sleep(0.1)
            blob = b"".join(w.request(1 + 2 * i, "/sleep/500?%s-%d" % (tag, i), authority="s.test", send=False)
                            for i in range(n))
            w.send(blob)
            sids = [1 + 2 * i for i in range(n)]
            w.read(lambda w: all(w.finished(s) for s in sids) or w.goaways(), timeout=15)
            if w.goaways():
                w.read(lambda w: w.closed or all(w.finished(s) for s in sids), timeout=5)
            ok = [s for s in sids if w.status(s) == 200 and w.ended(s)]
            refused = {s: w.rst_codes(s) for s in sids if w.rst_codes(s)}
            note("%d streams at once (SETTINGS %s): %d answered 200, %d reset %s; %s" % (
                n, "ACKed" if acknowledged else "not yet ACKed", len(ok), len(refused),
                sorted({error_name(c[0]) for c in refused.values()}), w.summary()))
            time.sleep(0.3)
            seen = self.backend_lines(self.S, tag)
            note("the backend saw %d of them" % len(seen))
            if acknowledged and w.goaways():
                # nghttp2 1.52 makes a burst past the limit the client has
                # acknowledged a connection error (RFC 9113 §5.1.2 asks for a
                # stream error; README, HTTP/2): the connection ends, nothing
                # past the limit reaches a backend, the process stays healthy.
                self.assertLessEqual(len(seen), 100)
                for i in range(100, n):
                    self.assertNotIn("/sleep/500?%s-%d " % (tag, i), " ".join(seen) + " ")
                self.assertHealthy(what="too many streams")
                return
            self.assertEqual(w.goaways(), [], "a stream error, not a connection error (RFC 9113 §5.1.2)")
            self.assertEqual(ok, sids[:100], "the first 100 streams complete")
            self.assertEqual(sorted(refused), sids[100:], "the other 30 are refused")
            for s, codes in refused.items():
                self.assertIn(codes[0], (REFUSED_STREAM, PROTOCOL_ERROR), "stream %d" % s)
            self.assertLessEqual(len(seen), 100)
            for i in range(100, n):
                self.assertNotIn("/sleep/500?%s-%d " % (tag, i), " ".join(seen) + " ")
        self.assertHealthy(what="too many streams")

    def test_more_streams_than_max_concurrent_before_settings_ack(self):
        self.too_many_streams(acknowledged=False)

    def test_more_streams_than_max_concurrent_after_settings_ack(self):
        self.too_many_streams(acknowledged=True)

    # -- plain CONNECT

    def test_plain_connect_is_refused_and_never_tunnelled(self):
        smuggled = marker()
        count_before = len(self.C.request_log()["requests"])
        with Wire(self.port, sni="c.test") as w:
            w.headers(1, [(":method", "CONNECT"), (":authority", "c.test:443")], end_stream=False)
            w.data(1, ("GET %s HTTP/1.1\r\nHost: c.test\r\n\r\n" % smuggled).encode(), end_stream=False)
            w.read(lambda w: w.finished(1) or w.status(1), timeout=5)
            w.drain(quiet=0.3)
            note("plain CONNECT: %s" % w.summary(1))
            self.assertTrue(w.status(1) == 405 or w.rst_codes(1), w.summary(1))
            if w.status(1) == 405:
                self.assertEqual(len([v for k, v in w.response_headers(1) if k == "strict-transport-security"]), 1)
            # CONNECT with :scheme and :path but no :protocol is malformed (RFC 9113 §8.5).
            w.headers(3, [(":method", "CONNECT"), (":scheme", "https"), (":authority", "c.test:443"),
                          (":path", smuggled)])
            w.read(lambda w: w.finished(3), timeout=5)
            self.assertTrue(w.status(3) in (400, 405) or w.rst_codes(3), w.summary(3))
        time.sleep(0.2)
        log = self.C.request_log()["requests"]
        self.assertEqual(len(log), count_before, "CONNECT reached the backend: %r" % [e["line"] for e in log])
        self.assertBackendNeverSaw(self.C, smuggled)
        self.assertHealthy(what="CONNECT")


class ZeroWindowTests(AbuseCase):
    """A client that advertises SETTINGS_INITIAL_WINDOW_SIZE=0 and never opens it:
    after `idle` seconds without progress its stream is reset, never ended as if complete.
    (backend_response stays at the harness's 30 s: the client, not the backend, stalls.)"""

    IDLE = 2
    REQUEST_HEADER = 2

    @classmethod
    def setUpEnv(cls, env):
        cls.A = env.backend("A")
        env.domain("a.toml", ["a.test"], cls.A)
        cls.port = env.listener("https")
        env.start(timeouts={"idle": cls.IDLE, "request_header": cls.REQUEST_HEADER})

    def test_client_that_stops_reading_its_socket_is_cut_off_without_spinning(self):
        # Responses fill the socket and the client never reads: after `idle`
        # seconds without a byte leaving, the connection is aborted, and the
        # wait costs no CPU (a reset stream waits only for its RST to be written).
        pid = self.env.gatehouse.proc.pid

        def cpu_seconds():
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with Wire(self.port) as w:
            w.settle()
            w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            w.send(b"".join(w.request(1 + 2 * i, "/bytes/%d" % (4 * MiB), send=False) for i in range(8)))
            time.sleep(1.0)
            before = cpu_seconds()
            time.sleep(self.IDLE + 3)
            spent = cpu_seconds() - before
            note("client not reading its socket: %.2f s of CPU over %d s" % (spent, self.IDLE + 3))
            self.assertLess(spent, 1.0, "the connection spins while its client does not read")
            w.sock.settimeout(5)
            closed = False
            try:
                while w.sock.recv(1 << 20):
                    pass
                closed = True
            except (ssl.SSLError, OSError):
                closed = True
            self.assertTrue(closed, "the connection was not cut off")
        self.assertHealthy(what="client not reading")

    def test_header_block_that_never_ends_is_dropped(self):
        # HEADERS + one CONTINUATION without END_HEADERS, then silence (a slow-headers client).
        path = marker()
        with Wire(self.port) as w:
            w.settle()
            t0 = time.monotonic()
            block = hpack_request(path) + hpack_literal("x-slow", "s" * 100)
            w.send(frame(HEADERS, END_STREAM, 1, block[:20]) + frame(CONTINUATION, 0, 1, block[20:]))
            w.read(lambda w: w.rst_codes(1) or w.goaways() or w.closed, timeout=self.REQUEST_HEADER + 5)
            took = time.monotonic() - t0
            note("unfinished header block: after %.1f s: %s" % (took, w.summary(1)))
            self.assertTrue(w.rst_codes(1) or w.goaways() or w.closed,
                            "nothing within request_header + 5 s: %s" % w.summary(1))
            self.assertIsNone(w.status(1))
        self.assertBackendNeverSaw(self.A, path)
        self.assertHealthy(what="unfinished header block")

    def test_zero_window_reader_is_reset_after_idle(self):
        before = self.rss()
        with Wire(self.port, settings=[(SETTINGS_INITIAL_WINDOW_SIZE, 0)], timeout=15) as w:
            t0 = time.monotonic()
            w.request(1, "/bytes/%d" % MiB)
            w.read(lambda w: w.finished(1) or w.closed, timeout=self.IDLE + 6)
            took = time.monotonic() - t0
            note("zero window: after %.1f s: %s" % (took, w.summary(1)))
            self.assertEqual(w.body(1), b"", "no DATA fits a zero window")
            self.assertFalse(w.ended(1), "the stream was ended as if its body were complete: %s" % w.summary(1))
            self.assertTrue(w.rst_codes(1), "no RST_STREAM within idle + 6 s (%.1f s): %s" % (took, w.summary(1)))
            self.assertGreaterEqual(took, self.IDLE - 0.5, "reset before the idle timeout")
            if not w.closed and not w.goaways():
                # Usable again once the client opens its window.
                w.send(settings_frame([(SETTINGS_INITIAL_WINDOW_SIZE, 65535)]))
                w.request(3, "/bytes/1000")
                w.read(lambda w: w.finished(3), timeout=5)
                self.assertEqual(w.status(3), 200, w.summary(3))
                self.assertEqual(w.body(3), pattern_bytes(1000))
        self.assertHealthy(rss_before=before, what="zero window")

    def test_many_zero_window_streams_stay_bounded(self):
        # 50 streams of 2 MiB nobody reads: at most ~256 KiB each waits in Gatehouse.
        before = self.rss()
        with Wire(self.port, settings=[(SETTINGS_INITIAL_WINDOW_SIZE, 0)], timeout=15) as w:
            w.send(b"".join(w.request(1 + 2 * i, "/bytes/%d" % (2 * MiB), send=False) for i in range(50)))
            time.sleep(1.0)
            peak = self.rss()
            note("50 zero-window streams of 2 MiB: VmRSS %.1f -> %.1f MiB" % (before / MiB, peak / MiB))
            self.assertLess(peak - before, MEMORY_BOUND, "Gatehouse buffers what the client does not read")
            w.read(timeout=0.5)
            self.assertFalse(any(w.ended(1 + 2 * i) for i in range(50)), w.summary())
        self.assertHealthy(rss_before=before, what="50 zero-window streams")


# --------------------------------------------------------------------------- 6. after GOAWAY

class AfterGoawayTests(AbuseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.A = env.backend("A")
        env.domain("a.toml", ["a.test"], cls.A)
        cls.port = env.listener("https")
        env.start(timeouts={"drain": 20})

    def test_stream_opened_after_goaway_is_refused(self):
        late = marker()
        with Wire(self.port) as w:
            w.request(1, "/sleep/1500")
            w.read(timeout=0.3)
            self.env.gatehouse.proc.send_signal(signal.SIGTERM)
            self.assertTrue(w.read(lambda w: w.goaways(), timeout=5), w.summary())
            last = w.goaways()[0][0]
            self.assertEqual(last, 1, "GOAWAY names stream 1")
            # Stream 3 is above last_stream_id: it must not be processed (RFC 9113 §6.8).
            w.request(3, late)
            w.request(5, late + "-post", method="POST", extra=[("content-length", "3")], end_stream=False)
            w.data(5, b"abc")
            w.read(lambda w: w.closed, timeout=10)
            note("after GOAWAY: %s; stream 3: %s" % (w.summary(1), w.summary(3)))
            self.assertEqual(w.status(1), 200, w.summary(1))
            self.assertEqual(w.body(1), b"slept 1500 ms\n")
            self.assertTrue(w.ended(1))
            for sid in (3, 5):
                self.assertIsNone(w.status(sid), "stream %d above last_stream_id was answered" % sid)
                self.assertFalse(w.ended(sid))
                for code in w.rst_codes(sid):
                    self.assertEqual(code, REFUSED_STREAM)
        self.assertBackendNeverSaw(self.A, late)
        self.env.gatehouse.proc.wait(timeout=10)
