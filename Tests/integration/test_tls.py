"""TLS versions and profiles, RSA and ECDSA certificates."""

import ssl
import subprocess
import time
import unittest

from harness import (GatehouseCase, HTTPClient, stop_process, ca, free_port, peer_info,
                     port_accepts, s_client, s_client_handshake_ok, tls_connect)

OLD_CLIENT = ["-cipher", "DEFAULT@SECLEVEL=0"]


def local_openssl_speaks(version_flag):
    """Control: can this machine's openssl client negotiate `version_flag` at all?
    Checked against `openssl s_server` so that a refusal by Gatehouse means something."""
    cert, key = ca().leaf("control.test")
    port = free_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", "127.0.0.1:%d" % port, "-cert", cert, "-key", key,
         version_flag, "-cipher", "DEFAULT@SECLEVEL=0", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not port_accepts(port):
            if time.monotonic() > deadline or server.poll() is not None:
                return False
            time.sleep(0.05)
        rc, out = s_client(port, "control.test", [version_flag] + OLD_CLIENT)
        return s_client_handshake_ok(rc, out)
    finally:
        stop_process(server)


class TLSVersionTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        app = env.backend("A")
        env.domain("a.toml", ["a.test"], app)                          # default profile: modern
        env.domain("m.toml", ["m.test"], app, tls_profile="modern")
        env.domain("r.toml", ["r.test"], app, rsa=True)                 # RSA-2048 certificate
        env.domain("s.toml", ["s.test"], app, tls_profile="strict")    # TLS 1.3 only
        env.domain("l.toml", ["l.test"], app, tls_profile="legacy")
        cls.port = env.listener("https")
        env.start()

    def connect(self, sni, version):
        return tls_connect(self.port, sni, min_version=version, max_version=version)

    def test_tls12_and_tls13_accepted(self):
        for sni in ("a.test", "m.test", "r.test", "l.test"):
            for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
                with self.subTest(sni=sni, version=name):
                    s = self.connect(sni, version)
                    with HTTPClient(s) as c:
                        self.assertEqual(peer_info(s)["version"], name)
                        r = c.request("GET", "/echo", [("Host", sni)])
                        self.assertEqual(r.status, 200, r.summary())

    def test_certificate_key_types(self):
        s = self.connect("r.test", ssl.TLSVersion.TLSv1_2)
        try:
            self.assertIn("RSA", peer_info(s)["cipher"])
        finally:
            s.close()
        s = self.connect("a.test", ssl.TLSVersion.TLSv1_2)
        try:
            self.assertIn("ECDSA", peer_info(s)["cipher"])
        finally:
            s.close()

    def test_modern_uses_aead_on_tls12(self):
        s = self.connect("a.test", ssl.TLSVersion.TLSv1_2)
        try:
            cipher = peer_info(s)["cipher"]
            self.assertTrue("GCM" in cipher or "CHACHA20" in cipher, cipher)
        finally:
            s.close()

    def test_strict_refuses_tls12(self):
        with self.assertRaises((ssl.SSLError, OSError)):
            self.connect("s.test", ssl.TLSVersion.TLSv1_2).close()
        s = self.connect("s.test", ssl.TLSVersion.TLSv1_3)
        try:
            self.assertEqual(peer_info(s)["version"], "TLSv1.3")
        finally:
            s.close()

    def test_tls10_and_tls11_refused(self):
        for flag in ("-tls1_1", "-tls1"):
            with self.subTest(flag=flag):
                if not local_openssl_speaks(flag):
                    self.skipTest("local openssl cannot negotiate %s even with s_server" % flag)
                for sni in ("a.test", "m.test", "r.test"):
                    rc, out = s_client(self.port, sni, [flag] + OLD_CLIENT)
                    self.assertFalse(s_client_handshake_ok(rc, out), "%s %s was accepted:\n%s" % (sni, flag, out))
                    self.assertNotEqual(rc, 0)

    def test_s_client_tls12_and_13(self):
        for flag, proto in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            with self.subTest(flag=flag):
                rc, out = s_client(self.port, "a.test", [flag, "-CAfile", ca().ca_pem, "-verify_return_error"])
                self.assertTrue(s_client_handshake_ok(rc, out), out)
                self.assertIn(proto, out)
                self.assertIn("Verify return code: 0 (ok)", out)

    def test_alpn(self):
        # h2 when offered (test_http2.py has the rest); http/1.1 when only that is.
        for offer, want in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"), (["spdy/3"], None)):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(ca().ca_pem)
            ctx.set_alpn_protocols(offer)
            s = tls_connect(self.port, "a.test", context=ctx)
            try:
                self.assertEqual(s.selected_alpn_protocol(), want, offer)
            finally:
                s.close()


if __name__ == "__main__":
    unittest.main()
