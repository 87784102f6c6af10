#!/usr/bin/env python3
"""Writes the seed inputs of Fuzz/H2Fuzzer.swift into Fuzz/corpus-h2.

Layout (see H2Fuzzer.swift): a control byte, then records
[name length][name][value length][value]; 0xFF as a name length starts the
trailer block. Control bits: 1 small limits, 2 END_STREAM on HEADERS,
4 extended CONNECT enabled, 8 END_STREAM on trailers.
"""
import os

GET = [(":method", "GET"), (":scheme", "https"), (":authority", "app.example.com"), (":path", "/a?b=1")]


def req(method, path="/", authority="app.example.com"):
    return [(":method", method), (":scheme", "https"), (":authority", authority), (":path", path)]


WS = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":path", "/chat"),
      (":authority", "server.example.com")]

SEEDS = {
    "get": (2, GET + [("user-agent", "t/1"), ("accept", "*/*")]),
    "get-small-limits": (3, GET + [("x-a", "1"), ("x-b", "2")]),
    "post-cl": (0, req("POST", "/upload") + [("content-length", "5")]),
    "post-chunked": (0, req("POST", "/upload")),
    "post-empty": (2, req("POST", "/upload")),
    "options-asterisk": (2, req("OPTIONS", "*")),
    "host-only": (2, [(":method", "GET"), (":scheme", "https"), (":path", "/"), ("host", "a.example:8443")]),
    "host-equal": (2, GET + [("host", "APP.example.com")]),
    "host-mismatch": (2, GET + [("host", "admin.other.example")]),
    "cookies": (2, GET + [("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2"), ("cookie", "")]),
    "dropped-fields": (0, req("PUT", "/u") + [("te", "trailers"), ("x-forwarded-for", "6.6.6.6"),
                                              ("x_forwarded_for", "1"), ("expect", "100-continue"),
                                              ("trailer", "x-t"), ("content-length", "3")]),
    "websocket": (4, WS + [("sec-websocket-version", "13"), ("sec-websocket-key", "Y2xpZW50"),
                           ("origin", "https://app.example.com")]),
    "websocket-disabled": (0, WS),
    "plain-connect": (6, [(":method", "CONNECT"), (":authority", "internal:22")]),
    "uppercase": (2, GET + [("Accept", "*/*")]),
    "crlf-injection": (2, GET + [("x-a", "1\r\nhost: evil")]),
    "late-pseudo": (2, GET[:2] + [("accept", "*/*")] + GET[2:]),
    "connection": (2, GET + [("connection", "close")]),
    "absolute-path": (2, req("GET", "https://evil.example/")),
    "userinfo": (2, req("GET", "/", "user@app.example.com")),
    "long-value": (2, GET + [("x-long", "v" * 300)]),
}

TRAILERS = {
    "trailers": (8, req("POST", "/grpc"), [("grpc-status", "0"), ("x-checksum", "abc")]),
    "trailers-pseudo": (8, req("POST", "/grpc"), [(":path", "/admin")]),
    "trailers-no-end-stream": (0, req("POST", "/grpc"), [("x-a", "1")]),
}


def record(name, value):
    n, v = name.encode("latin-1"), value.encode("latin-1")
    out = bytes([len(n)]) + n
    out += bytes([len(v)]) if len(v) < 255 else bytes([255, len(v) >> 8, len(v) & 255])
    return out + v


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus-h2")
    os.makedirs(out, exist_ok=True)
    for name, (control, fields) in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([control]) + b"".join(record(*x) for x in fields))
    for name, (control, fields, trailers) in TRAILERS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([control]) + b"".join(record(*x) for x in fields) + b"\xff"
                    + b"".join(record(*x) for x in trailers))


if __name__ == "__main__":
    main()
