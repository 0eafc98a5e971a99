#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted bad dmg images of tests/fuzz/corpus/dmg/.

Each is a small valid UDIF image (zlib, bzip2, raw and zero chunks; tables
in an XML plist or a resource fork) with one thing broken: the koly trailer
offsets (data fork, resource fork, plist), the sector count, the mish block
(chunk counts, sector counts and lengths past QEMU's limits: CVE-2014-0145
/0146, offsets past the file or wrapping), chunk types (lzfse, unknown),
compressed data, base64, truncation.  Usage: make-dmg-corpus.py [OUTDIR]
"""
import sys
import os

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import roimg  # noqa: E402

d = roimg.pattern(32 << 10, 29)
kinds = (roimg.UDZO, roimg.UDBZ, roimg.UDRW, roimg.UDZE)
plist, pa = roimg.dmg(d, kinds=kinds)
rsrc, ra = roimg.dmg(d, plist=False, kinds=kinds)
k, t = ra["koly"], ra["table"]
c0 = t + 204  # first chunk entry of the resource fork's mish block
P = roimg.patch
cases = {
    "valid-plist": plist,
    "valid-rsrc": rsrc,
    "no-koly": rsrc[:-512] + bytes(512),
    "tiny": b"koly",
    "data-fork-past-koly": P(rsrc, k + 0x18, ">Q", 1 << 40),
    "rsrc-past-koly": P(rsrc, k + 0x28, ">Q", 1 << 40),
    "rsrc-len-huge": P(rsrc, k + 0x30, ">Q", (1 << 64) - 1),
    "rsrc-header-bad": P(rsrc, ra["koly"] - (ra["koly"] - ra["fork"]), ">I", 0xFFFFFFFF),
    "rsrc-data-len-zero": P(rsrc, ra["fork"] + 8, ">I", 0),
    "rsrc-resource-len-huge": P(rsrc, t - 4, ">I", 0xFFFFFFFF),
    "rsrc-resource-len-zero": P(rsrc, t - 4, ">I", 0),
    "plist-past-koly": P(plist, pa["koly"] + 0xD8, ">Q", 1 << 40),
    "plist-len-huge": P(plist, pa["koly"] + 0xE0, ">Q", (1 << 64) - 1),
    "plist-unterminated": plist.replace(b"</data>", b"</dat>"),
    "plist-bad-base64": plist.replace(b"<data>\n", b"<data>\n!!!!@@@@"),
    "no-tables": P(P(rsrc, k + 0x30, ">Q", 0), k + 0xE0, ">Q", 0),
    "sectors-huge": P(rsrc, k + 0x1EC, ">Q", (1 << 64) - 1),
    "sectors-past-chunks": P(rsrc, k + 0x1EC, ">Q", 1 << 30),
    "mish-short": P(rsrc, t - 4, ">I", 100),
    "chunk-count-huge": P(rsrc, t + 0x10, ">Q", 1 << 62),
    "chunk-sectors-over-max": P(rsrc, c0 + 0x10, ">Q", (64 << 20) // 512 + 1),
    "chunk-length-over-max": P(rsrc, c0 + 0x20, ">Q", (64 << 20) + 1),
    "chunk-offset-past-eof": P(rsrc, c0 + 0x18, ">Q", 1 << 40),
    "chunk-offset-wraps": P(rsrc, c0 + 0x18, ">Q", (1 << 64) - 16),
    "chunk-sector-wraps": P(rsrc, c0 + 8, ">Q", (1 << 64) - 1),
    "mish-sector-base-huge": P(rsrc, t + 8, ">Q", 1 << 62),
    "mish-data-offset-wraps": P(rsrc, t + 0x18, ">Q", (1 << 64) - 1),
    "chunk-lzfse": P(rsrc, c0, ">I", 0x80000007),
    "chunk-adc": P(rsrc, c0, ">I", 0x80000004),
    "chunk-zlib-is-bz2": P(rsrc, c0 + 40, ">I", 0x80000005),
    "chunk-raw-short": P(rsrc, c0 + 80 + 0x20, ">Q", 10),
    "chunk-zeroes-huge": P(P(rsrc, c0 + 120, ">I", 0), c0 + 120 + 0x10, ">Q", 1 << 40),
    "chunks-overlap": P(rsrc, c0 + 40 + 8, ">Q", 0),
    "bad-zlib": P(rsrc, 2, "8s", b"\xff" * 8),
    "truncated-trailer": rsrc[:-100],
    "no-chunks": P(rsrc, t, ">I", 0x6D697369),
}
roimg.write_corpus("dmg", cases, sys.argv)
