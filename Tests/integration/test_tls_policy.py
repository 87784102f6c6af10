"""TLS policy per domain on one IP:port (issue "TLS policy: modern by default,
legacy TLS per domain on the same IP:443").

- the version matrix: modern / legacy / strict domains, no SNI and unknown SNI
  (with and without `[tls] default_domain`) x SSLv3, TLS 1.0 ... 1.3, printed as
  a table
- listener option `sni_fallback_profile = "legacy"`
- downgrade protection (TLS_FALLBACK_SCSV), no compression, no client-initiated
  renegotiation, weak cipher suites refused, ECDHE-CBC on TLS 1.0 for legacy
- RSA + ECDSA certificate pairs on one domain (`certificate`/`key` as arrays)
- 421 when Host names a domain other than the one SNI selected
- session resumption: same domain yes, across domains no
- `[tls] ticket_key_file` shared between two processes

openssl s_client is the client wherever it can offer what is needed. What this
machine's OpenSSL 3.0 can no longer offer at all (SSLv3, 3DES, RC4, NULL,
EXPORT, anonymous suites, compression) is sent as a hand-made ClientHello
(`raw_probe`), which reads back the server's first record: a ServerHello or an
alert.
"""

import concurrent.futures
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import unittest

from harness import (Env, GatehouseCase, HTTPClient, ca, peer_info, run_gatehouse, s_client_handshake_ok,
                     tls_connect)

OLD = ["-cipher", "DEFAULT@SECLEVEL=0"]          # what a TLS 1.0/1.1 s_client needs on Debian
VERSION_FLAGS = [("TLS 1.0", "-tls1"), ("TLS 1.1", "-tls1_1"), ("TLS 1.2", "-tls1_2"), ("TLS 1.3", "-tls1_3")]
PROTOCOL_NAME = {"-tls1": "TLSv1", "-tls1_1": "TLSv1.1", "-tls1_2": "TLSv1.2", "-tls1_3": "TLSv1.3"}

# alert number -> (RFC name, what s_client prints for it when the server sends it)
ALERTS = {
    40: ("handshake_failure", "sslv3 alert handshake failure"),
    50: ("decode_error", "tlsv1 alert decode error"),
    70: ("protocol_version", "tlsv1 alert protocol version"),
    80: ("internal_error", "tlsv1 alert internal error"),
    86: ("inappropriate_fallback", "tlsv1 alert inappropriate fallback"),
    100: ("no_renegotiation", "no renegotiation"),
    112: ("unrecognized_name", "tlsv1 unrecognized name"),
}


def alert_name(n):
    return ALERTS.get(n, (str(n), ""))[0]


# --------------------------------------------------------------------------- s_client

class SClient:
    """One finished `openssl s_client` run, parsed."""

    def __init__(self, cmd, returncode, output):
        self.cmd = cmd
        self.rc = returncode
        self.out = output
        self.ok = s_client_handshake_ok(returncode, output)
        # The SSL-Session block ("Protocol  : TLSv1.2") is not always printed for TLS 1.3
        # when stdin is closed at once; then the "New, TLSv1.3, Cipher is" line tells
        # (for TLS <= 1.2 that line shows the cipher's version, not the protocol's).
        m = re.search(r"^\s*Protocol\s*:\s*(\S+)", output, re.M)
        m13 = re.search(r"^(?:New|Reused), TLSv1\.3, Cipher is", output, re.M)
        self.protocol = None
        if self.ok:
            self.protocol = m.group(1) if m else ("TLSv1.3" if m13 else None)
        self.reused = re.search(r"^Reused, ", output, re.M) is not None
        self.new = re.search(r"^New, ", output, re.M) is not None
        m = re.search(r"SSL alert number (\d+)", output)
        self.alert = int(m.group(1)) if m else None
        m = re.search(r":SSL routines:[^:]*:([^:]+):", output)
        self.reason = m.group(1) if m else None
        m = re.search(r"Server public key is (\d+) bit", output)
        self.key_bits = int(m.group(1)) if m else None
        m = re.search(r"^subject=\s*CN\s*=\s*(\S+)", output, re.M)
        self.subject_cn = m.group(1) if m else None
        m = re.search(r"^New, \S+, Cipher is (\S+)|^Reused, \S+, Cipher is (\S+)", output, re.M)
        self.cipher = (m.group(1) or m.group(2)) if m else None

    def cell(self):
        if self.ok:
            return "ok %s" % self.protocol
        if self.alert is not None:
            return "alert %d %s" % (self.alert, alert_name(self.alert))
        return "failed (%s)" % (self.reason or "no alert, rc=%s" % self.rc)

    def describe(self):
        return "$ %s\n(rc=%s)\n%s" % (" ".join(self.cmd), self.rc, self.out[-3000:])


def s_client_run(port, servername, args=(), stdin=b"", timeout=15):
    """`openssl s_client` fed `stdin` (empty: EOF at once). servername None: no SNI."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port]
    cmd += ["-servername", servername] if servername is not None else ["-noservername"]
    cmd += list(args)
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    return SClient(cmd, r.returncode, (r.stdout + r.stderr).decode(errors="replace"))


def http_close_request(host):
    return ("GET /echo HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode()


def get_session(port, servername, flag, path, host=None, extra=()):
    """A full handshake that stores its session in `path`. An HTTP request is sent and
    answered first (Connection: close, -ign_eof), so TLS 1.3 tickets have arrived."""
    args = [flag, "-sess_out", path, "-ign_eof", *extra]
    if flag in ("-tls1", "-tls1_1"):
        args += OLD
    return s_client_run(port, servername, args, stdin=http_close_request(host or servername or "x.test"))


def resume(port, servername, flag, path, extra=()):
    args = [flag, "-sess_in", path, "-trace", *extra]
    if flag in ("-tls1", "-tls1_1"):
        args += OLD
    return s_client_run(port, servername, args)


def offered_resumption(result):
    """Did the ClientHello (s_client -trace) really offer the stored session? TLS 1.3:
    a pre_shared_key extension; TLS <= 1.2: a non-empty session ticket."""
    hello = result.out.split("ServerHello", 1)[0]
    return ("extension_type=psk(41)" in hello or
            re.search(r"extension_type=session_ticket\(35\), length=[1-9]", hello) is not None)


def s_client_supports(option):
    r = subprocess.run(["openssl", "s_client", "-help"], capture_output=True, timeout=10)
    return re.search(r"^\s*%s\s" % re.escape(option), (r.stdout + r.stderr).decode(errors="replace"), re.M) is not None


def parallel(fn, items, workers=16):
    """[fn(*item)] run concurrently, results in item order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(lambda it: fn(*it), items))


# --------------------------------------------------------------------------- raw ClientHello

def _u16(n):
    return struct.pack(">H", n)


def _vec16(b):
    return _u16(len(b)) + b


# cipher suite code points (IANA)
GOOD_SUITES = [0xC02B, 0xC02F, 0xC009, 0xC013]          # ECDHE-{ECDSA,RSA}-AES128-{GCM-SHA256,SHA}
WEAK_SUITES = {
    "3DES": [0x000A, 0xC008, 0xC012],                    # DES-CBC3-SHA, ECDHE-{ECDSA,RSA}-DES-CBC3-SHA
    "RC4": [0x0004, 0x0005, 0xC007, 0xC011],             # RC4-MD5, RC4-SHA, ECDHE-{ECDSA,RSA}-RC4-SHA
    "NULL": [0x0001, 0x0002, 0x003B, 0xC006, 0xC010],    # NULL-MD5/SHA/SHA256, ECDHE-{ECDSA,RSA}-NULL-SHA
    "EXPORT": [0x0003, 0x0006, 0x0008, 0x0014],          # EXP-RC4-MD5, EXP-RC2-CBC-MD5, EXP-DES-CBC-SHA, EXP-EDH-RSA-DES-CBC-SHA
    "aNULL": [0x0018, 0x0034, 0x00A6, 0xC015, 0xC018],   # ADH-RC4-MD5, ADH-AES128-SHA, ADH-AES128-GCM-SHA256, AECDH-NULL-SHA, AECDH-AES128-SHA
}


def raw_client_hello(sni, version, suites, compressions=(0,), record_version=None):
    body = _u16(version) + os.urandom(32) + b"\x00"          # no session id
    body += _vec16(b"".join(_u16(c) for c in suites))
    body += bytes([len(compressions)]) + bytes(compressions)
    exts = b""
    if sni:
        exts += _u16(0) + _vec16(_vec16(b"\x00" + _vec16(sni.encode())))
    exts += _u16(10) + _vec16(_vec16(b"".join(_u16(g) for g in (0x001D, 0x0017, 0x0018))))  # x25519, P-256, P-384
    exts += _u16(11) + _vec16(b"\x01\x00")                                                   # uncompressed points
    if version >= 0x0303:
        sigalgs = (0x0403, 0x0503, 0x0804, 0x0805, 0x0401, 0x0501, 0x0203, 0x0201)
        exts += _u16(13) + _vec16(_vec16(b"".join(_u16(s) for s in sigalgs)))
    exts += _u16(0xFF01) + _vec16(b"\x00")                                                   # renegotiation_info
    body += _vec16(exts)
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    rv = record_version if record_version is not None else min(version, 0x0301)
    return b"\x16" + _u16(rv) + _vec16(hs)


def raw_probe(port, sni, version, suites, compressions=(0,), record_version=None, timeout=5.0):
    """Sends one hand-made ClientHello; returns the server's first record as
    {'kind': 'alert', 'alert': N} | {'kind': 'server_hello', 'version', 'cipher', 'compression'}
    | {'kind': 'closed'} | {'kind': 'other', ...}."""
    hello = raw_client_hello(sni, version, suites, compressions, record_version)
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(hello)
        deadline = time.monotonic() + timeout
        while not (len(buf) >= 5 and len(buf) >= 5 + struct.unpack(">H", buf[3:5])[0]):
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except (ConnectionError, socket.timeout):
                chunk = b""
            if not chunk:
                return {"kind": "closed", "bytes": buf}
            buf += chunk
    ctype = buf[0]
    frag = buf[5:5 + struct.unpack(">H", buf[3:5])[0]]
    if ctype == 21 and len(frag) >= 2:
        return {"kind": "alert", "level": frag[0], "alert": frag[1]}
    if ctype == 22 and frag[:1] == b"\x02":
        b = frag[4:]
        p = 35 + b[34]
        return {"kind": "server_hello", "version": struct.unpack(">H", b[0:2])[0],
                "cipher": struct.unpack(">H", b[p:p + 2])[0], "compression": b[p + 2]}
    return {"kind": "other", "type": ctype, "bytes": buf[:64]}


def raw_cell(r):
    if r["kind"] == "alert":
        return "alert %d %s" % (r["alert"], alert_name(r["alert"]))
    if r["kind"] == "server_hello":
        return "ServerHello 0x%04x" % r["version"]
    return r["kind"]


# --------------------------------------------------------------------------- 1. the matrix

class TLSVersionMatrixTests(GatehouseCase):
    """One https listener, modern/legacy/strict domains; a second process with the same
    domains but no default_domain for the 'refused' rows."""

    @classmethod
    def setUpEnv(cls, env):
        app = env.backend("A")
        for e in (env, cls._second_env()):
            e.domain("modern.toml", ["modern.test"], app.backend, tls_profile="modern")
            e.domain("legacy.toml", ["legacy.test"], app.backend, tls_profile="legacy")
            e.domain("strict.toml", ["strict.test"], app.backend, tls_profile="strict")
        cls.port = env.listener("https")
        env.start(tls={"default_domain": "modern.test"})
        cls.port_nodefault = cls.env_nodefault.listener("https")
        cls.env_nodefault.start()

    @classmethod
    def _second_env(cls):
        cls.env_nodefault = Env()
        cls.addClassCleanup(cls.env_nodefault.close)
        return cls.env_nodefault

    # expected outcome per column: "TLSv1.x" = handshake completes at that version
    # (and, for rows served by a default, with that domain's certificate); an int =
    # that alert. SSLv3: OpenSSL 3.0 answers an SSLv3 ClientHello with
    # handshake_failure ("version too low"), exactly as stock `openssl s_server` does;
    # protocol_version would be as good. What matters is that it never gets a ServerHello.
    SSL3_REFUSED = (40, 70)
    MODERN = [SSL3_REFUSED, 70, 70, "TLSv1.2", "TLSv1.3"]
    LEGACY = [SSL3_REFUSED, "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
    STRICT = [SSL3_REFUSED, 70, 70, 70, "TLSv1.3"]
    NONAME = [112, 112, 112, 112, 112]

    def rows(self):
        d, n = self.port, self.port_nodefault
        return [
            ("SNI modern.test (modern)", d, "modern.test", "modern.test", self.MODERN),
            ("SNI legacy.test (legacy)", d, "legacy.test", "legacy.test", self.LEGACY),
            ("SNI strict.test (strict)", d, "strict.test", "strict.test", self.STRICT),
            ("no SNI, default_domain=modern", d, None, "modern.test", self.MODERN),
            ("unknown SNI, default=modern", d, "unknown.test", "modern.test", self.MODERN),
            ("no SNI, no default_domain", n, None, None, self.NONAME),
            ("unknown SNI, no default_domain", n, "unknown.test", None, self.NONAME),
        ]

    def test_version_matrix(self):
        rows = self.rows()
        jobs = []
        for ri, (_, port, sni, _, _) in enumerate(rows):
            jobs.append((ri, 0, "raw", port, sni, None))
            for ci, (_, flag) in enumerate(VERSION_FLAGS, start=1):
                jobs.append((ri, ci, "s_client", port, sni, flag))

        def run(ri, ci, kind, port, sni, flag):
            if kind == "raw":
                return (ri, ci, raw_probe(port, sni, 0x0300, GOOD_SUITES, record_version=0x0300))
            extra = OLD if flag in ("-tls1", "-tls1_1") else []
            return (ri, ci, s_client_run(port, sni, [flag, *extra]))

        results = {(ri, ci): r for ri, ci, r in parallel(run, jobs)}

        problems = []
        table = []
        for ri, (label, port, sni, cert_cn, expected) in enumerate(rows):
            cells = []
            for ci, want in enumerate(expected):
                r = results[(ri, ci)]
                bad = None
                if ci == 0:
                    cell = raw_cell(r)
                    if r["kind"] == "server_hello":
                        bad = "server answered an SSLv3 ClientHello with a ServerHello (version 0x%04x)" % r["version"]
                    elif r["kind"] != "alert" or r["alert"] not in (want if isinstance(want, tuple) else (want,)):
                        bad = "want alert %s, got %r" % (want, r)
                else:
                    cell = r.cell()
                    if isinstance(want, str):
                        if not r.ok or r.protocol != want:
                            bad = "want handshake at %s, got %s" % (want, cell)
                        elif cert_cn and r.subject_cn != cert_cn:
                            bad = "want the certificate of %s, got CN=%s" % (cert_cn, r.subject_cn)
                        elif cert_cn and r.subject_cn:
                            cell += " (%s)" % r.subject_cn
                    else:
                        if r.ok:
                            bad = "want alert %d, but the handshake completed (%s)" % (want, r.protocol)
                        elif r.alert != want or r.reason != ALERTS[want][1]:
                            bad = "want alert %d %r, got alert %s %r" % (want, ALERTS[want][1], r.alert, r.reason)
                if bad:
                    cell = "!! " + cell
                    col = "SSLv3" if ci == 0 else VERSION_FLAGS[ci - 1][0]
                    detail = "" if ci == 0 else "\n" + r.describe()
                    problems.append("%s x %s: %s%s" % (label, col, bad, detail))
                cells.append(cell)
            table.append((label, cells))

        header = ["client \\ client version", "SSLv3 (raw hello)"] + [c for c, _ in VERSION_FLAGS]
        widths = [max(len(header[0]), *(len(l) for l, _ in table))]
        for i in range(5):
            widths.append(max(len(header[i + 1]), *(len(cells[i]) for _, cells in table)))
        line = lambda cols: "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |"
        out = ["", "TLS policy matrix (one https listener; default_domain rows: [tls] default_domain = "
               "\"modern.test\"; 'no default_domain' rows: a second process without it)",
               line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line([label] + cells) for label, cells in table]
        out.append("ok X = s_client completed the handshake at X (certificate CN); alert N = the server's "
                   "fatal alert; !! = not the expected outcome")
        out.append("SSLv3: %s; probed with a hand-made SSLv3 ClientHello (record and client_version 0x0300)"
                   % ("s_client has -ssl3" if s_client_supports("-ssl3")
                      else "this openssl s_client has no -ssl3 option"))
        sys.stdout.write("\n".join(out) + "\n\n")
        sys.stdout.flush()
        self.assertEqual(problems, [], "\n\n".join(problems))

    def test_sslv3_with_s_client(self):
        if not s_client_supports("-ssl3"):
            self.skipTest("this openssl s_client has no -ssl3 (OpenSSL 3.0 without SSLv3); SSLv3 is checked "
                          "with a hand-made ClientHello in test_version_matrix")
        for sni in ("modern.test", "legacy.test", "strict.test", None):
            with self.subTest(sni=sni):
                r = s_client_run(self.port, sni, ["-ssl3", *OLD])
                self.assertFalse(r.ok, r.describe())

    def test_sslv3_never_negotiated_even_if_offered_inside_tls10_record(self):
        # A ClientHello whose client_version is SSLv3 carried in a TLS 1.0 record.
        for sni in ("legacy.test", "modern.test", None):
            with self.subTest(sni=sni):
                r = raw_probe(self.port, sni, 0x0300, GOOD_SUITES, record_version=0x0301)
                self.assertEqual(r["kind"], "alert", r)
        # control: the same hand-made hello at TLS 1.0 is answered on the legacy domain
        r = raw_probe(self.port, "legacy.test", 0x0301, GOOD_SUITES)
        self.assertEqual((r["kind"], r.get("version")), ("server_hello", 0x0301), r)


# --------------------------------------------------------------------------- 3, 4, 6, 7

class TLSPolicyTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.app_m = env.backend("M")
        cls.app_l = env.backend("L")
        env.domain("modern.toml", ["modern.test"], cls.app_m, tls_profile="modern")
        env.domain("modernrsa.toml", ["modernrsa.test"], cls.app_m, tls_profile="modern", rsa=True)
        env.domain("b.toml", ["b.test"], cls.app_m)                      # modern by default
        env.domain("legacy.toml", ["legacy.test"], cls.app_l, tls_profile="legacy")
        env.domain("legacyrsa.toml", ["legacyrsa.test"], cls.app_l, tls_profile="legacy", rsa=True)
        cls.port = env.listener("https")
        env.start()

    def tmp(self, name):
        return os.path.join(self.env.dir, "%s-%s" % (self._testMethodName, name))

    # -- 3. downgrade protection

    def test_fallback_scsv_on_legacy_domain(self):
        cases = []
        for sni in ("legacy.test", "legacyrsa.test"):
            for flag in ("-tls1", "-tls1_1", "-tls1_2"):
                cases.append((sni, flag))
        runs = parallel(lambda sni, flag: (
            s_client_run(self.port, sni, [flag, "-fallback_scsv", *OLD]),
            s_client_run(self.port, sni, [flag, *OLD])), cases)
        for (sni, flag), (with_scsv, control) in zip(cases, runs):
            with self.subTest(sni=sni, flag=flag):
                self.assertTrue(control.ok and control.protocol == PROTOCOL_NAME[flag],
                                "control without -fallback_scsv:\n" + control.describe())
                self.assertFalse(with_scsv.ok, with_scsv.describe())
                self.assertEqual((with_scsv.alert, with_scsv.reason), (86, "tlsv1 alert inappropriate fallback"),
                                 with_scsv.describe())

    def test_fallback_scsv_at_the_top_version_is_fine(self):
        for sni in ("legacy.test", "modern.test"):
            with self.subTest(sni=sni):
                r = s_client_run(self.port, sni, ["-tls1_3", "-fallback_scsv"])
                self.assertTrue(r.ok and r.protocol == "TLSv1.3", r.describe())

    def test_fallback_scsv_tls12_on_modern_domain(self):
        r = s_client_run(self.port, "modern.test", ["-tls1_2", "-fallback_scsv"])
        self.assertEqual((r.ok, r.alert, r.reason), (False, 86, "tlsv1 alert inappropriate fallback"), r.describe())

    # -- 4. compression, renegotiation, cipher suites

    def test_no_compression(self):
        for sni, flag in (("legacy.test", "-tls1"), ("legacy.test", "-tls1_2"), ("modern.test", "-tls1_2"),
                          ("modern.test", "-tls1_3")):
            with self.subTest(sni=sni, flag=flag, client="s_client"):
                r = s_client_run(self.port, sni, [flag, *OLD])
                self.assertTrue(r.ok, r.describe())
                self.assertIn("Compression: NONE", r.out)
        # This openssl cannot offer compression; a hand-made hello offering DEFLATE
        # first must still get the null method.
        for sni, version in (("legacy.test", 0x0301), ("legacy.test", 0x0303), ("modern.test", 0x0303)):
            with self.subTest(sni=sni, version=hex(version), client="raw hello offering DEFLATE"):
                r = raw_probe(self.port, sni, version, GOOD_SUITES, compressions=(1, 0))
                self.assertEqual(r["kind"], "server_hello", r)
                self.assertEqual(r["compression"], 0, r)

    def renegotiate(self, sni, flag):
        """s_client in interactive mode; after the handshake, 'R' asks for a
        renegotiation. Returns the whole output."""
        cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.port, "-servername", sni, flag, "-msg", *OLD]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        chunks = []
        reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: p.stdout.read1(65536), b"")), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 10
            while not re.search(r"SSL-Session:[\s\S]*\n---\n", b"".join(chunks).decode(errors="replace")):
                if time.monotonic() > deadline or p.poll() is not None:
                    self.fail("no handshake:\n" + b"".join(chunks).decode(errors="replace"))
                time.sleep(0.02)
            p.stdin.write(b"R\n")
            p.stdin.flush()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(5)
            reader.join(5)
            p.stdin.close()
            p.stdout.close()
        return b"".join(chunks).decode(errors="replace")

    def test_client_initiated_renegotiation_refused(self):
        for sni, flag in (("modern.test", "-tls1_2"), ("legacy.test", "-tls1_2"), ("legacy.test", "-tls1"),
                          ("legacyrsa.test", "-tls1_1")):
            with self.subTest(sni=sni, flag=flag):
                out = self.renegotiate(sni, flag)
                after = out.split("RENEGOTIATING", 1)
                self.assertEqual(len(after), 2, "s_client did not start a renegotiation:\n" + out)
                # the client sent a second ClientHello; the server answered with the
                # no_renegotiation alert and never with a second ServerHello
                self.assertRegex(after[1], r">>> \S+ \S+, Handshake \[length [0-9a-f]+\], ClientHello", out)
                self.assertRegex(after[1], r"<<< \S+ \S+, Alert \[length 0002\], \w+ no_renegotiation", out)
                self.assertNotIn("ServerHello", after[1], "the server renegotiated:\n" + out)
                self.assertEqual(out.count("], ServerHello\n"), 1, out)
        # the server is fine afterwards
        r = s_client_run(self.port, "modern.test", ["-tls1_2"])
        self.assertTrue(r.ok, r.describe())

    def test_modern_refuses_non_aead_and_rsa_key_exchange(self):
        cases = [("modernrsa.test", ["-tls1_2", "-cipher", "AES128-SHA"]),                 # RSA kx, CBC
                 ("modern.test", ["-tls1_2", "-cipher", "AES128-SHA"]),
                 ("modernrsa.test", ["-tls1_2", "-cipher", "AES128-GCM-SHA256"]),          # RSA kx, AEAD
                 ("modernrsa.test", ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"]),       # ECDHE, CBC
                 ("modern.test", ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"])]     # ECDHE, CBC
        runs = parallel(lambda sni, args: s_client_run(self.port, sni, args), cases)
        for (sni, args), r in zip(cases, runs):
            with self.subTest(sni=sni, args=" ".join(args)):
                self.assertFalse(r.ok, r.describe())
                self.assertEqual((r.alert, r.reason), (40, "sslv3 alert handshake failure"), r.describe())
        # controls: the same domains with an ECDHE AEAD suite
        for sni, suite in (("modernrsa.test", "ECDHE-RSA-AES128-GCM-SHA256"),
                           ("modern.test", "ECDHE-ECDSA-AES128-GCM-SHA256")):
            r = s_client_run(self.port, sni, ["-tls1_2", "-cipher", suite])
            self.assertTrue(r.ok and r.cipher == suite, r.describe())

    def test_weak_suites_refused_everywhere(self):
        # First, what the local client can offer: 3DES etc. are gone from this openssl,
        # so the hand-made ClientHello below carries the check.
        r = s_client_run(self.port, "legacy.test", ["-tls1", "-cipher", "DES-CBC3-SHA:@SECLEVEL=0"])
        self.assertFalse(r.ok, "3DES was negotiated:\n" + r.describe())
        if r.alert is not None:
            self.assertEqual(r.alert, 40, r.describe())
        else:
            self.assertIn("no cipher match", r.out, r.describe())   # the client could not offer it
        cases = []
        for group, suites in sorted(WEAK_SUITES.items()):
            for sni in ("legacy.test", "legacyrsa.test", "modern.test", "modernrsa.test"):
                for version in (0x0301, 0x0303):
                    cases.append((group, sni, version, suites))
        runs = parallel(lambda g, sni, v, suites: raw_probe(self.port, sni, v, suites), cases)
        for (group, sni, version, _), r in zip(cases, runs):
            with self.subTest(group=group, sni=sni, version=hex(version)):
                self.assertEqual(r["kind"], "alert", "a %s suite was accepted: %r" % (group, r))
                want = 40 if (version == 0x0301 and sni.startswith("legacy")) or version == 0x0303 else 70
                self.assertEqual(r["alert"], want, r)
        # controls: the hand-made hello with a good suite is answered
        for sni, suite in (("legacy.test", 0xC009), ("legacyrsa.test", 0xC013)):
            r = raw_probe(self.port, sni, 0x0301, [suite])
            self.assertEqual((r["kind"], r.get("version"), r.get("cipher")), ("server_hello", 0x0301, suite), r)

    def test_legacy_tls10_ecdhe_cbc_works(self):
        for sni, suite in (("legacy.test", "ECDHE-ECDSA-AES128-SHA"), ("legacyrsa.test", "ECDHE-RSA-AES128-SHA"),
                           ("legacy.test", "ECDHE-ECDSA-AES256-SHA"), ("legacyrsa.test", "ECDHE-RSA-AES256-SHA")):
            with self.subTest(sni=sni, suite=suite):
                r = s_client_run(self.port, sni, ["-tls1", "-cipher", suite + ":@SECLEVEL=0",
                                                  "-CAfile", ca().ca_pem, "-verify_hostname", sni])
                self.assertTrue(r.ok, r.describe())
                self.assertEqual((r.protocol, r.cipher), ("TLSv1", suite), r.describe())
                self.assertIn("Verify return code: 0 (ok)", r.out)

    def test_server_cipher_order_on_legacy(self):
        # a client that lists static-RSA CBC first still gets ECDHE (and AEAD when it can)
        for flag, offer, want in (("-tls1_2", "AES128-SHA:ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
                                  ("-tls1", "AES128-SHA:ECDHE-RSA-AES128-SHA:@SECLEVEL=0", "ECDHE-RSA-AES128-SHA")):
            with self.subTest(flag=flag):
                r = s_client_run(self.port, "legacyrsa.test", [flag, "-cipher", offer])
                self.assertTrue(r.ok, r.describe())
                self.assertEqual(r.cipher, want, r.describe())

    def test_modern_never_signs_with_sha1(self):
        r = s_client_run(self.port, "modern.test", ["-tls1_2", "-sigalgs", "ECDSA+SHA1", *OLD])
        self.assertEqual((r.ok, r.alert), (False, 40), r.describe())
        r = s_client_run(self.port, "modernrsa.test", ["-tls1_2", "-sigalgs", "RSA+SHA1", *OLD])
        self.assertEqual((r.ok, r.alert), (False, 40), r.describe())

    def test_legacy_policy_follows_name_normalisation(self):
        for sni in ("LEGACY.TEST", "legacy.test."):
            with self.subTest(sni=sni):
                r = s_client_run(self.port, sni, ["-tls1", *OLD])
                self.assertTrue(r.ok and r.protocol == "TLSv1" and r.subject_cn == "legacy.test", r.describe())
        r = s_client_run(self.port, "MODERN.TEST.", ["-tls1", *OLD])
        self.assertEqual((r.ok, r.alert), (False, 70), r.describe())

    # -- 6. 421

    def test_legacy_sni_with_modern_host_is_421(self):
        ctx10 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx10.load_verify_locations(ca().ca_pem)
        ctx10.minimum_version = ssl.TLSVersion.TLSv1
        ctx10.maximum_version = ssl.TLSVersion.TLSv1
        ctx10.set_ciphers("DEFAULT@SECLEVEL=0")
        for label, ctx in (("TLS 1.0", ctx10), ("default", None)):
            with self.subTest(client=label):
                s = tls_connect(self.port, "legacy.test", context=ctx)
                if ctx is ctx10:
                    self.assertEqual(peer_info(s)["version"], "TLSv1")
                with HTTPClient(s) as c:
                    r = c.request("GET", "/echo", [("Host", "modern.test")])
                self.assertGatehouseError(r, 421)
                self.assertFalse(r.has("x-backend-name"), "a 421 must not reach a backend")
                s = tls_connect(self.port, "legacy.test", context=ctx)
                with HTTPClient(s) as c:
                    r = c.request("GET", "/echo", [("Host", "legacy.test")])
                self.assertEqual(r.status, 200, r.summary())
                self.assertEqual(r.get("x-backend-name"), "L")

    # -- 7. session resumption

    def test_resumption_same_domain(self):
        cases = [("modern.test", "-tls1_2"), ("modern.test", "-tls1_3"), ("legacy.test", "-tls1"),
                 ("legacy.test", "-tls1_2"), ("legacy.test", "-tls1_3"), ("legacyrsa.test", "-tls1_1")]

        def run(sni, flag):
            path = self.tmp("%s%s.sess" % (sni, flag))
            first = get_session(self.port, sni, flag, path)
            return first, (resume(self.port, sni, flag, path) if first.ok else None)

        for (sni, flag), (first, again) in zip(cases, parallel(run, cases)):
            with self.subTest(sni=sni, flag=flag):
                self.assertTrue(first.ok and first.new, first.describe())
                self.assertTrue(again.ok, again.describe())
                self.assertTrue(again.reused, "not resumed:\n" + again.describe())
                self.assertIn("Reused, %s" % ("TLSv1.3" if flag == "-tls1_3" else ""), again.out)
                self.assertEqual(again.protocol, PROTOCOL_NAME[flag], again.describe())

    def test_resumption_same_domain_without_tickets(self):
        # TLS 1.2 session-id resumption from the server's cache
        path = self.tmp("noticket.sess")
        first = get_session(self.port, "modern.test", "-tls1_2", path, extra=["-no_ticket"])
        self.assertTrue(first.ok, first.describe())
        again = resume(self.port, "modern.test", "-tls1_2", path, extra=["-no_ticket"])
        self.assertTrue(again.reused, again.describe())
        other = resume(self.port, "b.test", "-tls1_2", path, extra=["-no_ticket"])
        self.assertTrue(other.ok, other.describe())
        self.assertFalse(other.reused, "a session id of modern.test resumed on b.test:\n" + other.describe())

    def test_no_resumption_across_domains(self):
        pairs = [("modern.test", "b.test"), ("b.test", "modern.test"),      # both modern, different certificates
                 ("legacy.test", "modern.test"),                          # legacy session on a modern domain
                 ("modern.test", "legacy.test"), ("legacyrsa.test", "modernrsa.test")]
        cases = [(a, b, flag) for a, b in pairs for flag in ("-tls1_2", "-tls1_3")]

        def run(a, b, flag):
            path = self.tmp("%s-to-%s%s.sess" % (a, b, flag))
            first = get_session(self.port, a, flag, path)
            return first, (resume(self.port, b, flag, path) if first.ok else None)

        for (a, b, flag), (first, other) in zip(cases, parallel(run, cases)):
            with self.subTest(session_of=a, presented_to=b, flag=flag):
                self.assertTrue(first.ok, first.describe())
                self.assertTrue(other.ok, other.describe())
                self.assertTrue(offered_resumption(other), "the client did not offer the session:\n" + other.describe())
                self.assertFalse(other.reused, "session of %s resumed with SNI %s:\n%s" % (a, b, other.describe()))
                self.assertIn("New, ", other.out)
                self.assertEqual(other.subject_cn, b, other.describe())


# --------------------------------------------------------------------------- 2. sni_fallback_profile

class SNIFallbackProfileTests(GatehouseCase):
    """NEW listener option `sni_fallback_profile = "legacy"`: clients without SNI get the
    legacy profile with the default domain's certificate; named domains keep theirs."""

    @classmethod
    def setUpEnv(cls, env):
        app = env.backend("A")
        env.domain("modern.toml", ["modern.test"], app, tls_profile="modern")
        env.domain("legacy.toml", ["legacy.test"], app, tls_profile="legacy")
        cls.port = env.listener("https")
        env.listeners[-1]["sni_fallback_profile"] = "legacy"
        cls.plain_port = env.listener("https")            # same process, without the option
        env.start(tls={"default_domain": "modern.test"})

    def test_no_sni_gets_legacy_profile_with_default_certificate(self):
        for flag in ("-tls1", "-tls1_1", "-tls1_2", "-tls1_3"):
            with self.subTest(flag=flag):
                r = s_client_run(self.port, None, [flag, *OLD, "-CAfile", ca().ca_pem])
                self.assertTrue(r.ok, r.describe())
                self.assertEqual(r.protocol, PROTOCOL_NAME[flag], r.describe())
                self.assertEqual(r.subject_cn, "modern.test", r.describe())
                self.assertIn("Verify return code: 0 (ok)", r.out)

    def test_no_sni_tls10_client_reaches_default_domain(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(ca().ca_pem)
        ctx.check_hostname = False
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
        ctx.set_ciphers("DEFAULT@SECLEVEL=0")
        s = tls_connect(self.port, None, context=ctx)
        self.assertEqual(s.version(), "TLSv1")
        with HTTPClient(s) as c:
            r = c.request("GET", "/echo", [("Host", "modern.test")])
        self.assertEqual(r.status, 200, r.summary())

    def test_sni_of_modern_domain_keeps_modern_policy(self):
        for flag in ("-tls1", "-tls1_1"):
            with self.subTest(flag=flag):
                r = s_client_run(self.port, "modern.test", [flag, *OLD])
                self.assertEqual((r.ok, r.alert, r.reason), (False, 70, "tlsv1 alert protocol version"),
                                 r.describe())
        r = s_client_run(self.port, "modern.test", ["-tls1_2"])
        self.assertTrue(r.ok and r.protocol == "TLSv1.2", r.describe())

    def test_sni_of_legacy_domain_still_legacy(self):
        r = s_client_run(self.port, "legacy.test", ["-tls1", *OLD])
        self.assertTrue(r.ok and r.protocol == "TLSv1" and r.subject_cn == "legacy.test", r.describe())

    def test_option_is_per_listener(self):
        r = s_client_run(self.plain_port, None, ["-tls1", *OLD])
        self.assertEqual((r.ok, r.alert, r.reason), (False, 70, "tlsv1 alert protocol version"), r.describe())
        r = s_client_run(self.plain_port, None, ["-tls1_2"])
        self.assertTrue(r.ok and r.subject_cn == "modern.test", r.describe())

    def test_fallback_session_does_not_carry_legacy_ciphers_to_modern(self):
        # A no-SNI client on the fallback listener gets the default domain (modern.test)
        # under the legacy profile, so TLS 1.2 with a CBC suite modern never allows.
        # Resuming that session under modern.test's own policy must not bring the
        # suite along (same domain, different profile).
        path = os.path.join(self.env.dir, "fallback-cbc.sess")
        cbc = "ECDHE-ECDSA-AES128-SHA"
        first = get_session(self.port, None, "-tls1_2", path, host="modern.test", extra=["-cipher", cbc])
        self.assertTrue(first.ok and first.protocol == "TLSv1.2" and first.cipher == cbc, first.describe())
        control = s_client_run(self.plain_port, "modern.test", ["-tls1_2", "-cipher", cbc])
        self.assertEqual((control.ok, control.alert), (False, 40), control.describe())
        for label, port, sni in (("plain listener, SNI modern.test", self.plain_port, "modern.test"),
                                 ("plain listener, no SNI", self.plain_port, None),
                                 ("fallback listener, SNI modern.test", self.port, "modern.test")):
            with self.subTest(where=label):
                r = resume(port, sni, "-tls1_2", path, extra=["-cipher", cbc + ":ECDHE-ECDSA-AES128-GCM-SHA256"])
                self.assertTrue(r.ok, r.describe())
                self.assertTrue(offered_resumption(r), r.describe())
                self.assertNotEqual(r.cipher, cbc, "modern.test runs %s (session %s):\n%s"
                                    % (cbc, "reused" if r.reused else "new", r.describe()))

    def test_fallback_scsv_still_honoured_without_sni(self):
        r = s_client_run(self.port, None, ["-tls1", "-fallback_scsv", *OLD])
        self.assertEqual((r.ok, r.alert), (False, 86), r.describe())


# --------------------------------------------------------------------------- 5. RSA + ECDSA

class DualCertificateTests(GatehouseCase):
    """NEW: `certificate` and `key` as arrays paired by index (ECDSA + RSA on one domain)."""

    @classmethod
    def setUpEnv(cls, env):
        app = env.backend("A")
        ec_cert, ec_key = ca().leaf("dual.test", ["dual.test"])
        rsa_cert, rsa_key = ca().leaf("dual.test", ["dual.test"], rsa=True)
        env.domain("dual.toml", ["dual.test"], app, cert=[ec_cert, rsa_cert], key=[ec_key, rsa_key],
                   tls_profile="modern")
        lc, lk = ca().leaf("duallegacy.test", ["duallegacy.test"])
        lrc, lrk = ca().leaf("duallegacy.test", ["duallegacy.test"], rsa=True)
        env.domain("duallegacy.toml", ["duallegacy.test"], app, cert=[lrc, lc], key=[lrk, lk],  # RSA listed first
                   tls_profile="legacy")
        cls.port = env.listener("https")
        env.start()

    CASES = [
        # (sni, s_client args, want key bits, want "Peer signature type")
        ("dual.test", ["-tls1_2", "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256"], 2048, "RSA-PSS"),
        ("dual.test", ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], 2048, "RSA-PSS"),
        ("dual.test", ["-tls1_2", "-sigalgs", "ECDSA+SHA256"], 256, "ECDSA"),
        ("dual.test", ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"], 256, "ECDSA"),
        ("dual.test", ["-tls1_3", "-sigalgs", "RSA-PSS+SHA256"], 2048, "RSA-PSS"),
        ("dual.test", ["-tls1_3", "-sigalgs", "ECDSA+SHA256"], 256, "ECDSA"),
        ("duallegacy.test", ["-tls1_2", "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256"], 2048, "RSA-PSS"),
        ("duallegacy.test", ["-tls1_2", "-sigalgs", "ECDSA+SHA256"], 256, "ECDSA"),
        ("duallegacy.test", ["-tls1", "-cipher", "ECDHE-RSA-AES128-SHA:@SECLEVEL=0"], 2048, "RSA"),
        ("duallegacy.test", ["-tls1", "-cipher", "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"], 256, "ECDSA"),
        ("duallegacy.test", ["-tls1", "-cipher", "AES128-SHA:@SECLEVEL=0"], 2048, None),   # static RSA kx: no signature
    ]

    def test_certificate_chosen_by_client_capabilities(self):
        runs = parallel(lambda sni, args, bits, sig: s_client_run(
            self.port, sni, [*args, "-CAfile", ca().ca_pem, "-verify_hostname", sni]), self.CASES)
        for (sni, args, bits, sig), r in zip(self.CASES, runs):
            with self.subTest(sni=sni, args=" ".join(args)):
                self.assertTrue(r.ok, r.describe())
                self.assertEqual(r.key_bits, bits, r.describe())
                if sig:
                    self.assertIn("Peer signature type: %s\n" % sig, r.out)
                self.assertIn("Verify return code: 0 (ok)", r.out)
                self.assertEqual(r.subject_cn, sni)

    def test_client_offering_both_completes(self):
        for sni in ("dual.test", "duallegacy.test"):
            for flag in ("-tls1_2", "-tls1_3"):
                with self.subTest(sni=sni, flag=flag):
                    r = s_client_run(self.port, sni, [flag, "-CAfile", ca().ca_pem, "-verify_hostname", sni])
                    self.assertTrue(r.ok, r.describe())
                    self.assertIn(r.key_bits, (256, 2048), r.describe())

    def test_python_clients_get_matching_certificates(self):
        for cipher, want in (("ECDHE-RSA-AES128-GCM-SHA256", "RSA"), ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDSA")):
            with self.subTest(cipher=cipher):
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.load_verify_locations(ca().ca_pem)
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
                ctx.set_ciphers(cipher)
                s = tls_connect(self.port, "dual.test", context=ctx)
                with HTTPClient(s) as c:
                    self.assertEqual(peer_info(s)["cipher"], cipher)
                    r = c.request("GET", "/echo", [("Host", "dual.test")])
                    self.assertEqual(r.status, 200, r.summary())


# --------------------------------------------------------------------------- 8. ticket_key_file

class TicketKeyFileTests(GatehouseCase):
    """NEW `[tls] ticket_key_file`: 80 bytes per key (16 name, 32 HMAC, 32 AES), the
    first encrypts, the others only decrypt. Four processes:
      p1: K1   p2: K1 (shared with p1)   p3: K3 (unrelated)   p4: K2 then K1 (rotated)"""

    @classmethod
    def setUpEnv(cls, env):
        app = env.backend("A")
        keys = {n: os.urandom(80) for n in ("K1", "K2", "K3")}
        files = {"p1": keys["K1"], "p2": keys["K1"], "p3": keys["K3"], "p4": keys["K2"] + keys["K1"]}
        cls.ports = {}
        for name in ("p1", "p2", "p3", "p4"):
            e = env if name == "p1" else cls._extra_env()
            e.domain("modern.toml", ["modern.test"], app.backend, tls_profile="modern")
            e.domain("b.toml", ["b.test"], app.backend, tls_profile="modern")
            e.domain("legacy.toml", ["legacy.test"], app.backend, tls_profile="legacy")
            path = os.path.join(e.dir, "ticket.keys")
            with open(path, "wb") as f:
                f.write(files[name])
            os.chmod(path, 0o600)
            cls.ports[name] = e.listener("https")
            e.start(tls={"ticket_key_file": path})

    @classmethod
    def _extra_env(cls):
        e = Env()
        cls.addClassCleanup(e.close)
        return e

    def tmp(self, name):
        return os.path.join(self.env.dir, "%s-%s" % (self._testMethodName, name))

    def across(self, cases):
        """cases: (from_process, sni, flag, to_process, to_sni) -> [(first, resumed)]"""
        def run(src, sni, flag, dst, dst_sni):
            path = self.tmp("%s-%s-%s-%s%s.sess" % (src, sni, dst, dst_sni, flag))
            first = get_session(self.ports[src], sni, flag, path)
            return first, (resume(self.ports[dst], dst_sni, flag, path) if first.ok else None)
        return parallel(run, cases)

    FLAGS = ("-tls1_2", "-tls1_3")

    def test_shared_key_file_resumes_on_the_other_process(self):
        cases = [("p1", sni, flag, "p2", sni) for sni in ("modern.test", "legacy.test") for flag in self.FLAGS]
        cases += [("p2", "modern.test", flag, "p1", "modern.test") for flag in self.FLAGS]
        for case, (first, again) in zip(cases, self.across(cases)):
            with self.subTest(case=case):
                self.assertTrue(first.ok, first.describe())
                self.assertTrue(again.ok, again.describe())
                self.assertTrue(again.reused, "ticket from %s not accepted by %s:\n%s"
                                % (case[0], case[3], again.describe()))

    def assertResumedAcross(self, cases, reused):
        """Each case: a session from (process, SNI) offered to another; both
        handshakes complete, the second offers the session, and `reused(case)`
        says whether it must be accepted."""
        for case, (first, again) in zip(cases, self.across(cases)):
            with self.subTest(case=case):
                self.assertTrue(first.ok, first.describe())
                self.assertTrue(again.ok, again.describe())
                self.assertTrue(offered_resumption(again), again.describe())
                self.assertEqual(again.reused, reused(case), again.describe())

    def test_different_key_file_does_not_resume(self):
        cases = [("p1", "modern.test", flag, "p3", "modern.test") for flag in self.FLAGS]
        cases += [("p3", "modern.test", flag, "p1", "modern.test") for flag in self.FLAGS]
        self.assertResumedAcross(cases, lambda case: False)

    def test_second_key_decrypts_only(self):
        # p4 = K2 + K1: accepts tickets made with K1 (p1) ...
        cases = [("p1", "modern.test", flag, "p4", "modern.test") for flag in self.FLAGS]
        # ... issues its own with K2, which p2 (K1 only) cannot read ...
        cases += [("p4", "modern.test", flag, "p2", "modern.test") for flag in self.FLAGS]
        # ... but p4 itself can
        cases += [("p4", "modern.test", flag, "p4", "modern.test") for flag in self.FLAGS]
        want = {"p4": True, "p2": False}
        self.assertResumedAcross(cases, lambda case: want[case[3]])

    def test_shared_keys_do_not_cross_domains(self):
        cases = [("p1", "modern.test", flag, "p2", "b.test") for flag in self.FLAGS]
        cases += [("p1", "legacy.test", flag, "p2", "modern.test") for flag in self.FLAGS]
        self.assertResumedAcross(cases, lambda case: False)


# --------------------------------------------------------------------------- config contract of the new keys

class TLSPolicyConfigCheckTests(unittest.TestCase):
    """`gatehouse check` on the new keys (no server started)."""

    def setUp(self):
        self.env = Env()
        self.addCleanup(self.env.close)

    def check(self, **config):
        self.env.listener("https")
        path = self.env.write_config(**config)
        return run_gatehouse("check", "-c", path)

    def test_certificate_and_key_arrays_accepted(self):
        ec = ca().leaf("dual.test", ["dual.test"])
        rsa = ca().leaf("dual.test", ["dual.test"], rsa=True)
        self.env.domain("dual.toml", ["dual.test"], "127.0.0.1:9", cert=[ec[0], rsa[0]], key=[ec[1], rsa[1]])
        r = self.check()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertRegex(r.stdout + r.stderr, r"^OK, 1 domain")

    def test_certificate_and_key_arrays_of_different_length_rejected(self):
        ec = ca().leaf("dual.test", ["dual.test"])
        rsa = ca().leaf("dual.test", ["dual.test"], rsa=True)
        self.env.domain("dual.toml", ["dual.test"], "127.0.0.1:9", cert=[ec[0], rsa[0]], key=[ec[1]])
        r = self.check()
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stdout + r.stderr, r"dual\.toml: (certificate|key): ")

    def test_sni_fallback_profile_value_checked(self):
        self.env.domain("a.toml", ["a.test"], "127.0.0.1:9")
        self.env.listener("https")
        self.env.listeners[-1]["sni_fallback_profile"] = "ancient"
        r = self.check(tls={"default_domain": "a.test"})
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("sni_fallback_profile", r.stdout + r.stderr)

    def test_ticket_key_file_must_hold_whole_80_byte_keys(self):
        self.env.domain("a.toml", ["a.test"], "127.0.0.1:9")
        for size, ok in ((80, True), (160, True), (79, False), (48, None), (0, False)):
            with self.subTest(size=size):
                path = os.path.join(self.env.dir, "keys-%d" % size)
                with open(path, "wb") as f:
                    f.write(os.urandom(size))
                self.env.listeners.clear()
                r = self.check(tls={"ticket_key_file": path})
                if ok is None:      # nginx's 48-byte format: either accepted or a clear error
                    if r.returncode != 0:
                        self.assertIn("ticket_key_file", r.stdout + r.stderr)
                    continue
                self.assertEqual(r.returncode, 0 if ok else 1, r.stdout + r.stderr)
                if not ok:
                    self.assertIn("ticket_key_file", r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
