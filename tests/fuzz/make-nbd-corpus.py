#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write tests/fuzz/corpus/nbd/: client byte streams for fuzz-nbd.c.

Each file is what a client sends: the client flags, options, and after GO
or EXPORT_NAME requests.  Seeds cover every option and command, and the
hostile inputs of the NBD CVEs (oversized names and options, garbage,
truncation)."""
import os
import struct
import sys

OPTS_MAGIC = 0x49484156454F5054
REQ_MAGIC = 0x25609513


def opt(o, data=b""):
    return struct.pack(">QII", OPTS_MAGIC, o, len(data)) + data


def s32(b):
    return struct.pack(">I", len(b)) + b


def info(o, name=b"", reqs=(0, 1, 2, 3)):
    return opt(o, s32(name) + struct.pack(">H", len(reqs)) + b"".join(struct.pack(">H", r) for r in reqs))


def meta(o, name, queries):
    return opt(o, s32(name) + struct.pack(">I", len(queries)) + b"".join(s32(q) for q in queries))


def req(t, off=0, ln=0, flags=0, cookie=1, payload=b""):
    return struct.pack(">IHHQQI", REQ_MAGIC, flags, t, cookie, off, ln) + payload


FLAGS = struct.pack(">I", 3)
GO = FLAGS + opt(8) + meta(10, b"", [b"base:allocation", b"qemu:allocation-depth"]) + info(7)
seeds = {
    "list": FLAGS + opt(3) + opt(2),
    "info-go": FLAGS + info(6) + info(6, b"x") + info(7, b"nosuch") + info(7),
    "meta-list": FLAGS + opt(8) + meta(9, b"", []) + meta(9, b"", [b"base:", b"qemu:"]) + opt(2),
    "starttls-unsup": FLAGS + opt(5) + opt(8) + opt(99, b"abc") + opt(3),
    "export-name": FLAGS + opt(1, b"") + req(0, 0, 4096) + req(2),
    "export-name-nozeroes": struct.pack(">I", 1) + opt(1, b"x") + req(0, 512, 512) + req(2),
    "rw": GO + req(1, 0, 512, 0, 2, b"\xab" * 512) + req(0, 0, 4096, 0, 3) + req(1, 4096, 8, 1, 4, b"12345678")
    + req(3) + req(4, 8192, 4096, 1) + req(6, 0, 65536, 2 | 16) + req(6, 0, 4096)
    + req(5, 0, 4096) + req(7, 0, 1 << 20) + req(7, 0, 1 << 20, 8) + req(2),
    "bad-requests": GO + req(0, 1 << 20, 1) + req(0, 0, 64 << 20) + req(99) + req(0, 0, 1, 0x80)
    + req(7, 0, 0) + req(1, (1 << 64) - 512, 512, 0, 5, b"\0" * 512) + req(2),
    "simple-only": FLAGS + info(7) + req(0, 0, 4096) + req(7, 0, 4096) + req(3) + req(2),
    "read-only": FLAGS + opt(8) + info(7, b"x") + req(1, 0, 4, 0, 1, b"abcd") + req(4, 0, 4096) + req(0, 0, 100),
    "long-name": FLAGS + info(7, b"A" * 70000),
    "name-4097": FLAGS + info(6, b"B" * 4097) + opt(3),
    "long-option": FLAGS + opt(10, b"\0" * 200000) + opt(3),
    "option-len-lies": FLAGS + struct.pack(">QII", OPTS_MAGIC, 7, 0xFFFFFFFF) + b"\0" * 64,
    "info-bad-count": FLAGS + opt(7, s32(b"") + struct.pack(">H", 500)),
    "meta-bad-count": FLAGS + opt(8) + opt(10, s32(b"") + struct.pack(">I", 0xFFFFFFFF) + s32(b"base:allocation")),
    "garbage-handshake": b"\xff" * 64,
    "bad-client-flags": struct.pack(">I", 0x80) + opt(3),
    "garbage-requests": GO + b"\x00" * 100,
    "truncated-write": GO + req(1, 0, 1 << 20, 0, 1, b"x" * 1000),
    "write-too-big": GO + req(1, 0, 64 << 20, 0, 1),
    "abort": FLAGS + opt(2) + opt(3),
}

outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "nbd")
os.makedirs(outdir, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(outdir, name), "wb") as f:
        f.write(data)
