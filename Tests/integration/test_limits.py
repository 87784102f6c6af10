"""[limits] max_connections: accepting pauses at the limit (the kernel backlog
holds the rest) and resumes as connections close; nothing is dropped."""

import socket
import ssl
import time

from harness import GatehouseCase, client_context, https_get


class MaxConnectionsTests(GatehouseCase):
    @classmethod
    def setUpEnv(cls, env):
        env.domain("a.toml", ["a.test"], env.backend("A"))
        cls.port = env.listener("https")
        env.start(workers=1, limits={"max_connections": 5})

    def test_accept_pauses_at_the_limit_and_resumes(self):
        time.sleep(0.3)   # the harness's readiness probes have been closed
        ctx = client_context()
        held = [ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.port), timeout=10),
                                server_hostname="a.test") for _ in range(5)]
        # The sixth TCP connection is queued by the kernel, not accepted:
        # its handshake does not complete while five are open.
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        waiting = ctx.wrap_socket(raw, server_hostname="a.test", do_handshake_on_connect=False)
        waiting.settimeout(1.0)
        with self.assertRaises((TimeoutError, socket.timeout, ssl.SSLError)):
            waiting.do_handshake()
        held.pop().close()
        waiting.settimeout(10)
        waiting.do_handshake()   # accepted once one closed
        waiting.sendall(b"GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        self.assertTrue(waiting.recv(100).startswith(b"HTTP/1.1 200"))
        waiting.close()
        for s in held:
            s.close()
        time.sleep(0.3)
        self.assertEqual(https_get(self.port, "a.test").status, 200)
        self.assertTrue(self.env.gatehouse.alive())
