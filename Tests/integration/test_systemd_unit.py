"""Packaging for a Debian 12 systemd service: systemd/gatehouse.service (verify,
required keys, offline security score), systemd/gatehouse.sysusers,
config/logrotate (logrotate -d) and scripts/install into a DESTDIR.
Nothing here starts gatehouse or needs systemd as PID 1."""

import filecmp
import grp
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import GATEHOUSE_BIN, REPO

UNIT = os.path.join(REPO, "systemd", "gatehouse.service")
SYSUSERS = os.path.join(REPO, "systemd", "gatehouse.sysusers")
LOGROTATE = os.path.join(REPO, "config", "logrotate")
INSTALL = os.path.join(REPO, "scripts", "install")
MAIN_CONFIG = os.path.join(REPO, "config", "gatehouse.toml")

INSTALLED_BIN = "/usr/local/bin/gatehouse"
CONFIG_PATH = "/etc/gatehouse/gatehouse.toml"
CHECK = "%s check -c %s" % (INSTALLED_BIN, CONFIG_PATH)
RUN = "%s run -c %s" % (INSTALLED_BIN, CONFIG_PATH)

# Every key the unit must set, with its exact value.
REQUIRED = {
    "Type": "notify",
    "NotifyAccess": "main",
    "KillSignal": "SIGTERM",
    "Restart": "on-failure",
    "User": "gatehouse",
    "Group": "gatehouse",
    "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
    "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ReadWritePaths": "/var/log/gatehouse",
    "LogsDirectory": "gatehouse",
    "StateDirectory": "gatehouse",
    "StateDirectoryMode": "0700",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallFilter": "@system-service",
    "SystemCallErrorNumber": "EPERM",
    "SystemCallArchitectures": "native",
    "UMask": "0027",
    "LimitNOFILE": "1048576",
}

# systemd-analyze output that is about the machine, not about our unit: lines
# naming another unit (dependencies such as network-online.target get loaded
# too), and what a container without systemd as PID 1 may print. Anything else,
# and anything naming gatehouse, fails the test.
UNIT_SUFFIXES = r"(service|socket|target|timer|mount|automount|path|slice|scope|device|swap)"
OTHER_UNIT_LINE = re.compile(r"^(?:/\S+/)?(?P<unit>[\w@.:\\-]+\." + UNIT_SUFFIXES + r")(?::\d+)?: ")
MACHINE_NOISE = [
    re.compile(r"System has not been booted with systemd"),
    re.compile(r"Failed to .*cgroup", re.I),
    re.compile(r"Failed to connect to bus"),
]

MISSING_SYSTEMD = ("systemd-analyze not found: scripts/test must install the Debian package "
                   "`systemd` (add it to GATEHOUSE_APT_PACKAGES in scripts/lib.sh)")


def parse_unit(text):
    """{section: {key: [values in order]}}; '#'/';' comments, backslash continuations."""
    sections, current, pending = {}, None, ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, "key outside a section: %r" % raw
        key, sep, value = line.partition("=")
        assert sep, "not a key=value line: %r" % raw
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def systemd_analyze():
    path = shutil.which("systemd-analyze")
    if path is None:
        raise AssertionError(MISSING_SYSTEMD)
    return path


def gatehouse_bin():
    path = os.path.abspath(GATEHOUSE_BIN)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise AssertionError("gatehouse binary not found at %s: run `swift build` or set GATEHOUSE_BIN" % path)
    return path


class SystemdUnitTests(unittest.TestCase):

    def setUp(self):
        with open(UNIT) as f:
            self.text = f.read()
        self.unit = parse_unit(self.text)
        self.service = self.unit.get("Service", {})
        self.tmp = tempfile.mkdtemp(prefix="gatehouse-unit-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def local_unit(self):
        """The unit, in a temp dir, with ExecStart*/ExecReload pointing at the built binary
        (verify checks that every executable exists)."""
        self.assertIn(INSTALLED_BIN, self.text)
        path = os.path.join(self.tmp, "gatehouse.service")
        with open(path, "w") as f:
            f.write(self.text.replace(INSTALLED_BIN, gatehouse_bin()))
        return path

    def analyze(self, *args):
        env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="", LC_ALL="C.UTF-8")
        return subprocess.run([systemd_analyze(), "--no-pager", *args], capture_output=True, text=True,
                              errors="replace", timeout=60, env=env, stdin=subprocess.DEVNULL)

    def assertNoOwnWarnings(self, r):
        for line in (r.stdout + r.stderr).splitlines():
            if not line.strip():
                continue
            self.assertNotRegex(line, r"(?i)gatehouse", "systemd-analyze complains about our unit:\n" + line)
            m = OTHER_UNIT_LINE.match(line)
            if m and "gatehouse" not in m.group("unit"):
                continue
            self.assertTrue(any(p.search(line) for p in MACHINE_NOISE),
                            "unexpected systemd-analyze output:\n%s\n(full output:\n%s%s)" % (line, r.stdout, r.stderr))

    # --- (a) systemd-analyze verify ----------------------------------------------------
    def test_verify(self):
        r = self.analyze("verify", self.local_unit())
        self.assertEqual(r.returncode, 0, "systemd-analyze verify failed:\n" + r.stdout + r.stderr)
        self.assertNoOwnWarnings(r)

    def test_verify_catches_mistakes(self):
        # The filter above is not so loose that verify's warnings about our unit pass.
        path = self.local_unit()
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("ProtectClock=yes", "ProtectClok=yes"))
        r = self.analyze("verify", path)
        with self.assertRaises(AssertionError):
            self.assertNoOwnWarnings(r)

    # --- (b) required keys -------------------------------------------------------------
    def test_sections(self):
        self.assertEqual(set(self.unit), {"Unit", "Service", "Install"})
        self.assertEqual(self.unit["Install"].get("WantedBy"), ["multi-user.target"])
        self.assertIn("network-online.target", " ".join(self.unit["Unit"].get("After", [])))

    def test_required_keys(self):
        for key, want in REQUIRED.items():
            with self.subTest(key=key):
                self.assertEqual(self.service.get(key), [want], "%s= in [Service]" % key)

    def test_start_checks_then_runs(self):
        self.assertEqual(self.service.get("ExecStartPre"), [CHECK])
        self.assertEqual(self.service.get("ExecStart"), [RUN])

    def test_reload_checks_before_hup(self):
        # Two lines, in this order, neither prefixed with "-" (which would make a failed
        # check not stop the reload): systemd.service(5) stops at the first failure.
        self.assertEqual(self.service.get("ExecReload"), [CHECK, "/bin/kill -HUP $MAINPID"])

    def test_stop_timeout_exceeds_drain(self):
        with open(MAIN_CONFIG) as f:
            m = re.search(r"^drain\s*=\s*(\d+(?:\.\d+)?)", f.read(), re.M)
        self.assertIsNotNone(m, "no drain = in config/gatehouse.toml")
        drain = float(m.group(1))
        self.assertEqual(self.service.get("TimeoutStopSec"), ["45"])
        self.assertGreater(45, drain + 10, "TimeoutStopSec must leave room after the drain")

    def test_certificate_access_documented(self):
        self.assertIn("/etc/letsencrypt", self.text)
        self.assertIn("ssl-cert", self.text)
        self.assertIn("deploy hook", self.text)

    def test_sysusers(self):
        with open(SYSUSERS) as f:
            entries = [line.split() for line in f if line.strip() and not line.lstrip().startswith("#")]
        self.assertEqual(entries[0][:3], ["u", "gatehouse", "-"])
        if shutil.which("systemd-sysusers") is None:
            self.skipTest("systemd-sysusers not installed (package systemd)")
        root = os.path.join(self.tmp, "root")
        os.makedirs(os.path.join(root, "etc"))
        r = subprocess.run(["systemd-sysusers", "--dry-run", "--root=" + root, "-"], input=open(SYSUSERS).read(),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Creating user 'gatehouse'", r.stdout + r.stderr)
        self.assertNotIn("Failed", r.stdout + r.stderr)
        self.assertEqual(os.listdir(os.path.join(root, "etc")), [], "--dry-run wrote files")

    # --- (c) offline security score ----------------------------------------------------
    def test_security_exposure(self):
        r = self.analyze("security", "--offline=yes", self.local_unit())
        out = r.stdout + r.stderr
        if r.returncode != 0 and re.search(r"unrecognized option|Unknown command verb", out):
            self.skipTest("this systemd-analyze has no `security --offline`: " + out.strip().splitlines()[-1])
        self.assertEqual(r.returncode, 0, out)
        m = re.search(r"Overall exposure level for gatehouse\.service: (\d+(?:\.\d+)?) (\S+)", out)
        self.assertIsNotNone(m, "no exposure level in:\n" + out)
        score, verdict = float(m.group(1)), m.group(2)
        self.assertLess(score, 3.0, "exposure %s %s:\n%s" % (score, verdict, out))
        self.assertEqual(verdict, "OK", out)

    # --- (e) logrotate ----------------------------------------------------------------
    def test_logrotate_parses(self):
        logrotate = shutil.which("logrotate") or next(
            (p for p in ("/usr/sbin/logrotate", "/sbin/logrotate") if os.access(p, os.X_OK)), None)
        if logrotate is None:
            self.skipTest("logrotate not installed (Debian package logrotate)")
        with open(LOGROTATE) as f:
            text = f.read()
        for directive in ("daily", "rotate 14", "compress", "delaycompress", "missingok", "notifempty",
                          "create 0640 gatehouse adm", "postrotate", "endscript"):
            self.assertRegex(text, r"(?m)^\s*%s\s*$" % re.escape(directive))
        self.assertRegex(text, r"kill .*USR1.*gatehouse\.service|kill -USR1")
        # Same file on a log of our own; owner names this machine lacks replaced by root,
        # since logrotate rejects `create` with an unknown user or group.
        log = os.path.join(self.tmp, "log", "access.log")
        os.makedirs(os.path.dirname(log))
        with open(log, "w") as f:
            f.write("GET / 200\n")
        self.assertIn("/var/log/gatehouse/access.log", text)
        text = text.replace("/var/log/gatehouse/access.log", log)
        user, group = "gatehouse", "adm"
        try:
            pwd.getpwnam(user)
        except KeyError:
            user = "root"
        try:
            grp.getgrnam(group)
        except KeyError:
            group = "root"
        text = text.replace("create 0640 gatehouse adm", "create 0640 %s %s" % (user, group))
        conf = os.path.join(self.tmp, "gatehouse.logrotate")
        with open(conf, "w") as f:
            f.write(text)
        os.chmod(conf, 0o644)
        r = subprocess.run([logrotate, "-d", "-f", "-s", os.path.join(self.tmp, "state"), conf],
                           capture_output=True, text=True, timeout=60)
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, out)
        self.assertNotRegex(out, r"(?im)^error:", out)
        self.assertIn("rotating log " + log, out)
        self.assertIn("running postrotate script", out)
        self.assertEqual(os.listdir(os.path.dirname(log)), ["access.log"], "logrotate -d must not touch files")


class InstallScriptTests(unittest.TestCase):
    """scripts/install with DESTDIR and GATEHOUSE_BIN: stages files, touches nothing else."""

    EXPECTED = {
        "usr/local/bin/gatehouse": None,  # compared with the binary below
        "etc/systemd/system/gatehouse.service": UNIT,
        "etc/sysusers.d/gatehouse.conf": SYSUSERS,
        "etc/logrotate.d/gatehouse": LOGROTATE,
        "etc/gatehouse/gatehouse.toml": MAIN_CONFIG,
        "etc/gatehouse/domains.d/example.toml": os.path.join(REPO, "config", "domains.d", "example.toml"),
    }
    # Commands that must not run with DESTDIR set: each fake records its call.
    FORBIDDEN = ("systemctl", "systemd-sysusers", "adduser", "useradd", "groupadd", "usermod", "chown", "swift")

    def setUp(self):
        self.bin = gatehouse_bin()
        self.tmp = tempfile.mkdtemp(prefix="gatehouse-install-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.dest = os.path.join(self.tmp, "dest")
        self.fakes = os.path.join(self.tmp, "fakebin")
        self.calls = os.path.join(self.tmp, "calls")
        os.makedirs(self.fakes)
        for name in self.FORBIDDEN:
            path = os.path.join(self.fakes, name)
            with open(path, "w") as f:
                f.write('#!/bin/sh\necho "%s $*" >> "%s"\nexit 0\n' % (name, self.calls))
            os.chmod(path, 0o755)

    def install(self):
        env = dict(os.environ, DESTDIR=self.dest, GATEHOUSE_BIN=self.bin,
                   PATH=self.fakes + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"))
        r = subprocess.run(["bash", INSTALL], capture_output=True, text=True, timeout=120, env=env,
                           cwd=self.tmp, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, "scripts/install failed:\n" + r.stdout + r.stderr)
        calls = open(self.calls).read() if os.path.exists(self.calls) else ""
        self.assertEqual(calls, "", "scripts/install ran system commands with DESTDIR set")
        return r

    def staged(self, rel):
        return os.path.join(self.dest, rel)

    def test_install_into_destdir(self):
        self.install()
        for rel, src in self.EXPECTED.items():
            with self.subTest(file=rel):
                path = self.staged(rel)
                self.assertTrue(os.path.isfile(path), "missing " + rel)
                self.assertTrue(filecmp.cmp(path, src or self.bin, shallow=False), rel + " differs from its source")
        self.assertTrue(os.access(self.staged("usr/local/bin/gatehouse"), os.X_OK))
        self.assertEqual(os.stat(self.staged("usr/local/bin/gatehouse")).st_mode & 0o777, 0o755)
        self.assertEqual(os.stat(self.staged("etc/systemd/system/gatehouse.service")).st_mode & 0o777, 0o644)
        leftovers = [os.path.join(d, f) for d, _, files in os.walk(self.dest) for f in files
                     if os.path.relpath(os.path.join(d, f), self.dest) not in self.EXPECTED]
        self.assertEqual(leftovers, [], "unexpected files (temporary copies?)")

    def test_second_run_keeps_edited_config(self):
        self.install()
        main = self.staged("etc/gatehouse/gatehouse.toml")
        domain = self.staged("etc/gatehouse/domains.d/example.toml")
        unit = self.staged("etc/systemd/system/gatehouse.service")
        with open(main, "a") as f:
            f.write("\n# edited by the administrator\n")
        os.remove(domain)
        with open(unit, "a") as f:
            f.write("# stale\n")
        with open(main) as f:
            edited = f.read()

        self.install()
        with open(main) as f:
            self.assertEqual(f.read(), edited, "second run overwrote an edited gatehouse.toml")
        # /etc/gatehouse is left alone once configured: a deleted example stays deleted
        # (it would fail `gatehouse check`); packaging files are ours and are refreshed.
        self.assertFalse(os.path.exists(domain), "second run restored domains.d/example.toml")
        self.assertTrue(filecmp.cmp(unit, UNIT, shallow=False), "unit file not refreshed")


if __name__ == "__main__":
    unittest.main()
