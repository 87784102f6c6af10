"""Regression: a TLS 1.3 connection that resumed must hand out a fresh ticket,
or every other handshake of a returning visitor is a full one."""

import os
import subprocess
import tempfile

from harness import GatehouseCase

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
