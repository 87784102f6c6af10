"""The access log: one line per request with the TLS fields, in the combined
and JSON formats; reopened on SIGUSR1 for logrotate."""

import json
import os
import re
import signal
import time

from harness import GatehouseCase, HTTPClient, http_get, https_get

COMBINED = re.compile(
    r'^(?P<client>\S+) - - \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] '
    r'"(?P<method>\S*) (?P<target>\S*) (?P<proto>HTTP/1\.[01])" (?P<status>\d{3}) (?P<out>\d+) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)" host=(?P<host>\S+) sni=(?P<sni>\S+) tls=(?P<tls>\S+) '
    r'cipher=(?P<cipher>\S+) in=(?P<inb>\d+) time=(?P<t>\d+\.\d{3}) backend_time=(?P<bt>-|\d+\.\d{3})$')


def wait_lines(path, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                lines = f.read().splitlines()
            if len(lines) >= n:
                return lines
        time.sleep(0.1)
    return lines


class CombinedAccessLogTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        cls.https = env.listener("https")
        cls.http = env.listener("http")
        cls.log = os.path.join(env.dir, "logs-access.log")
        env.start(extra_sections={"access_log": {"path": cls.log, "format": "combined"}})

    def test_lines_and_reopen(self):
        body = b"x" * 1000
        with HTTPClient.tls(self.https, "a.test") as c:
            r = c.request("GET", "/bytes/123?q=1", [("Host", "a.test"), ("User-Agent", 'ua "quoted"'),
                                                    ("Referer", "https://ref.test/")])
            self.assertEqual(r.status, 200)
            r = c.request("POST", "/echo", [("Host", "a.test")], body=body)
            self.assertEqual(r.status, 200)
        self.assertEqual(http_get(self.http, "a.test", "/x").status, 301)
        with HTTPClient.tls(self.https, "a.test") as c:
            c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b\r\n\r\n")
            self.assertEqual(c.read_response().status, 400)
        lines = wait_lines(self.log, 4)
        self.assertEqual(len(lines), 4, lines)
        m = [COMBINED.match(line) for line in lines]
        for line, match in zip(lines, m):
            self.assertIsNotNone(match, "not combined format: %r" % line)
        get, post, redirect, bad = (x.groupdict() for x in m)
        self.assertEqual((get["client"], get["method"], get["target"], get["proto"], get["status"]),
                         ("127.0.0.1", "GET", "/bytes/123?q=1", "HTTP/1.1", "200"))
        self.assertEqual(get["agent"], "ua \\x22quoted\\x22")
        self.assertEqual(get["referer"], "https://ref.test/")
        self.assertEqual((get["host"], get["sni"]), ("a.test", "a.test"))
        self.assertEqual(get["tls"], "TLSv1.3")
        self.assertRegex(get["cipher"], r"^TLS_")
        self.assertGreater(int(get["out"]), 123)
        self.assertNotEqual(get["bt"], "-")
        self.assertGreaterEqual(int(post["inb"]), 1000)
        self.assertEqual((redirect["status"], redirect["tls"], redirect["sni"], redirect["bt"]), ("301", "-", "-", "-"))
        self.assertEqual(bad["status"], "400")

        # logrotate: move the file away, SIGUSR1, the next line goes to a new file.
        os.rename(self.log, self.log + ".1")
        self.env.gatehouse.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        self.assertEqual(https_get(self.https, "a.test", "/bytes/1").status, 200)
        new = wait_lines(self.log, 1)
        self.assertEqual(len(new), 1, new)
        self.assertIn('"GET /bytes/1 HTTP/1.1" 200', new[0])
        with open(self.log + ".1") as f:
            self.assertEqual(len(f.read().splitlines()), 4)


class JSONAccessLogTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        cls.https = env.listener("https")
        cls.log = os.path.join(env.dir, "access.json")
        env.start(workers=2, extra_sections={"access_log": {"path": cls.log, "format": "json"}})

    def test_json_lines(self):
        for i in range(5):
            self.assertEqual(https_get(self.https, "a.test", "/status/%d" % (200 + i)).status, 200 + i)
        lines = wait_lines(self.log, 5)
        docs = [json.loads(line) for line in lines]
        self.assertEqual(sorted(d["status"] for d in docs), [200, 201, 202, 203, 204])
        d = docs[0]
        for key in ("time", "client", "sni", "tls_version", "cipher", "host", "method", "target", "protocol",
                    "status", "bytes_in", "bytes_out", "time_total", "time_backend", "referer", "user_agent"):
            self.assertIn(key, d)
        self.assertRegex(d["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual((d["client"], d["sni"], d["host"], d["method"]), ("127.0.0.1", "a.test", "a.test", "GET"))
        self.assertEqual(d["tls_version"], "TLSv1.3")
        self.assertIsInstance(d["time_backend"], float)
