#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted bad bochs images of tests/fuzz/corpus/bochs/.

Each is a small valid growing redolog (v1 or v2, 4 KiB extents, 32 KiB)
with one thing broken: the strings, version, catalog size (CVE-2014-0147:
huge, too small for the disk), extent size (zero, not a power of two, huge:
CVE-2014-0148), bitmap size, catalog offset and entries, truncation.
Usage: make-bochs-corpus.py [OUTDIR]
"""
import sys
import os

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import roimg  # noqa: E402

d = roimg.pattern(32 << 10, 19)
img, _ = roimg.bochs(d)
v1, _ = roimg.bochs(d, version=1)
P = roimg.patch
cases = {
    "valid": img,
    "valid-v1": v1,
    "magic-no-nul": P(img, 22, "B", 0x41),
    "subtype-undoable": P(img, 48, "9s", b"Undoable\0"),
    "version-3": P(img, 64, "<I", 0x30000),
    "header-past-eof": P(img, 68, "<I", 0xFFFFFFF0),
    "catalog-huge": P(img, 72, "<I", 0xFFFFFFFF),
    "catalog-1m-past-eof": P(img, 72, "<I", 0x100000),
    "catalog-too-small": P(img, 72, "<I", 1),
    "bitmap-zero": P(img, 76, "<I", 0),
    "bitmap-huge": P(img, 76, "<I", 0xFFFFFFFF),
    "extent-zero": P(img, 80, "<I", 0),
    "extent-not-pow2": P(img, 80, "<I", 5000),
    "extent-huge": P(img, 80, "<I", 1 << 31),
    "extent-8m": P(img, 80, "<I", 1 << 23),
    "disk-huge": P(img, 88, "<Q", (1 << 64) - 1),
    "disk-past-catalog": P(img, 88, "<Q", 1 << 40),
    "v1-disk-huge": P(v1, 84, "<Q", (1 << 63)),
    "catalog-entry-huge": P(img, 512, "<I", 0xFFFFFFFE),
    "catalog-entry-past-eof": P(img, 512, "<I", 0x10000),
    "truncated-header": img[:300],
    "truncated-catalog": img[:520],
    "truncated-data": img[:len(img) - 3000],
}
roimg.write_corpus("bochs", cases, sys.argv)
