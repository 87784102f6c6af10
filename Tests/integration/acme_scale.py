"""ACME at scale (issue 15): N domains (default 1,000) issued by pebble while
one client keeps requesting an ordinary domain over keep-alive HTTPS. Prints
the time until every domain is served and the longest any request took.
Run by scripts/acme-scale; not part of the test suite (minutes, not seconds)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

from test_acme import ACMEEnv, LatencyProbe, served_certificate
from test_metrics import parse_prometheus
from harness import free_port


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    challenge = sys.argv[2] if len(sys.argv) > 2 else "tls-alpn-01"
    # In production the CA is elsewhere; here it shares the cores with the
    # proxy, so it runs at the lowest priority.
    a = ACMEEnv([challenge], pebble_nice=19)
    # Let's Encrypt's 300 new orders per 3 hours is the default; pebble has no such limit.
    a.acme["orders_per_3h"] = 2 * count   # room for retries
    try:
        names = ["site%04d.test" % i for i in range(count)]
        for n in names:
            a.domain(n + ".toml", [n, "www." + n])
        a.env.domain("files.toml", ["files.test"], a.app)
        metrics = free_port()
        # wrk sends no usable SNI (an IP): the default domain answers it.
        a.start(metrics={"address": "127.0.0.1:%d" % metrics}, workers=1, tls={"default_domain": "files.test"})
        probe = LatencyProbe(a.https, "files.test", a.env.ca.ca_pem)
        # A second probe in C, free of Python's scheduling: wrk's max latency.
        # And one Gatehouse answers itself (the port-80 redirect): no backend
        # in the path, so a gap there is the event loop's.
        wrks = []
        if shutil.which("wrk"):
            for label, url in (("https via backend", "https://127.0.0.1:%d/probe" % a.https),
                               ("port-80 301, no backend", "http://127.0.0.1:%d/probe" % a.http)):
                wrks.append((label, subprocess.Popen(["wrk", "-t1", "-c2", "-d3600s", "--latency", "-H", "Host: files.test", url],
                                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
        started = time.monotonic()
        while True:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics, timeout=5) as r:
                m = parse_prometheus(r.read().decode())
            issued = m.get(("gatehouse_acme_orders_total", '{outcome="issued"}'), 0)
            failed = m.get(("gatehouse_acme_orders_total", '{outcome="failed"}'), 0)
            if issued >= count or time.monotonic() - started > 1800:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        probe.stop()
        for label, wrk in wrks:
            wrk.send_signal(signal.SIGINT)
            out = wrk.communicate(timeout=30)[0]
            latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
            requests = re.search(r"(\d+) requests in", out)
            print("wrk (%s): %s requests, latency avg %s, max %s" % (label, requests.group(1) if requests else "?",
                                                                   latency.group(1) if latency else "?",
                                                                   latency.group(3) if latency else "?"))
            for line in out.splitlines():
                if "99%" in line or "Socket errors" in line:
                    print("wrk (%s): %s" % (label, line.strip()))
        served, missing = 0, []
        for n in names:
            try:
                served_certificate(a.https, n, a.root(), timeout=5)
                served += 1
            except OSError as e:
                missing.append("%s (%s)" % (n, e))
        for line in missing[:5]:
            print("not served: " + line)
        print("domains: %d, served: %d, failed orders: %d" % (count, served, failed))
        print("all issued in %.1f s (%.1f domains/s)" % (elapsed, count / elapsed))
        print("probe: %d requests, longest %.1f ms, errors %d" % (probe.requests, probe.longest * 1000, len(probe.errors)))
        print("pebble: %d orders, %d certificates" % (a.pebble.orders_created(), a.pebble.certificates_issued()))
        return 0 if served == count and not probe.errors else 1
    finally:
        a.close()


if __name__ == "__main__":
    sys.exit(main())
