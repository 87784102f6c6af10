"""A real ACME CA on loopback for the tests: Debian's pebble, with
pebble-challtestsrv as its DNS server answering every name with 127.0.0.1,
so the CA's validations reach the Gatehouse under test. Pebble's default of
rejecting 5 % of nonces stays on. Debian's package ships no certificate for
pebble's own HTTPS listener: one is made here, and `trust` points at its CA."""

import http.server
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request

from harness import _openssl, _track, free_port, port_accepts, stop_process

PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"


def installed():
    return os.access(PEBBLE, os.X_OK) and os.access(CHALLTESTSRV, os.X_OK)


class Pebble:
    """pebble validating against `http_port` (http-01) and `https_port`
    (tls-alpn-01) on 127.0.0.1. `validity`: certificate lifetime in seconds
    (pebble's certificateValidityPeriod), for renewal tests."""

    def __init__(self, http_port, https_port, validity=None, authz_reuse=None, nice=None):
        self.dir = tempfile.mkdtemp(prefix="gatehouse-pebble-")
        self.trust = os.path.join(self.dir, "ca.pem")
        d = self.dir
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", d + "/ca.key", "-out", self.trust, "-days", "2", "-subj", "/CN=Gatehouse test CA for pebble",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", d + "/pebble.key", "-out", d + "/pebble.csr", "-subj", "/CN=localhost")
        with open(d + "/pebble.ext", "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        _openssl("x509", "-req", "-in", d + "/pebble.csr", "-CA", self.trust, "-CAkey", d + "/ca.key",
                 "-CAcreateserial", "-days", "2", "-out", d + "/pebble.pem", "-extfile", d + "/pebble.ext")
        self.dns_port = free_port()
        self.dns_management = free_port()
        self.dns = _track(subprocess.Popen(
            [CHALLTESTSRV, "-dns01", "127.0.0.1:%d" % self.dns_port, "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-management", "127.0.0.1:%d" % self.dns_management,
             "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
            stdout=open(d + "/challtestsrv.log", "wb"), stderr=subprocess.STDOUT))
        self.port = free_port()
        self.management = free_port()
        config = {"pebble": {
            "listenAddress": "127.0.0.1:%d" % self.port,
            "managementListenAddress": "127.0.0.1:%d" % self.management,
            "certificate": d + "/pebble.pem", "privateKey": d + "/pebble.key",
            "httpPort": http_port, "tlsPort": https_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False}}
        if validity is not None:
            config["pebble"]["certificateValidityPeriod"] = validity
        with open(d + "/pebble.json", "w") as f:
            json.dump(config, f)
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1")
        if authz_reuse is not None:
            env["PEBBLE_AUTHZREUSE"] = str(authz_reuse)
        self.log_path = d + "/pebble.log"
        self.proc = _track(subprocess.Popen(
            (["nice", "-n", str(nice)] if nice else []) +
            [PEBBLE, "-config", d + "/pebble.json", "-dnsserver", "127.0.0.1:%d" % self.dns_port],
            stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT, env=env))
        deadline = time.time() + 20
        while time.time() < deadline and not (port_accepts(self.port) and port_accepts(self.management)
                                              and port_accepts(self.dns_management)):
            if self.proc.poll() is not None or self.dns.poll() is not None:
                break
            time.sleep(0.05)
        if not (port_accepts(self.port) and port_accepts(self.management)):
            log = self.log()
            self.stop()
            raise RuntimeError("pebble did not start:\n" + log)

    def map_name(self, name, address):
        """DNS for `name` answers `address` (instead of 127.0.0.1) from now on."""
        body = json.dumps({"host": name, "addresses": [address]}).encode()
        req = urllib.request.Request("http://127.0.0.1:%d/add-a" % self.dns_management, data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    @property
    def directory(self):
        return "https://127.0.0.1:%d/dir" % self.port

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def root_pem(self):
        """The root pebble signs with (made at its start): what a visitor would trust."""
        ctx = ssl.create_default_context(cafile=self.trust)
        with urllib.request.urlopen("https://127.0.0.1:%d/roots/0" % self.management, context=ctx, timeout=10) as r:
            return r.read().decode()

    def root_file(self):
        path = os.path.join(self.dir, "issuer-root.pem")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(self.root_pem())
        return path

    def orders_created(self):
        """How many new orders pebble accepted (one log line each; a request
        refused for its nonce is not one)."""
        return self.log().count("Added order")

    def certificates_issued(self):
        return self.log().count("Issued certificate serial")

    def stop(self):
        stop_process(self.proc)
        stop_process(self.dns)
        shutil.rmtree(self.dir, ignore_errors=True)


class RenewalInfoFront:
    """Debian's pebble 2.4 has no ACME Renewal Information (RFC 9773): this
    HTTPS front serves pebble's directory with a `renewalInfo` URL added, and
    answers renewalInfo requests with `window(cert_id)` (start, end Unix
    seconds). Every other URL in the directory still points at pebble."""

    def __init__(self, pebble, window):
        self.pebble = pebble
        self.window = window
        self.asked = []
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/dir":
                    ctx = ssl.create_default_context(cafile=pebble.trust)
                    with urllib.request.urlopen(pebble.directory, context=ctx, timeout=10) as r:
                        directory = json.load(r)
                    directory["renewalInfo"] = "https://127.0.0.1:%d/renewal-info" % front.port
                    self.reply(200, directory)
                elif self.path.startswith("/renewal-info/"):
                    cert_id = self.path[len("/renewal-info/"):]
                    front.asked.append(cert_id)
                    start, end = front.window(cert_id)
                    fmt = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
                    self.reply(200, {"suggestedWindow": {"start": fmt(start), "end": fmt(end)}}, {"Retry-After": "21600"})
                else:
                    self.reply(404, {"type": "urn:ietf:params:acme:error:malformed"})

            def reply(self, status, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pebble.dir + "/pebble.pem", pebble.dir + "/pebble.key")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def directory(self):
        return "https://127.0.0.1:%d/dir" % self.port

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
