"""Started as root without systemd: bind, then become `user`; refuse to stay
root unless allow_root = true."""

import os
import pwd
import subprocess
import time
import unittest

from harness import GATEHOUSE_BIN, Env, https_get
from test_acme_config import acme_domain


def status_ids(pid):
    ids = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("Uid:", "Gid:", "Groups:")):
                key, _, rest = line.partition(":")
                ids[key] = rest.split()
    return ids


@unittest.skipUnless(os.geteuid() == 0, "needs root (CI runs as root)")
class PrivilegeTests(unittest.TestCase):
    def make_env(self, **top):
        env = Env()
        self.addCleanup(env.close)
        # Started as root, Gatehouse reads the keys before it becomes nobody
        # (as nginx does): a root-only key works. The directory is opened up
        # only for the sample app and later reads of public files.
        os.chmod(env.dir, 0o755)
        cert, key = env.ca.leaf("a.test")
        copies = []
        for src, mode in ((cert, 0o644), (key, 0o600)):
            dst = os.path.join(env.dir, os.path.basename(src))
            with open(src, "rb") as f, open(dst, "wb") as g:
                g.write(f.read())
            os.chmod(dst, mode)   # the key stays root-only: read before the drop
            copies.append(dst)
        env.domain("a.toml", ["a.test"], env.backend("A"), cert=copies[0], key=copies[1])
        port = env.listener("https")
        env.write_config(extra_top=top)
        return env, port

    def test_drops_to_user_after_binding(self):
        env, port = self.make_env(user="nobody")
        env.start(write=False)
        nobody = pwd.getpwnam("nobody")
        ids = status_ids(env.gatehouse.proc.pid)
        self.assertEqual(ids["Uid"], [str(nobody.pw_uid)] * 4, "real, effective, saved, fs uid")
        self.assertEqual(ids["Gid"], [str(nobody.pw_gid)] * 4)
        self.assertEqual(ids.get("Groups", []), [], "supplementary groups dropped")
        self.assertEqual(https_get(port, "a.test").status, 200)
        self.assertIn("running as user nobody", env.gatehouse.stderr())

    def test_acme_storage_is_handed_to_the_user(self):
        """Made 0700 by root at load, handed to `user` before the drop: the
        ACME threads (running as that user) can write their files."""
        env, _ = self.make_env(user="nobody")
        storage = os.path.join(env.dir, "acme")
        acme_domain(env, "p.toml", ["pending.test"], "127.0.0.1:9")
        env.write_config(extra_top={"user": "nobody"},
                         extra_sections={"acme": {"directory": "https://127.0.0.1:1/dir", "storage": storage}})
        env.start(write=False)
        nobody = pwd.getpwnam("nobody")
        # The listeners accept before the drop: wait for the ACME thread.
        deadline = time.monotonic() + 10
        while "cannot set up the account" not in env.gatehouse.stderr() and time.monotonic() < deadline:
            time.sleep(0.1)
        st = os.stat(storage)
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (nobody.pw_uid, 0o700))
        log = env.gatehouse.stderr()
        self.assertIn("cannot set up the account", log)
        self.assertNotIn("Permission denied", log)
        self.assertEqual(os.stat(os.path.join(storage, "account")).st_uid, nobody.pw_uid)

    def test_foreign_directory_is_not_handed_over(self):
        env, _ = self.make_env(user="nobody")
        storage = os.path.join(env.dir, "etc-like")
        os.makedirs(storage, mode=0o700)
        with open(os.path.join(storage, "gatehouse.toml"), "w") as f:
            f.write("# not ACME storage\n")
        acme_domain(env, "p.toml", ["pending.test"], "127.0.0.1:9")
        env.write_config(extra_top={"user": "nobody"},
                         extra_sections={"acme": {"directory": "https://127.0.0.1:1/dir", "storage": storage}})
        env.start(write=False)
        deadline = time.monotonic() + 10
        while "not handed to" not in env.gatehouse.stderr() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIn("not handed to \"nobody\"", env.gatehouse.stderr())
        self.assertEqual(os.stat(storage).st_uid, 0)

    def test_refuses_root_without_allow_root(self):
        env, _ = self.make_env()
        # write_config adds allow_root for root runs; take it out again.
        with open(env.config_path) as f:
            text = f.read().replace("allow_root = true\n", "")
        with open(env.config_path, "w") as f:
            f.write(text)
        r = subprocess.run([GATEHOUSE_BIN, "run", "-c", env.config_path], capture_output=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"refusing to run as root", r.stderr)
        self.assertNotIn(b"Fatal error", r.stderr)

    def test_unknown_user_is_a_clear_error(self):
        env, _ = self.make_env(user="no-such-user-gatehouse")
        r = subprocess.run([GATEHOUSE_BIN, "run", "-c", env.config_path], capture_output=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b'user: no such user "no-such-user-gatehouse"', r.stderr)
