"""HTTP/2 frame by frame for the integration tests: RFC 9113 frame types, flags and
error codes, HPACK literals by hand (RFC 7541) and `Wire`, a client that sends
whatever it is given and records every frame it receives. For what the h2 library
refuses to do: hostile frames, reading a stream's response after GOAWAY."""

import socket
import ssl
import time

import hpack

from harness import SocketClient, client_context

# RFC 9113 §6 frame types, flags, §7 error codes, §6.5.2 settings.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x7, 0x8, 0x9, 0xb
ERROR_NAMES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
               4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
               8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
               12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE = 0x1, 0x3, 0x4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

def error_name(code):
    return "%s (0x%x)" % (ERROR_NAMES.get(code, "?"), code)



# --------------------------------------------------------------------------- HPACK by hand

def hpack_int(value, prefix_bits, first=0):
    """RFC 7541 §5.1 integer with an N-bit prefix; `first` holds the pattern bits."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([first | value])
    out = bytearray([first | top])
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(s):
    """A string literal without Huffman coding (§5.2): any byte goes, CR, LF and NUL too."""
    s = s.encode("latin-1") if isinstance(s, str) else s
    return hpack_int(len(s), 7) + s


def hpack_literal(name, value, index=False):
    """A literal field with a new name (§6.2.1 with incremental indexing, else §6.2.2)."""
    return (b"\x40" if index else b"\x00") + hpack_str(name) + hpack_str(value)


def hpack_indexed(i):
    """An indexed field (§6.1); 62 is the newest dynamic table entry."""
    return hpack_int(i, 7, 0x80)


def hpack_request(path, authority="a.test", method=b"\x82"):
    """A request's pseudo-headers without touching the dynamic table: :method GET (static 2),
    :scheme https (static 7), :path and :authority as literals with indexed names."""
    return (method + b"\x87" + hpack_int(4, 4) + hpack_str(path) + hpack_int(1, 4) + hpack_str(authority))


# --------------------------------------------------------------------------- raw frames

def frame(ftype, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def settings_frame(entries=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big")
                                                          for k, v in entries))


def rst_frame(sid, code=CANCEL):
    return frame(RST_STREAM, 0, sid, code.to_bytes(4, "big"))


def window_update_frame(sid, increment):
    return frame(WINDOW_UPDATE, 0, sid, increment.to_bytes(4, "big"))


def ping_frame(opaque=b"12345678", ack=False):
    return frame(PING, ACK if ack else 0, 0, opaque)


class Wire(SocketClient):
    """One TLS connection speaking HTTP/2 frame by frame: sends whatever it is given
    (nothing is validated), records every frame received as (type, flags, stream,
    payload), decodes response header blocks, ACKs the server's SETTINGS unless
    told not to. Sends that fail (the peer closed or stopped reading) are recorded
    in `send_error`, never raised."""

    def __init__(self, port, sni="a.test", settings=(), timeout=10, auto_ack=True):
        ctx = client_context()
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=sni)
        if self.sock.selected_alpn_protocol() != "h2":
            raise AssertionError("ALPN chose %r, not h2" % self.sock.selected_alpn_protocol())
        self.timeout = timeout
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.decoder.max_allowed_table_size = 1 << 16
        self.auto_ack = auto_ack
        self.buf = b""
        self.frames = []
        self.closed = False
        self.send_error = None
        self.bytes_sent = 0
        self.send(PREFACE + settings_frame(settings))

    # -- sending
    def send(self, data):
        if self.send_error is not None:
            return False
        try:
            self.sock.sendall(data)
            self.bytes_sent += len(data)
            return True
        except (OSError, ssl.SSLError) as e:   # socket.timeout is an OSError
            self.send_error = e
            return False

    def encode(self, fields):
        return self.encoder.encode(fields)

    def headers(self, sid, fields, end_stream=True, end_headers=True, block=None, send=True):
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        f = frame(HEADERS, flags, sid, self.encode(fields) if block is None else block)
        return self.send(f) if send else f

    def data(self, sid, payload, end_stream=True, send=True):
        f = frame(DATA, END_STREAM if end_stream else 0, sid, payload)
        return self.send(f) if send else f

    def request(self, sid, path, authority="a.test", method="GET", extra=(), end_stream=True, send=True):
        fields = [(":method", method), (":scheme", "https"), (":authority", authority), (":path", path)]
        return self.headers(sid, fields + list(extra), end_stream=end_stream, send=send)

    def settle(self):
        """Reads the server's SETTINGS and its ACK of ours, then stops ACKing: a test
        that sends a header block in pieces must not have an ACK land in the middle
        (RFC 9113 §6.10: only CONTINUATION may follow)."""
        self.read(lambda w: any(f[0] == SETTINGS and not f[1] & ACK for f in w.frames)
                  and any(f[0] == SETTINGS and f[1] & ACK for f in w.frames), timeout=3)
        self.auto_ack = False

    # -- receiving
    def read(self, until=lambda w: False, timeout=None):
        """Reads frames until `until(self)`, the peer closes, or `timeout` seconds.
        Returns until(self)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not until(self) and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                self.sock.settimeout(min(left, 0.5))
                data = self.sock.recv(1 << 16)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                break
            self.buf += data
            self._parse()
        try:
            self.sock.settimeout(self.timeout)
        except OSError:
            pass
        return until(self)

    def drain(self, quiet=0.3, limit=5.0):
        """Reads until nothing arrived for `quiet` seconds (or `limit` in all)."""
        end = time.monotonic() + limit
        while not self.closed and time.monotonic() < end:
            n = len(self.frames)
            self.read(timeout=quiet)
            if len(self.frames) == n:
                return

    def _parse(self):
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                return
            ftype, flags = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = self.buf[9:9 + n]
            self.buf = self.buf[9 + n:]
            if ftype == SETTINGS and not flags & ACK and self.auto_ack:
                self.send(settings_frame(ack=True))
            if ftype == HEADERS:
                block = payload
                if flags & 0x8:   # PADDED
                    block = block[1:len(block) - block[0]]
                if flags & 0x20:  # PRIORITY
                    block = block[5:]
                try:
                    payload = [(k.decode("latin-1") if isinstance(k, bytes) else k,
                                v.decode("latin-1") if isinstance(v, bytes) else v)
                               for k, v in self.decoder.decode(block)]
                except Exception as e:   # noqa: BLE001 (recorded, the test decides)
                    payload = [("x-undecodable", repr(e))]
            self.frames.append((ftype, flags, sid, payload))

    # -- what arrived
    def of(self, sid, ftype=None):
        return [f for f in self.frames if f[2] == sid and (ftype is None or f[0] == ftype)]

    def status(self, sid):
        for (t, _, s, p) in self.frames:
            if t == HEADERS and s == sid:
                st = dict(p).get(":status")
                if st and not st.startswith("1"):
                    return int(st)
        return None

    def server_settings(self):
        """The server's SETTINGS as {id: value}."""
        out = {}
        for (t, f, _, p) in self.frames:
            if t == SETTINGS and not f & ACK:
                for i in range(0, len(p), 6):
                    out[int.from_bytes(p[i:i + 2], "big")] = int.from_bytes(p[i + 2:i + 6], "big")
        return out

    def response_headers(self, sid):
        for (t, _, s, p) in self.frames:
            if t == HEADERS and s == sid and not dict(p).get(":status", "1").startswith("1"):
                return p
        return None

    def body(self, sid):
        return b"".join(p for (t, _, s, p) in self.frames if t == DATA and s == sid)

    def ended(self, sid):
        return any(s == sid and t in (DATA, HEADERS) and f & END_STREAM for (t, f, s, _) in self.frames)

    def rst_codes(self, sid):
        return [int.from_bytes(p[:4], "big") for (t, _, s, p) in self.frames if t == RST_STREAM and s == sid]

    def finished(self, sid):
        """The stream got END_STREAM or RST_STREAM (or the connection went)."""
        return self.ended(sid) or bool(self.rst_codes(sid))

    def goaways(self):
        """[(last_stream_id, error_code, debug)]"""
        return [(int.from_bytes(p[:4], "big") & 0x7FFFFFFF, int.from_bytes(p[4:8], "big"), bytes(p[8:]))
                for (t, _, _, p) in self.frames if t == GOAWAY]

    def count(self, ftype):
        return sum(1 for f in self.frames if f[0] == ftype)

    def summary(self, sid=None, limit=12):
        kinds = {}
        for (t, _, _, _) in self.frames:
            kinds[t] = kinds.get(t, 0) + 1
        names = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
                 "WINDOW_UPDATE", "CONTINUATION"]
        out = "frames %s; goaway %s; closed=%s; send_error=%r" % (
            {names[k] if k < len(names) else k: v for k, v in sorted(kinds.items())},
            [(l, error_name(c), d[:80]) for (l, c, d) in self.goaways()], self.closed, self.send_error)
        if sid is not None:
            out += "; stream %d: status=%s rst=%s ended=%s body=%d B" % (
                sid, self.status(sid), [error_name(c) for c in self.rst_codes(sid)], self.ended(sid),
                len(self.body(sid)))
        return out


