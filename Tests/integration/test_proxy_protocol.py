"""PROXY protocol v1/v2 on listeners with proxy_protocol = true, and the
per-client connection cap ([limits] max_connections_per_client)."""

import json
import socket
import ssl
import struct
import time

from harness import GatehouseCase, client_context, https_get

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, dst="127.0.0.1", family="TCP4"):
    return ("PROXY %s %s %s 40000 443\r\n" % (family, src, dst)).encode()


def v2(src4=None, local=False):
    if local:
        return V2_SIG + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    body = socket.inet_aton(src4) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 40000, 443)
    return V2_SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def tls_after(port, header, split=False):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    if split:   # the header in pieces, to prove it is reassembled
        for i in range(0, len(header), 7):
            raw.sendall(header[i:i + 7])
            time.sleep(0.02)
    else:
        raw.sendall(header)
    return client_context().wrap_socket(raw, server_hostname="a.test")


def get_echo(sock):
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return dict((k.lower(), v) for k, v in json.loads(body)["headers"])


class ProxyProtocolTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        cls.pp = env.listener("https")
        env.listeners[-1]["proxy_protocol"] = True
        cls.plain = env.listener("https")
        cls.http_pp = env.listener("http")
        env.listeners[-1]["proxy_protocol"] = True
        env.start(workers=1, timeouts={"handshake": 2})

    def test_v1_and_v2_client_address_reaches_backend(self):
        for name, header, want in (("v1", v1("192.0.2.7"), "192.0.2.7"),
                                   ("v1 ipv6", v1("2001:db8::7", "2001:db8::1", "TCP6"), "2001:db8::7"),
                                   ("v2", v2("198.51.100.9"), "198.51.100.9"),
                                   ("v2 split", v2("198.51.100.10"), "198.51.100.10")):
            with self.subTest(name):
                with tls_after(self.pp, header, split=name.endswith("split")) as s:
                    self.assertEqual(get_echo(s)["x-forwarded-for"], want)

    def test_v2_local_uses_the_peer_address(self):
        with tls_after(self.pp, v2(local=True)) as s:
            self.assertEqual(get_echo(s)["x-forwarded-for"], "127.0.0.1")

    def test_missing_or_bad_header_is_closed(self):
        for header in (b"", b"PROXY TCP4 300.1.1.1 127.0.0.1 1 2\r\n", b"GET / HTTP/1.1\r\n\r\n"):
            with self.subTest(header=header):
                with self.assertRaises((ssl.SSLError, OSError)):
                    with tls_after(self.pp, header) as s:
                        get_echo(s)

    def test_header_on_http_listener_then_redirect(self):
        with socket.create_connection(("127.0.0.1", self.http_pp), timeout=10) as s:
            s.sendall(v1("192.0.2.8") + b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 301"))

    def test_plain_listener_does_not_accept_a_header(self):
        with self.assertRaises((ssl.SSLError, OSError)):
            with tls_after(self.plain, v1("192.0.2.7")) as s:
                get_echo(s)


class PerClientLimitTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        cls.port = env.listener("https")
        cls.pp = env.listener("https")
        env.listeners[-1]["proxy_protocol"] = True
        env.start(workers=1, limits={"max_connections_per_client": 5})

    def open_tls(self, port=None, header=b""):
        raw = socket.create_connection(("127.0.0.1", port or self.port), timeout=10)
        raw.sendall(header)
        return client_context().wrap_socket(raw, server_hostname="a.test")

    def test_sixth_connection_from_one_address_is_refused(self):
        held = [self.open_tls() for _ in range(5)]
        try:
            with self.assertRaises((ssl.SSLError, OSError)):
                self.open_tls().close()
            # Another client (as told by a PROXY header) is not affected.
            with self.open_tls(self.pp, v1("192.0.2.50")) as s:
                self.assertEqual(get_echo(s)["x-forwarded-for"], "192.0.2.50")
        finally:
            for s in held:
                s.close()
        time.sleep(0.3)
        self.assertEqual(https_get(self.port, "a.test").status, 200)
        self.assertEqual(self.env.gatehouse.stderr().count("per_client_limit:"), 1)


class PerClientPrefixTests(GatehouseCase):
    """IPv6 clients count per /64 (one subscriber's block); IPv4-mapped as IPv4."""

    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        cls.http_pp = env.listener("http")
        env.listeners[-1]["proxy_protocol"] = True
        env.start(workers=1, limits={"max_connections_per_client": 2})

    def attempt(self, src, family="TCP6"):
        """A connection from `src` (as the PROXY header says) that asks once and
        stays open: (socket, True) when answered, (None, False) when refused."""
        s = socket.create_connection(("127.0.0.1", self.http_pp), timeout=5)
        dst = "::1" if family == "TCP6" else "127.0.0.1"
        s.sendall(v1(src, dst, family) + b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if data.startswith(b"HTTP/1.1 301 "):
            return s, True
        s.close()
        return None, False

    def test_one_slash64_shares_the_cap(self):
        held = []
        try:
            for src in ("2001:db8:0:0::1", "2001:db8::abcd:2"):
                s, ok = self.attempt(src)
                self.assertTrue(ok, src)
                held.append(s)
            self.assertFalse(self.attempt("2001:db8::ffff:ffff:ffff:3")[1], "same /64: over the cap")
            s, ok = self.attempt("2001:db8:0:1::1")
            self.assertTrue(ok, "another /64 is another client")
            held.append(s)
            s, ok = self.attempt("192.0.2.7", family="TCP4")
            self.assertTrue(ok)
            held.append(s)
            s, ok = self.attempt("::ffff:192.0.2.7")
            self.assertTrue(ok)
            held.append(s)
            self.assertFalse(self.attempt("192.0.2.7", family="TCP4")[1], "IPv4-mapped counts as the IPv4 address")
        finally:
            for s in held:
                s.close()


class PerClientDefaultTests(GatehouseCase):
    """No cap by default: a carrier-grade NAT's visitors share one address."""

    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        cls.http = env.listener("http")
        env.start(workers=1)

    def test_many_connections_from_one_address(self):
        held = []
        try:
            for _ in range(400):      # the old default refused past 256
                held.append(socket.create_connection(("127.0.0.1", self.http), timeout=10))
            for s in held:
                s.sendall(b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
            for s in held:
                self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 301 "))
        finally:
            for s in held:
                s.close()
        self.assertNotIn("per_client_limit", self.env.gatehouse.stderr())


class PendingHeaderCountTests(GatehouseCase):
    """A connection still reading its PROXY header counts in max_connections."""

    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        cls.http_pp = env.listener("http")
        env.listeners[-1]["proxy_protocol"] = True
        env.start(workers=1, limits={"max_connections": 1}, timeouts={"handshake": 10})

    def test_second_connection_waits_while_the_first_sends_no_header(self):
        first = socket.create_connection(("127.0.0.1", self.http_pp), timeout=5)
        time.sleep(0.3)
        second = socket.create_connection(("127.0.0.1", self.http_pp), timeout=5)
        second.sendall(v1("192.0.2.1", family="TCP4") + b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
        second.settimeout(0.7)
        with self.assertRaises(socket.timeout):
            second.recv(4096)     # still in the accept queue
        first.close()
        second.settimeout(5)
        self.assertTrue(second.recv(4096).startswith(b"HTTP/1.1 301 "))
        second.close()
