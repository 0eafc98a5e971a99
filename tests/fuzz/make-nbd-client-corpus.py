#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted seeds of tests/fuzz/corpus/nbd-client/ for
tests/fuzz/fuzz-nbd-client.c (see its header for the input layout).

Reply mode: good replies of every kind, then the broken ones the parser must
refuse (chunks past or longer than the request, a 4 GiB chunk, unknown
cookies and types, bad error chunks, short block status).  Handshake mode:
a full fixed newstyle negotiation, an old server without NBD_OPT_GO, an
oldstyle server, and bad block sizes; with TLS asked for, STARTTLS accepted,
refused, answered oddly, and servers that cannot do it.  Re-run after changing the parser:

    python3 tests/fuzz/make-nbd-client-corpus.py tests/fuzz/corpus/nbd-client
"""
import os
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "nbd-client")
SIMPLE, STRUCT = 0x67446698, 0x668E33EF
REP = 0x0003E889045565A9


def simple(cookie, error=0, data=b""):
    return struct.pack(">IIQ", SIMPLE, error, cookie) + data


def chunk(cookie, typ, payload, done=True, length=None):
    return struct.pack(">IHHQI", STRUCT, 1 if done else 0, typ, cookie,
                       len(payload) if length is None else length) + payload


def data(cookie, off, n, done=True):
    return chunk(cookie, 1, struct.pack(">Q", off) + b"\x5a" * n, done)


def hole(cookie, off, n, done=True):
    return chunk(cookie, 2, struct.pack(">QI", off, n), done)


def status(cookie, ctx, length, flags, done=True):
    return chunk(cookie, 5, struct.pack(">III", ctx, length, flags), done)


def err(cookie, e, msg=b"", typ=0x8001, extra=b""):
    return chunk(cookie, typ, struct.pack(">IH", e, len(msg)) + msg + extra)


def optrep(opt, typ, payload=b""):
    return struct.pack(">QIII", REP, opt, typ, len(payload)) + payload


HELLO = struct.pack(">QQH", 0x4E42444D41474943, 0x49484156454F5054, 3)
GO_OK = optrep(7, 3, struct.pack(">HQH", 0, 1 << 20, 0x6D)) + optrep(7, 1)
META_OK = optrep(10, 4, struct.pack(">I", 7) + b"base:allocation") + optrep(10, 1)

seeds = {
    # reply mode, structured + base:allocation = flags 6
    "reply-data-done": b"\x06" + data(0, 0, 4096),
    "reply-data-split": b"\x06" + data(1, 8192, 32768, False) + hole(1, 40960, 32768)
    + chunk(1, 0, b""),
    "reply-hole": b"\x06" + hole(0, 0, 4096),
    "reply-status": b"\x06" + status(2, 7, 65536, 3) + status(2, 7, 1 << 21, 0),
    "reply-status-many": b"\x06" + chunk(2, 5, struct.pack(">IIIII", 7, 4096, 1, 4096, 0)),
    "reply-error": b"\x06" + err(3, 5, b"disk on fire") + err(0, 28, b"", 0x8002,
                                                             struct.pack(">Q", 100)),
    "reply-none": b"\x06" + chunk(4, 0, b"") + chunk(3, 0, b""),
    "reply-simple": b"\x00" + simple(3) + simple(4, 5) + simple(0, 0, b"\x11" * 4096),
    "reply-simple-structured": b"\x06" + simple(0) + simple(3),
    "bad-past": b"\x06" + data(0, 4096, 512),
    "bad-long": b"\x06" + data(0, 0, 8192),
    "bad-wrap": b"\x06" + chunk(0, 1, struct.pack(">Q", (1 << 64) - 8) + b"x" * 16),
    "bad-huge": b"\x06" + chunk(1, 1, struct.pack(">Q", 8192), True, 0xFFFFFFFF),
    "bad-hole-past": b"\x06" + hole(1, 8192, 65537),
    "bad-cookie": b"\x06" + chunk(99, 0, b""),
    "bad-type": b"\x06" + chunk(0, 77, b"abcd"),
    "bad-error-zero": b"\x06" + err(0, 0),
    "bad-error-len": b"\x06" + chunk(0, 0x8001, struct.pack(">IH", 5, 100) + b"x"),
    "bad-status-ctx": b"\x06" + status(2, 8, 4096, 0),
    "bad-status-empty": b"\x06" + status(2, 7, 0, 0),
    "bad-status-short": b"\x06" + chunk(2, 5, struct.pack(">II", 7, 4096)),
    "bad-status-nometa": b"\x02" + status(2, 7, 4096, 0),
    "bad-magic": b"\x06" + b"\xde\xad\xbe\xef" * 4,
    "bad-structured-not-negotiated": b"\x00" + data(0, 0, 4096),
    "bad-read-incomplete": b"\x06" + data(0, 0, 512),
    # handshake mode
    "hs-full": b"\x01" + HELLO + optrep(8, 1) + META_OK + optrep(7, 3, struct.pack(">HIII", 3, 512, 4096, 1 << 25)) + GO_OK,
    "hs-no-go": b"\x01" + HELLO + optrep(8, 0x80000001) + optrep(7, 0x80000001)
    + struct.pack(">QH", 1 << 20, 3) + b"\0" * 124,
    "hs-oldstyle": b"\x01" + struct.pack(">QQQI", 0x4E42444D41474943, 0x00420281861253, 1 << 20, 1) + b"\0" * 124,
    "hs-unknown-export": b"\x01" + HELLO + optrep(8, 1) + optrep(10, 0x80000006) + optrep(7, 0x80000006, b"no such export"),
    "hs-bad-blocksize": b"\x01" + HELLO + optrep(8, 1) + META_OK + optrep(7, 3, struct.pack(">HIII", 3, 3, 4096, 1 << 25)) + GO_OK,
    "hs-bad-size": b"\x01" + HELLO + optrep(8, 1) + META_OK + optrep(7, 3, struct.pack(">HQH", 0, 1 << 63, 1)) + optrep(7, 1),
    "hs-long-reply": b"\x01" + HELLO + struct.pack(">QIII", REP, 8, 1, 0xFFFFFFF0),
    "hs-wrong-context": b"\x01" + HELLO + optrep(8, 1) + optrep(10, 4, struct.pack(">I", 1) + b"qemu:dirty-bitmap:x"),
    # handshake mode with TLS (flag 8): STARTTLS first; the transport's TLS
    # handshake succeeds at once, then the negotiation goes on
    "hs-tls-full": b"\x09" + HELLO + optrep(5, 1) + optrep(8, 1) + META_OK + GO_OK,
    "hs-tls-refused": b"\x09" + HELLO + optrep(5, 0x80000002, b"TLS not configured"),
    "hs-tls-ack-payload": b"\x09" + HELLO + optrep(5, 1, b"xyz"),
    "hs-tls-odd-reply": b"\x09" + HELLO + optrep(5, 3, b"\0\0"),
    "hs-tls-wrong-opt": b"\x09" + HELLO + optrep(7, 1),
    "hs-tls-not-fixed": b"\x09" + struct.pack(">QQH", 0x4E42444D41474943, 0x49484156454F5054, 0),
    "hs-tls-oldstyle": b"\x09" + struct.pack(">QQQI", 0x4E42444D41474943, 0x00420281861253, 1 << 20, 1) + b"\0" * 124,
}

os.makedirs(OUT, exist_ok=True)
for name, blob in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(blob)
