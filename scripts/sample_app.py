#!/usr/bin/env python3
"""Gatehouse sample backend: a small, strict-enough HTTP/1.1 server (stdlib only).

Used by scripts/demo and by the integration tests (Tests/integration) as the real
process behind the proxy. One thread per TCP connection, keep-alive, request bodies
framed by Content-Length or Transfer-Encoding: chunked (decoded).

    sample_app.py --listen 127.0.0.1:9001 [--name app1] [--log]
    sample_app.py --unix /tmp/app.sock   [--name app1]

Prints "ready <address>" on stdout once listening (with --listen 127.0.0.1:0 the
address tells the port the kernel picked).

Every response carries X-Backend-Conn (a counter per accepted connection, so a
client can tell whether requests shared one backend connection), X-Backend-Req
(the request's number on that connection) and X-Backend-Name (--name).

Endpoints (HEAD works everywhere and sends no body):
  /echo                       JSON {method, target, version, headers: [[name, value]...],
                              body_len, body_sha256}
  /bytes/N                    N deterministic bytes (a repeating 251-byte pattern),
                              Content-Length framed
  /chunked/N                  the same N bytes, chunked, in irregular chunk sizes
  /sleep/MS                   waits MS milliseconds, then 200
  /status/CODE                answers CODE (204 and 304 without a body)
  /ws                         WebSocket handshake, then echoes the tunnel's bytes (?sink:
                              keeps them; /_requests then shows tunnel_bytes)
  /hop                        answers with hop-by-hop and HSTS fields the proxy must
                              strip or replace
  /early-hints                a 103 Early Hints (Link) first, then 200 "hinted"
  /csp                        200 with the app's own Content-Security-Policy
  /.well-known/acme-challenge/TOKEN   200 "acme:TOKEN"
  /_requests                  (for tests) JSON {"connections": N accepted so far,
                              "requests": [{conn, req, line, head, complete, body_len,
                              body_prefix, error}...]}: every request head this process
                              received, recorded before parsing (so rejected and
                              unfinished requests are listed too); requests for
                              /_requests itself are not recorded
  / and anything else         text/plain: the request line and header lines exactly
                              as received
"""

import argparse
import base64
import hashlib
import itertools
import json
import os
import re
import signal
import socket
import sys
import threading
import time

PATTERN = bytes(range(251))  # prime length: chunk boundaries never line up with it
MAX_HEAD = 64 * 1024
MAX_CHUNK_LINE = 4096
CHUNK_SIZES = (1, 7, 100, 4096, 3, 65521, 17, 16384, 0x1FFF, 2, 31337)

TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
REQUEST_LINE_RE = re.compile(rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) (HTTP/1\.[01])$")

REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    206: "Partial Content", 301: "Moved Permanently", 302: "Found", 304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
    413: "Content Too Large", 418: "I'm a teapot", 421: "Misdirected Request",
    429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}

_conn_ids = itertools.count(1)
_conn_lock = threading.Lock()
_conns_accepted = 0

# The request log behind GET /_requests (for tests): one entry per request head
# received, recorded before the head is parsed. Entries are only changed under
# the lock.
_request_log = []
_request_log_lock = threading.Lock()
LOG_BODY_PREFIX = 1024
_LOG_SKIP_RE = re.compile(rb"^GET /_requests(?:[?# ]|$)")


def _record_request(conn_id, number, head):
    line = head.split(b"\r\n", 1)[0]
    if _LOG_SKIP_RE.match(line):
        return None
    entry = {"conn": conn_id, "req": number, "line": line.decode("latin-1"),
             "head": head.decode("latin-1"), "complete": False, "body_len": 0,
             "body_prefix": "", "error": None}
    with _request_log_lock:
        _request_log.append(entry)
    return entry


def _update_request(entry, **fields):
    if entry is not None:
        with _request_log_lock:
            entry.update(fields)


def pattern_bytes(n, offset=0):
    """The deterministic body of /bytes/N (offset lets streaming code continue it)."""
    start = offset % len(PATTERN)
    reps = (start + n) // len(PATTERN) + 1
    return (PATTERN * reps)[start:start + n]


def to_json(doc):
    """JSON with one key per line and one header pair per line (readable in the demo)."""
    items = []
    for k, v in doc.items():
        if isinstance(v, list):
            inner = ",\n".join("    " + json.dumps(x) for x in v)
            items.append('  %s: [%s]' % (json.dumps(k), ("\n" + inner + "\n  ") if v else ""))
        else:
            items.append("  %s: %s" % (json.dumps(k), json.dumps(v)))
    return "{\n" + ",\n".join(items) + "\n}\n"


class BadRequest(Exception):
    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    pass


class Request:
    __slots__ = ("method", "target", "version", "headers", "raw_head", "line")

    def header(self, name):
        name = name.lower()
        return [v for (k, v) in self.headers if k.lower() == name]


class Connection:
    def __init__(self, sock, args, conn_id):
        self.sock = sock
        self.args = args
        self.conn_id = conn_id
        self.buf = bytearray()
        self.requests = 0
        self.log_entry = None

    # --- reading -----------------------------------------------------------------
    def _fill(self):
        data = self.sock.recv(256 * 1024)
        if not data:
            raise ClientGone()
        self.buf += data

    def read_head(self):
        """Returns the raw head (up to and including the empty line) or None on a
        clean close before any byte of a new request."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buf[:end + 4])
                del self.buf[:end + 4]
                return head
            if len(self.buf) > MAX_HEAD:
                raise BadRequest("request head too large", 431)
            try:
                self._fill()
            except ClientGone:
                if self.buf.strip(b"\r\n"):
                    raise BadRequest("connection closed inside request head")
                return None

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > MAX_CHUNK_LINE:
                raise BadRequest("chunk line too long")
            self._fill()

    def parse_head(self, head):
        lines = head[:-4].split(b"\r\n")
        m = REQUEST_LINE_RE.match(lines[0])
        if not m:
            raise BadRequest("malformed request line %r" % lines[0][:200])
        req = Request()
        req.method, req.target, req.version = (x.decode("latin-1") for x in m.groups())
        req.line = lines[0].decode("latin-1")
        req.raw_head = head
        req.headers = []
        for raw in lines[1:]:
            if raw[:1] in (b" ", b"\t"):
                raise BadRequest("obsolete line folding")
            name, sep, value = raw.partition(b":")
            if not sep or not TOKEN_RE.match(name):
                raise BadRequest("malformed header line %r" % raw[:200])
            if b"\n" in value or b"\r" in value or b"\0" in value:
                raise BadRequest("bad character in field value")
            req.headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        if req.version == "HTTP/1.1" and len(req.header("host")) != 1:
            raise BadRequest("HTTP/1.1 request needs exactly one Host")
        return req

    def read_body(self, req, sink):
        """Feeds the request body to sink(bytes); returns its length."""
        te = req.header("transfer-encoding")
        cl = req.header("content-length")
        if te:
            if cl:
                raise BadRequest("both Content-Length and Transfer-Encoding")
            codings = [c.strip().lower() for c in ",".join(te).split(",") if c.strip()]
            if codings != ["chunked"]:
                raise BadRequest("unsupported transfer coding %r" % ",".join(te), 501)
            return self._read_chunked(sink)
        if cl:
            values = {v.strip() for v in ",".join(cl).split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise BadRequest("bad Content-Length %r" % cl)
            remaining = int(next(iter(values)))
            total = remaining
            while remaining:
                if not self.buf:
                    self._fill()
                take = min(remaining, len(self.buf))
                sink(bytes(self.buf[:take]))
                del self.buf[:take]
                remaining -= take
            return total
        return 0

    def _read_chunked(self, sink):
        total = 0
        while True:
            line = self.read_line()
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not size_text or not re.match(rb"^[0-9A-Fa-f]{1,15}$", size_text):
                raise BadRequest("bad chunk size line %r" % line[:100])
            size = int(size_text, 16)
            if size == 0:
                while self.read_line():  # trailer section, ends with an empty line
                    pass
                return total
            remaining = size
            while remaining:
                if not self.buf:
                    self._fill()
                take = min(remaining, len(self.buf))
                sink(bytes(self.buf[:take]))
                del self.buf[:take]
                remaining -= take
            total += size
            if self.read_exact(2) != b"\r\n":
                raise BadRequest("chunk data not followed by CRLF")

    # --- writing -----------------------------------------------------------------
    def send_response(self, req, status, headers=(), body=b"", keep_alive=True,
                      chunks=None):
        reason = REASONS.get(status, "Status")
        out = ["HTTP/1.1 %d %s" % (status, reason)]
        out.append("X-Backend-Conn: %d" % self.conn_id)
        out.append("X-Backend-Req: %d" % self.requests)
        out.append("X-Backend-Name: %s" % self.args.name)
        out.append("Date: %s" % time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()))
        out.extend("%s: %s" % h for h in headers)
        bodiless = status in (204, 304) or 100 <= status < 200
        if chunks is not None:
            out.append("Transfer-Encoding: chunked")
        elif not bodiless:
            out.append("Content-Length: %d" % len(body))
        if not keep_alive:
            out.append("Connection: close")
        head = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
        if req is not None and req.method == "HEAD" or bodiless:
            self.sock.sendall(head)
            return
        if chunks is None:
            self.sock.sendall(head + body)
            return
        self.sock.sendall(head)
        pending = bytearray()
        for chunk in chunks:
            if chunk:
                pending += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
            if len(pending) > 64 * 1024:
                self.sock.sendall(bytes(pending))
                pending.clear()
        pending += b"0\r\n\r\n"
        self.sock.sendall(bytes(pending))

    # --- the loop ----------------------------------------------------------------
    def serve(self):
        try:
            while True:
                head = self.read_head()
                if head is None:
                    return
                self.requests += 1
                self.log_entry = _record_request(self.conn_id, self.requests, head)
                req = self.parse_head(head)
                if not self.handle(req):
                    return
        except BadRequest as e:
            _update_request(self.log_entry, error=str(e))
            self.log("bad request: %s" % e)
            try:
                self.send_response(None, e.status, [("Content-Type", "text/plain")],
                                   ("%d %s\n" % (e.status, e)).encode(), keep_alive=False)
            except OSError:
                pass
        except (ClientGone, ConnectionError, socket.timeout, OSError):
            pass
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def keep_alive(self, req):
        tokens = {t.strip().lower() for v in req.header("connection") for t in v.split(",")}
        if req.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    def handle(self, req):
        if req.version == "HTTP/1.1" and any(
                v.strip().lower() == "100-continue" for v in req.header("expect")):
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        digest = hashlib.sha256()
        entry = self.log_entry
        if entry is None:
            body_len = self.read_body(req, digest.update)
        else:
            prefix = bytearray()

            def sink(data):
                digest.update(data)
                if len(prefix) < LOG_BODY_PREFIX:
                    prefix.extend(data[:LOG_BODY_PREFIX - len(prefix)])
                    _update_request(entry, body_prefix=prefix.decode("latin-1"))

            body_len = self.read_body(req, sink)
            _update_request(entry, complete=True, body_len=body_len)
        ka = self.keep_alive(req)
        path = req.target.split("?", 1)[0]
        status = self.route(req, path, body_len, digest, ka)
        self.log("%s %s %s -> %d (conn %d, req %d, body %d bytes)" % (
            req.method, req.target, req.version, status, self.conn_id, self.requests, body_len))
        return ka

    def route(self, req, path, body_len, digest, ka):
        text = [("Content-Type", "text/plain; charset=utf-8")]
        if path == "/ws":
            return self.websocket(req)
        m = re.match(r"^/(bytes|chunked|sleep|status)/(\d{1,9})$", path)
        if path == "/_requests":
            with _request_log_lock:
                doc = {"connections": _conns_accepted,
                       "requests": [dict(e) for e in _request_log]}
            self.send_response(req, 200, [("Content-Type", "application/json")],
                               json.dumps(doc).encode(), ka)
            return 200
        if path == "/echo":
            doc = {
                "method": req.method, "target": req.target, "version": req.version,
                "headers": [[k, v] for (k, v) in req.headers],
                "body_len": body_len, "body_sha256": digest.hexdigest(),
            }
            body = to_json(doc).encode()
            self.send_response(req, 200, [("Content-Type", "application/json")], body, ka)
            return 200
        if m and m.group(1) == "bytes":
            n = int(m.group(2))
            self.send_response(req, 200, [("Content-Type", "application/octet-stream")],
                               pattern_bytes(n), ka)
            return 200
        if m and m.group(1) == "chunked":
            n = int(m.group(2))
            self.send_response(req, 200, [("Content-Type", "application/octet-stream")],
                               keep_alive=ka, chunks=self._irregular_chunks(n))
            return 200
        if m and m.group(1) == "sleep":
            ms = int(m.group(2))
            time.sleep(ms / 1000.0)
            self.send_response(req, 200, text, b"slept %d ms\n" % ms, ka)
            return 200
        if m and m.group(1) == "status":
            code = int(m.group(2))
            if not 200 <= code <= 599:
                code = 400
            self.send_response(req, code, text, ("%d %s\n" % (code, REASONS.get(code, ""))).encode(), ka)
            return code
        if path == "/hop":
            hop = [
                ("Content-Type", "text/plain"),
                ("Connection", "X-Secret"),
                ("X-Secret", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Strict-Transport-Security", "max-age=1"),
            ]
            self.send_response(req, 200, hop, b"hop\n", ka)
            return 200
        if path == "/early-hints":
            self.sock.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n")
            self.send_response(req, 200, text, b"hinted\n", ka)
            return 200
        if path == "/csp":
            self.send_response(req, 200, text + [("Content-Security-Policy", "default-src 'self'")], b"csp\n", ka)
            return 200
        if path.startswith("/.well-known/acme-challenge/"):
            token = path[len("/.well-known/acme-challenge/"):]
            # What the proxy told us, for tests (the body itself must stay exact).
            seen = [("X-Seen-Forwarded-Proto", ",".join(req.header("x-forwarded-proto")) or "-"),
                    ("X-Seen-Forwarded-For", ",".join(req.header("x-forwarded-for")) or "-"),
                    ("X-Seen-Host", ",".join(req.header("host")) or "-")]
            self.send_response(req, 200, text + seen, ("acme:" + token).encode("latin-1"), ka)
            return 200
        self.send_response(req, 200, text, req.raw_head, ka)
        return 200

    def websocket(self, req):
        """RFC 6455 §4.2.2 opening handshake, then echoes raw bytes until the peer
        closes (the proxy under test must not care what flows in the tunnel). A
        request without `Upgrade: websocket` gets 426; `?refuse` answers 200
        with a normal body instead of switching (an upgrade the backend refused)."""
        upgrade = ",".join(req.header("upgrade")).lower()
        key = ",".join(req.header("sec-websocket-key"))
        if "refuse" in req.target or "websocket" not in upgrade or not key:
            status = 200 if "refuse" in req.target else 426
            self.send_response(req, status, [("Content-Type", "text/plain")],
                               b"upgrade refused\n" if status == 200 else b"upgrade required\n", True)
            return status
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: %s\r\nX-Seen-Connection: %s\r\n\r\n"
                           % (accept, ",".join(req.header("connection")))).encode())
        self.log("%s %s -> 101 (conn %d): tunnel" % (req.method, req.target, self.conn_id))
        sink = "sink" in req.target
        total = len(self.buf)
        if self.buf and not sink:
            self.sock.sendall(bytes(self.buf))
        self.buf.clear()
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    raise ClientGone()
                if data == b"close-from-backend":
                    raise ClientGone()
                total += len(data)
                if not sink:
                    self.sock.sendall(data)
        finally:
            # For tests: how many tunnel bytes arrived (?sink: none echoed).
            if self.log_entry is not None:
                _update_request(self.log_entry, tunnel_bytes=total)

    @staticmethod
    def _irregular_chunks(n):
        sent = 0
        for size in itertools.cycle(CHUNK_SIZES):
            if sent >= n:
                return
            size = min(size, n - sent)
            yield pattern_bytes(size, sent)
            sent += size

    def log(self, msg):
        if self.args.log:
            sys.stderr.write("[%s] %s\n" % (self.args.name, msg))
            sys.stderr.flush()


def serve_forever(listener, args):
    global _conns_accepted
    while True:
        try:
            sock, _ = listener.accept()
        except InterruptedError:
            continue
        except OSError:
            return
        with _conn_lock:
            conn_id = next(_conn_ids)
            _conns_accepted += 1
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(args.idle_timeout)
        t = threading.Thread(target=Connection(sock, args, conn_id).serve, daemon=True)
        t.start()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", metavar="HOST:PORT", help="TCP address, e.g. 127.0.0.1:9001 (port 0: any)")
    where.add_argument("--unix", metavar="PATH", help="unix socket path")
    ap.add_argument("--name", default="app", help="value of X-Backend-Name (default: app)")
    ap.add_argument("--log", action="store_true", help="one line per request on stderr")
    ap.add_argument("--idle-timeout", type=float, default=120.0,
                    help="seconds a connection may sit idle (default 120)")
    args = ap.parse_args()

    if args.listen:
        host, sep, port = args.listen.rpartition(":")
        if not sep or not port.isdigit():
            ap.error("--listen wants HOST:PORT")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, int(port)))
        bound = listener.getsockname()
        address = "%s:%d" % (("[%s]" % bound[0]) if family == socket.AF_INET6 else bound[0], bound[1])
    else:
        if os.path.exists(args.unix):
            os.unlink(args.unix)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(args.unix)
        address = "unix:" + args.unix
    listener.listen(128)

    def stop(*_):
        if args.unix:
            try:
                os.unlink(args.unix)
            except OSError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready " + address, flush=True)
    serve_forever(listener, args)


if __name__ == "__main__":
    main()
