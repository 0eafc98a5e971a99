#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted bad qcow (v1) images of tests/fuzz/corpus/qcow/.

Each is a small valid qcow (4 KiB clusters, 512-entry L2 tables, 32 KiB of
data, most clusters compressed) with one thing broken: the header sizes and
bits (CVE-2014-0222/0223), the L1 table, L2 and cluster offsets, compressed
cluster sizes, the backing name, encryption, truncation.
Usage: make-qcow-corpus.py [OUTDIR]
"""
import sys
import os

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import roimg  # noqa: E402

img, at = roimg.qcow(roimg.pattern(32 << 10, 13))
plain, pat = roimg.qcow(roimg.pattern(32 << 10, 13), compress=False)
l2 = at["l2"][0]
first = roimg.struct.unpack_from(">Q", img, l2)[0]
P = roimg.patch
cases = {
    "valid": img,
    "valid-plain": plain,
    "bad-magic": P(img, 0, ">I", 0x514649FA),
    "version-2": P(img, 4, ">I", 2),
    "size-zero": P(img, 24, ">Q", 0),
    "size-one": P(img, 24, ">Q", 1),
    "size-huge": P(img, 24, ">Q", (1 << 64) - 1),
    "size-2p62": P(img, 24, ">Q", 1 << 62),
    "cluster-bits-8": P(img, 32, "B", 8),
    "cluster-bits-17": P(img, 32, "B", 17),
    "cluster-bits-63": P(img, 32, "B", 63),
    "l2-bits-5": P(img, 33, "B", 5),
    "l2-bits-14": P(img, 33, "B", 14),
    "l2-bits-60": P(img, 33, "B", 60),
    "crypt-aes": P(img, 36, ">I", 1),
    "crypt-unknown": P(img, 36, ">I", 7),
    "l1-past-eof": P(img, 40, ">Q", 1 << 40),
    "l1-wraps": P(img, 40, ">Q", (1 << 64) - 8),
    "l1-at-end": P(img, 40, ">Q", len(img) - 2),
    "backing-past-eof": P(img, 8, ">QI", 1 << 40, 10),
    "backing-too-long": P(img, 8, ">QI", 48, 5000),
    "backing-wraps": P(img, 8, ">QI", (1 << 64) - 4, 100),
    "l1-entry-past-eof": P(img, 48, ">Q", 1 << 40),
    "l1-entry-at-end": P(img, 48, ">Q", len(img) - 8),
    "l1-entry-unaligned": P(img, 48, ">Q", 8),
    "l2-entry-past-eof": P(img, l2, ">Q", 1 << 40),
    "l2-entry-plain-at-end": P(plain, pat["l2"][0], ">Q", len(plain) - 10),
    "l2-compressed-past-eof": P(img, l2, ">Q", (1 << 63) | (100 << 51) | (1 << 40)),
    "l2-compressed-size-zero": P(img, l2, ">Q", (1 << 63) | (first & ((1 << 51) - 1))),
    "l2-compressed-size-max": P(img, l2, ">Q", (1 << 63) | (4095 << 51) | (first & ((1 << 51) - 1))),
    "l2-compressed-garbage": P(img, l2, ">Q", (1 << 63) | (200 << 51) | 0),
    "l2-all-ones": P(img, l2, ">Q", (1 << 64) - 1),
    "truncated-header": img[:30],
    "truncated-l1": img[:50],
    "truncated-data": img[:len(img) - 3000],
}
roimg.write_corpus("qcow", cases, sys.argv)
