"""HTTP/1.1 forwarding that cannot be smuggled: one regression case per request
Gatehouse must refuse, checked from both ends.

Client side: the status (400, 413, 414, 431, 505), `Connection: close`, Gatehouse's
own error body, and that the connection is closed right after that one response
(so nothing sent after the bad request is ever answered).
Backend side: scripts/sample_app.py's request log (GET /_requests, asked directly on
the backend's port) lists every request head the backend received, even ones it
rejected or never finished. Every request carries a unique marker; for a request
refused on its head the backend must have received nothing carrying that marker.
A chunked body can only be judged while it streams, after its head went upstream:
for those the backend may have seen the head, but never a complete request.
No request line the backend ever saw may contain "/smuggled".

RFC references are to RFC 9112 (HTTP/1.1) and RFC 9110 (HTTP semantics).
"""

import itertools
import socket
import ssl
import time
import unittest

from harness import GatehouseCase, HTTPClient

HOST = "a.test"
MAX_BODY = 1000
PLACEHOLDER = b"@@@@@"        # replaced by a per-case marker of the same length
SETTLE = 0.3                  # lets the backend record anything still in flight

_markers = itertools.count(1)


def new_marker():
    return b"c%04d" % next(_markers)


def req(*fields, body=b"", method=b"POST", target=b"/echo?m=@@@@@", version=b"HTTP/1.1", host=True,
        eol=b"\r\n"):
    """Raw request bytes: request line, Host (unless host=False), `fields` (bytes
    lines, without line ends), empty line, body. Nothing is added or fixed up."""
    lines = [method + b" " + target + b" " + version]
    if host:
        lines.append(b"Host: " + HOST.encode())
    lines.extend(fields)
    return eol.join(lines) + eol + eol + body


SMUGGLED = b"GET /smuggled?m=@@@@@ HTTP/1.1\r\nHost: a.test\r\n\r\n"


def chunk(data):
    return b"%x\r\n" % len(data) + data + b"\r\n"


def cl(data):
    return b"Content-Length: %d" % len(data)


def entry_text(e):
    return e["head"] + e["body_prefix"]


def read_until_closed(client, timeout=3.0):
    """(bytes that arrived after what was already parsed, closed?). A reset counts as closed."""
    extra = bytes(client.buf)
    client.buf.clear()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return extra, False
        client.sock.settimeout(left)
        try:
            data = client.sock.recv(65536)
        except socket.timeout:
            return extra, False
        except (ssl.SSLError, OSError):
            return extra, True
        if not data:
            return extra, True
        extra += data


class Case:
    """One request (template with PLACEHOLDER) and what must happen to it.
    status: the status Gatehouse must answer (an error, then close), or 200 for a
    request that must be forwarded. reach: for refused requests "none" (refused on
    its head: the backend gets nothing) or "incomplete" (refused in a chunked body:
    the backend never gets a complete request). check: for forwarded requests, a
    function(test, [log entries]) with more assertions about what the backend got."""

    def __init__(self, name, template, status, reach="none", check=None):
        assert PLACEHOLDER in template, "case %r carries no marker" % name
        self.name = name
        self.marker = new_marker()
        self.payload = template.replace(PLACEHOLDER, self.marker)
        self.status = status
        self.reach = reach
        self.check = check


def one_field(name, value=None):
    """check: the backend got exactly one `name` field (with `value`, if given)."""
    def check(test, entries):
        head = entries[0]["head"].lower()
        lines = [l for l in head.split("\r\n") if l.startswith(name.lower() + ":")]
        test.assertEqual(len(lines), 1, "backend should see exactly one %s, head: %r" % (name, entries[0]["head"]))
        if value is not None:
            test.assertEqual(lines[0].split(":", 1)[1].strip(), value.lower())
    return check


def no_field(name):
    def check(test, entries):
        head = entries[0]["head"].lower()
        test.assertNotIn("\r\n" + name.lower() + ":", head, "backend saw %s: %r" % (name, entries[0]["head"]))
    return check


def body_is(data):
    def check(test, entries):
        test.assertEqual(entries[0]["body_len"], len(data))
        test.assertEqual(entries[0]["body_prefix"].encode("latin-1"), data[:1024])
    return check


def all_of(*checks):
    def check(test, entries):
        for c in checks:
            c(test, entries)
    return check


class SmugglingTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.app = env.backend("A")
        env.domain("a.toml", [HOST], cls.app, max_body_bytes=MAX_BODY)
        cls.port = env.listener("https")
        cls.http_port = env.listener("http", https_port=cls.port)
        env.start()

    def tearDown(self):
        self.assertTrue(self.env.gatehouse.alive(), "gatehouse exited:\n" + self.env.gatehouse.output())

    # --- the machinery ----------------------------------------------------------------
    def send_case(self, case, port=None, plain=False):
        """Sends the payload on a fresh connection and checks the client side."""
        port = port or self.port
        c = HTTPClient.plain(port, timeout=5) if plain else HTTPClient.tls(port, HOST, timeout=5)
        with c:
            try:
                c.send(case.payload)
            except (ssl.SSLError, OSError):
                pass  # Gatehouse may refuse and close before it has read everything
            try:
                r = c.read_response()
            except (ConnectionError, ssl.SSLError, OSError, ValueError) as e:
                self.fail("no response to %r: %r" % (case.payload[:300], e))
            if case.status != 200:
                self.assertGatehouseError(r, case.status)
                self.assertIn("close", [v.lower() for v in r.all("connection")],
                              "an error response that ends the connection must say Connection: close")
                extra, closed = read_until_closed(c)
                self.assertTrue(closed, "connection left open after %d" % case.status)
                self.assertEqual(extra, b"", "bytes after the error response (a second, smuggled response?)")
            else:
                self.assertEqual(r.status, 200, r.summary())
                # Exactly one response: nothing more arrives on the kept-alive connection.
                extra, _ = read_until_closed(c, timeout=0.3)
                self.assertEqual(extra, b"", "a second response arrived: %r" % extra[:300])
            return r

    def run_cases(self, cases, **send):
        for case in cases:
            with self.subTest(case=case.name, where="client"):
                self.send_case(case, **send)
        time.sleep(SETTLE)
        log = self.app.request_log()["requests"]
        for case in cases:
            with self.subTest(case=case.name, where="backend"):
                mine = [e for e in log if case.marker.decode() in entry_text(e)]
                if case.status == 200:
                    self.assertEqual(len(mine), 1, "backend should see the request exactly once: %r" % mine)
                    self.assertTrue(mine[0]["complete"], mine)
                    self.assertIsNone(mine[0]["error"], mine)
                    if case.check:
                        case.check(self, mine)
                elif case.reach == "none":
                    self.assertEqual(mine, [], "a request refused on its head reached the backend")
                else:
                    self.assertLessEqual(len(mine), 1, mine)
                    self.assertEqual([e for e in mine if e["complete"]], [],
                                     "the backend got a complete request although Gatehouse refused it")
        for e in log:
            self.assertNotIn("/smuggled", e["line"], "the backend saw a smuggled request: %r" % e)

    # --- Content-Length -----------------------------------------------------------------
    def test_content_length(self):
        body = b"hello"
        cases = [
            # RFC 9112 §6.1: a server MAY reject CL together with TE (and MUST close after).
            Case("CL with TE", req(b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"), 400),
            Case("TE with CL", req(b"Transfer-Encoding: chunked", b"Content-Length: 5", body=b"5\r\nhello\r\n0\r\n\r\n"), 400),
            # RFC 9112 §6.3 rule 5: an invalid Content-Length in a request: 400, then close.
            Case("two differing CL fields", req(b"Content-Length: 5", b"Content-Length: 6", body=body + b"!"), 400),
            Case("differing CL list", req(b"Content-Length: 5, 6", body=body + b"!"), 400),
            Case("CL +5", req(b"Content-Length: +5", body=body), 400),
            Case("CL 0x5", req(b"Content-Length: 0x5", body=body), 400),
            Case("CL ' 5 5'", req(b"Content-Length:  5 5", body=body), 400),
            Case("CL -1", req(b"Content-Length: -1", body=body), 400),
            Case("CL 5.0", req(b"Content-Length: 5.0", body=body), 400),
            Case("CL 1e1", req(b"Content-Length: 1e1", body=body), 400),
            Case("CL empty", req(b"Content-Length: ", body=body), 400),
            Case("CL trailing comma", req(b"Content-Length: 5,", body=body), 400),
            Case("CL quoted", req(b'Content-Length: "5"', body=body), 400),
            Case("CL 20 digits", req(b"Content-Length: 99999999999999999999", body=body), 400),
            Case("CL 2**64", req(b"Content-Length: 18446744073709551616", body=body), 400),
            Case("CL 2**64+5 (wraps to 5)", req(b"Content-Length: 18446744073709551621", body=body), 400),
            Case("CL 30 digits", req(b"Content-Length: 100000000000000000000000000005", body=body), 400),
            # RFC 9110 §8.6: identical repeated values MAY be accepted as one; Gatehouse
            # does, and must then forward exactly one Content-Length.
            Case("CL '5, 5' accepted", req(b"Content-Length: 5, 5", body=body), 200,
                 check=all_of(one_field("content-length", "5"), body_is(body))),
            Case("CL 5 twice accepted", req(b"Content-Length: 5", b"Content-Length: 5", body=body), 200,
                 check=all_of(one_field("content-length", "5"), body_is(body))),
            Case("CL with tab OWS accepted", req(b"Content-Length:\t5\t", body=body), 200,
                 check=all_of(one_field("content-length", "5"), body_is(body))),
        ]
        self.run_cases(cases)

    # --- Transfer-Encoding ----------------------------------------------------------------
    def test_transfer_encoding(self):
        chunked = b"5\r\nhello\r\n0\r\n\r\n"
        te = lambda *fields, version=b"HTTP/1.1": req(*fields, body=chunked, version=version)  # noqa: E731
        cases = [
            # RFC 9112 §6.3 rule 4: chunked not final in a request: 400, then close.
            Case("chunked, gzip", te(b"Transfer-Encoding: chunked, gzip"), 400),
            Case("xchunked", te(b"Transfer-Encoding: xchunked"), 400),
            Case("identity", te(b"Transfer-Encoding: identity"), 400),
            Case("chunked;q=1 (parameter)", te(b"Transfer-Encoding: chunked;q=1"), 400),
            Case("chunked with parameter after OWS", te(b"Transfer-Encoding: chunked ; x=y"), 400),
            Case('"chunked" quoted', te(b'Transfer-Encoding: "chunked"'), 400),
            Case("empty TE", te(b"Transfer-Encoding: "), 400),
            Case("chunked, identity", te(b"Transfer-Encoding: chunked, identity"), 400),
            # RFC 9112 §6.1: chunked MUST NOT be applied more than once.
            Case("chunked twice (two fields)", te(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), 400),
            Case("chunked, chunked", te(b"Transfer-Encoding: chunked, chunked"), 400),
            Case("chunked then x field", te(b"Transfer-Encoding: chunked", b"Transfer-Encoding: x"), 400),
            # RFC 9112 §6.1: TE in an HTTP/1.0 message: faulty framing.
            Case("TE in HTTP/1.0", te(b"Transfer-Encoding: chunked", version=b"HTTP/1.0"), 400),
            # RFC 9112 §5.1: no whitespace between field name and colon: 400.
            Case("'Transfer-Encoding : chunked'", te(b"Transfer-Encoding : chunked"), 400),
            Case("'Transfer-Encoding\\t: chunked'", te(b"Transfer-Encoding\t: chunked"), 400),
            # RFC 9110 §5.6.3: OWS is SP / HTAB only; VT and FF are not whitespace.
            Case("VT before chunked", te(b"Transfer-Encoding: \x0bchunked"), 400),
            Case("VT after chunked", te(b"Transfer-Encoding: chunked\x0b"), 400),
            Case("FF before chunked", te(b"Transfer-Encoding:\x0cchunked"), 400),
            Case("NBSP before chunked", te(b"Transfer-Encoding: \xa0chunked"), 400),
            Case("obs-fold TE", te(b"X-A: 1", b" Transfer-Encoding: chunked"), 400),
            Case("TE value folded", te(b"Transfer-Encoding:", b" chunked"), 400),
            # Legal spellings are forwarded, re-framed as chunked, without the client's TE.
            Case("TE with tab OWS accepted", te(b"Transfer-Encoding:\tchunked\t"), 200,
                 check=all_of(one_field("transfer-encoding", "chunked"), no_field("content-length"), body_is(b"hello"))),
            Case("TE CHUNKED (case-insensitive) accepted", te(b"transfer-encoding: CHUNKED"), 200,
                 check=all_of(one_field("transfer-encoding", "chunked"), body_is(b"hello"))),
        ]
        self.run_cases(cases)

    def test_transfer_encoding_unknown_coding_before_chunked_501(self):
        """RFC 9112 §6.1: "A server that receives a request message with a transfer
        coding it does not understand SHOULD respond with 501 (Not Implemented)."
        Here chunked is final, so the framing is known (§6.3 rule 4 does not apply):
        Gatehouse should say 501, and must not forward it (it cannot re-frame gzip)."""
        case = Case("gzip, chunked", req(b"Transfer-Encoding: gzip, chunked", body=b"5\r\nhello\r\n0\r\n\r\n"), 501)
        self.run_cases([case])

    def test_transfer_encoding_empty_list_element(self):
        """RFC 9110 §5.6.1.2: "a recipient MUST accept lists that satisfy the
        following syntax: #element => [ element ] *( OWS "," OWS [ element ] )" and
        empty elements do not count: "chunked," and ", chunked" mean "chunked"."""
        chunked = b"5\r\nhello\r\n0\r\n\r\n"
        cases = [Case(v.decode(), req(b"Transfer-Encoding: " + v, body=chunked), 200,
                      check=all_of(one_field("transfer-encoding", "chunked"), body_is(b"hello")))
                 for v in (b"chunked,", b", chunked", b",chunked,")]
        self.run_cases(cases)

    # --- field syntax -----------------------------------------------------------------------
    def test_field_syntax(self):
        get = lambda *fields, **kw: req(*fields, method=b"GET", **kw)  # noqa: E731
        cases = [
            # RFC 9112 §5.2: obs-fold in a request: 400 (or replace by SP; Gatehouse rejects).
            Case("obs-fold (SP)", get(b"X-A: 1", b" 2"), 400),
            Case("obs-fold (HTAB)", get(b"X-A: 1", b"\t2"), 400),
            # RFC 9112 §2.2: whitespace-preceded line right after the request line.
            Case("WS line after request line", get(b" X-A: 1", b"Host: a.test", host=False), 400),
            # RFC 9112 §5.1: whitespace between field name and colon: MUST 400.
            Case("SP before colon (Host)", get(b"Host : a.test", host=False), 400),
            Case("SP before colon", get(b"X-A : 1"), 400),
            Case("HTAB before colon", get(b"X-A\t: 1"), 400),
            Case("empty field name", get(b": 1"), 400),
            Case("no colon", get(b"X-A 1"), 400),
            Case("space inside name", get(b"X A: 1"), 400),
            # RFC 9110 §5.1: field-name = token.
            Case("NUL in name", get(b"X-\x00A: 1"), 400),
            Case("control byte in name", get(b"X-\x01A: 1"), 400),
            Case("DEL in name", get(b"X-\x7fA: 1"), 400),
            Case("non-ASCII in name", get(b"X-\xe4: 1"), 400),
            Case("'(' in name", get(b"X(A): 1"), 400),
            # RFC 9110 §5.5: CR, LF, NUL in values MUST be rejected (or replaced); other
            # controls are outside field-value.
            Case("NUL in value", get(b"X-A: a\x00b"), 400),
            Case("\\x01 in value", get(b"X-A: a\x01b"), 400),
            Case("ESC in value", get(b"X-A: a\x1bb"), 400),
            Case("DEL in value", get(b"X-A: a\x7fb"), 400),
            Case("NUL in Host", get(b"Host: a.test\x00", host=False), 400),
            # RFC 9112 §2.2: a bare CR MUST be treated as invalid (or replaced by SP).
            Case("bare CR in value", get(b"X-A: a\rb"), 400),
            Case("bare CR before CRLF", get(b"X-A: a\r"), 400),
            Case("bare CR in request line", get(target=b"/echo?m=@@@@@\r"), 400),
            Case("bare CR as line end", get(b"X-A: 1", eol=b"\r").replace(b"\r\r", b"\r\n\r\n"), 400),
            # RFC 9112 §2.2: a bare LF MAY be accepted; Gatehouse's strict choice rejects
            # (line-end disagreement between hops is a smuggling vector).
            Case("bare LF head", get(b"X-A: 1", eol=b"\n"), 400),
            Case("bare LF after request line", get(b"X-A: 1").replace(b"HTTP/1.1\r\n", b"HTTP/1.1\n", 1), 400),
            Case("bare LF inside field lines", get(b"X-A: 1\nTransfer-Encoding: chunked"), 400),
            Case("bare LF ends head", get(b"X-A: 1")[:-4] + b"\r\n\n", 400),
            # Allowed by the grammar: obs-text (0x80-0xFF) and HTAB inside values.
            Case("obs-text in value accepted", get(b"X-A: caf\xe9 \tx"), 200,
                 check=one_field("x-a")),
        ]
        self.run_cases(cases)

    # --- chunked framing (judged while the body streams) ------------------------------
    def test_chunked_framing(self):
        te = lambda body: req(b"Transfer-Encoding: chunked", body=body)  # noqa: E731
        inc = "incomplete"
        cases = [
            # RFC 9112 §7.1: chunk-size = 1*HEXDIG.
            Case("non-hex size", te(b"zz\r\nhello\r\n0\r\n\r\n"), 400, inc),
            Case("size with 0x", te(b"0x5\r\nhello\r\n0\r\n\r\n"), 400, inc),
            Case("negative size", te(b"-5\r\nhello\r\n0\r\n\r\n"), 400, inc),
            Case("size with leading SP", te(b" 5\r\nhello\r\n0\r\n\r\n"), 400, inc),
            Case("size '5 5'", te(b"5 5\r\nhello\r\n0\r\n\r\n"), 400, inc),
            Case("empty size line", te(b"\r\nhello\r\n0\r\n\r\n"), 400, inc),
            Case("size 17 hex digits", te(b"10000000000000005\r\nhello\r\n0\r\n\r\n"), 400, inc),
            Case("size 2**64+5 (wraps to 5)", te(b"fffffffffffffffff5\r\nhello\r\n0\r\n\r\n"), 400, inc),
            # chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
            Case("data longer than size", te(b"3\r\nhello\r\n0\r\n\r\n"), 400, inc),
            Case("no CRLF after data", te(b"5\r\nhello0\r\n\r\n"), 400, inc),
            Case("LF only after data", te(b"5\r\nhello\n0\r\n\r\n"), 400, inc),
            Case("CR only after data", te(b"5\r\nhello\r0\r\n\r\n"), 400, inc),
            Case("bare LF after size", te(b"5\nhello\r\n0\r\n\r\n"), 400, inc),
            Case("bare CR in size line", te(b"5\rX\r\nhello\r\n0\r\n\r\n"), 400, inc),
            Case("bare LF after last chunk", te(b"5\r\nhello\r\n0\n\r\n"), 400, inc),
            # RFC 9112 §7.1.1: chunk-ext syntax; a bounded line length.
            Case("extension too long", te(b"5;a=" + b"x" * 5000 + b"\r\nhello\r\n0\r\n\r\n"), 400, inc),
            Case("extension without name", te(b"5;\r\nhello\r\n0\r\n\r\n"), 400, inc),
            Case("extension unterminated quote", te(b'5;a="x\r\nhello\r\n0\r\n\r\n'), 400, inc),
            Case("extension with NUL", te(b"5;a=\x00\r\nhello\r\n0\r\n\r\n"), 400, inc),
            # RFC 9112 §7.1.2: trailer-section = *( field-line CRLF ).
            Case("trailer without colon", te(b"5\r\nhello\r\n0\r\nX-T 1\r\n\r\n"), 400, inc),
            Case("trailer SP before colon", te(b"5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n"), 400, inc),
            Case("trailer obs-fold", te(b"5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"), 400, inc),
            Case("trailer NUL", te(b"5\r\nhello\r\n0\r\nX-T: \x00\r\n\r\n"), 400, inc),
            Case("trailer empty name", te(b"5\r\nhello\r\n0\r\n: 1\r\n\r\n"), 400, inc),
            Case("trailer bare LF", te(b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n"), 400, inc),
            Case("trailer line too long", te(b"5\r\nhello\r\n0\r\nX-T: " + b"x" * 5000 + b"\r\n\r\n"), 431, inc),
            Case("too many trailer fields", te(b"5\r\nhello\r\n0\r\n" + b"X-T: 1\r\n" * 101 + b"\r\n"), 431, inc),
            # Valid framing with extensions, BWS and trailers: forwarded, re-framed.
            Case("extensions and trailer accepted",
                 te(b'5 ; a=b;c="d\\"e" ;f\r\nhello\r\n0;x\r\nX-T: 1\r\n\r\n'), 200,
                 check=all_of(body_is(b"hello"), no_field("x-t"))),
        ]
        self.run_cases(cases)

    # --- Host and request-target ---------------------------------------------------------
    def test_host_and_target(self):
        get = lambda *fields, **kw: req(*fields, method=b"GET", **kw)  # noqa: E731
        cases = [
            # RFC 9112 §3.2: exactly one valid Host in HTTP/1.1, else 400.
            Case("two Host fields", get(b"Host: a.test"), 400),
            Case("two Host fields, other domain second", get(b"Host: b.test"), 400),
            Case("Host list", get(b"Host: a.test, b.test", host=False), 400),
            Case("missing Host", get(host=False), 400),
            Case("Host with path", get(b"Host: a.test/x", host=False), 400),
            Case("Host with userinfo", get(b"Host: u@a.test", host=False), 400),
            Case("Host bad port", get(b"Host: a.test:99999", host=False), 400),
            # Strict choice (README): absolute-form authority must equal Host.
            Case("absolute-form authority differs from Host",
                 get(target=b"https://b.test/echo?m=@@@@@"), 400),
            Case("absolute-form authority with userinfo",
                 get(target=b"https://x@a.test/echo?m=@@@@@"), 400),
            # RFC 9112 §3.2: no whitespace or controls in the request-target.
            Case("space in target", get(target=b"/echo?m=@@@@@ x"), 400),
            Case("two spaces before version", get(target=b"/echo?m=@@@@@ "), 400),
            Case("HTAB in target", get(target=b"/echo?m=@@@@@\tx"), 400),
            Case("NUL in target", get(target=b"/echo?m=@@@@@\x00x"), 400),
            Case("control byte in target", get(target=b"/echo?m=@@@@@\x01x"), 400),
            Case("DEL in target", get(target=b"/echo?m=@@@@@\x7fx"), 400),
            Case("non-ASCII in target", get(target=b"/echo?m=@@@@@\xe4"), 400),
            Case("fragment in target", get(target=b"/echo?m=@@@@@#f"), 400),
            Case("empty target", get(b"X-M: @@@@@", target=b""), 400),
            Case("CONNECT authority-form", req(method=b"CONNECT", target=b"a.test:443?m=@@@@@"), 400),
            Case("lowercase version", get(version=b"http/1.1"), 400),
            # Allowed: absolute-form whose authority is the Host (forwarded as origin-form).
            Case("absolute-form matching Host accepted", get(target=b"https://a.test/echo?m=@@@@@"), 200,
                 check=lambda t, e: t.assertTrue(e[0]["line"].startswith("GET /echo?m="), e[0]["line"])),
        ]
        self.run_cases(cases)

    # --- limits and versions -----------------------------------------------------------
    def test_limits(self):
        big_field = b"X-Big: " + b"x" * 1000
        cases = [
            # RFC 9112 §3: a request-target longer than the server accepts: 414.
            Case("request line too long", req(method=b"GET", target=b"/echo?m=@@@@@&" + b"a" * 9000), 414),
            Case("request line too long, no line end yet",
                 b"GET /echo?m=@@@@@&" + b"a" * 9000, 414),
            # RFC 6585 §5: 431 for a head too large, or too many fields.
            Case("head too large", req(*([big_field] * 40), method=b"GET"), 431),
            Case("one huge field", req(b"X-Big: " + b"x" * 40000, method=b"GET"), 431),
            Case("too many fields", req(*[b"X-F%d: 1" % i for i in range(101)], method=b"GET"), 431),
            # RFC 9110 §15.5.14: 413 for a body over the domain's max_body_bytes.
            Case("CL over max_body_bytes", req(b"Content-Length: %d" % (MAX_BODY + 1), body=b"x" * (MAX_BODY + 1)), 413),
            Case("CL over max_body_bytes, body not sent", req(b"Content-Length: %d" % (MAX_BODY + 1)), 413),
            Case("CL 19 digits", req(b"Content-Length: 9999999999999999999"), 413),
            Case("CL over max_body_bytes with Expect", req(b"Content-Length: %d" % (MAX_BODY + 1),
                                                            b"Expect: 100-continue"), 413),
            Case("CL at max_body_bytes accepted", req(b"Content-Length: %d" % MAX_BODY, body=b"y" * MAX_BODY), 200,
                 check=body_is(b"y" * MAX_BODY)),
            Case("99 fields accepted", req(*[b"X-F%d: 1" % i for i in range(98)], method=b"GET"), 200),
        ]
        self.run_cases(cases)
        # A 413 is Gatehouse's own: no "100 Continue" may precede it.
        with HTTPClient.tls(self.port, HOST, timeout=5) as c:
            c.send(req(b"Content-Length: %d" % (MAX_BODY + 1), b"Expect: 100-continue").replace(PLACEHOLDER, b"x0000"))
            r = c.read_response(skip_interim=False)
            self.assertEqual(r.status, 413, r.summary())

    def test_chunked_body_over_max_body_bytes(self):
        """README: "max_body_bytes: larger request bodies get 413". A chunked body has
        no length up front, so Gatehouse must count while streaming: 413 (then close)
        while no response has started, and the backend must never get the whole body."""
        body = b"z" * (MAX_BODY * 3)
        case = Case("chunked over max_body_bytes",
                    req(b"Transfer-Encoding: chunked", body=chunk(body[:500]) + chunk(body[500:]) + b"0\r\n\r\n"),
                    413, "incomplete")
        self.run_cases([case])

    def test_versions(self):
        get = lambda v: req(method=b"GET", version=v)  # noqa: E731
        cases = [
            # RFC 9110 §15.6.6: 505 for a major version the server does not support.
            Case("HTTP/2.0", get(b"HTTP/2.0"), 505),
            Case("HTTP/3.0", get(b"HTTP/3.0"), 505),
            Case("HTTP/0.9", get(b"HTTP/0.9"), 505),
            Case("HTTP/9.9", get(b"HTTP/9.9"), 505),
            # RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT; anything else is
            # not a version at all: 400.
            Case("HTTP/3", get(b"HTTP/3"), 400),
            Case("HTTP/1.10", get(b"HTTP/1.10"), 400),
            Case("HTTP/1", get(b"HTTP/1"), 400),
            Case("HTTPS/1.1", get(b"HTTPS/1.1"), 400),
            Case("no version", req(method=b"GET").replace(b" HTTP/1.1\r\n", b"\r\n", 1), 400),
            # RFC 9110 §2.5: a higher minor version of a supported major version is
            # processed as the highest minor the recipient implements (1.1).
            Case("HTTP/1.2 accepted as 1.1", get(b"HTTP/1.2"), 200,
                 check=lambda t, e: t.assertTrue(e[0]["line"].endswith(" HTTP/1.1"), e[0]["line"])),
        ]
        self.run_cases(cases)

    # --- two-request smuggling attempts ------------------------------------------------
    def test_smuggling_attempts(self):
        """Each payload is one write on one TLS connection. Parsed as Gatehouse must,
        it is one request (refused, or forwarded with the second request as body
        data); misparsed at either hop it would carry a second request
        "GET /smuggled" to the backend."""
        inc = "incomplete"
        chunk_smuggled = chunk(SMUGGLED)
        last = b"0\r\n\r\n"
        te_cl_body = chunk_smuggled + last
        cases = [
            # CL.TE: the front end uses CL (whole payload), the back end TE (ends at 0).
            Case("CL.TE", req(cl(last + SMUGGLED), b"Transfer-Encoding: chunked", body=last + SMUGGLED), 400),
            # TE.CL: the front end uses TE, the back end CL (4 bytes, rest is a request).
            Case("TE.CL", req(b"Content-Length: 4", b"Transfer-Encoding: chunked",
                              body=b"%x\r\n" % (len(SMUGGLED) + 2) + b"xx" + SMUGGLED + b"\r\n" + last), 400),
            Case("TE.CL, CL first with 0", req(b"Content-Length: 0", b"Transfer-Encoding: chunked",
                                               body=te_cl_body), 400),
            # TE.TE: one hop honours an obfuscated TE, the other falls back to CL.
            *[Case("TE.TE %r" % te, req(cl(last + SMUGGLED), te, body=last + SMUGGLED), 400) for te in (
                b"Transfer-Encoding: xchunked",
                b"Transfer-Encoding : chunked",
                b"Transfer-Encoding:\x0bchunked",
                b"Transfer-Encoding: \x0cchunked",
                b"Transfer-Encoding: chunked\x00",
                b"Transfer-Encoding: chunked, identity",
                b"Transfer-Encoding: identity, chunked",
                b'Transfer-Encoding: "chunked"',
                b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x",
                b"Transfer-Encoding: x\r\nTransfer-Encoding: chunked",
                b"Transfer-Encoding:\r\n chunked",
                b"X-Pad: 1\r\n Transfer-Encoding: chunked",
                b"X-Pad: 1\nTransfer-Encoding: chunked",
                b"Transfer-Encoding\n: chunked",
                b"Transfer-Encoding: chunked\rX-Pad: 1",
                b"Transfer-Encoding:chunked\x85",
            )],
            # TE.TE without any CL: obfuscated TE alone.
            *[Case("TE only %r" % te, req(te, body=last + SMUGGLED), 400) for te in (
                b"Transfer-Encoding: xchunked",
                b"Transfer-Encoding : chunked",
                b"Transfer-Encoding: chunked, gzip",
            )],
            # CL.CL: two hops picking different Content-Length values.
            Case("CL.CL two fields", req(b"Content-Length: 0", cl(SMUGGLED), body=SMUGGLED), 400),
            Case("CL.CL reversed", req(cl(SMUGGLED), b"Content-Length: 0", body=SMUGGLED), 400),
            Case("CL.CL list", req(b"Content-Length: 0, %d" % len(SMUGGLED), body=SMUGGLED), 400),
            Case("CL.CL obfuscated name", req(b"Content-Length : 0", cl(SMUGGLED), body=SMUGGLED), 400),
            Case("CL.CL obfuscated value", req(b"Content-Length: +0", cl(SMUGGLED), body=SMUGGLED), 400),
            Case("CL.CL folded", req(cl(SMUGGLED), b"X-Pad: 1\r\n Content-Length: 0", body=SMUGGLED), 400),
            # Chunk-level desync: a hop that misreads the chunk framing sees a request.
            Case("chunk size overflow", req(b"Transfer-Encoding: chunked",
                                            body=b"1000000000000000%x\r\n" % len(b"x") + b"x\r\n" + last + SMUGGLED), 400, inc),
            Case("chunk data overrun", req(b"Transfer-Encoding: chunked",
                                           body=b"1\r\nx" + SMUGGLED + b"\r\n" + last), 400, inc),
            Case("chunk bare LF line ends", req(b"Transfer-Encoding: chunked",
                                                body=b"%x\n" % len(SMUGGLED) + SMUGGLED + b"\n0\n\n" + SMUGGLED), 400, inc),
            Case("chunk extension quoted CRLF", req(b"Transfer-Encoding: chunked",
                                                    body=b'1;a="\r\nx\r\n' + last + SMUGGLED + b'"\r\nx\r\n' + last), 400, inc),
            Case("chunk trailer holds request", req(b"Transfer-Encoding: chunked",
                                                    body=b"0\r\n" + SMUGGLED), 400, inc),
            # A field name with "_" is a different (legal) field: Gatehouse frames by
            # CL and forwards it as an ordinary field (RFC 9110 §5.1: field-name =
            # token, and "_" is a tchar). Note: a backend that folds "_" into "-",
            # as CGI-style environments do, would see a second framing field.
            Case("Transfer_Encoding (underscore) is dropped, framing by CL",
                 req(cl(last + SMUGGLED), b"Transfer_Encoding: chunked", body=last + SMUGGLED), 200),
            # Legal, not smuggling: a GET with a CL body is one request whose body
            # happens to look like a request; the backend must get it as body data.
            Case("CL body that looks like a request", req(cl(SMUGGLED), method=b"GET", body=SMUGGLED), 200),
            Case("chunked body that looks like a request", req(b"Transfer-Encoding: chunked", body=te_cl_body), 200),
        ]
        # The accepted ones: the backend got the smuggled bytes as body, never as a request.
        underscore, cl_body, chunked_body = cases[-3:]
        smuggled = lambda c: SMUGGLED.replace(PLACEHOLDER, c.marker)  # noqa: E731
        underscore.check = all_of(body_is(last + smuggled(underscore)), no_field("transfer-encoding"),
                                  one_field("content-length", str(len(last + SMUGGLED))))
        cl_body.check = body_is(smuggled(cl_body))
        chunked_body.check = body_is(smuggled(chunked_body))
        self.run_cases(cases)

    def test_smuggling_attempts_on_http_listener(self):
        """The http listener proxies ACME challenges with the same parser."""
        acme = b"/.well-known/acme-challenge/@@@@@"
        last = b"0\r\n\r\n"
        cases = [
            Case("CL.TE", req(cl(last + SMUGGLED), b"Transfer-Encoding: chunked", target=acme, body=last + SMUGGLED), 400),
            Case("TE.TE", req(cl(last + SMUGGLED), b"Transfer-Encoding : chunked", target=acme, body=last + SMUGGLED), 400),
            Case("CL.CL", req(b"Content-Length: 0", cl(SMUGGLED), target=acme, body=SMUGGLED), 400),
            Case("bare LF", req(b"X-Pad: 1\nTransfer-Encoding: chunked", target=acme, body=last + SMUGGLED), 400),
            Case("accepted", req(method=b"GET", target=acme), 200),
        ]
        for case in cases:
            with self.subTest(case=case.name, where="client"):
                r = self.send_case(case, port=self.http_port, plain=True)
                self.assertNoHSTS(r)
        time.sleep(SETTLE)
        log = self.app.request_log()["requests"]
        for case in cases:
            with self.subTest(case=case.name, where="backend"):
                mine = [e for e in log if case.marker.decode() in entry_text(e)]
                self.assertEqual(len(mine), 1 if case.status == 200 else 0, mine)
        for e in log:
            self.assertNotIn("/smuggled", e["line"])

    def test_chunked_error_after_head_forwarded(self):
        """A framing error that arrives after the head and a valid chunk went upstream:
        400 and close for the client; the backend connection is dropped mid-body (the
        backend never gets a complete request, nor the bytes after the bad chunk)."""
        for i, bad in enumerate((b"zz\r\n", b"10000000000000005\r\n", b"5\nhello\r\n", b"0\r\nX-T : 1\r\n\r\n")):
            marker = b"late%d" % i
            with self.subTest(bad=bad):
                with HTTPClient.tls(self.port, HOST, timeout=5) as c:
                    c.send(req(b"Transfer-Encoding: chunked", target=b"/echo?m=" + marker) + chunk(b"hello"))
                    time.sleep(0.2)   # the head and the first chunk are forwarded by now
                    c.send(bad + b"0\r\n\r\n" + SMUGGLED.replace(PLACEHOLDER, marker))
                    r = c.read_response()
                    self.assertGatehouseError(r, 400)
                    self.assertIn("close", r.get("connection", "").lower())
                    extra, closed = read_until_closed(c)
                    self.assertTrue(closed)
                    self.assertEqual(extra, b"")
                time.sleep(SETTLE)
                log = self.app.request_log()["requests"]
                mine = [e for e in log if marker.decode() in entry_text(e)]
                self.assertEqual(len(mine), 1, "the head should have been forwarded before the error: %r" % mine)
                self.assertFalse(mine[0]["complete"], mine)
                self.assertTrue(mine[0]["body_prefix"].startswith("hello"), mine)
                self.assertNotIn("smuggled", mine[0]["body_prefix"])
                self.assertEqual([e for e in log if e["conn"] == mine[0]["conn"] and e["req"] > mine[0]["req"]], [],
                                 "the backend connection of the refused request was reused")
                for e in log:
                    self.assertNotIn("/smuggled", e["line"])

    def test_pipelined_after_refused_request_never_answered(self):
        """A valid request pipelined behind a refused one must not be answered nor forwarded."""
        bad = req(b"Content-Length: 1, 2", body=b"x").replace(PLACEHOLDER, b"p0001")
        good = req(method=b"GET").replace(PLACEHOLDER, b"p0002")
        with HTTPClient.tls(self.port, HOST, timeout=5) as c:
            c.send(bad + good)
            r = c.read_response()
            self.assertGatehouseError(r, 400)
            extra, closed = read_until_closed(c)
            self.assertTrue(closed)
            self.assertEqual(extra, b"")
        # And a good request first, then a refused one: the first is served normally.
        with HTTPClient.tls(self.port, HOST, timeout=5) as c:
            c.send(good.replace(b"p0002", b"p0003") + bad.replace(b"p0001", b"p0004"))
            r1 = c.read_response()
            self.assertEqual(r1.status, 200, r1.summary())
            r2 = c.read_response()
            self.assertGatehouseError(r2, 400)
            extra, closed = read_until_closed(c)
            self.assertTrue(closed)
            self.assertEqual(extra, b"")
        time.sleep(SETTLE)
        log = self.app.request_log()["requests"]
        seen = {m: [e for e in log if m in e["head"]] for m in ("p0001", "p0002", "p0003", "p0004")}
        self.assertEqual(seen["p0001"], [])
        self.assertEqual(seen["p0002"], [], "request pipelined behind a refused one was forwarded")
        self.assertEqual(len(seen["p0003"]), 1)
        self.assertEqual(seen["p0004"], [])


if __name__ == "__main__":
    unittest.main()
