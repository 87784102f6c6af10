"""A few hundred domains from scripts/make-fleet: certificates load on first
use into a bounded cache, a broken one fails only its own domain."""

import os
import random
import subprocess
import sys
import time

from harness import REPO, GatehouseCase, free_port, https_get, tls_connect, peer_info
from test_metrics import scrape

N = 300
CACHE = 40
BROKEN = ["d7.fleet.test", "d123.fleet.test", "d250.fleet.test"]


class FleetTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        app = env.backend("A")
        fleet = os.path.join(env.dir, "fleet")
        subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make-fleet"), str(N), fleet,
                        "--backend", app.backend, "--jobs", "2"], check=True, capture_output=True, timeout=300)
        with open(os.path.join(fleet, "names.txt")) as f:
            cls.names = f.read().split()
        cls.ca_file = os.path.join(fleet, "ca.pem")
        cls.broken_files = []
        for name in BROKEN:
            index = int(name[1:].split(".")[0])
            cert = os.path.join(fleet, "certs", str(index // 1000), "d%d.ecdsa.pem" % index)
            if not os.path.exists(cert):
                cert = os.path.join(fleet, "certs", str(index // 1000), "d%d.rsa.pem" % index)
            with open(cert, "w") as f:
                f.write("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n")
            cls.broken_files.append(os.path.join(env.domains_dir, "d%d.toml" % index))
        os.rmdir(env.domains_dir)
        os.symlink(os.path.join(fleet, "domains.d"), env.domains_dir)
        cls.port = env.listener("https")
        cls.metrics_port = free_port()
        started = time.monotonic()
        env.start(workers=2, tls={"certificate_cache": CACHE},
                  metrics={"address": "127.0.0.1:%d" % cls.metrics_port})
        cls.startup = time.monotonic() - started

    def metrics(self):
        return scrape(self.metrics_port)

    def test_every_name_served_with_its_own_certificate_cache_bounded(self):
        names = [n for n in self.names if n not in BROKEN]
        random.Random(4).shuffle(names)
        for name in names:
            with tls_connect(self.port, name, cafile=self.ca_file) as s:
                info = peer_info(s)
                domain = name[4:] if name.startswith("www.") else name
                self.assertEqual(info["subject_cn"], domain)
        m = self.metrics()
        self.assertLessEqual(m[("gatehouse_certificates_loaded", "")], CACHE)
        self.assertEqual(m[("gatehouse_certificate_cache_size", "")], CACHE)
        # More domains than the cache: some were loaded more than once.
        self.assertGreater(m[("gatehouse_certificate_loads_total", '{result="success"}')], N - len(BROKEN))
        print("\n%d-domain fleet: started in %.2f s; %d loads for %d handshakes with a %d-entry cache"
              % (N, self.startup, m[("gatehouse_certificate_loads_total", '{result="success"}')], len(names), CACHE))

    def test_broken_certificates_fail_only_their_domain_and_are_logged_once(self):
        for _ in range(2):
            for name in BROKEN:
                with self.assertRaises(OSError):
                    tls_connect(self.port, name, cafile=self.ca_file).close()
        r = https_get(self.port, "d8.fleet.test", "/echo", cafile=self.ca_file)
        self.assertEqual(r.status, 200)
        log = self.env.gatehouse.stderr()
        for path in self.broken_files:
            lines = [line for line in log.splitlines() if path in line]
            self.assertEqual(len(lines), 1, "want exactly one line naming %s, got %r" % (path, lines))
            self.assertIn("(domain disabled)", lines[0])
        self.assertTrue(self.env.gatehouse.alive())
