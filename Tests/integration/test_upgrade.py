"""Upgrade (WebSocket): a raw two-way tunnel only after the backend's 101;
any other answer keeps HTTP framing and the backend connection is not reused."""

import base64
import hashlib
import os
import ssl

from harness import GatehouseCase, HTTPClient, random_bytes, tls_connect

KEY = base64.b64encode(b"gatehouse-test-k").decode()
ACCEPT = base64.b64encode(hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


def upgrade_request(target="/ws", connection="Upgrade", extra=b""):
    return ("GET %s HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: %s\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (target, connection, KEY)).encode() + extra


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the head: %r" % data)
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        fields.setdefault(k.strip().lower(), []).append(v.strip())
    return lines[0], fields, rest


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(min(65536, n - len(data)))
        if not chunk:
            raise ConnectionError("closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


class UpgradeTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        cls.port = env.listener("https")
        env.start(workers=1)

    def test_websocket_tunnel_carries_bytes_both_ways(self):
        with tls_connect(self.port, "a.test") as s:
            s.settimeout(20)
            s.sendall(upgrade_request())
            status, fields, rest = read_head(s)
            self.assertEqual(status, "HTTP/1.1 101 Switching Protocols")
            self.assertEqual(fields["upgrade"], ["websocket"])
            self.assertEqual(fields["connection"], ["upgrade"])
            self.assertEqual(fields["sec-websocket-accept"], [ACCEPT])
            self.assertEqual(fields["x-seen-connection"], ["upgrade"], "the backend got Connection: upgrade")
            self.assertIn("strict-transport-security", fields)
            self.assertEqual(rest, b"")
            s.sendall(b"hello")
            self.assertEqual(recv_exactly(s, 5), b"hello")
            # 4 MiB through the echo with up to 1 MiB in flight: backpressure in
            # both directions. One thread: an SSL object must not be read and
            # written from two threads at once.
            blob = random_bytes(4 * 1024 * 1024, seed=7)
            sent, got = 0, bytearray()
            while len(got) < len(blob):
                if sent < len(blob) and sent - len(got) < 1024 * 1024:
                    s.sendall(blob[sent:sent + 65536])
                    sent = min(len(blob), sent + 65536)
                    s.settimeout(0.001)
                else:
                    s.settimeout(20)
                try:
                    chunk = s.recv(262144)
                except (TimeoutError, ssl.SSLWantReadError):
                    continue
                if not chunk:
                    raise ConnectionError("closed after %d of %d bytes" % (len(got), len(blob)))
                got += chunk
            s.settimeout(20)
            self.assertEqual(hashlib.sha256(bytes(got)).hexdigest(), hashlib.sha256(blob).hexdigest())

    def test_backend_closing_the_tunnel_closes_the_client(self):
        with tls_connect(self.port, "a.test") as s:
            s.settimeout(10)
            s.sendall(upgrade_request())
            self.assertEqual(read_head(s)[0], "HTTP/1.1 101 Switching Protocols")
            s.sendall(b"close-from-backend")
            self.assertEqual(s.recv(100), b"")

    def test_refused_upgrade_keeps_http_and_does_not_reuse_backend(self):
        with HTTPClient.tls(self.port, "a.test") as c:
            c.send(upgrade_request("/ws?refuse"))
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, b"upgrade refused\n"))
            first = r.get("x-backend-conn")
            r = c.request("GET", "/echo", [("Host", "a.test")])
            self.assertEqual(r.status, 200)
            self.assertNotEqual(r.get("x-backend-conn"), first,
                                "the connection of a refused upgrade must not go back to the pool")

    def test_upgrade_without_connection_token_is_plain_http(self):
        # RFC 9110 §7.8: Upgrade without "upgrade" in Connection is not a request
        # to switch; the hop-by-hop Upgrade field is dropped.
        with HTTPClient.tls(self.port, "a.test") as c:
            c.send(upgrade_request(connection="keep-alive"))
            r = c.read_response()
            self.assertEqual(r.status, 426)
