#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted bad qed images of tests/fuzz/corpus/qed/.

Each is a small valid QED (4 KiB clusters, 2-cluster tables, 32 KiB of
data) with one thing broken: every header field, the L1 and L2 offsets,
data cluster offsets, the backing name, truncation.  The driver must refuse
or read and write each one cleanly.  Usage: make-qed-corpus.py [OUTDIR]
"""
import sys
import os

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import roimg  # noqa: E402

img, at = roimg.qed(roimg.pattern(32 << 10, 11))
l2 = at["l2"][0]
P = roimg.patch
cases = {
    "valid": img,
    "bad-magic": P(img, 0, "<I", 0x00444552),
    "cluster-zero": P(img, 4, "<I", 0),
    "cluster-not-pow2": P(img, 4, "<I", 12288),
    "cluster-huge": P(img, 4, "<I", 1 << 31),
    "cluster-64m-table-16": P(img, 4, "<II", 64 << 20, 16),
    "table-zero": P(img, 8, "<I", 0),
    "table-3": P(img, 8, "<I", 3),
    "table-huge": P(img, 8, "<I", 1 << 30),
    "header-size-zero": P(img, 12, "<I", 0),
    "header-size-huge": P(img, 12, "<I", 0xFFFFFFFF),
    "unknown-feature": P(img, 16, "<Q", 1 << 5),
    "need-check": P(img, 16, "<Q", 2),
    "autoclear": P(img, 32, "<Q", 1 << 63),
    "l1-unaligned": P(img, 40, "<Q", 4097),
    "l1-in-header": P(img, 40, "<Q", 0),
    "l1-past-eof": P(img, 40, "<Q", 1 << 40),
    "l1-at-last-cluster": P(img, 40, "<Q", len(img) - 4096),
    "l1-wraps": P(img, 40, "<Q", (1 << 64) - 4096),
    "size-unaligned": P(img, 48, "<Q", 1000),
    "size-huge": P(img, 48, "<Q", 1 << 62),
    "size-max": P(img, 48, "<Q", (1 << 64) - 512),
    "backing-no-name": P(img, 16, "<Q", 1),
    "backing-name-past-header": P(P(img, 16, "<Q", 1), 56, "<II", 4000, 200),
    "backing-name-wraps": P(P(img, 16, "<Q", 1), 56, "<II", 0xFFFFFFF0, 0x20),
    "backing-name-in-header": P(P(img, 16, "<Q", 1), 56, "<II", 0, 8),
    "l1-entry-past-eof": P(img, 4096, "<Q", 1 << 40),
    "l1-entry-unaligned": P(img, 4096, "<Q", l2 + 8),
    "l1-entry-to-header": P(img, 4096, "<Q", 0),
    "l1-entry-to-l1": P(img, 4096, "<Q", 4096),
    "l1-entry-last-cluster": P(img, 4096, "<Q", len(img) - 4096),
    "l2-entry-past-eof": P(img, l2, "<Q", 1 << 40),
    "l2-entry-unaligned": P(img, l2, "<Q", l2 + 100),
    "l2-entry-header": P(img, l2, "<Q", 512),
    "l2-entry-on-l1": P(img, l2, "<Q", 4096),
    "l2-entry-on-l2": P(img, l2, "<Q", l2),
    "l2-entry-zero-cluster": P(img, l2, "<Q", 1),
    "l2-entries-duplicate": P(img, l2 + 8, "<Q", roimg.struct.unpack_from("<Q", img, l2)[0]),
    "truncated-header": img[:40],
    "truncated-l1": img[:4096 + 100],
    "truncated-l2": img[:l2 + 100],
    "truncated-data": img[:len(img) - 6000],
}
roimg.write_corpus("qed", cases, sys.argv)
