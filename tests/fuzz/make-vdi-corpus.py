#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted bad vdi images of tests/fuzz/corpus/vdi/.

Each image is a small valid VDI (1 MiB blocks, a 3 MiB disk, blocks 0 and 2
allocated, data blocks kept short: reads past the end of the file are
zeroes) with one thing broken: every header field, the block count and
map size, the map and data offsets, map entries, truncation.  The driver
must refuse or read each one cleanly.  Usage: make-vdi-corpus.py [OUTDIR]
"""
import os
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "vdi")
MB = 1 << 20


def image(size=3 * MB, blocks=3, allocated=2, bmap=None, itype=1, obmap=0x200, odata=None,
          block=MB, version=0x00010001, sector=512, mut=None, data=4096):
    bmap = bmap if bmap is not None else [0, 0xFFFFFFFF, 1]
    bmap_bytes = (len(bmap) * 4 + 511) & ~511
    odata = 0x200 + bmap_bytes if odata is None else odata
    h = bytearray(512)
    h[0:36] = b"<<< QEMU VM Virtual Disk Image >>>\n\0"
    struct.pack_into("<IIIII", h, 64, 0xBEDA107F, version, 0x180, itype, 0)
    struct.pack_into("<IIIIIII", h, 340, obmap, odata, 0, 0, 0, sector, 0)
    struct.pack_into("<QIIII", h, 368, size, block, 0, blocks, allocated)
    h[392:408] = bytes(range(1, 17))
    if mut:
        mut(h)
    m = bytearray(bmap_bytes)
    for i, e in enumerate(bmap):
        struct.pack_into("<I", m, 4 * i, e)
    img = bytearray(max(obmap + bmap_bytes, 512) if obmap < 1 << 20 else 512)
    img[0:512] = h
    if obmap < 1 << 20:
        img[obmap:obmap + bmap_bytes] = m
    if odata < 1 << 20:
        img += bytes(max(0, odata - len(img)))
        img[odata:odata + data] = b"\xa0" * data  # the start of data block 0
    return bytes(img)


def setf(fmt, off, val):
    return lambda h: struct.pack_into(fmt, h, off, val)


def cases():
    yield "valid-dynamic", image()
    yield "valid-static", image(itype=2, bmap=[0, 1, 2], allocated=3)
    yield "valid-empty", image(size=0, blocks=0, allocated=0, bmap=[])
    yield "bad-signature", image(mut=setf("<I", 64, 0xBEDA1080))
    yield "version-1-0", image(version=0x00010000)
    yield "version-huge", image(version=0xFFFFFFFF)
    yield "header-size-huge", image(mut=setf("<I", 72, 0xFFFFFFFF))
    yield "type-zero", image(itype=0)
    yield "type-3", image(itype=3)
    yield "type-huge", image(itype=0xFFFFFFFF)
    yield "flags-all", image(mut=setf("<I", 80, 0xFFFFFFFF))
    yield "bmap-offset-unaligned", image(obmap=0x201)
    yield "bmap-offset-zero", image(obmap=0)
    yield "bmap-offset-in-header", image(obmap=0x100 * 2 - 256)
    yield "bmap-offset-past-eof", image(obmap=0x7FFFFE00)
    yield "bmap-offset-max", image(obmap=0xFFFFFE00)
    yield "data-offset-unaligned", image(odata=0x401)
    yield "data-offset-zero", image(odata=0)
    yield "data-offset-on-bmap", image(odata=0x200)
    yield "data-offset-max", image(odata=0xFFFFFE00)
    yield "sector-size-4096", image(sector=4096)
    yield "sector-size-zero", image(sector=0)
    yield "block-size-zero", image(block=0)
    yield "block-size-512", image(block=512)
    yield "block-size-2m", image(block=2 * MB)
    yield "block-size-max", image(block=0xFFFFFFFF)
    yield "disk-size-huge", image(size=0xFFFFFFFFFFFFFFFF)
    yield "disk-size-max-plus", image(size=((0x7FFFFE00 // 4) * MB) + 512)
    yield "disk-size-odd", image(size=3 * MB - 1)
    yield "disk-size-past-blocks", image(size=4 * MB)
    yield "disk-size-zero", image(size=0)
    yield "blocks-zero", image(blocks=0)
    yield "blocks-huge", image(blocks=0xFFFFFFFF)
    yield "blocks-max", image(blocks=(0x80000000 - 512) // 4)
    yield "blocks-max-plus", image(blocks=(0x80000000 - 512) // 4 + 1)
    yield "blocks-past-eof", image(blocks=0x100000, size=3 * MB)
    yield "allocated-huge", image(allocated=0xFFFFFFFF)
    yield "allocated-too-many", image(allocated=3)
    yield "allocated-zero", image(allocated=0)
    yield "uuid-link", image(mut=lambda h: h.__setitem__(slice(424, 440), b"\1" * 16))
    yield "uuid-parent", image(mut=lambda h: h.__setitem__(slice(440, 456), b"\1" * 16))
    yield "entry-huge", image(bmap=[0, 0xFFFFFFFF, 0xFFFFFFFD])
    yield "entry-past-blocks", image(bmap=[0, 0xFFFFFFFF, 7])
    yield "entry-discarded", image(bmap=[0, 0xFFFFFFFE, 1])
    yield "entries-same-block", image(bmap=[0, 0, 0], allocated=3)
    yield "entries-all-unallocated", image(bmap=[0xFFFFFFFF] * 3, allocated=0)
    yield "static-entries-unallocated", image(itype=2, bmap=[0xFFFFFFFF] * 3, allocated=3)
    yield "truncated-in-bmap", image()[:0x202]
    yield "truncated-header", image()[:300]
    yield "signature-only", bytes(64) + struct.pack("<I", 0xBEDA107F)
    yield "empty", b""


def main():
    os.makedirs(OUT, exist_ok=True)
    n = 0
    for name, data in cases():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        n += 1
    print("%d images in %s" % (n, OUT))


main()
