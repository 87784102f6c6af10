"""Shared helpers for Gatehouse's integration tests (stdlib only).

- ports:     free_port()
- certs:     ca() -> a local CA made once per run with the openssl CLI; ca().leaf(...)
- config:    Env.domain(...), Env.listener(...), Env.write_config(...)
- processes: Env.backend(...) starts scripts/sample_app.py; Env.start() runs
             `gatehouse run -c PATH` and waits until every listener accepts TCP
- clients:   tls_connect()/peer_info(), HTTPClient (exact bytes, keep-alive,
             pipelining), curl(), s_client()

The binary is $GATEHOUSE_BIN, default <repo>/.build/debug/gatehouse.
"""

import atexit
import hashlib
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE_APP = os.path.join(REPO, "scripts", "sample_app.py")
GATEHOUSE_BIN = os.environ.get("GATEHOUSE_BIN") or os.path.join(REPO, ".build", "debug", "gatehouse")
START_TIMEOUT = float(os.environ.get("GATEHOUSE_START_TIMEOUT", "10"))
IO_TIMEOUT = 30.0

KiB = 1024
MiB = 1024 * 1024

_live_procs = []
_live_lock = threading.Lock()


def _kill_all_at_exit():
    with _live_lock:
        procs = list(_live_procs)
    for p in procs:
        stop_process(p)


atexit.register(_kill_all_at_exit)


def _track(proc):
    with _live_lock:
        _live_procs.append(proc)
    return proc


def stop_process(proc, grace=3.0):
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        except ProcessLookupError:
            pass
    with _live_lock:
        if proc in _live_procs:
            _live_procs.remove(proc)


# --------------------------------------------------------------------------- data

PATTERN = bytes(range(251))  # same as scripts/sample_app.py


def pattern_bytes(n, offset=0):
    start = offset % len(PATTERN)
    reps = (start + n) // len(PATTERN) + 1
    return (PATTERN * reps)[start:start + n]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def random_bytes(n, seed=1):
    return random.Random(seed).randbytes(n)


# --------------------------------------------------------------------------- ports

def recv_until_close(sock, timeout=None):
    """Everything the peer sends until it closes (errors propagate)."""
    if timeout is not None:
        sock.settimeout(timeout)
    out = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(out)
        out += chunk


def free_port():
    """A loopback port nothing listens on right now (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- certs

def _openssl(*args, cwd=None):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr.decode(errors="replace")))
    return r.stdout


class CertAuthority:
    """A throw-away CA and leaf certificates, all made with the openssl CLI."""

    def __init__(self, directory):
        self.dir = directory
        self.ca_pem = os.path.join(directory, "ca.pem")
        self.ca_key = os.path.join(directory, "ca.key")
        self._leaves = {}
        self._lock = threading.Lock()
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", self.ca_key, "-out", self.ca_pem, "-days", "3650",
                 "-subj", "/CN=Gatehouse Test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(self, cn, sans=None, rsa=False, days=365):
        """(cert_path, key_path) for a leaf signed by this CA; made once per argument set.
        cn: subject CN; sans: DNS names (default [cn]); rsa: RSA-2048 instead of P-256."""
        sans = list(sans or [cn])
        ident = (cn, tuple(sans), rsa, days)
        with self._lock:
            if ident in self._leaves:
                return self._leaves[ident]
            base = re.sub(r"[^A-Za-z0-9.-]", "_", cn.replace("*", "wild")) + ("-rsa" if rsa else "") + \
                "-%d" % len(self._leaves)
            cert = os.path.join(self.dir, base + ".pem")
            key = os.path.join(self.dir, base + ".key")
            csr = os.path.join(self.dir, base + ".csr")
            ext = os.path.join(self.dir, base + ".ext")
            keyspec = ["-newkey", "rsa:2048"] if rsa else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
            _openssl("req", "-new", *keyspec, "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
            with open(ext, "w") as f:
                f.write("subjectAltName=%s\n" % ",".join("DNS:" + n for n in sans))
                f.write("basicConstraints=critical,CA:FALSE\n")
                f.write("keyUsage=critical,digitalSignature%s\n" % (",keyEncipherment" if rsa else ""))
                f.write("extendedKeyUsage=serverAuth\n")
            _openssl("x509", "-req", "-in", csr, "-CA", self.ca_pem, "-CAkey", self.ca_key,
                     "-CAcreateserial", "-days", str(days), "-sha256", "-out", cert, "-extfile", ext)
            self._leaves[ident] = (cert, key)
            return cert, key


_ca = None
_ca_lock = threading.Lock()


def ca():
    """The run's CA (created on first use in a temp dir removed at exit)."""
    global _ca
    with _ca_lock:
        if _ca is None:
            d = tempfile.mkdtemp(prefix="gatehouse-it-ca-")
            atexit.register(shutil.rmtree, d, True)
            _ca = CertAuthority(d)
        return _ca


# --------------------------------------------------------------------------- binary

def require_binary():
    """Fails at once, with a clear message, when there is no gatehouse binary."""
    if not (os.path.isfile(GATEHOUSE_BIN) and os.access(GATEHOUSE_BIN, os.X_OK)):
        raise RuntimeError(
            "gatehouse binary not found at %s: run `swift build` or set GATEHOUSE_BIN" % GATEHOUSE_BIN)
    return GATEHOUSE_BIN


def run_gatehouse(*args, timeout=15):
    """Runs the binary to completion (check, --version): CompletedProcess with text output."""
    require_binary()
    return subprocess.run([GATEHOUSE_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------- TOML

def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string for everything we write
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError("no TOML for %r" % (v,))


def toml_table(d):
    return "".join("%s = %s\n" % (k, toml_value(v)) for k, v in d.items() if v is not None)


# --------------------------------------------------------------------------- processes

class SampleApp:
    """scripts/sample_app.py as a child process (TCP on a kernel-chosen port, or unix)."""

    def __init__(self, name, log_dir, unix_path=None):
        self.name = name
        self.unix_path = unix_path
        where = ["--unix", unix_path] if unix_path else ["--listen", "127.0.0.1:0"]
        self.stderr_path = os.path.join(log_dir, "app-%s.stderr" % name)
        self._stderr = open(self.stderr_path, "wb")
        self.proc = _track(subprocess.Popen(
            [sys.executable, SAMPLE_APP, *where, "--name", name, "--log"],
            stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL))
        line = self._read_ready(10.0)
        m = re.match(r"^ready (\S+)$", line)
        if not m:
            self.stop()
            raise RuntimeError("sample app %s: unexpected first line %r" % (name, line))
        self.address = m.group(1)
        self.port = None if unix_path else int(self.address.rsplit(":", 1)[1])

    def _read_ready(self, timeout):
        deadline = time.monotonic() + timeout
        out = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in out:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("sample app %s did not get ready: %s" % (self.name, self.stderr()))
            r, _, _ = select.select([fd], [], [], min(left, 0.2))
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    continue
                out += chunk
        return out.split(b"\n", 1)[0].decode()

    @property
    def backend(self):
        """The value for a domain file's `backend` key."""
        return self.address

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def request_log(self):
        """What this backend received: GET /_requests straight to its port
        ({"connections": N, "requests": [{conn, req, line, head, complete, ...}]})."""
        with HTTPClient.plain(self.port, timeout=10) as c:
            r = c.request("GET", "/_requests", [("Host", "backend-log")])
        if r.status != 200:
            raise AssertionError("backend request log unavailable: " + r.summary())
        return r.json()

    def stop(self):
        stop_process(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()


class GatehouseProcess:
    def __init__(self, config_path, ports, log_dir, env=None):
        require_binary()
        self.config_path = config_path
        self.ports = list(ports)
        self.stderr_path = os.path.join(log_dir, "gatehouse.stderr")
        self.stdout_path = os.path.join(log_dir, "gatehouse.stdout")
        self._stderr = open(self.stderr_path, "wb")
        self._stdout = open(self.stdout_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = _track(subprocess.Popen(
            [GATEHOUSE_BIN, "run", "-c", config_path],
            stdout=self._stdout, stderr=self._stderr, stdin=subprocess.DEVNULL, env=full_env))
        self._wait_ready(START_TIMEOUT)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        pending = list(self.ports)
        while pending:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("`gatehouse run -c %s` exited with %s before listening.\n--- stderr:\n%s"
                                   % (self.config_path, self.proc.returncode, self.output()))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("`gatehouse run` did not accept on port(s) %s within %.0f s.\n--- stderr:\n%s"
                                   % (pending, timeout, self.output()))
            pending = [p for p in pending if not port_accepts(p)]
            if pending:
                time.sleep(0.05)

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def output(self):
        with open(self.stdout_path, "rb") as f:
            out = f.read().decode(errors="replace")
        return self.stderr() + (("\n--- stdout:\n" + out) if out else "")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        stop_process(self.proc, grace=5.0)
        self._stderr.close()
        self._stdout.close()


class Env:
    """One test setup: temp dir, backends, config files, one gatehouse process.

        env = Env()
        app = env.backend("A")
        env.domain("a.toml", ["a.test"], app)
        https = env.listener("https")
        env.start()                    # writes the config, runs gatehouse
        ...
        env.close()                    # (registered as a cleanup by GatehouseCase)
    """

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="gatehouse-it-")
        self.domains_dir = os.path.join(self.dir, "domains.d")
        os.makedirs(self.domains_dir)
        self.config_path = os.path.join(self.dir, "gatehouse.toml")
        self.apps = []
        self.listeners = []
        self.domain_files = {}
        self.gatehouse = None
        self.ca = ca()

    # -- backends
    def backend(self, name, unix=False):
        path = os.path.join(self.dir, "%s.sock" % name) if unix else None
        app = SampleApp(name, self.dir, unix_path=path)
        self.apps.append(app)
        return app

    # -- config
    def listener(self, protocol, https_port=None, port=None):
        port = port or free_port()
        entry = {"address": "127.0.0.1:%d" % port, "protocol": protocol}
        if https_port is not None:
            entry["https_port"] = https_port
        self.listeners.append(entry)
        return port

    def domain(self, filename, names, backend, cert=None, key=None, rsa=False, **opts):
        """Writes domains.d/<filename>; backend is a SampleApp, or a string.
        Without cert/key a leaf for `names` (first = CN) is made by the CA."""
        if cert is None or key is None:
            c, k = self.ca.leaf(names[0], names, rsa=rsa)
            cert = cert or c
            key = key or k
        d = {"names": list(names),
             "backend": backend.backend if isinstance(backend, SampleApp) else backend,
             "certificate": cert, "key": key}
        d.update(opts)
        path = os.path.join(self.domains_dir, filename)
        with open(path, "w") as f:
            f.write(toml_table(d))
        self.domain_files[filename] = path
        return path

    def write_config(self, workers=1, timeouts=None, limits=None, tls=None, metrics=None, extra_top=None,
                     extra_sections=None):
        t = {"handshake": 5, "request_header": 5, "idle": 30, "backend_connect": 2,
             "backend_response": 30, "drain": 1}
        t.update(timeouts or {})
        top = {"domains_dir": "domains.d", "workers": workers}
        if os.geteuid() == 0:
            top["allow_root"] = True   # test files live in 0700 temp dirs; see test_privileges.py
        top.update(extra_top or {})
        if "user" in top:
            top.pop("allow_root", None)
        text = toml_table(top)
        for entry in self.listeners:
            text += "\n[[listener]]\n" + toml_table(entry)
        text += "\n[timeouts]\n" + toml_table(t)
        if limits:
            text += "\n[limits]\n" + toml_table(limits)
        if tls:
            text += "\n[tls]\n" + toml_table(tls)
        if metrics:
            text += "\n[metrics]\n" + toml_table(metrics)
        for name, table in (extra_sections or {}).items():
            text += "\n[%s]\n" % name + toml_table(table)
        with open(self.config_path, "w") as f:
            f.write(text)
        return self.config_path

    def start(self, write=True, env=None, **config):
        if write:
            self.write_config(**config)
        ports = [int(e["address"].rsplit(":", 1)[1]) for e in self.listeners]
        self.gatehouse = GatehouseProcess(self.config_path, ports, self.dir, env=env)
        return self.gatehouse

    def close(self):
        if self.gatehouse:
            self.gatehouse.stop()
        for app in self.apps:
            app.stop()
        if os.environ.get("GATEHOUSE_KEEP_TMP"):
            sys.stderr.write("kept %s\n" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


class GatehouseCase(unittest.TestCase):
    """Base class: subclasses build cls.env in setUpEnv(env) (backends, domains,
    listeners, then env.start(...)); everything is stopped after the class."""

    env = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        require_binary()
        cls.env = Env()
        cls.addClassCleanup(cls.env.close)
        cls.setUpEnv(cls.env)

    @classmethod
    def setUpEnv(cls, env):
        raise NotImplementedError

    @property
    def ca_pem(self):
        return self.env.ca.ca_pem

    def backend_lines(self, app, needle=""):
        """The request lines a backend logged that contain `needle`."""
        return [r["line"] for r in app.request_log()["requests"] if needle in r["line"]]

    def assertBackendNeverSaw(self, app, needle):
        """Nothing `app` logged contains `needle` (a path no other test sends)."""
        seen = self.backend_lines(app, needle)
        self.assertFalse(seen, "the backend saw %s: %r" % (needle, seen[:5]))

    def assertNoHSTS(self, resp):
        self.assertEqual(resp.all("strict-transport-security"), [],
                         "plain-HTTP response must not carry Strict-Transport-Security")

    def assertHSTS(self, resp, value=None):
        got = resp.all("strict-transport-security")
        self.assertEqual(len(got), 1, "want exactly one Strict-Transport-Security, got %r" % got)
        if value is not None:
            self.assertEqual(got[0], value)
        else:
            self.assertRegex(got[0], r"^max-age=\d+")

    def assertGatehouseError(self, resp, code):
        """Gatehouse's own response: text/plain body '<code> <reason>\\n'."""
        self.assertEqual(resp.status, code, resp.summary())
        self.assertTrue(resp.get("content-type", "").startswith("text/plain"), resp.summary())
        self.assertRegex(resp.body.decode("latin-1"), r"^%d [A-Za-z][A-Za-z -]*\n$" % code)


# --------------------------------------------------------------------------- TLS client

def client_context(cafile=None, min_version=None, max_version=None, verify=True, check_hostname=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(cafile or ca().ca_pem)
        ctx.check_hostname = check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def strict_eof_context(**ctx_args):
    """client_context() that reports a TCP close without close_notify as SSLEOFError:
    Debian's Python sets OP_IGNORE_UNEXPECTED_EOF by default, which hides it."""
    ctx = client_context(**ctx_args)
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return ctx


def tls_connect(port, sni, context=None, timeout=IO_TIMEOUT, **ctx_args):
    """A TLS client socket to 127.0.0.1:port with SNI `sni` (None: no SNI, no hostname
    check). Raises ssl.SSLError / OSError when the handshake fails."""
    if context is None:
        if sni is None:
            ctx_args.setdefault("check_hostname", False)
        context = client_context(**ctx_args)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return context.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


def peer_info(tls_sock):
    """{'subject_cn', 'san': [dns...], 'version', 'cipher'} of a verified connection."""
    cert = tls_sock.getpeercert() or {}
    cn = None
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                cn = v
    san = [v for (k, v) in cert.get("subjectAltName", ()) if k == "DNS"]
    cipher = tls_sock.cipher()
    return {"subject_cn": cn, "san": san, "version": tls_sock.version(),
            "cipher": cipher[0] if cipher else None}


# --------------------------------------------------------------------------- raw HTTP client

class Response:
    def __init__(self, version, status, reason, headers, body, raw_head, chunk_sizes=None):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers          # [(name, value)] in order, names as sent
        self.body = body
        self.raw_head = raw_head
        self.chunk_sizes = chunk_sizes  # None unless chunked

    def all(self, name):
        name = name.lower()
        return [v for (k, v) in self.headers if k.lower() == name]

    def get(self, name, default=None):
        values = self.all(name)
        return values[0] if values else default

    def has(self, name):
        return bool(self.all(name))

    def json(self):
        return json.loads(self.body)

    def summary(self):
        return "%d %s %r body=%r" % (self.status, self.reason, self.headers, self.body[:300])


class SocketClient:
    """A client around one socket (`self.sock`): closed once, usable in `with`."""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class HTTPClient(SocketClient):
    """HTTP/1.1 over one socket (plain or TLS), bytes exactly as given.

        c = HTTPClient.tls(port, "a.test")
        r = c.request("GET", "/echo", [("Host", "a.test")])
        c.send(b"GET / HTTP/1.1\\r\\nHost: a.test\\r\\n\\r\\n" * 2)   # pipelining
        r1, r2 = c.read_response(), c.read_response()
    """

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    @classmethod
    def plain(cls, port, timeout=IO_TIMEOUT):
        return cls(socket.create_connection(("127.0.0.1", port), timeout=timeout))

    @classmethod
    def tls(cls, port, sni, **kw):
        return cls(tls_connect(port, sni, **kw))

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(256 * 1024)
        if not data:
            return False
        self.buf += data
        return True

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if not self._fill():
                raise ConnectionError("connection closed inside a line (have %r)" % bytes(self.buf[:200]))

    def _exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("connection closed with %d of %d body bytes" % (len(self.buf), n))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def closed_by_peer(self, timeout=2.0):
        """True if the peer closes without sending anything more within timeout."""
        if self.buf:
            return False
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            return not self._fill()
        except socket.timeout:
            return False
        except (ConnectionError, ssl.SSLError, OSError):
            return True
        finally:
            try:
                self.sock.settimeout(old)
            except OSError:
                pass

    def read_response(self, method="GET", skip_interim=True):
        while True:
            head_start = len(self.buf)
            status_line = self._line()
            m = re.match(rb"^(HTTP/\d\.\d) (\d{3}) ?(.*)$", status_line)
            if not m:
                raise ValueError("bad status line %r" % status_line)
            version, status, reason = m.group(1).decode(), int(m.group(2)), m.group(3).decode("latin-1")
            headers = []
            raw = [status_line]
            while True:
                line = self._line()
                raw.append(line)
                if not line:
                    break
                name, sep, value = line.partition(b":")
                if not sep:
                    raise ValueError("bad header line %r" % line)
                headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
            raw_head = b"\r\n".join(raw) + b"\r\n"
            if 100 <= status < 200 and skip_interim:
                continue
            break
        resp = Response(version, status, reason, headers, b"", raw_head)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return resp
        te = ",".join(resp.all("transfer-encoding")).lower()
        if "chunked" in te:
            body = bytearray()
            sizes = []
            while True:
                line = self._line()
                size = int(line.split(b";", 1)[0].strip(), 16)
                sizes.append(size)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._exact(size)
                if self._exact(2) != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
            resp.body = bytes(body)
            resp.chunk_sizes = sizes
        elif resp.has("content-length"):
            resp.body = self._exact(int(resp.get("content-length")))
        else:
            while self._fill():
                pass
            resp.body = bytes(self.buf)
            self.buf.clear()
        return resp

    @staticmethod
    def build(method, target, headers=(), body=None, chunked=None, version="HTTP/1.1"):
        """Request bytes. body: bytes; chunked: list of chunk sizes to frame body with
        (adds Transfer-Encoding: chunked unless the caller gave one); otherwise a
        Content-Length is added for a non-empty body unless the caller gave one."""
        headers = list(headers)
        names = {k.lower() for k, _ in headers}
        out = bytearray(("%s %s %s\r\n" % (method, target, version)).encode("latin-1"))
        payload = b""
        if chunked is not None:
            if "transfer-encoding" not in names:
                headers.append(("Transfer-Encoding", "chunked"))
            payload = frame_chunked(body or b"", chunked)
        elif body is not None:
            if "content-length" not in names:
                headers.append(("Content-Length", str(len(body))))
            payload = body
        for k, v in headers:
            out += ("%s: %s\r\n" % (k, v)).encode("latin-1")
        out += b"\r\n"
        return bytes(out) + payload

    def request(self, method, target, headers=(), body=None, chunked=None):
        self.send(self.build(method, target, headers, body, chunked))
        return self.read_response(method)


def frame_chunked(body, sizes):
    """body as chunked encoding, cycling through `sizes` for the chunk lengths."""
    out = bytearray()
    i = 0
    k = 0
    while i < len(body):
        n = max(1, min(sizes[k % len(sizes)], len(body) - i))
        out += b"%x\r\n" % n + body[i:i + n] + b"\r\n"
        i += n
        k += 1
    out += b"0\r\n\r\n"
    return bytes(out)


def https_get(port, host, target="/echo", headers=(), sni=None, **kw):
    """One request on a fresh TLS connection; returns the Response."""
    with HTTPClient.tls(port, sni or host, **kw) as c:
        return c.request("GET", target, [("Host", host), *headers])


def http_get(port, host, target="/", method="GET", headers=()):
    with HTTPClient.plain(port) as c:
        hs = [("Host", host)] if host is not None else []
        return c.request(method, target, hs + list(headers))


# --------------------------------------------------------------------------- CLIs

class CurlResult:
    def __init__(self, returncode, status, headers, body, stderr, version=None):
        self.returncode = returncode
        self.status = status
        self.version = version      # "1.1", "2": the final response's HTTP version
        self.headers = headers
        self.body = body
        self.stderr = stderr

    def all(self, name):
        name = name.lower()
        return [v for (k, v) in self.headers if k.lower() == name]

    def get(self, name, default=None):
        v = self.all(name)
        return v[0] if v else default


def curl(url, resolve=None, args=(), cafile=None, timeout=60):
    """Runs the real curl. resolve: (name, port) pinned to 127.0.0.1. Returns the final
    response's status/headers (after any 1xx) and the body bytes."""
    d = tempfile.mkdtemp(prefix="gatehouse-curl-")
    try:
        body_path = os.path.join(d, "body")
        head_path = os.path.join(d, "head")
        cmd = ["curl", "-q", "-sS", "--noproxy", "*", "--max-time", str(timeout),
               "-o", body_path, "-D", head_path, "--cacert", cafile or ca().ca_pem]
        if resolve:
            cmd += ["--resolve", "%s:%d:127.0.0.1" % resolve]
        cmd += list(args) + [url]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        r = subprocess.run(cmd, capture_output=True, timeout=timeout + 10, env=env, stdin=subprocess.DEVNULL)
        status, headers, version = 0, [], None
        if os.path.exists(head_path):
            with open(head_path, "rb") as f:
                blocks = [b for b in f.read().split(b"\r\n\r\n") if b.strip()]
            if blocks:
                lines = blocks[-1].split(b"\r\n")
                m = re.match(rb"^HTTP/([\d.]+) (\d{3})", lines[0])
                status = int(m.group(2)) if m else 0
                version = m.group(1).decode() if m else None
                for line in lines[1:]:
                    k, _, v = line.partition(b":")
                    headers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
        body = b""
        if os.path.exists(body_path):
            with open(body_path, "rb") as f:
                body = f.read()
        return CurlResult(r.returncode, status, headers, body, r.stderr.decode(errors="replace"), version)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def s_client(port, servername=None, args=(), timeout=15):
    """`openssl s_client` with stdin closed: (returncode, combined output). A failed
    handshake gives a non-zero exit."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port]
    if servername is not None:
        cmd += ["-servername", servername]
    else:
        cmd += ["-noservername"]
    cmd += list(args)
    r = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


def s_client_handshake_ok(returncode, output):
    """A completed handshake shows a negotiated cipher (never '(NONE)')."""
    m = re.search(r"Cipher is (\S+)", output) or re.search(r"Cipher\s*:\s*(\S+)", output)
    return returncode == 0 and m is not None and m.group(1) not in ("(NONE)", "0000")
