#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted qcow2 images of tests/fuzz/corpus/qcow2-bitmap/.

A small image with two persistent bitmaps (made by qemu-img, 512-byte
clusters, some bits set by qemu-io) and one thing broken in each copy: the
bitmaps extension, a directory entry, a bitmap table, or the refcounts the
amend rewrite walks.  Usage: make-qcow2-bitmap-corpus.py [OUTDIR]
Needs qemu-img and qemu-io (7.2) to make the base image.
"""
import os
import struct
import subprocess
import sys
import tempfile

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "corpus", "qcow2-bitmap")


def base():
    d = tempfile.mkdtemp()
    p = os.path.join(d, "b.qcow2")
    run = lambda *a: subprocess.run(a, check=True, stdout=subprocess.DEVNULL)
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", p, "1M")
    run("qemu-img", "bitmap", "--add", "-g", "4k", p, "b0")
    run("qemu-img", "bitmap", "--add", "-g", "512", p, "b1")
    run("qemu-io", "-c", "write -P 1 0 8k", "-c", "write -P 2 600k 4k", p)
    data = bytearray(open(p, "rb").read())
    os.unlink(p)
    os.rmdir(d)
    return data


def ext_pos(img):
    off = struct.unpack(">I", img[100:104])[0]
    while True:
        t, l = struct.unpack(">II", img[off:off + 8])
        if t == 0x23852875:
            return off + 8
        assert t != 0
        off += 8 + ((l + 7) & ~7)


def main():
    os.makedirs(OUT, exist_ok=True)
    good = base()
    e = ext_pos(good)
    nb, _, dsize, doff = struct.unpack(">IIQQ", good[e:e + 24])
    cases = {"valid": bytes(good)}

    def case(name, fn):
        img = bytearray(good)
        fn(img)
        cases[name] = bytes(img)

    def put(fmt, off, *v):
        return lambda img: img.__setitem__(slice(off, off + struct.calcsize(fmt)),
                                           struct.pack(fmt, *v))
    case("nb-huge", put(">I", e, 0xFFFFFFFF))
    case("nb-zero", put(">I", e, 0))
    case("dir-size-huge", put(">Q", e + 8, 1 << 40))
    case("dir-size-small", put(">Q", e + 8, 8))
    case("dir-offset-past-eof", put(">Q", e + 16, 1 << 40))
    case("dir-offset-unaligned", put(">Q", e + 16, doff + 3))
    case("ext-short", put(">I", e - 4, 8))
    # First directory entry fields.
    case("table-offset-past-eof", put(">Q", doff, 1 << 50))
    case("table-offset-unaligned", put(">Q", doff, 513))
    case("table-size-huge", put(">I", doff + 8, 0x7FFFFFFF))
    case("table-size-wrong", put(">I", doff + 8, 1))
    case("in-use", put(">I", doff + 12, 3))
    case("type-bad", put(">B", doff + 16, 7))
    case("gran-bits-huge", put(">B", doff + 17, 63))
    case("gran-bits-small", put(">B", doff + 17, 3))
    case("name-size-zero", put(">H", doff + 18, 0))
    case("name-size-huge", put(">H", doff + 18, 0xFFFF))
    case("extra-size-huge", put(">I", doff + 20, 0xFFFFFFF0))
    # The second entry (the first, name "b0", takes 32 bytes): one bitmap
    # loaded at a read-write open and one left inconsistent; two names alike.
    case("second-in-use", put(">I", doff + 32 + 12, 3))
    case("names-alike", put(">2s", doff + 32 + 24, b"b0"))
    toff = struct.unpack(">Q", good[doff:doff + 8])[0]
    case("table-entry-past-eof", put(">Q", toff, 1 << 52))
    case("table-entry-reserved", put(">Q", toff, 0x1FE))
    case("table-entry-all-ones", put(">Q", toff, 1))
    case("table-entry-is-header", put(">Q", toff, 0x200 * 0 + 0x200))
    # The reftable and the autoclear bit.
    case("autoclear-off", put(">Q", 88, 0))
    rt = struct.unpack(">Q", good[48:56])[0]
    case("reftable-entry-zero", put(">Q", rt, 0))
    case("refcount-order-7", put(">I", 96, 7))
    for name, img in cases.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(img)


main()
