#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted bad vpc (VHD) images of tests/fuzz/corpus/vpc/.

Each image is a small valid VHD (dynamic: 4 KiB blocks, 64 KiB disk, two
blocks allocated; or fixed: 64 KiB) with one thing broken: every footer and
dynamic-header field, the BAT size and offset, BAT entries, truncation.  The
checksums are recomputed after the damage (unless the damage is the
checksum), so the driver meets the damage itself.  The driver must refuse or
read each one cleanly.  Usage: make-vpc-corpus.py [OUTDIR]
"""
import os
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "vpc")


def csum(buf, off):
    s = sum(b for i, b in enumerate(buf) if not off <= i < off + 4)
    return (~s) & 0xFFFFFFFF


def footer(size=64 << 10, dtype=3, data_offset=512, app=b"qemu", chs=None):
    f = bytearray(512)
    f[0:8] = b"conectix"
    struct.pack_into(">IIQI", f, 8, 2, 0x10000, data_offset, 0)
    f[28:32] = app
    struct.pack_into(">HH", f, 32, 5, 3)
    f[36:40] = b"Wi2k"
    c, h, s = chs or (size // 512 // (4 * 17) + 1, 4, 17)
    struct.pack_into(">QQHBBI", f, 40, size, size, c, h, s, dtype)
    f[68:84] = bytes(range(16))
    return f


def fix_footer(f):
    struct.pack_into(">I", f, 64, csum(f, 64))
    return f


def dyn(size=64 << 10, block=4096, entries=None, bat_off=1536, data_offset=512, app=b"qem2",
        foot=None, hdr_mut=None, foot_mut=None, bat=None, tail=True):
    entries = (size + block - 1) // block if entries is None else entries
    bitmap = ((block // 4096) + 511) & ~511
    f = foot or footer(size, 3, data_offset, app)
    if foot_mut:
        foot_mut(f)
    fix_footer(f)
    h = bytearray(1024)
    h[0:8] = b"cxsparse"
    struct.pack_into(">QQIII", h, 8, 0xFFFFFFFFFFFFFFFF, bat_off, 0x10000, entries, block)
    if hdr_mut:
        hdr_mut(h)
    struct.pack_into(">I", h, 36, csum(h, 36))
    nbat = min(entries, 4096)
    batb = bytearray(b"\xff" * ((nbat * 4 + 511) & ~511))
    end = 1536 + len(batb)
    blocks = bat if bat is not None else [0, 5]
    img = bytearray(end)
    for i, idx in enumerate(blocks):
        if idx is None or idx >= nbat:
            continue
        sec = (end + i * (bitmap + block)) // 512
        struct.pack_into(">I", batb, idx * 4, sec)
    data_end = end + len([b for b in blocks if b is not None]) * (bitmap + block)
    img = bytearray(data_end)
    img[0:512] = f
    img[data_offset:data_offset + 1024] = h if data_offset + 1024 <= len(img) else img[data_offset:data_offset + 1024]
    img[bat_off:bat_off + len(batb)] = batb if bat_off + len(batb) <= len(img) else img[bat_off:bat_off + len(batb)]
    for i in range(len(blocks)):
        o = end + i * (bitmap + block)
        img[o:o + bitmap] = b"\xff" * bitmap
        img[o + bitmap:o + bitmap + block] = bytes([0xA0 + i]) * block
    if tail:
        img += f
    return bytes(img)


def fixed(size=64 << 10, mut=None, data=None):
    f = footer(size, 2, 0xFFFFFFFFFFFFFFFF, b"qem2")
    if mut:
        mut(f)
    fix_footer(f)
    return (data if data is not None else bytes([0x11]) * size) + bytes(f)


def setf(fmt, off, val):
    return lambda b: struct.pack_into(fmt, b, off, val)


def cases():
    yield "valid-dynamic", dyn()
    yield "valid-fixed", fixed()
    yield "chs-larger-than-table", dyn(app=b"vpc ")
    yield "valid-no-tail-footer", dyn(tail=False)
    # Footer fields.
    yield "bad-cookie", dyn(foot_mut=lambda f: f.__setitem__(slice(0, 8), b"conectiy"))
    d = bytearray(dyn())
    d[64] ^= 1
    yield "bad-checksum", bytes(d)
    yield "type-differencing", dyn(foot_mut=setf(">I", 60, 4))
    yield "type-zero", dyn(foot_mut=setf(">I", 60, 0))
    yield "type-huge", dyn(foot_mut=setf(">I", 60, 0xFFFFFFFF))
    yield "data-offset-huge", dyn(foot_mut=setf(">Q", 16, 0xFFFFFFFFFFFFFE00))
    yield "data-offset-past-eof", dyn(foot_mut=setf(">Q", 16, 1 << 40))
    yield "data-offset-unaligned", dyn(foot_mut=setf(">Q", 16, 513))
    yield "data-offset-zero", dyn(foot_mut=setf(">Q", 16, 0))
    yield "data-offset-int64-wrap", dyn(foot_mut=setf(">Q", 16, (1 << 63) + 512))
    yield "current-size-huge", dyn(foot_mut=setf(">Q", 48, 0xFFFFFFFFFFFFFFFF))
    yield "current-size-2041g", dyn(foot_mut=setf(">Q", 48, 2041 << 30))
    yield "current-size-odd", dyn(foot_mut=setf(">Q", 48, (64 << 10) + 1))
    yield "current-size-zero", dyn(foot_mut=setf(">Q", 48, 0))
    yield "chs-max-geometry", dyn(app=b"vpc ", foot_mut=lambda f: struct.pack_into(">HBB", f, 56, 65535, 16, 255))
    yield "chs-huge", dyn(app=b"vpc ", foot_mut=lambda f: struct.pack_into(">HBB", f, 56, 65535, 255, 255))
    yield "chs-zero", dyn(app=b"vpc ", foot_mut=lambda f: struct.pack_into(">HBB", f, 56, 0, 0, 0))
    yield "creator-d2v-huge", dyn(app=b"d2v ", foot_mut=setf(">Q", 48, 1 << 62))
    # Dynamic header fields.
    yield "hdr-bad-cookie", dyn(hdr_mut=lambda h: h.__setitem__(slice(0, 8), b"cxsparsf"))
    yield "block-size-zero", dyn(hdr_mut=setf(">I", 32, 0))
    yield "block-size-256", dyn(hdr_mut=setf(">I", 32, 256))
    yield "block-size-not-pow2", dyn(hdr_mut=setf(">I", 32, 4097))
    yield "block-size-2g", dyn(hdr_mut=setf(">I", 32, 1 << 31))
    yield "block-size-max", dyn(hdr_mut=setf(">I", 32, 0xFFFFFFFF))
    yield "block-size-512", dyn(hdr_mut=setf(">I", 32, 512))
    yield "entries-zero", dyn(hdr_mut=setf(">I", 28, 0))
    yield "entries-too-few", dyn(hdr_mut=setf(">I", 28, 3))
    yield "entries-huge", dyn(hdr_mut=setf(">I", 28, 0xFFFFFFFF))
    yield "entries-int-max-div4", dyn(hdr_mut=setf(">I", 28, 0x1FFFFFFF))
    yield "entries-past-eof", dyn(hdr_mut=setf(">I", 28, 0x100000))
    yield "bat-offset-huge", dyn(hdr_mut=setf(">Q", 16, 0xFFFFFFFFFFFFFFFF))
    yield "bat-offset-past-eof", dyn(hdr_mut=setf(">Q", 16, 1 << 30))
    yield "bat-offset-zero", dyn(hdr_mut=setf(">Q", 16, 0))
    yield "bat-offset-unaligned", dyn(hdr_mut=setf(">Q", 16, 1537))
    yield "bat-offset-wrap", dyn(hdr_mut=setf(">Q", 16, (1 << 64) - 4))
    # BAT entries.
    yield "bat-entry-past-eof", dyn(bat=[0], hdr_mut=None)[:0] + _patch_bat(dyn(), 1, 0x7FFFFFFF)
    yield "bat-entry-max-minus-1", _patch_bat(dyn(), 1, 0xFFFFFFFE)
    yield "bat-entry-zero", _patch_bat(dyn(), 1, 0)
    yield "bat-entry-on-header", _patch_bat(dyn(), 1, 1)
    yield "bat-entry-on-bat", _patch_bat(dyn(), 1, 3)
    yield "bat-entries-same-block", _patch_bat(dyn(), 1, _bat_entry(dyn(), 0))
    yield "bat-entry-in-tail-footer", _patch_bat(dyn(), 1, len(dyn()) // 512 - 1)
    yield "truncated-before-data", dyn()[:4096]
    yield "truncated-footer-copy-only", dyn()[:512]
    yield "truncated-header", dyn()[:1000]
    # Fixed.
    yield "fixed-size-past-file", fixed(mut=setf(">Q", 48, 1 << 30), size=64 << 10)
    yield "fixed-chs-past-file", fixed(mut=lambda f: (f.__setitem__(slice(28, 32), b"vpc "), struct.pack_into(">HBB", f, 56, 60000, 16, 63)))
    yield "fixed-size-huge", fixed(mut=setf(">Q", 48, 0xFFFFFFFFFFFFFFFF))
    yield "fixed-type-dynamic-at-end", fixed(mut=setf(">I", 60, 3))
    yield "fixed-bad-checksum", fixed()[:-448] + b"\x00" * 4 + fixed()[-444:]
    yield "fixed-short", fixed()[-300:]
    yield "fixed-only-footer", fixed(size=0, data=b"")
    yield "empty", b""
    yield "cookie-only", b"conectix"


def _bat_entry(img, idx):
    return struct.unpack_from(">I", img, 1536 + 4 * idx)[0]


def _patch_bat(img, idx, val):
    b = bytearray(img)
    struct.pack_into(">I", b, 1536 + 4 * idx, val)
    return bytes(b)


def main():
    os.makedirs(OUT, exist_ok=True)
    n = 0
    for name, data in cases():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        n += 1
    print("%d images in %s" % (n, OUT))


main()
