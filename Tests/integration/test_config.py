"""`gatehouse check`, `--version`, and running with one broken domain."""

import os
import re
import shutil
import ssl
import time
import unittest

from harness import Env, GatehouseCase, https_get, require_binary, run_gatehouse, tls_connect

CRASH_MARKERS = ("Fatal error", "Stack dump", "Backtrace", "Segmentation fault", "Illegal instruction")


def same_file(field, path, cwd):
    """Whether an error's FILE field names `path` (absolute, or relative to cwd)."""
    full = field if os.path.isabs(field) else os.path.join(cwd, field)
    return os.path.realpath(full) == os.path.realpath(path)


class CheckCommandTests(unittest.TestCase):
    """Each test writes a fresh config (two good domains), breaks one thing, runs check."""

    @classmethod
    def setUpClass(cls):
        require_binary()

    def setUp(self):
        self.env = Env()
        self.addCleanup(self.env.close)
        self.env.listener("https")
        self.env.listener("http", https_port=8443)
        self.a = self.env.domain("a.toml", ["a.test"], "127.0.0.1:9")
        self.b = self.env.domain("b.toml", ["b.test", "*.b.test"], "unix:/run/b.sock")

    def check(self, write=True, config=None, **kw):
        if write:
            self.env.write_config(**kw)
        r = run_gatehouse("check", "-c", config or self.env.config_path, timeout=20)
        out = r.stdout + r.stderr
        for marker in CRASH_MARKERS:
            self.assertNotIn(marker, out, "gatehouse check crashed:\n" + out)
        return r

    def rewrite(self, path, old, new):
        with open(path) as f:
            text = f.read()
        self.assertIn(old, text)
        with open(path, "w") as f:
            f.write(text.replace(old, new))

    def assertOneError(self, r, path, key):
        self.assertEqual(r.returncode, 1, "stdout=%r stderr=%r" % (r.stdout, r.stderr))
        self.assertNotIn("OK", r.stdout)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, "want one error line, got:\n" + r.stderr)
        parts = lines[0].split(": ")
        self.assertGreaterEqual(len(parts), 3, "want 'FILE: key: message', got %r" % lines[0])
        self.assertTrue(same_file(parts[0], path, self.env.dir),
                        "error should name %s: %r" % (path, lines[0]))
        self.assertTrue(parts[1] == key or parts[1].endswith("." + key),
                        "error should name key %r: %r" % (key, lines[0]))
        self.assertTrue(parts[2].strip(), "empty message: %r" % lines[0])
        return lines[0]

    # --- valid -----------------------------------------------------------------
    def test_valid_config(self):
        r = self.check()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "OK, 2 domains")

    def test_valid_config_relative_certificate_paths(self):
        certs = os.path.join(self.env.domains_dir, "certs")
        os.makedirs(certs)
        cert, key = self.env.ca.leaf("c.test")
        shutil.copy(cert, os.path.join(certs, "c.pem"))
        shutil.copy(key, os.path.join(certs, "c.key"))
        self.env.domain("c.toml", ["c.test"], "127.0.0.1:9", cert="certs/c.pem", key="certs/c.key")
        r = self.check(tls={"default_domain": "c.test"},
                       timeouts={"backend_response": 1.5}, limits={"max_connections": 100})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "OK, 3 domains")

    # --- one mistake each --------------------------------------------------------
    def test_missing_certificate_file(self):
        self.env.domain("b.toml", ["b.test"], "127.0.0.1:9",
                        cert=os.path.join(self.env.dir, "missing.pem"), key=self.env.ca.leaf("b.test")[1])
        self.assertOneError(self.check(), self.b, "certificate")

    def test_key_does_not_match_certificate(self):
        cert, _ = self.env.ca.leaf("b.test")
        _, other_key = self.env.ca.leaf("a.test")
        self.env.domain("b.toml", ["b.test"], "127.0.0.1:9", cert=cert, key=other_key)
        self.assertOneError(self.check(), self.b, "key")

    def test_unknown_tls_profile(self):
        self.env.domain("b.toml", ["b.test"], "127.0.0.1:9", tls_profile="ancient")
        line = self.assertOneError(self.check(), self.b, "tls_profile")
        self.assertIn("ancient", line)

    def test_same_name_in_two_files(self):
        self.env.domain("b.toml", ["b.test", "A.test"], "127.0.0.1:9",
                        *self.env.ca.leaf("b.test", ["b.test", "a.test"]))
        r = self.check()
        self.assertEqual(r.returncode, 1, r.stderr)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, r.stderr)
        field, key = lines[0].split(": ")[:2]
        self.assertTrue(same_file(field, self.b, self.env.dir) or same_file(field, self.a, self.env.dir), lines[0])
        self.assertEqual(key, "names")
        self.assertIn("a.test", lines[0].lower())

    def test_bad_listener_address(self):
        for bad in ("127.0.0.1:99999", "localhost:443", "127.0.0.1", "1.2.3.4.5:80"):
            with self.subTest(address=bad):
                self.env.listeners[0]["address"] = bad
                self.assertOneError(self.check(), self.env.config_path, "address")

    def test_hsts_preload_without_include_subdomains(self):
        self.env.domain("b.toml", ["b.test"], "127.0.0.1:9", hsts_preload=True)
        self.assertOneError(self.check(), self.b, "hsts_preload")

    def test_unknown_key(self):
        self.rewrite(self.b, "names =", "nmaes = [\"x.test\"]\nnames =")
        self.assertOneError(self.check(), self.b, "nmaes")

    def test_toml_syntax_error_names_file_and_line(self):
        with open(self.b, "w") as f:
            f.write('names = ["b.test"]\n'
                    'backend = "127.0.0.1:9"\n'
                    'certificate = "unterminated\n'
                    'key = "x.key"\n')
        r = self.check()
        self.assertEqual(r.returncode, 1, r.stderr)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, r.stderr)
        m = re.match(r"^(.+?):(\d+)(?::\d+)?: \S", lines[0])
        self.assertIsNotNone(m, "want FILE:LINE[:COL]: message, got %r" % lines[0])
        self.assertTrue(same_file(m.group(1), self.b, self.env.dir), lines[0])
        self.assertEqual(m.group(2), "3")

    def test_syntax_error_in_main_file(self):
        self.env.write_config()
        with open(self.env.config_path, "a") as f:
            f.write("\n[timeouts\n")
        r = self.check(write=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"^%s:\d+" % re.escape(self.env.config_path))

    def test_missing_config_file(self):
        path = os.path.join(self.env.dir, "nope.toml")
        r = self.check(write=False, config=path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("nope.toml", r.stderr)
        self.assertLessEqual(len([x for x in r.stderr.splitlines() if x.strip()]), 2, r.stderr)

    def test_several_mistakes_reported_together(self):
        self.env.domain("a.toml", ["a.test"], "127.0.0.1:9", tls_profile="ancient")
        self.env.domain("b.toml", ["b.test"], "127.0.0.1:9", hsts_preload=True)
        r = self.check()
        self.assertEqual(r.returncode, 1)
        self.assertIn("tls_profile", r.stderr)
        self.assertIn("hsts_preload", r.stderr)


class VersionTests(unittest.TestCase):
    def test_version(self):
        r = run_gatehouse("--version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout.strip(), r"\d+\.\d+(\.\d+)?")
        for marker in CRASH_MARKERS:
            self.assertNotIn(marker, r.stdout + r.stderr)


class BrokenCertificateRunTests(GatehouseCase):
    """A domain whose certificate is unreadable is left out; the rest is served."""

    @classmethod
    def setUpEnv(cls, env):
        app = env.backend("A")
        env.domain("a.toml", ["a.test"], app)
        broken = os.path.join(env.dir, "broken.pem")
        with open(broken, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
        cls.broken_file = env.domain("b.toml", ["b.test"], app, cert=broken, key=env.ca.leaf("b.test")[1])
        cls.port = env.listener("https")
        env.start()

    def test_error_logged_naming_the_file(self):
        deadline = time.monotonic() + 3
        while True:
            lines = [line for line in self.env.gatehouse.stderr().splitlines()
                     if self.broken_file in line or os.path.realpath(self.broken_file) in line]
            if lines or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertTrue(lines, "no log line names %s:\n%s" % (self.broken_file, self.env.gatehouse.stderr()))
        self.assertTrue(any(line.startswith("<3>") or "error" in line.lower() for line in lines), lines)
        self.assertTrue(self.env.gatehouse.alive())

    def test_good_domain_served(self):
        r = https_get(self.port, "a.test", "/echo")
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(r.get("x-backend-name"), "A")

    def test_broken_domain_not_served(self):
        with self.assertRaises((ssl.SSLError, OSError)):
            tls_connect(self.port, "b.test", check_hostname=False).close()

    def test_check_reports_it(self):
        r = run_gatehouse("check", "-c", self.env.config_path)
        self.assertEqual(r.returncode, 1)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith(self.broken_file + ": certificate: ") or
                        lines[0].startswith(os.path.realpath(self.broken_file) + ": certificate: "), lines[0])
