"""A fleet behind a TCP balancer (issue 13): three Gatehouse instances behind HAProxy in
TCP mode with PROXY v2 and /healthz checks, restarted one after the other under a load
of HTTPS requests on new connections. No request may fail: the balancer stops sending
to an instance once its /healthz says 503, and the instance serves everything it had
already accepted (or that was in its accept queue) before it exits. `stop_grace` keeps
the listeners open until the health check has taken the instance out: closing a
listening socket resets connections whose TCP handshake is still completing, and a
TCP balancer cannot retry those."""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time

from harness import GatehouseCase, GatehouseProcess, client_context, free_port, port_accepts, recv_until_close


class RollingRestartTests(GatehouseCase):
    INSTANCES = 3

    @classmethod
    def setUpEnv(cls, env):
        if not shutil.which("haproxy"):
            raise RuntimeError("haproxy is not installed (scripts/lib.sh installs it)")
        env.domain("a.toml", ["a.test"], env.backend("A"))
        cls.instances = []
        for i in range(cls.INSTANCES):
            env.listeners = []
            port = env.listener("https")
            env.listeners[-1]["proxy_protocol"] = True
            metrics = free_port()
            # stop_grace: longer than the balancer needs to see /healthz fail
            # (inter 100 ms, fall 1), so no connection races the listener's close.
            env.write_config(timeouts={"drain": 10, "stop_grace": 0.5}, metrics={"address": "127.0.0.1:%d" % metrics})
            path = os.path.join(env.dir, "gatehouse-%d.toml" % i)
            shutil.copy(env.config_path, path)
            cls.instances.append({"config": path, "port": port, "metrics": metrics, "proc": None})
        cls.front = free_port()
        servers = "\n".join(
            "  server g%d 127.0.0.1:%d send-proxy-v2 check port %d inter 100ms fall 1 rise 2"
            % (i, inst["port"], inst["metrics"]) for i, inst in enumerate(cls.instances))
        cfg = os.path.join(env.dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("""global
  maxconn 2000
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch
frontend fe
  bind 127.0.0.1:%d
  default_backend be
backend be
  balance roundrobin
  option httpchk GET /healthz
  http-check expect status 200
%s
""" % (cls.front, servers))
        for i in range(cls.INSTANCES):
            cls.start_instance(i)
        cls.haproxy = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL,
                                       stderr=open(os.path.join(env.dir, "haproxy.log"), "wb"))
        cls.addClassCleanup(cls.haproxy.kill)
        deadline = time.monotonic() + 10
        while not port_accepts(cls.front) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)   # two health checks: every server up

    @classmethod
    def start_instance(cls, i):
        inst = cls.instances[i]
        logs = os.path.join(cls.env.dir, "g%d" % i)
        os.makedirs(logs, exist_ok=True)
        g = GatehouseProcess(inst["config"], [inst["port"], inst["metrics"]], logs)
        inst["proc"] = g
        cls.addClassCleanup(g.stop)

    def request(self):
        s = client_context().wrap_socket(socket.create_connection(("127.0.0.1", self.front), timeout=10),
                                         server_hostname="a.test")
        try:
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            return recv_until_close(s)[:12]
        finally:
            s.close()

    def test_rolling_restart_under_load_loses_no_request(self):
        results = {"ok": 0, "failed": []}
        lock = threading.Lock()
        stop = threading.Event()

        def load():
            while not stop.is_set():
                try:
                    head = self.request()
                    good = head.startswith(b"HTTP/1.1 200")
                    err = None if good else repr(head)
                except Exception as e:   # noqa: BLE001
                    good, err = False, repr(e)
                with lock:
                    if good:
                        results["ok"] += 1
                    else:
                        results["failed"].append(err)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            for i in range(self.INSTANCES):
                g = self.instances[i]["proc"]
                g.proc.send_signal(signal.SIGTERM)
                self.assertEqual(g.proc.wait(15), 0, g.output())
                g.stop()
                self.start_instance(i)
                time.sleep(0.6)   # back in the balancer (rise 2 x 100 ms) before the next one goes
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertGreater(results["ok"], 200)
        self.assertEqual(results["failed"], [], "%d ok" % results["ok"])
