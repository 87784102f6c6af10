"""Automatic certificates (issue 15) against a real ACME CA: Debian's pebble,
its DNS (pebble-challtestsrv) answering every name with 127.0.0.1, so its
validations reach the Gatehouse under test on its own listeners. Pebble
rejects 5 % of nonces, as it does by default."""

import json
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import unittest

import acme_ca
from harness import Env, free_port, http_get, require_binary, run_gatehouse
from test_metrics import scrape
from test_acme_config import acme_domain

ISSUE_TIMEOUT = 60


def served_certificate(port, name, cafile, timeout=2.0):
    """(der, peer dict) of the certificate a verified handshake for `name` gets."""
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            return s.getpeercert(binary_form=True), s.getpeercert()


def wait_for_certificate(port, name, cafile, timeout=ISSUE_TIMEOUT, other_than=None):
    """The DER of the first verified certificate for `name` (different from
    `other_than` when given); fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            der, _ = served_certificate(port, name, cafile)
            if der != other_than:
                return der
            last = "still the previous certificate"
        except (OSError, ssl.SSLError) as e:
            last = e
        time.sleep(0.2)
    raise AssertionError("no certificate for %s within %d s (last: %s)" % (name, timeout, last))


def x509_text(der):
    return subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-text"], input=der,
                          capture_output=True, check=True).stdout.decode()


def sans(der):
    return sorted(re.findall(r"DNS:([^,\s]+)", x509_text(der)))


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class ACMEEnv:
    """pebble + one Gatehouse with an [acme] table; ports chosen first, since
    pebble validates against Gatehouse's listeners."""

    def __init__(self, challenges, validity=None, authz_reuse=None, storage=None, pebble_nice=None):
        require_binary()
        if not acme_ca.installed():
            raise unittest.SkipTest("pebble is not installed (apt install pebble)")
        self.env = Env()
        self.https = self.env.listener("https")
        self.http = self.env.listener("http", https_port=self.https)
        self.pebble = acme_ca.Pebble(self.http, self.https, validity=validity, authz_reuse=authz_reuse, nice=pebble_nice)
        self.storage = storage or os.path.join(self.env.dir, "acme")
        self.acme = {"directory": self.pebble.directory, "contact": "mailto:ops@gatehouse.test",
                     "storage": self.storage, "trust": self.pebble.trust, "challenges": challenges}
        self.app = self.env.backend("app")

    def domain(self, filename, names, **opts):
        return acme_domain(self.env, filename, names, self.app, **opts)

    def start(self, **config):
        return self.env.start(extra_sections={"acme": self.acme}, **config)

    def root(self):
        return self.pebble.root_file()

    def close(self):
        self.env.close()
        self.pebble.stop()


class TLSALPNIssuance(unittest.TestCase):
    """tls-alpn-01 only: the CA's validation handshakes reach the https listener."""

    @classmethod
    def setUpClass(cls):
        cls.a = ACMEEnv(["tls-alpn-01"])
        cls.addClassCleanup(cls.a.close)
        cls.a.domain("shop.toml", ["shop.test", "www.shop.test"])
        cls.a.domain("old.toml", ["old.test"], tls_profile="legacy")
        cls.a.env.domain("files.toml", ["files.test"], cls.a.app)
        # Before the start: the first 503 must be seen before any issuance.
        cls.metrics_port = free_port()
        cls.a.start(metrics={"address": "127.0.0.1:%d" % cls.metrics_port})
        cls.pending_answer = http_get(cls.a.http, "shop.test", "/before")

    def test_pending_domain_answers_503_until_issued_then_redirects(self):
        self.assertIn(self.pending_answer.status, (503, 301), self.pending_answer.summary())
        wait_for_certificate(self.a.https, "shop.test", self.a.root())
        r = http_get(self.a.http, "shop.test", "/after")
        self.assertEqual(r.status, 301, r.summary())

    def test_certificate_covers_every_name_and_verifies_against_the_ca(self):
        der = wait_for_certificate(self.a.https, "shop.test", self.a.root())
        self.assertEqual(sans(der), ["shop.test", "www.shop.test"])
        again = wait_for_certificate(self.a.https, "www.shop.test", self.a.root())
        self.assertEqual(again, der, "one certificate per domain file")
        # The request reaches the app over the new certificate.
        ctx = ssl.create_default_context(cafile=self.a.root())
        with socket.create_connection(("127.0.0.1", self.a.https), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="shop.test") as s:
                s.sendall(b"GET /acme-served HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:200])

    def test_storage_is_private(self):
        wait_for_certificate(self.a.https, "shop.test", self.a.root())
        st = self.a.storage
        self.assertEqual(mode(st), 0o700)
        for sub in ("account", "certificates", "certificates/shop.test"):
            self.assertEqual(mode(os.path.join(st, sub)), 0o700, sub)
        for f in ("account/key.pem", "certificates/shop.test/ecdsa.pem"):
            self.assertEqual(mode(os.path.join(st, f)), 0o600, f)
        with open(os.path.join(st, "certificates/shop.test/ecdsa.pem")) as f:
            pem = f.read()
        self.assertIn("PRIVATE KEY", pem)
        self.assertEqual(pem.count("BEGIN CERTIFICATE"), 2, "leaf and intermediate")

    def test_legacy_domain_gets_an_rsa_certificate_as_well(self):
        ecdsa = wait_for_certificate(self.a.https, "old.test", self.a.root())
        self.assertIn("id-ecPublicKey", x509_text(ecdsa))
        deadline = time.monotonic() + ISSUE_TIMEOUT
        path = os.path.join(self.a.storage, "certificates/old.test/rsa.pem")
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertTrue(os.path.exists(path), "no RSA certificate in storage")
        # A client that signs only with RSA gets the RSA certificate.
        ctx = ssl.create_default_context(cafile=self.a.root())
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
        with socket.create_connection(("127.0.0.1", self.a.https), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="old.test") as s:
                der = s.getpeercert(binary_form=True)
        self.assertIn("rsaEncryption", x509_text(der))

    def test_validation_handshake_never_reaches_an_ordinary_domain(self):
        """ALPN acme-tls/1 for a domain with files of its own: refused (RFC 8737 §3)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["acme-tls/1"])
        with socket.create_connection(("127.0.0.1", self.a.https), timeout=5) as raw:
            with self.assertRaises(ssl.SSLError) as caught:
                ctx.wrap_socket(raw, server_hostname="files.test")
        self.assertIn("NO APPLICATION PROTOCOL", str(caught.exception).upper().replace("_", " "))

    def test_metrics(self):
        wait_for_certificate(self.a.https, "shop.test", self.a.root())
        wait_for_certificate(self.a.https, "old.test", self.a.root())
        deadline = time.monotonic() + 10
        while True:
            m = scrape(self.metrics_port)
            if m.get(("gatehouse_acme_orders_total", '{outcome="issued"}'), 0) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(m[("gatehouse_acme_orders_total", '{outcome="issued"}')], 2)
        self.assertEqual(m[("gatehouse_acme_orders_total", '{outcome="failed"}')], 0)
        self.assertEqual(m[("gatehouse_acme_domains_waiting", "")], 0)
        expiry = m[("gatehouse_acme_certificate_expiry_seconds", '{domain="shop.test"}')]
        self.assertGreater(expiry, 86400)
        self.assertNotIn(("gatehouse_acme_certificate_expiry_seconds", '{domain="files.test"}'), m)
        # Each name of shop.test, old.test (ECDSA and RSA): one validation
        # handshake per authorization, unless pebble reused one.
        self.assertGreaterEqual(m[("gatehouse_acme_challenges_answered_total", '{type="tls-alpn-01"}')], 1)
        self.assertEqual(m[("gatehouse_acme_challenges_answered_total", '{type="http-01"}')], 0)

    def test_status_command_lists_each_acme_domain(self):
        wait_for_certificate(self.a.https, "shop.test", self.a.root())
        r = run_gatehouse("acme", "status", "-c", self.a.env.config_path, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = {line.split()[0]: line for line in r.stdout.splitlines() if line and not line.startswith("DOMAIN")}
        self.assertIn("shop.test", lines, r.stdout)
        self.assertIn("valid", lines["shop.test"])
        self.assertIn("www.shop.test", lines["shop.test"])
        self.assertIn("old.test", lines)
        self.assertNotIn("files.test", lines, "only ACME domains are listed")


class HTTP01Issuance(unittest.TestCase):
    """http-01 only: the CA fetches the token from the http listener."""

    @classmethod
    def setUpClass(cls):
        cls.a = ACMEEnv(["http-01"])
        cls.addClassCleanup(cls.a.close)
        cls.a.domain("blog.toml", ["blog.test", "www.blog.test"])
        cls.a.start()

    def test_issued_over_http01_and_tokens_removed_afterwards(self):
        der = wait_for_certificate(self.a.https, "blog.test", self.a.root())
        self.assertEqual(sans(der), ["blog.test", "www.blog.test"])
        directory = os.path.join(self.a.storage, "challenges", "http-01")
        deadline = time.monotonic() + 10
        while os.path.isdir(directory) and os.listdir(directory) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(os.listdir(directory) if os.path.isdir(directory) else [], [],
                         "challenge tokens left in storage")

    def test_a_token_gatehouse_did_not_issue_reaches_the_app(self):
        token = "customer-certbot-token-0123456789"
        r = http_get(self.a.http, "blog.test", "/.well-known/acme-challenge/" + token)
        self.assertEqual(r.status, 200, r.summary())
        seen = [x["line"] for x in self.a.app.request_log()["requests"] if token in x["line"]]
        self.assertTrue(seen, "the app never saw the customer's own token")


class RestartAndFailures(unittest.TestCase):
    """One storage across a restart; a domain whose DNS points elsewhere."""

    def test_restart_reuses_storage_and_a_broken_domain_fails_alone(self):
        a = ACMEEnv(["tls-alpn-01", "http-01"])
        self.addCleanup(a.close)
        a.pebble.map_name("nowhere.test", "127.0.0.2")   # nothing listens there
        a.domain("good.toml", ["good.test"])
        a.domain("nowhere.toml", ["nowhere.test"])
        a.start()
        first = wait_for_certificate(a.https, "good.test", a.root())
        backoff = os.path.join(a.storage, "certificates/nowhere.test/backoff.json")
        deadline = time.monotonic() + ISSUE_TIMEOUT
        while not os.path.exists(backoff) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertTrue(os.path.exists(backoff), "no backoff recorded for the failing domain")
        with open(backoff) as f:
            state = json.load(f)
        self.assertGreaterEqual(state["failures"], 1)
        self.assertGreater(state["nextAttempt"], time.time() + 30, "backs off at least about a minute")
        log = a.env.gatehouse.stderr()
        failures = [line for line in log.splitlines() if "nowhere.test" in line and "fail" in line]
        self.assertTrue(failures, log)
        self.assertTrue(any("urn:ietf:params:acme:error" in line for line in failures),
                        "the CA's problem is in the log line: %r" % failures)
        with self.assertRaises((ssl.SSLError, OSError)):
            served_certificate(a.https, "nowhere.test", a.root())
        orders = a.pebble.orders_created()

        # Restart on the same storage: served at once, no new order, and the
        # failing domain is not retried before its backoff ends.
        a.env.gatehouse.stop()
        a.env.start(write=False)
        der, _ = served_certificate(a.https, "good.test", a.root())
        self.assertEqual(der, first)
        time.sleep(3)
        self.assertEqual(a.pebble.orders_created(), orders, "a restart ordered again")


class LatencyProbe:
    """Keep-alive HTTPS requests to an ordinary domain in a loop, recording the
    longest time any one took (a stall of the event loop shows up here)."""

    def __init__(self, port, name, cafile):
        self.port, self.name, self.cafile = port, name, cafile
        self.longest = 0.0
        self.requests = 0
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        ctx = ssl.create_default_context(cafile=self.cafile)
        request = ("GET /probe HTTP/1.1\r\nHost: %s\r\n\r\n" % self.name).encode()
        while not self._stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
                    with ctx.wrap_socket(raw, server_hostname=self.name) as s:
                        f = s.makefile("rb")
                        while not self._stop.is_set():
                            start = time.monotonic()
                            s.sendall(request)
                            status = f.readline()
                            length = 0
                            while True:
                                line = f.readline()
                                if line in (b"\r\n", b""):
                                    break
                                if line.lower().startswith(b"content-length:"):
                                    length = int(line.split(b":")[1])
                            f.read(length)
                            self.longest = max(self.longest, time.monotonic() - start)
                            self.requests += 1
                            if not status.startswith(b"HTTP/1.1 200"):
                                self.errors.append(status)
            except (OSError, ssl.SSLError, ValueError) as e:
                self.errors.append(repr(e))
                time.sleep(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join(15)


class ManyDomainsWhileServing(unittest.TestCase):
    """50 domains issued while requests are being served: every one gets its
    certificate, and no request waits on the ACME work."""

    def test_fifty_domains_issued_while_serving(self):
        a = ACMEEnv(["tls-alpn-01"])
        self.addCleanup(a.close)
        names = ["site%02d.test" % i for i in range(50)]
        for n in names:
            a.domain(n + ".toml", [n, "www." + n])
        a.env.domain("files.toml", ["files.test"], a.app)
        a.start()
        probe = LatencyProbe(a.https, "files.test", a.env.ca.ca_pem)
        self.addCleanup(probe.stop)
        started = time.monotonic()
        for n in names:
            wait_for_certificate(a.https, n, a.root(), timeout=max(5, 180 - (time.monotonic() - started)))
        elapsed = time.monotonic() - started
        probe.stop()
        self.assertFalse(probe.errors, probe.errors[:5])
        self.assertGreater(probe.requests, 100)
        sys.stderr.write("\n[acme] 50 domains issued in %.1f s; %d probe requests, longest %.1f ms\n"
                         % (elapsed, probe.requests, probe.longest * 1000))
        self.assertLess(probe.longest, 0.5, "a request waited %.0f ms during issuance" % (probe.longest * 1000))
        self.assertEqual(a.pebble.orders_created(), 50, "one order per domain file")


class Fleet(unittest.TestCase):
    """Two instances share one storage directory: each domain is ordered once,
    and both serve every certificate. The CA validates against the first
    instance's listeners only, so a domain the second one ordered is answered
    from storage by the first."""

    def test_two_instances_order_each_domain_once_and_both_serve_it(self):
        a = ACMEEnv(["tls-alpn-01", "http-01"])
        self.addCleanup(a.close)
        b = Env()
        self.addCleanup(b.close)
        b_https = b.listener("https")
        b.listener("http", https_port=b_https)
        names = ["fleet%d.test" % i for i in range(6)]
        for n in names:
            a.domain(n + ".toml", [n])
            acme_domain(b, n + ".toml", [n], a.app)
        a.start()
        b.start(extra_sections={"acme": a.acme})
        for n in names:
            der = wait_for_certificate(a.https, n, a.root())
            other = wait_for_certificate(b_https, n, a.root())
            self.assertEqual(der, other, "%s: the instances serve different certificates" % n)
        self.assertEqual(a.pebble.orders_created(), len(names), "a domain was ordered twice")
        issued_a = a.env.gatehouse.stderr().count("certificate issued")
        issued_b = b.gatehouse.stderr().count("certificate issued")
        sys.stderr.write("\n[acme] fleet: instance A ordered %d, instance B %d\n" % (issued_a, issued_b))
        self.assertEqual(issued_a + issued_b, len(names))
        with open(os.path.join(a.storage, "account", "key.pem"), "rb") as f:
            key = f.read()
        self.assertEqual(len([x for x in os.listdir(os.path.join(a.storage, "account")) if x.endswith(".json")]), 1,
                         "one account record")
        self.assertIn(b"PRIVATE KEY", key)


class RenewalInformation(unittest.TestCase):
    """RFC 9773 against pebble behind a front that adds renewalInfo: a window
    already open (the CA wants the certificate replaced, say before a
    revocation) renews it at once, though it has years left."""

    def test_window_in_the_past_renews_now(self):
        a = ACMEEnv(["tls-alpn-01"])
        self.addCleanup(a.close)
        front = acme_ca.RenewalInfoFront(a.pebble, lambda cert_id: (time.time() - 3600, time.time() - 60))
        self.addCleanup(front.stop)
        a.acme["directory"] = front.directory
        a.domain("ari.toml", ["ari.test"])
        a.start()
        first = wait_for_certificate(a.https, "ari.test", a.root())
        # The first scan asks about it (within a minute), then it is renewed.
        second = wait_for_certificate(a.https, "ari.test", a.root(), timeout=100, other_than=first)
        self.assertNotEqual(first, second)
        self.assertTrue(front.asked, "renewalInfo was never asked")
        self.assertRegex(front.asked[0], r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$", "an RFC 9773 §4.1 certID")


class Renewal(unittest.TestCase):
    """90-second certificates: renewed at two thirds of their lifetime, served
    before the old one expires, without a restart."""

    def test_renewed_before_expiry_without_restart(self):
        a = ACMEEnv(["tls-alpn-01"], validity=90, authz_reuse=0)
        self.addCleanup(a.close)
        a.domain("short.toml", ["short.test"])
        a.start()
        pid = a.env.gatehouse.proc.pid
        first = wait_for_certificate(a.https, "short.test", a.root())
        issued_at = time.monotonic()
        second = wait_for_certificate(a.https, "short.test", a.root(), timeout=80, other_than=first)
        elapsed = time.monotonic() - issued_at
        self.assertNotEqual(first, second)
        self.assertLess(elapsed, 85, "renewed only after the old certificate expired")
        self.assertGreater(elapsed, 40, "renewed long before two thirds of the lifetime")
        self.assertEqual(a.env.gatehouse.proc.pid, pid)
        self.assertTrue(a.env.gatehouse.alive())


if __name__ == "__main__":
    unittest.main()
