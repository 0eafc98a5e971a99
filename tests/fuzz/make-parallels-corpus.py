#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted bad parallels images of tests/fuzz/corpus/parallels/.

Each is a small valid image (both magics; 8-sector clusters, 32 KiB) with
one thing broken: the version, tracks (zero, huge: CVE-2014-0142), the BAT
size (CVE-2014-0143/0144) and entries, the disk size, truncation.
Usage: make-parallels-corpus.py [OUTDIR]
"""
import sys
import os

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import roimg  # noqa: E402

d = roimg.pattern(32 << 10, 17)
img, _ = roimg.parallels(d)
old, _ = roimg.parallels(d, ext=False)
P = roimg.patch
cases = {
    "valid": img,
    "valid-old": old,
    "bad-magic": P(img, 0, "16s", b"WithoutFreeSpacX"),
    "version-3": P(img, 16, "<I", 3),
    "tracks-zero": P(img, 28, "<I", 0),
    "tracks-huge": P(img, 28, "<I", 0x7FFFFFFF),
    "tracks-max-ok": P(img, 28, "<I", 0x7FFFFFFF // 513),
    "old-tracks-huge": P(old, 28, "<I", 0x3FFFFF),
    "bat-huge": P(img, 32, "<I", 0xFFFFFFFF),
    "bat-past-eof": P(img, 32, "<I", 1 << 24),
    "bat-zero": P(img, 32, "<I", 0),
    "size-huge": P(img, 36, "<Q", (1 << 64) - 1),
    "size-past-bat": P(img, 36, "<Q", 1 << 30),
    "inuse": P(img, 44, "<I", 0x746F6E59),
    "data-off-huge": P(img, 48, "<I", 0xFFFFFFFF),
    "bat-entry-past-eof": P(img, 64, "<I", 0x100000),
    "bat-entry-max": P(img, 64, "<I", 0xFFFFFFFF),
    "old-bat-entry-max": P(old, 64, "<I", 0xFFFFFFFF),
    "bat-entry-on-header": P(img, 64, "<I", 1),
    "truncated-header": img[:40],
    "truncated-bat": img[:70],
    "truncated-data": img[:len(img) - 3000],
}
roimg.write_corpus("parallels", cases, sys.argv)
