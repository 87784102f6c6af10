"""Regression: a TLS 1.3 connection that resumed must hand out a fresh ticket,
or every other handshake of a returning visitor is a full one. And what the
handshake-cost changes (issue 13) must not break: one ticket per full TLS 1.3
handshake, each domain's certificate on full and resumed handshakes, a domain
whose certificate fails to load refused alone."""

import os
import re
import subprocess
import tempfile
import time

from harness import GatehouseCase, free_port
from test_metrics import scrape

REQUEST = b"GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"


class ChainedResumptionTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        cls.port = env.listener("https")
        env.start()

    def connect(self, version, sess_in=None, sess_out=None):
        cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.port, "-servername", "a.test",
               version, "-ign_eof"]
        if sess_in:
            cmd += ["-sess_in", sess_in]
        if sess_out:
            cmd += ["-sess_out", sess_out]
        out = subprocess.run(cmd, input=REQUEST, capture_output=True, timeout=15).stdout.decode(errors="replace")
        return "Reused" if "\nReused, " in out else "New" if "\nNew, " in out else "failed"

    def test_each_resumption_yields_a_ticket_for_the_next(self):
        for version in ("-tls1_3", "-tls1_2"):
            with self.subTest(version=version):
                d = tempfile.mkdtemp(dir=self.env.dir)
                paths = [os.path.join(d, "s%d" % i) for i in range(5)]
                self.assertEqual(self.connect(version, sess_out=paths[0]), "New")
                for i in range(1, 5):
                    self.assertEqual(self.connect(version, sess_in=paths[i - 1], sess_out=paths[i]), "Reused",
                                     "resumption %d of a chain" % i)
                    if not os.path.exists(paths[i]):   # TLS 1.2 keeps the same session
                        paths[i] = paths[i - 1]


def s_client_msg(port, servername, args, request_host=None):
    """`openssl s_client -msg`; with request_host an HTTP request (Connection: close)
    is sent and the reply read to the end, so every post-handshake ticket has arrived."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", servername, "-msg", *args]
    stdin = b""
    if request_host:
        cmd.append("-ign_eof")
        stdin = ("GET /echo HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % request_host).encode()
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=15)
    return (r.stdout + r.stderr).decode(errors="replace")


def count_messages(out, direction, name):
    return len(re.findall(r"^%s .*, %s$" % (re.escape(direction), name), out, re.M))


def outcome(out):
    return "Reused" if "\nReused, " in out else "New" if "\nNew, " in out else "failed"


def subject_cn(out):
    m = re.search(r"^subject=\s*CN\s*=\s*(\S+)", out, re.M)
    return m.group(1) if m else None


def key_bits(out):
    m = re.search(r"Server public key is (\d+) bit", out)
    return int(m.group(1)) if m else None


def backend_name(out):
    m = re.search(r"^x-backend-name: *(\S+)", out, re.M | re.I)
    return m.group(1) if m else None


class HandshakeCostTests(GatehouseCase):
    """Issue 13 (handshake cost): one TLS 1.3 ticket per full handshake; the
    certificate is installed in OpenSSL's certificate callback, which resumed
    handshakes skip; a domain whose certificate cannot load still fails alone."""

    DOMAINS = {"ec.test": ("E", [256]), "rsa.test": ("R", [2048]), "dual.test": ("D", [256, 2048])}

    @classmethod
    def setUpEnv(cls, env):
        env.domain("ec.toml", ["ec.test"], env.backend("E"))
        env.domain("rsa.toml", ["rsa.test"], env.backend("R"), rsa=True)
        ec_cert, ec_key = env.ca.leaf("dual.test")
        rsa_cert, rsa_key = env.ca.leaf("dual.test", rsa=True)
        env.domain("dual.toml", ["dual.test"], env.backend("D"), cert=[ec_cert, rsa_cert], key=[ec_key, rsa_key])
        broken = os.path.join(env.dir, "broken.pem")
        with open(broken, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n")
        env.domain("broken.toml", ["broken.test"], env.backend("B"), cert=broken, key=env.ca.leaf("ec.test")[1])
        cls.port = env.listener("https")
        cls.metrics_port = free_port()
        env.start(metrics={"address": "127.0.0.1:%d" % cls.metrics_port})

    def session_path(self, name):
        return os.path.join(tempfile.mkdtemp(dir=self.env.dir), name)

    def test_one_ticket_per_full_tls13_handshake_and_per_resumption(self):
        path = self.session_path("s")
        out = s_client_msg(self.port, "ec.test", ["-tls1_3", "-sess_out", path], request_host="ec.test")
        self.assertEqual(outcome(out), "New", out)
        self.assertEqual(count_messages(out, "<<<", "NewSessionTicket"), 1, out)
        out = s_client_msg(self.port, "ec.test", ["-tls1_3", "-sess_in", path], request_host="ec.test")
        self.assertEqual(outcome(out), "Reused", out)
        self.assertEqual(count_messages(out, "<<<", "NewSessionTicket"), 1, "a resumption renews its ticket:\n" + out)
        out = s_client_msg(self.port, "ec.test", ["-tls1_2"], request_host="ec.test")
        self.assertEqual(count_messages(out, "<<<", "NewSessionTicket"), 1, out)

    def test_resumption_keeps_each_domains_certificate_and_backend(self):
        for name, (backend, bits) in self.DOMAINS.items():
            for flag in ("-tls1_3", "-tls1_2"):
                with self.subTest(domain=name, flag=flag):
                    path = self.session_path("s")
                    args = [flag, "-CAfile", self.ca_pem, "-verify_hostname", name]
                    first = s_client_msg(self.port, name, [*args, "-sess_out", path], request_host=name)
                    self.assertEqual(outcome(first), "New", first)
                    again = s_client_msg(self.port, name, [*args, "-sess_in", path], request_host=name)
                    self.assertEqual(outcome(again), "Reused", again)
                    self.assertEqual(count_messages(again, "<<<", "Certificate"), 0, again)
                    self.assertEqual(subject_cn(again), name, again)
                    self.assertIn("Verify return code: 0 (ok)", again)
                    self.assertEqual(backend_name(again), backend, again)
                    # Another domain's session: a full handshake with that domain's own certificate.
                    for other, (other_backend, other_bits) in self.DOMAINS.items():
                        if other == name:
                            continue
                        r = s_client_msg(self.port, other, [flag, "-sess_in", path], request_host=other)
                        self.assertEqual(outcome(r), "New", r)
                        self.assertEqual(subject_cn(r), other, r)
                        self.assertIn(key_bits(r), other_bits, r)
                        self.assertEqual(backend_name(r), other_backend, r)

    def test_hello_retry_request_still_gets_the_certificate(self):
        # The client's only key share (P-521) is not one of ours: RFC 8446 §4.1.4,
        # a second ClientHello, and both callbacks run again.
        out = s_client_msg(self.port, "rsa.test", ["-tls1_3", "-groups", "P-521:X25519"], request_host="rsa.test")
        self.assertEqual(count_messages(out, ">>>", "ClientHello"), 2, out)
        self.assertEqual(outcome(out), "New", out)
        self.assertEqual((subject_cn(out), key_bits(out), backend_name(out)), ("rsa.test", 2048, "R"), out)

    def test_unloadable_certificate_fails_only_its_domain_with_handshake_failure(self):
        def failures():
            return scrape(self.metrics_port)[("gatehouse_tls_handshake_failures_total", '{reason="other"}')]
        before = failures()
        for flag in ("-tls1_3", "-tls1_2"):
            with self.subTest(flag=flag):
                out = s_client_msg(self.port, "broken.test", [flag])
                self.assertIn("SSL alert number 40", out)   # handshake_failure, as before issue 13
                ok = s_client_msg(self.port, "ec.test", [flag], request_host="ec.test")
                self.assertEqual((outcome(ok), backend_name(ok)), ("New", "E"), ok)
        deadline = time.monotonic() + 3
        while failures() - before < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(failures() - before, 2)
        log = self.env.gatehouse.stderr()
        self.assertEqual(len([line for line in log.splitlines() if "broken.toml" in line]), 1, log)
        self.assertTrue(self.env.gatehouse.alive())
