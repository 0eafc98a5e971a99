#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the split-message seeds of tests/fuzz/corpus/vhost-user/: crafted
seeds re-cut so that the back end sees each message in pieces (record bit 4,
see tests/fuzz/fuzz-vhost-user.c, lets it run before a piece is sent).

  split1-NAME     every byte of every message its own record, fds with the
                  first byte
  splitfds-NAME   each message as header, then payload, fds with the
                  payload's last byte
  split-*         a header cut in two then EOF, a huge size in a split header

usage: tests/fuzz/make-vhost-user-split-corpus.py [OUTDIR]
"""

import os
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "corpus", "vhost-user")
SOURCES = ["negotiate", "ring-setup", "need-reply", "inflight", "backend-channel", "packed-ring"]
RUN_FIRST = 16  # record bit 4: the back end runs before the record is sent
HDR = 12


def records(data):
    """The (c, bytes) records of a seed, as the fuzz target reads them."""
    p, out = 0, []
    while len(data) - p >= 3:
        c, ln = data[p], data[p + 1] | data[p + 2] << 8
        p += 3
        if c & 8:
            ln %= 64
        ln = min(ln, len(data) - p)
        out.append((c & 7, data[p:p + ln]))
        p += ln
    return out


def rec(c, b):
    return struct.pack("<BH", c, len(b)) + b


def split1(recs):
    out = b""
    for c, b in recs:
        for i in range(len(b)):
            out += rec((c if i == 0 else 0) | RUN_FIRST, b[i:i + 1])
    return out


def splitfds(recs):
    out = b""
    for c, b in recs:
        if len(b) <= HDR:
            out += rec(c | RUN_FIRST, b)
            continue
        out += rec(RUN_FIRST, b[:HDR])
        if len(b) > HDR + 1:
            out += rec(RUN_FIRST, b[HDR:-1])
        out += rec(c | RUN_FIRST, b[-1:])
    return out


def main():
    for name in SOURCES:
        with open(os.path.join(OUT, name), "rb") as f:
            recs = records(f.read())
        for prefix, fn in (("split1-", split1), ("splitfds-", splitfds)):
            with open(os.path.join(OUT, prefix + name), "wb") as f:
                f.write(fn(recs))
    get_features = struct.pack("<III", 1, 1, 0)
    with open(os.path.join(OUT, "split-header-eof"), "wb") as f:
        f.write(rec(0, get_features) + rec(RUN_FIRST, get_features[:7]))
    huge = struct.pack("<III", 2, 1, 1 << 30)
    with open(os.path.join(OUT, "split-huge-size"), "wb") as f:
        f.write(rec(RUN_FIRST, huge[:9]) + rec(RUN_FIRST, huge[9:]) + rec(RUN_FIRST, bytes(64)))


main()
