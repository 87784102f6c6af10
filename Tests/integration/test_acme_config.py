"""ACME configuration (issue 15, first step): `gatehouse check` on [acme] and
`acme = true`, and a running Gatehouse with a domain still waiting for its
first certificate. No ACME server is involved: issuance comes later."""

import os
import re
import ssl
import stat
import time
import unittest

from harness import (Env, GatehouseCase, http_get, https_get, require_binary, run_gatehouse,
                     tls_connect, toml_table)
from test_config import CRASH_MARKERS, same_file

# Never contacted in these tests: port 1 on loopback refuses at once.
DIRECTORY = "https://127.0.0.1:1/directory"


def acme_domain(env, filename, names, backend, **opts):
    """Writes domains.d/<filename> with acme = true and no certificate/key."""
    d = {"names": list(names), "backend": backend if isinstance(backend, str) else backend.backend, "acme": True}
    d.update(opts)
    path = os.path.join(env.domains_dir, filename)
    with open(path, "w") as f:
        f.write(toml_table(d))
    env.domain_files[filename] = path
    return path


class ACMECheckTests(unittest.TestCase):
    """Two ordinary domains and one ACME domain; each test breaks one thing."""

    @classmethod
    def setUpClass(cls):
        require_binary()

    def setUp(self):
        self.env = Env()
        self.addCleanup(self.env.close)
        self.env.listener("https")
        self.env.listener("http", https_port=8443)
        self.env.domain("a.toml", ["a.test"], "127.0.0.1:9")
        self.env.domain("b.toml", ["b.test", "*.b.test"], "unix:/run/b.sock")
        self.storage = os.path.join(self.env.dir, "state", "acme")
        self.acme = {"directory": DIRECTORY, "contact": "mailto:ops@example.net", "storage": self.storage}
        self.c = acme_domain(self.env, "c.toml", ["c.test", "www.c.test"], "127.0.0.1:9")

    def check(self, acme="default"):
        sections = {"acme": self.acme if acme == "default" else acme} if acme is not None else {}
        self.env.write_config(extra_sections=sections)
        r = run_gatehouse("check", "-c", self.env.config_path, timeout=20)
        for marker in CRASH_MARKERS:
            self.assertNotIn(marker, r.stdout + r.stderr, "gatehouse check crashed:\n" + r.stdout + r.stderr)
        return r

    def assertOneError(self, r, path, key, fragment=None):
        """Exit 1 and exactly one 'FILE: key: message' line naming path and key."""
        self.assertEqual(r.returncode, 1, "stdout=%r stderr=%r" % (r.stdout, r.stderr))
        self.assertNotIn("OK", r.stdout)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, "want one error line, got:\n" + r.stderr)
        parts = lines[0].split(": ")
        self.assertGreaterEqual(len(parts), 3, "want 'FILE: key: message', got %r" % lines[0])
        self.assertTrue(same_file(parts[0], path, self.env.dir), "error should name %s: %r" % (path, lines[0]))
        self.assertEqual(parts[1], key, lines[0])
        if fragment:
            self.assertIn(fragment, lines[0])
        return lines[0]

    # --- valid -----------------------------------------------------------------
    def test_valid_config_creates_storage_0700(self):
        self.assertFalse(os.path.exists(self.storage))
        r = self.check()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "OK, 3 domains")
        self.assertTrue(os.path.isdir(self.storage))
        self.assertEqual(stat.S_IMODE(os.stat(self.storage).st_mode), 0o700)
        self.assertEqual(os.listdir(self.storage), [], "the write probe must not stay behind")

    def test_all_keys(self):
        trust = os.path.join(self.env.dir, "acme-ca.pem")
        with open(self.env.ca.ca_pem) as src, open(trust, "w") as dst:
            dst.write(src.read())
        self.acme.update({"trust": "acme-ca.pem", "storage": "state/acme", "challenges": ["http-01", "tls-alpn-01"]})
        r = self.check()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.isdir(self.storage), "relative storage resolves against the main file")

    # --- one mistake each --------------------------------------------------------
    def test_acme_with_certificate(self):
        cert, _ = self.env.ca.leaf("c.test")
        acme_domain(self.env, "c.toml", ["c.test"], "127.0.0.1:9", certificate=cert)
        self.assertOneError(self.check(), self.c, "certificate", "acme = true")

    def test_acme_with_key(self):
        _, key = self.env.ca.leaf("c.test")
        acme_domain(self.env, "c.toml", ["c.test"], "127.0.0.1:9", key=key)
        self.assertOneError(self.check(), self.c, "key", "acme = true")

    def test_wildcard_under_acme(self):
        acme_domain(self.env, "c.toml", ["c.test", "*.c.test"], "127.0.0.1:9")
        self.assertOneError(self.check(), self.c, "names", "*.c.test")

    def test_acme_without_table(self):
        line = self.assertOneError(self.check(acme=None), self.c, "acme")
        self.assertIn(self.env.config_path, line)

    def test_storage_cannot_be_created(self):
        blocker = os.path.join(self.env.dir, "state")
        with open(blocker, "w") as f:
            f.write("a file where a directory should be\n")
        self.assertOneError(self.check(), self.env.config_path, "acme.storage", "cannot create directory")

    def test_storage_not_writable(self):
        # /proc refuses new files even to root, which runs these tests in CI.
        self.acme["storage"] = "/proc"
        self.assertOneError(self.check(), self.env.config_path, "acme.storage", "not writable")

    def test_storage_missing(self):
        del self.acme["storage"]
        self.assertOneError(self.check(), self.env.config_path, "acme.storage", "missing required key")

    def test_unknown_key_in_acme(self):
        self.acme["email"] = "ops@example.net"
        self.assertOneError(self.check(), self.env.config_path, "acme.email", "unknown key")

    def test_bad_challenges_entry(self):
        self.acme["challenges"] = ["tls-alpn-01", "dns-01"]
        self.assertOneError(self.check(), self.env.config_path, "acme.challenges", "dns-01")

    def test_directory_not_https(self):
        for bad in ("http://127.0.0.1:14000/dir", "acme-v02.api.letsencrypt.org/directory", "https://"):
            with self.subTest(directory=bad):
                self.acme["directory"] = bad
                self.assertOneError(self.check(), self.env.config_path, "acme.directory", "https URL")

    def test_bad_contact(self):
        self.acme["contact"] = "ops@example.net"
        self.assertOneError(self.check(), self.env.config_path, "acme.contact", "mailto:")

    def test_several_mistakes_reported_together(self):
        self.acme["challenges"] = []
        self.acme["directory"] = "http://x.test/"
        acme_domain(self.env, "c.toml", ["*.c.test"], "127.0.0.1:9", certificate="c.pem")
        r = self.check()
        self.assertEqual(r.returncode, 1)
        for key in ("acme.challenges", "acme.directory", "c.toml: names", "c.toml: certificate"):
            self.assertIn(key, r.stderr)


class PendingACMEDomainTests(GatehouseCase):
    """An ACME domain with no certificate yet: its handshakes fail with
    unrecognized_name; every other domain is served as before."""

    @classmethod
    def setUpEnv(cls, env):
        app = env.backend("A")
        env.domain("a.toml", ["a.test"], app)
        cls.pending = acme_domain(env, "p.toml", ["pending.test", "www.pending.test"], app)
        cls.https = env.listener("https")
        cls.http = env.listener("http")
        cls.storage = os.path.join(env.dir, "acme")
        env.start(extra_sections={"acme": {"directory": DIRECTORY, "storage": cls.storage}})

    def test_other_domain_served(self):
        r = https_get(self.https, "a.test")
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(r.get("x-backend-name"), "A")

    def test_pending_domain_handshake_unrecognized_name(self):
        for name in ("pending.test", "WWW.Pending.Test"):
            with self.subTest(sni=name):
                with self.assertRaises(ssl.SSLError) as cm:
                    tls_connect(self.https, name, check_hostname=False).close()
                self.assertEqual(cm.exception.reason, "TLSV1_UNRECOGNIZED_NAME", str(cm.exception))
        self.assertTrue(self.env.gatehouse.alive())
        # The failed handshakes did not disturb the listener.
        self.assertEqual(https_get(self.https, "a.test").status, 200)

    def test_pending_domain_cannot_be_reached_under_another_sni(self):
        # a.test's handshake, pending.test's Host: the usual 421, never its app.
        r = https_get(self.https, "pending.test", sni="a.test")
        self.assertGatehouseError(r, 421)

    def test_unreachable_ca_is_logged_and_retried_later(self):
        """The CA refuses connections: one error line naming it and the next
        attempt; the proxy serves on regardless."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "cannot set up the account" not in self.env.gatehouse.stderr():
            time.sleep(0.1)
        self.assertRegex(self.env.gatehouse.stderr(),
                         r"<3>error: acme: cannot set up the account at %s: .*; next attempt in 60 s" % re.escape(DIRECTORY))
        self.assertEqual(https_get(self.https, "a.test").status, 200)

    def test_storage_created(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.storage).st_mode), 0o700)

    def test_check_accepts_the_running_config(self):
        r = run_gatehouse("check", "-c", self.env.config_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "OK, 2 domains")

    def test_http01_token_still_passed_through(self):
        # Not a token Gatehouse issued: a customer's own ACME client behind
        # it keeps working.
        r = http_get(self.http, "pending.test", "/.well-known/acme-challenge/tok")
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(r.body, b"acme:tok")

    def test_port80_while_pending_is_503_with_retry_after(self):
        # Decided (README, Automatic certificates): a visitor on port 80 gets
        # 503 + Retry-After until the first certificate, not a redirect to an
        # HTTPS that fails.
        r = http_get(self.http, "pending.test", "/page")
        self.assertGatehouseError(r, 503)
        self.assertTrue(r.get("retry-after", "").isdigit(), r.summary())
        self.assertNoHSTS(r)


if __name__ == "__main__":
    unittest.main()
