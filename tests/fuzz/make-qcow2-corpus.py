#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted bad qcow2 images of tests/fuzz/corpus/qcow2/.

Each image is a small valid qcow2 file (512-byte clusters unless said
otherwise) with one thing broken: a header field, a header extension, a
table entry, overlapping metadata, compressed data.  The driver must refuse
or read each one cleanly.  Usage: make-qcow2-corpus.py [OUTDIR]
"""
import os
import struct
import sys
import zlib

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "qcow2")

COPIED = 1 << 63
COMPRESSED = 1 << 62


def image(cb=9, size=1 << 20, version=3, extl2=False, order=4, exts=b"", backing=b""):
    """Clusters: 0 header, 1 reftable, 2 refblock, 3 L1, 4 L2, 5 data,
    6 compressed data."""
    cs = 1 << cb
    l2_entries = cs // (16 if extl2 else 8)
    l1_size = max(1, -(-size // (cs * l2_entries)))
    nclusters = 8 + -(-(l1_size * 8) // cs)
    buf = bytearray(cs * nclusters)
    incompat = 0x10 if extl2 else 0
    hdr = struct.pack(">IIQIIQIIQQIIQ", 0x514649FB, version, 0, 0, cb, size, 0, l1_size,
                      3 * cs, 1 * cs, 1, 0, 0)
    if version >= 3:
        hdr += struct.pack(">QQQII", incompat, 0, 0, order, 112) + bytes(8)
    hlen = len(hdr)
    buf[0:hlen] = hdr
    pos = hlen
    buf[pos:pos + len(exts)] = exts
    pos += len(exts)
    buf[pos:pos + 8] = bytes(8)  # end of extensions
    pos += 8
    if backing:
        buf[pos:pos + len(backing)] = backing
        struct.pack_into(">QI", buf, 8, pos, len(backing))
    # reftable -> refblock, refcounts 1 for every cluster
    struct.pack_into(">Q", buf, cs, 2 * cs)
    bits = 1 << order
    for c in range(nclusters):
        set_refcount(buf, 2 * cs, order, c, 1)
    # L1 -> L2
    struct.pack_into(">Q", buf, 3 * cs, (4 * cs) | COPIED)
    esz = 16 if extl2 else 8
    # L2[0] -> data cluster 5
    struct.pack_into(">Q", buf, 4 * cs, (5 * cs) | COPIED)
    if extl2:
        struct.pack_into(">Q", buf, 4 * cs + 8, 0xFFFFFFFF)
    buf[5 * cs:6 * cs] = bytes([0xA5]) * cs
    # L2[1] -> compressed cluster in cluster 6
    if not extl2 or True:
        comp = zlib.compressobj(6, zlib.DEFLATED, -12)
        data = comp.compress(bytes(range(256)) * (cs // 256)) + comp.flush()
        buf[6 * cs:6 * cs + len(data)] = data
        shift = 62 - (cb - 8)
        nsec = (len(data) + 511) // 512 - 1
        struct.pack_into(">Q", buf, 4 * cs + esz, (6 * cs) | COMPRESSED | (nsec << shift))
    # L2[2] zero cluster (v3)
    if version >= 3 and not extl2:
        struct.pack_into(">Q", buf, 4 * cs + 2 * esz, 1)
    del bits
    return buf


def set_refcount(buf, block, order, idx, val):
    bits = 1 << order
    if bits < 8:
        per = 8 // bits
        b = block + idx // per
        sh = (idx % per) * bits
        buf[b] = (buf[b] & ~(((1 << bits) - 1) << sh)) | (val << sh)
    else:
        n = bits // 8
        buf[block + idx * n:block + idx * n + n] = val.to_bytes(n, "big")


def p32(buf, off, v):
    struct.pack_into(">I", buf, off, v & 0xFFFFFFFF)
    return buf


def p64(buf, off, v):
    struct.pack_into(">Q", buf, off, v & 0xFFFFFFFFFFFFFFFF)
    return buf


def ext(t, data):
    return struct.pack(">II", t, len(data)) + data + bytes((-len(data)) % 8)


CS = 512
cases = {}
cases["valid-v3"] = image()
cases["valid-v2"] = image(version=2)
cases["valid-extl2"] = image(cb=14, extl2=True)
cases["bad-magic"] = p32(image(), 0, 0x514649FA)
cases["version-1"] = p32(image(), 4, 1)
cases["version-4"] = p32(image(), 4, 4)
cases["cluster-bits-8"] = p32(image(), 20, 8)
cases["cluster-bits-22"] = p32(image(), 20, 22)
cases["cluster-bits-huge"] = p32(image(), 20, 0xFFFFFFFF)
cases["size-huge"] = p64(image(), 24, 1 << 63)
cases["size-l1-too-small"] = p64(image(), 24, 1 << 40)
cases["crypt-aes"] = p32(image(), 32, 1)
cases["crypt-luks"] = p32(image(), 32, 2)
cases["l1-size-huge"] = p32(image(), 36, 0xFFFFFFFF)
cases["l1-size-33MiB"] = p32(image(), 36, (33 << 20) // 8)
cases["l1-offset-unaligned"] = p64(image(), 40, 3 * CS + 8)
cases["l1-offset-zero"] = p64(image(), 40, 0)
cases["l1-offset-past-2p56"] = p64(image(), 40, 1 << 56)
cases["l1-offset-wraps"] = p64(image(), 40, 0xFFFFFFFFFFFFFE00)
cases["l1-offset-past-eof"] = p64(image(), 40, 1 << 40)
cases["reftable-offset-unaligned"] = p64(image(), 48, CS + 16)
cases["reftable-offset-zero"] = p64(image(), 48, 0)
cases["reftable-clusters-0"] = p32(image(), 56, 0)
cases["reftable-clusters-huge"] = p32(image(), 56, 0xFFFFFFFF)
cases["reftable-past-eof"] = p64(image(), 48, 1 << 45)
cases["snapshots-many"] = p32(image(), 60, 0xFFFFFFFF)
cases["snapshots-offset-unaligned"] = p64(p32(image(), 60, 1), 64, 7)
cases["incompat-unknown"] = p64(image(), 72, 1 << 33)
cases["incompat-all"] = p64(image(), 72, 0xFFFFFFFFFFFFFFFF)
cases["incompat-data-file"] = p64(image(), 72, 4)
cases["incompat-compression-no-type"] = p64(image(), 72, 8)
cases["compression-type-2"] = p64(image(), 72, 8)
cases["compression-type-2"][104] = 2
cases["compression-type-without-bit"] = image()
cases["compression-type-without-bit"][104] = 1
cases["extl2-small-clusters"] = p64(image(), 72, 0x10)
cases["refcount-order-7"] = p32(image(), 96, 7)
cases["refcount-order-huge"] = p32(image(), 96, 0xFFFFFFFF)
cases["header-length-short"] = p32(image(), 100, 72)
cases["header-length-huge"] = p32(image(), 100, 0xFFFFFFFF)
cases["header-length-cluster"] = p32(image(), 100, CS)
cases["backing-offset-past-cluster"] = p32(p64(image(), 8, CS + 8), 16, 4)
cases["backing-size-huge"] = p32(image(backing=b"base.raw"), 16, 0xFFFFFFFF)
cases["backing-offset-in-header"] = p32(p64(image(), 8, 16), 16, 8)
cases["backing-json"] = image(backing=b'json:{"driver":"file","filename":"/etc/passwd"}')
cases["backing-nbd"] = image(backing=b"nbd:localhost:10809")
cases["ext-len-huge"] = image(exts=struct.pack(">II", 0x12345678, 0x7FFFFFFF))
cases["ext-backing-fmt-long"] = image(exts=ext(0xE2792ACA, b"x" * 40))
cases["ext-crypto"] = image(exts=ext(0x0537BE77, bytes(16)))
cases["ext-feature-table-odd"] = image(exts=ext(0x6803F857, b"\x00\x21abc"))
cases["ext-truncated"] = image()
p32(cases["ext-truncated"], CS - 4, 0xE2792ACA)  # extension header cut by the cluster end
cases["ext-truncated"][112:CS - 4] = b"\x11" * (CS - 4 - 112)
cases["ext-many-unknown"] = image(exts=b"".join(ext(0x1000 + i, bytes(i % 9)) for i in range(8)))
cases["l1-entry-unaligned"] = p64(image(), 3 * CS, (4 * CS + 8) | COPIED)
cases["l1-entry-header"] = p64(image(), 3 * CS, 0 | COPIED | 0x200 * 0)
p64(cases["l1-entry-header"], 3 * CS, 1 << 9)  # offset 512 is cluster 1 with 512 B clusters
cases["l1-entry-past-2p56"] = p64(image(), 3 * CS, (1 << 56) | COPIED)
cases["l1-entry-past-eof"] = p64(image(), 3 * CS, (1 << 40) | COPIED)
cases["l1-entry-is-l1"] = p64(image(), 3 * CS, (3 * CS) | COPIED)
cases["l1-entry-is-reftable"] = p64(image(), 3 * CS, (1 * CS) | COPIED)
cases["l1-entry-reserved-bits"] = p64(image(), 3 * CS, (4 * CS) | COPIED | (0x7F << 56))
cases["l2-entry-unaligned"] = p64(image(), 4 * CS, (5 * CS + 0x10) | COPIED)
cases["l2-entry-header"] = p64(image(), 4 * CS, 0 | COPIED | 2)
cases["l2-entry-past-eof"] = p64(image(), 4 * CS, (1 << 50) | COPIED)
cases["l2-entry-max"] = p64(image(), 4 * CS, 0x00FFFFFFFFFFFE00 | COPIED)
cases["l2-entry-is-l2"] = p64(image(), 4 * CS, (4 * CS) | COPIED)
cases["l2-compressed-past-eof"] = p64(image(), 4 * CS + 8, (1 << 40) | COMPRESSED)
cases["l2-compressed-max-size"] = p64(image(), 4 * CS + 8, (6 * CS) | COMPRESSED | (0xFF << 53))
cases["l2-compressed-garbage"] = p64(image(), 4 * CS + 8, (5 * CS) | COMPRESSED)
cases["l2-compressed-header"] = p64(image(), 4 * CS + 8, 0 | COMPRESSED)
cases["l2-compressed-all-bits"] = p64(image(), 4 * CS + 8, 0xFFFFFFFFFFFFFFFF)
cases["l2-zero-v2"] = p64(image(version=2), 4 * CS + 16, 1)
ex = image(cb=14, extl2=True)
cases["extl2-alloc-and-zero"] = p64(ex, 4 * 16384 + 8, 0x0000000100000001)
ex = image(cb=14, extl2=True)
cases["extl2-alloc-no-offset"] = p64(p64(ex, 4 * 16384 + 32, 0), 4 * 16384 + 40, 0xFFFF)
ex = image(cb=14, extl2=True)
cases["extl2-compressed-bitmap"] = p64(ex, 4 * 16384 + 24, 0xFFFFFFFFFFFFFFFF)
cases["refcount-overflow"] = image()
set_refcount(cases["refcount-overflow"], 2 * CS, 4, 5, 0xFFFF)
cases["refcount-order-0"] = image(order=0)
cases["refcount-order-6"] = image(order=6)
cases["reftable-entry-unaligned"] = p64(image(), CS, 2 * CS + 3)
cases["reftable-entry-header"] = p64(image(), CS, 0x200 * 0 + 1)
cases["reftable-entry-is-l1"] = p64(image(), CS, 3 * CS)
cases["l1-overlaps-reftable"] = p64(image(), 40, 1 * CS)
cases["truncated-header"] = image()[:100]
cases["truncated-after-header"] = image()[:CS]
cases["only-magic"] = bytearray(b"QFI\xfb")
cases["empty"] = bytearray()
cases["v2-with-extensions-huge"] = image(version=2, exts=struct.pack(">II", 1, 0xFFFFFFF0))
big = image(cb=16, size=1 << 40)
cases["cluster-64k-l2-past-eof"] = p64(big, 4 * (1 << 16), (1 << 55) | COPIED)
zs = image()
p64(zs, 72, 8)
zs[104] = 1
cases["zstd-garbage"] = zs



def snap_image(l1_off=None, l1_size=None, l1=None, disk_size=None):
    """image() with one snapshot (id "1", name "sn"): its table in the
    cluster after the active L1, its L1 in the next (by default one entry
    naming the active L2 table, as a fresh snapshot does).  The snapshot
    load (qemu-img convert -l) must refuse a bad L1 table cleanly."""
    img = image()
    base = len(img) // CS
    assert base == 9
    img += bytes(2 * CS)
    for c in (base, base + 1):
        set_refcount(img, 2 * CS, 4, c, 1)
    set_refcount(img, 2 * CS, 4, 4, 2)  # the L2 table is shared
    if l1_off is None:
        l1_off = (base + 1) * CS
    if l1_size is None:
        l1_size = 1
    if l1 is None:
        l1 = [4 * CS]
    for i, e in enumerate(l1):
        struct.pack_into(">Q", img, (base + 1) * CS + 8 * i, e)
    size = struct.unpack_from(">Q", img, 24)[0] if disk_size is None else disk_size
    extra = struct.pack(">QQQ", 0, size, 0xFFFFFFFFFFFFFFFF)
    ent = struct.pack(">QIHHIIQII", l1_off, l1_size, 1, 2, 0, 0, 0, 0, len(extra))
    ent += extra + b"1" + b"sn"
    ent += bytes((-len(ent)) % 8)
    img[base * CS:base * CS + len(ent)] = ent
    p32(img, 60, 1)
    p64(img, 64, base * CS)
    return img


cases["snapshot-valid"] = snap_image()
cases["snapshot-l1-past-eof"] = snap_image(l1_off=1 << 40)
cases["snapshot-l1-size-huge"] = snap_image(l1_size=0xFFFFFFFF)
cases["snapshot-l1-size-past-eof"] = snap_image(l1_size=(16 << 20) // 8)
SNT, SNL1 = 9 * CS, 10 * CS  # where snap_image() puts the table and the L1
cases["snapshot-l1-unaligned"] = snap_image(l1_off=SNL1 + 8)
cases["snapshot-l1-at-2p56"] = snap_image(l1_off=1 << 56)
cases["snapshot-l1-is-header"] = snap_image(l1_off=0)
cases["snapshot-l1-is-reftable"] = snap_image(l1_off=1 * CS)
cases["snapshot-l1-is-active-l1"] = snap_image(l1_off=3 * CS)
cases["snapshot-l1-is-snapshot-table"] = snap_image(l1_off=SNT)
cases["snapshot-l1-entry-is-reftable"] = snap_image(l1=[1 * CS])
cases["snapshot-l1-entry-is-refblock"] = snap_image(l1=[2 * CS])
cases["snapshot-l1-entry-is-active-l1"] = snap_image(l1=[3 * CS])
cases["snapshot-l1-entry-is-own-l1"] = snap_image(l1=[SNL1])
cases["snapshot-l1-entry-is-snapshot-table"] = snap_image(l1=[SNT])
cases["snapshot-l1-entry-past-eof"] = snap_image(l1=[1 << 40])
cases["snapshot-disk-size-huge"] = snap_image(disk_size=1 << 62)


def bitmaps(entries, nb=None, dir_size=None, dir_off=7 * CS):
    """A v3 image with the bitmaps extension (autoclear bit set) and the
    directory @entries (raw bytes) in cluster 7."""
    if nb is None:
        nb = 1
    if dir_size is None:
        dir_size = len(entries)
    img = image(exts=ext(0x23852875, struct.pack(">IIQQ", nb, 0, dir_size, dir_off)))
    p64(img, 88, 1)  # autoclear: bitmaps valid
    img[7 * CS:7 * CS + len(entries)] = entries
    return img


def bm_entry(name=b"b0", gran=16, flags=2, name_size=None, extra=0, table=(0, 0)):
    if name_size is None:
        name_size = len(name)
    e = struct.pack(">QIIBBHI", table[0], table[1], flags, 1, gran, name_size, extra) + name
    return e + bytes((-len(e)) % 8)


cases["bitmaps-one-no-table"] = bitmaps(bm_entry())
cases["bitmaps-two-no-table"] = bitmaps(bm_entry() + bm_entry(name=b"second", gran=9, flags=3), nb=2)
cases["bitmaps-name-size-zero"] = bitmaps(bm_entry(name_size=0))
cases["bitmaps-name-past-directory"] = bitmaps(bm_entry(name_size=0xFFFF))
cases["bitmaps-granularity-0"] = bitmaps(bm_entry(gran=0))
cases["bitmaps-granularity-64"] = bitmaps(bm_entry(gran=64))
cases["bitmaps-count-huge"] = bitmaps(bm_entry(), nb=0xFFFFFFFF)
cases["bitmaps-count-past-directory"] = bitmaps(bm_entry(), nb=3)
cases["bitmaps-extra-huge"] = bitmaps(bm_entry(extra=0xFFFFFFF0))
cases["bitmaps-directory-past-eof"] = bitmaps(bm_entry(), dir_off=1 << 40)
cases["bitmaps-directory-huge"] = bitmaps(bm_entry(), dir_size=1 << 62)

os.makedirs(OUT, exist_ok=True)
for name, data in sorted(cases.items()):
    # Keep the files small: drop trailing zero clusters of big images.
    data = bytes(data)
    if len(data) > 65536:
        data = data.rstrip(b"\0") or b"\0"
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"{len(cases)} images in {OUT}")
