#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted bad cloop images of tests/fuzz/corpus/cloop/.

Each is a small valid V2.0 image (4 KiB blocks, 64 KiB) with one thing
broken: the block size (zero, odd, huge: CVE-2014-0144), the block count
(huge, past the file), the offsets (decreasing, huge gaps, past the end:
CVE-2014-0145), the compressed data, truncation.
Usage: make-cloop-corpus.py [OUTDIR]
"""
import sys
import os

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import roimg  # noqa: E402

img, _ = roimg.cloop(roimg.pattern(64 << 10, 23))
n = roimg.struct.unpack_from(">I", img, 132)[0]
o1 = roimg.struct.unpack_from(">Q", img, 144)[0]
P = roimg.patch
cases = {
    "valid": img,
    "block-zero": P(img, 128, ">I", 0),
    "block-odd": P(img, 128, ">I", 1000),
    "block-huge": P(img, 128, ">I", 0xFFFFFE00),
    "block-64m": P(img, 128, ">I", 64 << 20),
    "blocks-huge": P(img, 132, ">I", 0xFFFFFFFF),
    "blocks-max": P(img, 132, ">I", (0xFFFFFFFF - 1) // 8),
    "blocks-past-eof": P(img, 132, ">I", 1 << 20),
    "blocks-zero": P(img, 132, ">I", 0),
    "offset-decreasing": P(img, 144, ">Q", 10),
    "offset-huge-gap": P(img, 144, ">Q", o1 + (200 << 20)),
    "offset-past-eof": P(img, 136 + 8 * n, ">Q", 1 << 40),
    "offset-wraps": P(img, 136 + 8 * n, ">Q", (1 << 64) - 1),
    "offset-first-huge": P(img, 136, ">Q", (1 << 64) - 1),
    "bad-zlib": P(img, o1 + 4, "8s", b"\xff" * 8),
    "truncated-header": img[:130],
    "truncated-offsets": img[:150],
    "truncated-data": img[:len(img) - 500],
}
roimg.write_corpus("cloop", cases, sys.argv)
