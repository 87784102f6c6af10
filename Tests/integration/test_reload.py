"""SIGHUP reloads: new files take effect for new connections, connections in
flight finish on the old snapshot, broken input keeps what runs, nothing is
dropped under load; sd_notify READY/RELOADING/STOPPING on a real socket."""

import os
import re
import signal
import socket
import ssl
import tempfile
import threading
import time

from harness import GatehouseCase, HTTPClient, client_context, https_get, strict_eof_context, tls_connect


def wait_for(predicate, timeout=5.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class ReloadTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        cls.app_a = env.backend("A")
        cls.app_b = env.backend("B")
        env.domain("a.toml", ["a.test"], cls.app_a)
        env.domain("b.toml", ["b.test"], cls.app_a)
        cls.port = env.listener("https")
        env.start(workers=2)

    def reload(self, expect="reloaded:"):
        before = self.env.gatehouse.stderr().count(expect)
        self.env.gatehouse.proc.send_signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: self.env.gatehouse.stderr().count(expect) > before),
                        "no %r after SIGHUP:\n%s" % (expect, self.env.gatehouse.stderr()[-2000:]))
        self.assertTrue(self.env.gatehouse.alive())

    def backend_of(self, host):
        r = https_get(self.port, host, "/echo")
        self.assertEqual(r.status, 200, r.summary())
        return r.get("x-backend-name")

    def test_1_added_changed_removed(self):
        c_path = self.env.domain("c.toml", ["c.test"], self.app_b)
        self.env.domain("b.toml", ["b.test"], self.app_b)   # backend A -> B
        with HTTPClient.tls(self.port, "b.test") as old:
            self.assertEqual(old.request("GET", "/echo", [("Host", "b.test")]).get("x-backend-name"), "A")
            self.reload()
            # New connections see the new files...
            self.assertEqual(self.backend_of("c.test"), "B")
            self.assertEqual(self.backend_of("b.test"), "B")
            # ...the keep-alive connection opened before finishes on its snapshot.
            self.assertEqual(old.request("GET", "/echo", [("Host", "b.test")]).get("x-backend-name"), "A")
        os.remove(c_path)
        self.reload()
        with self.assertRaises(ssl.SSLError) as e:
            tls_connect(self.port, "c.test").close()
        self.assertIn("UNRECOGNIZED_NAME", str(e.exception).upper())
        self.assertEqual(self.backend_of("a.test"), "A")

    def test_2_syntax_error_keeps_running_config(self):
        path = self.env.domain("bad.toml", ["bad.test"], self.app_b)
        with open(path, "a") as f:
            f.write("names = [\n")        # line 5: duplicate key / broken array
        try:
            self.reload(expect="reload failed")
            log = self.env.gatehouse.stderr()
            self.assertRegex(log, r"bad\.toml:\d+")
            self.assertEqual(self.backend_of("a.test"), "A")
            with self.assertRaises(ssl.SSLError):
                tls_connect(self.port, "bad.test").close()
        finally:
            os.remove(path)

    def test_3_broken_certificate_keeps_the_previous_one(self):
        # A private copy: the run's CA caches leaves that other tests use.
        src_cert, src_key = self.env.ca.leaf("e.test")
        cert, key = os.path.join(self.env.dir, "e.pem"), os.path.join(self.env.dir, "e.key")
        for src, dst in ((src_cert, cert), (src_key, key)):
            with open(src) as f, open(dst, "w") as g:
                g.write(f.read())
        self.env.domain("e.toml", ["e.test"], self.app_a, cert=cert, key=key)
        self.reload()
        with tls_connect(self.port, "e.test") as s:
            before = s.getpeercert(binary_form=True)
        with open(cert, "w") as f:
            f.write("not a certificate\n")
        self.env.domain("d.toml", ["d.test"], self.app_b)
        self.reload()
        # The background preload reports it (it may still be busy with d.toml).
        pattern = re.compile(r"e\.toml: certificate: .*keeping the previous certificate")
        wait_for(lambda: pattern.search(self.env.gatehouse.stderr()))
        self.assertRegex(self.env.gatehouse.stderr(), pattern)
        with tls_connect(self.port, "e.test") as s:
            self.assertEqual(s.getpeercert(binary_form=True), before)
        self.assertEqual(self.backend_of("e.test"), "A")
        self.assertEqual(self.backend_of("d.test"), "B", "the other domains reloaded")

    def test_4_reloads_under_load_drop_nothing(self):
        stop = threading.Event()
        results = {"ok": 0, "failed": []}
        lock = threading.Lock()

        def load(keepalive):
            while not stop.is_set():
                try:
                    if keepalive:
                        with HTTPClient.tls(self.port, "a.test") as c:
                            for _ in range(20):
                                r = c.request("GET", "/echo", [("Host", "a.test")])
                                assert r.status == 200, r.summary()
                                with lock:
                                    results["ok"] += 1
                    else:
                        r = https_get(self.port, "a.test", "/bytes/2000")
                        assert r.status == 200, r.summary()
                        with lock:
                            results["ok"] += 1
                except Exception as e:   # noqa: BLE001 - every failure counts
                    with lock:
                        results["failed"].append(repr(e))

        threads = [threading.Thread(target=load, args=(i % 2 == 0,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            for i in range(20):
                name = "x%d.test" % i
                self.env.domain("x%d.toml" % i, [name], self.app_b)          # add
                if i >= 2:
                    os.remove(self.env.domain_files.pop("x%d.toml" % (i - 2)))  # remove
                self.env.domain("b.toml", ["b.test"], self.app_a if i % 2 else self.app_b)  # change
                self.reload()
                time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        print("\nreload under load: %d requests ok, %d failed, 20 reloads" % (results["ok"], len(results["failed"])))
        self.assertEqual(results["failed"], [])
        self.assertGreater(results["ok"], 100)
        self.assertEqual(self.backend_of("x19.test"), "B")


class NotifyTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        cls.port = env.listener("https")
        cls.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        cls.path = os.path.join(tempfile.mkdtemp(dir=env.dir), "notify")
        cls.sock.bind(cls.path)
        cls.sock.settimeout(10)
        env.start(env={"NOTIFY_SOCKET": cls.path})

    @classmethod
    def tearDownClass(cls):
        cls.sock.close()
        super().tearDownClass()

    def messages(self, until):
        got = []
        while not any(until in m for m in got):
            got.append(self.sock.recv(4096).decode())
        return got

    def test_ready_reloading_stopping(self):
        first = self.messages("READY=1")
        self.assertTrue(first[0].startswith("READY=1\nSTATUS=1 domains"), first)
        self.env.gatehouse.proc.send_signal(signal.SIGHUP)
        msgs = self.messages("READY=1")
        self.assertRegex(msgs[0], r"^RELOADING=1\nMONOTONIC_USEC=\d+$")
        self.assertTrue(msgs[-1].startswith("READY=1"), msgs)
        self.env.gatehouse.proc.send_signal(signal.SIGTERM)
        self.assertIn("STOPPING=1", self.messages("STOPPING=1")[-1])
        self.assertEqual(self.env.gatehouse.proc.wait(10), 0)


class AbstractNotifyTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        cls.port = env.listener("https")
        cls.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = "gatehouse-test-%d-%d" % (os.getpid(), cls.port)
        cls.sock.bind("\0" + name)
        cls.sock.settimeout(10)
        env.start(env={"NOTIFY_SOCKET": "@" + name})

    @classmethod
    def tearDownClass(cls):
        cls.sock.close()
        super().tearDownClass()

    def test_ready_on_abstract_socket(self):
        self.assertTrue(self.sock.recv(4096).decode().startswith("READY=1"))


class DrainTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        cls.port = env.listener("https")
        env.start(workers=2, timeouts={"drain": 10})

    def test_sigterm_finishes_in_flight_closes_idle_politely_exits_0(self):
        result = {}

        def slow():
            try:
                result["r"] = https_get(self.port, "a.test", "/sleep/1500")
            except Exception as e:   # noqa: BLE001
                result["e"] = e

        idle = strict_eof_context().wrap_socket(socket.create_connection(("127.0.0.1", self.port)),
                                                server_hostname="a.test", suppress_ragged_eofs=False)
        idle.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        idle.settimeout(5)
        got = b""
        while not (b"\r\n\r\n" in got and len(got.split(b"\r\n\r\n", 1)[1]) == 10):
            got += idle.recv(65536)
        self.assertTrue(got.startswith(b"HTTP/1.1 200"))
        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.5)                      # the slow request is at the backend now
        started = time.monotonic()
        self.env.gatehouse.proc.send_signal(signal.SIGTERM)
        # The idle keep-alive connection is closed at once, with close_notify:
        # a clean TLS EOF (Python raises SSLEOFError for a TCP close without it).
        self.assertEqual(idle.recv(100), b"")
        idle.close()
        t.join(10)
        self.assertNotIn("e", result, result.get("e"))
        self.assertEqual(result["r"].status, 200)
        self.assertEqual(result["r"].body, b"slept 1500 ms\n")
        self.assertEqual(self.env.gatehouse.proc.wait(10), 0)
        self.assertLess(time.monotonic() - started, 5)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
