#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted images of the metadata-overlap corpus (ol-* in
tests/fuzz/corpus/qcow2/) and their expected outcomes
(tests/image/qcow2-overlap.expect, read by tests/image/qcow2-overlap.py).

Each image is a small consistent qcow2 file with every kind of metadata
QEMU's overlap check knows (qcow2.txt "Header", "Host cluster management",
"Cluster mapping", "Snapshots", "Bitmaps extension"), then one thing made to
point where it must not: an L2 entry naming a metadata cluster, a refcount
that calls a metadata cluster free, a compressed descriptor past the end of
the file, a contradictory extended-L2 bitmap, a header extension or snapshot
table that lies.  The expectation says what `vdisk io` must do with it:

  name | options | command | outcome | message | corrupt | protect

outcome: refuse (the write fails, "Preventing invalid write on metadata
(overlaps with CLASS)" when the message field is a class name, else the
message given; corrupt bit set), fail (the command fails, message
given), ok (the command succeeds), openfail (the open fails, message given).
protect: host ranges (offset+length) whose bytes must not change.
Usage: make-qcow2-overlap-corpus.py [CORPUS-DIR [EXPECT-FILE]]
"""
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus", "qcow2")
EXPECT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "..", "image", "qcow2-overlap.expect")

COPIED = 1 << 63
COMPRESSED = 1 << 62
MAGIC = 0x514649FB


class Img:
    """Clusters (cs = 512 unless cb says otherwise):
    0 header, 1 reftable, 2 refblock, 3 L1, 4 L2 of L1[0], 5 data of
    guest cluster 0, 6 compressed data of guest cluster 1, 7 L2 of L1[1]
    (guest cluster l2_entries -> data 8), 9-10 snapshot table (two
    clusters: a long snapshot name), 11 snapshot L1, 12 snapshot-only L2
    (inactive), 13 its data, 14 bitmap directory, 15 bitmap table,
    16-19 free (refcount 0, zeroes)."""

    def __init__(self, cb=9, extl2=False, version=3, snapshot=True, bitmap=True, exts=b"",
                 compact=False):
        self.cb, self.cs, self.extl2 = cb, 1 << cb, extl2
        cs = self.cs
        self.esz = 16 if extl2 else 8
        self.l2n = cs // self.esz
        self.size = 1 << 20
        self.l1_size = max(2, -(-self.size // (cs * self.l2n)))
        assert self.l1_size * 8 <= cs
        self.n = 20
        self.buf = bytearray(cs * self.n)
        self.version = version
        nsn = 1 if snapshot else 0
        autoclear = 1 if (bitmap and version >= 3) else 0
        incompat = 0x10 if extl2 else 0
        hdr = struct.pack(">IIQIIQIIQQIIQ", MAGIC, version, 0, 0, cb, self.size, 0, self.l1_size,
                          3 * cs, 1 * cs, 1, nsn, 9 * cs if snapshot else 0)
        if version >= 3:
            hdr += struct.pack(">QQQII", incompat, 0, autoclear, 4, 112) + bytes(8)
        if bitmap and version >= 3:
            # qcow2.txt "Bitmaps extension": nb_bitmaps, reserved,
            # bitmap_directory_size, bitmap_directory_offset.
            exts = struct.pack(">II", 0x23852875, 24) + struct.pack(">IIQQ", 1, 0, self.bmdir_len(), 14 * cs) + exts
        self.buf[0:len(hdr)] = hdr
        self.buf[len(hdr):len(hdr) + len(exts)] = exts
        used = [0, 1, 2, 3, 4, 5, 6, 7, 8]
        self.p64(cs, 2 * cs)
        self.p64(3 * cs, (4 * cs) | COPIED)
        if compact:
            # Big clusters: only the header, refcounts, L1 and one L2.
            used = [0, 1, 2, 3, 4]
            self.l2(4, 3, 0)
            for c in used:
                self.refcount(c, 1)
            self.used = used
            return
        self.p64(3 * cs + 8, (7 * cs) | COPIED)
        self.l2(4, 0, (5 * cs) | COPIED)
        self.buf[5 * cs:6 * cs] = b"\xa5" * cs
        comp = zlib.compressobj(6, zlib.DEFLATED, -12)
        data = comp.compress(bytes(range(256)) * (cs // 256)) + comp.flush()
        assert len(data) <= cs
        self.buf[6 * cs:6 * cs + len(data)] = data
        nsec = (len(data) + 511) // 512 - 1
        self.l2(4, 1, (6 * cs) | COMPRESSED | (nsec << (62 - (cb - 8))), bitmap=0)
        self.l2(7, 0, (8 * cs) | COPIED)
        self.buf[8 * cs:9 * cs] = b"\x5b" * cs
        if snapshot:
            name = b"s" * (cs + 40)  # the table spans two clusters
            ent = struct.pack(">QIHHIIQII", 11 * cs, self.l1_size, 1, len(name), 0, 0, 0, 0, 16)
            ent += struct.pack(">QQ", 0, self.size) + b"1" + name
            ent += bytes(-len(ent) % 8)
            assert cs < len(ent) <= 2 * cs
            self.snapshot_bytes = len(ent)
            self.buf[9 * cs:9 * cs + len(ent)] = ent
            self.p64(11 * cs + 8, 12 * cs)  # snapshot L1[1] -> its own L2
            self.l2(12, 0, 13 * cs)
            self.buf[13 * cs:14 * cs] = b"\x13" * cs
            used += [9, 10, 11, 12, 13]
        if bitmap and version >= 3:
            # qcow2.txt "Bitmap directory entry": table offset, table size,
            # flags, type 1, granularity bits, name size, extra size, name.
            d = struct.pack(">QIIBBHI", 15 * cs, 1, 0, 1, 16, 2, 0) + b"bm"
            d += bytes(-len(d) % 8)
            self.buf[14 * cs:14 * cs + len(d)] = d
            used += [14, 15]
        self.used = used
        for c in used:
            self.refcount(c, 1)

    def bmdir_len(self):
        return 24 + 2 + 6

    def p64(self, off, v):
        struct.pack_into(">Q", self.buf, off, v & 0xFFFFFFFFFFFFFFFF)
        return self

    def p32(self, off, v):
        struct.pack_into(">I", self.buf, off, v & 0xFFFFFFFF)
        return self

    def l2(self, table, idx, entry, bitmap=None):
        off = table * self.cs + idx * self.esz
        self.p64(off, entry)
        if self.extl2:
            self.p64(off + 8, 0xFFFFFFFF if bitmap is None else bitmap)
        return self

    def refcount(self, cluster, val):
        struct.pack_into(">H", self.buf, 2 * self.cs + 2 * cluster, val)
        return self

    def bytes(self):
        return bytes(self.buf)


# Where each class lives in the base image (host offset, length), and the
# names QEMU gives them.
CS = 512
WHERE = {
    "main-header": (0, 512, "qcow2_header"),
    "active-l1": (3 * CS, 16, "active L1 table"),
    "active-l2": (4 * CS, CS, "active L2 table"),
    "active-l2-other": (7 * CS, CS, "active L2 table"),
    "refcount-table": (1 * CS, CS, "refcount table"),
    "refcount-block": (2 * CS, CS, "refcount block"),
    "snapshot-table": (9 * CS, CS, "snapshot table"),
    "snapshot-table-2nd": (10 * CS, CS, "snapshot table"),
    "inactive-l1": (11 * CS, CS, "inactive L1 table"),
    "inactive-l2": (12 * CS, CS, "inactive L2 table"),
    "bitmap-directory": (14 * CS, CS, "bitmap directory"),
}
# Metadata no write changes (header bytes 72-79 and 88-95, the feature
# bits, are the test's to judge): header, refcount table, L1, snapshot
# table, snapshot L1 and L2, bitmap directory.
STATIC = "0+512,512+512,1536+512,4608+1024,5632+512,6144+512,7168+512"
# Plus what a write that goes through changes: the refcount block, the L2
# tables.  A refused write changes none of it.
ALL_META = STATIC + ",1024+512,2048+512,3584+512"

cases = []


def case(name, img, cmd, outcome, msg="-", corrupt=None, protect=None, opts="-"):
    if protect is None:
        protect = ALL_META if outcome == "refuse" else STATIC
    if corrupt is None:
        corrupt = "yes" if outcome == "refuse" else "no"
    cases.append((name, img, opts, cmd, outcome, msg, corrupt, protect))


def refuse_msg(cls):
    return cls


# 1. A data write to an allocated cluster (L2 entry COPIED, so written in
# place) whose host offset is metadata: QEMU checks every data write.
for key in ["active-l1", "active-l2", "active-l2-other", "refcount-table", "refcount-block",
            "snapshot-table", "snapshot-table-2nd", "inactive-l1", "bitmap-directory"]:
    off, _, cls = WHERE[key]
    img = Img().l2(4, 0, off | COPIED)
    case("ol-data-on-" + key, img, "write -P 0x5a 0 512", "refuse", refuse_msg(cls))
    # The same through the second active L2 table and a partial write.
    img = Img().l2(7, 0, off | COPIED)
    case("ol-data2-on-" + key, img, "write -P 0x5a 32768 100", "refuse", refuse_msg(cls))

# Inactive L2 tables are checked only with overlap-check=all (as QEMU: the
# default, cached, does not read the snapshot L1 tables).
off, _, cls = WHERE["inactive-l2"]
case("ol-data-on-inactive-l2", Img().l2(4, 0, off | COPIED), "write -P 0x5a 0 512", "refuse",
     refuse_msg(cls), opts="overlap-check=all")
# (Zeroes: the snapshot loses its mapping, nothing is left corrupt.)
case("ol-data-on-inactive-l2-cached", Img().l2(4, 0, off | COPIED), "write -P 0 0 512", "ok",
     protect=STATIC.replace(",6144+512", ""))
case("ol-data-on-l1-check-none", Img().l2(4, 0, (3 * CS) | COPIED), "write -P 0 0 16", "ok",
     protect="0+512,512+1024,2048+512", opts="overlap-check=none")
case("ol-data-on-l1-class-off", Img().l2(4, 0, (3 * CS) | COPIED), "write -P 0 0 16", "ok",
     protect="0+512,512+1024,2048+512", opts="overlap-check.active-l1=off")
case("ol-data-on-reftable-constant", Img().l2(4, 0, (1 * CS) | COPIED), "write -P 0x5a 0 512",
     "refuse", refuse_msg("refcount table"), opts="overlap-check=constant")
case("ol-data-on-l2-constant", Img().l2(4, 0, (7 * CS) | COPIED), "write -P 0 0 512", "ok",
     opts="overlap-check=constant")
case("ol-data-on-refblock-template-none", Img().l2(4, 0, (2 * CS) | COPIED), "write -P 0x5a 0 512",
     "refuse", refuse_msg("refcount block"),
     opts="overlap-check.template=none,overlap-check.refcount-block=on")

# A write over two guest clusters that are contiguous on the host: data,
# then the L1 table.
img = Img().l2(4, 0, (2 * CS) | COPIED).l2(4, 1, (3 * CS) | COPIED)
img.refcount(5, 0).refcount(6, 0)
case("ol-data-span-refblock-l1", img, "write -P 0x5a 0 1024", "refuse", refuse_msg("active L1 table"))
img = Img().l2(4, 0, (5 * CS) | COPIED).l2(4, 1, (6 * CS) | COPIED).l2(4, 2, (7 * CS) | COPIED)
case("ol-data-span-into-l2", img, "write -P 0x5a 0 1536", "refuse", refuse_msg("active L2 table"))

# Without COPIED the write allocates a new cluster, then drops its
# reference to the old one: that would free the table (QEMU frees it and
# refuses a later write; vdisk refuses the free).
for key in ["active-l1", "refcount-table", "inactive-l1"]:
    off, _, cls = WHERE[key]
    img = Img().l2(4, 0, off)
    case("ol-shared-on-" + key, img, "write -P 0x5a 0 512", "refuse",
         "Preventing invalid free of metadata (data cluster overlaps with %s)" % cls)

# 2. New allocations: the refcounts call a metadata cluster free, so the
# allocator hands it out for the data (or the new L2 table) of a write to
# unallocated guest space.
for key, cl in [("main-header", 0), ("active-l1", 3), ("active-l2", 4), ("refcount-table", 1),
                ("refcount-block", 2), ("snapshot-table", 9), ("snapshot-table-2nd", 10),
                ("inactive-l1", 11), ("bitmap-directory", 14)]:
    img = Img()
    for c in range(cl):  # everything below it used, so it is the first free one
        img.refcount(c, 1)
    for c in range(cl + 1, 16):
        img.refcount(c, 1)
    img.refcount(cl, 0)
    cls = WHERE[key][2]
    case("ol-alloc-data-on-" + key, img, "write -P 0x5a 1536 512", "refuse", refuse_msg(cls))
    img2 = Img()
    for c in range(16):
        img2.refcount(c, 1)
    img2.refcount(cl, 0)
    # A write past the first two L2 tables needs a new L2 table first.
    case("ol-alloc-l2-on-" + key, img2, "write -P 0x5a 65536 512", "refuse", refuse_msg(cls))
img = Img()
for c in range(16):
    img.refcount(c, 1)
img.refcount(12, 0)
case("ol-alloc-on-inactive-l2", img, "write -P 0x5a 1536 512", "refuse",
     refuse_msg("inactive L2 table"), opts="overlap-check=all")

# 3. An L1 entry whose L2 table is another table: the write goes through
# the L2 cache, whose write-back is checked.
for key in ["refcount-table", "refcount-block", "snapshot-table", "inactive-l1", "bitmap-directory"]:
    off, _, cls = WHERE[key]
    img = Img().p64(3 * CS + 8, off | COPIED)
    case("ol-l1-entry-on-" + key, img, "write -P 0x5a 32768 512", "refuse", refuse_msg(cls))
# A refcount table entry naming the L1 table as a refcount block: the next
# refcount update is written back over the L1 table.
img = Img().p64(CS, 3 * CS)
case("ol-reftable-entry-on-l1", img, "write -P 0x5a 1536 512", "refuse",
     refuse_msg("active L1 table"))

# 4. Compressed descriptors: past the end of the file, of huge size,
# inside metadata.  Reads fail cleanly; a write over them copies (COW) and
# must not land on anything.
cb9 = 62 - (9 - 8)
img = Img().l2(4, 1, (1 << 40) | COMPRESSED)
case("ol-compressed-past-eof-read", img, "read 512 512", "fail", "Input/output error")
case("ol-compressed-past-eof-write", Img().l2(4, 1, (1 << 40) | COMPRESSED), "write -P 1 512 100",
     "fail", "Input/output error")
img = Img().l2(4, 1, (19 * CS) | COMPRESSED | (3 << cb9))
case("ol-compressed-spills-past-eof", img, "read 512 512", "fail", "Input/output error")
img = Img().l2(4, 1, (1 * CS) | COMPRESSED)
# (A whole-cluster write needs nothing of the old data: it goes to a new
# cluster, as in QEMU, but the free of the old one is refused.)
case("ol-compressed-in-reftable-write", img, "write -P 1 512 512", "refuse",
     "Preventing invalid free of metadata (data cluster overlaps with refcount table)")
img = Img().l2(4, 1, (1 * CS) | COMPRESSED)
case("ol-compressed-in-reftable-cow", img, "write -P 1 600 100", "refuse",
     "Preventing invalid free of metadata (data cluster overlaps with refcount table)")
# Discard and write-zeroes with unmap drop references too.
img = Img().l2(4, 0, (3 * CS) | COPIED)
case("ol-discard-on-l1", img, "discard 0 512", "refuse",
     "Preventing invalid free of metadata (data cluster overlaps with active L1 table)")
img = Img().l2(4, 0, (9 * CS) | COPIED)
case("ol-zero-unmap-on-snapshot-table", img, "write -z -u 0 512", "refuse",
     "Preventing invalid free of metadata (data cluster overlaps with snapshot table)")
img = Img().l2(4, 1, ((1 << 56) - 512) | COMPRESSED | (255 << cb9))
case("ol-compressed-near-2p56", img, "read 512 512", "fail", "Input/output error", corrupt="any")

# 5. Extended L2 (16 KiB clusters): bitmaps that contradict the entry,
# in-place subcluster writes on metadata.
X = 1 << 14
def ximg():
    return Img(cb=14, extl2=True, snapshot=False, bitmap=False, compact=True)
img = ximg().l2(4, 0, (5 * X) | COPIED, bitmap=0x0000000100000001)
case("ol-extl2-alloc-and-zero-read", img, "read 0 512", "fail", "Input/output error", corrupt="yes",
     protect="0+16384,16384+16384,49152+16384")
img = ximg().l2(4, 0, (5 * X) | COPIED, bitmap=0x0000000100000001)
case("ol-extl2-alloc-and-zero-write", img, "write -P 1 0 512", "fail", "Input/output error",
     corrupt="yes",
     protect="0+16384,16384+16384,49152+16384")
img = ximg().l2(4, 2, COPIED, bitmap=0xFF)
case("ol-extl2-alloc-no-offset", img, "read 32768 512", "fail", "Input/output error", corrupt="yes",
     protect="0+16384,16384+16384,49152+16384")
img = ximg().l2(4, 1, (6 * X) | COMPRESSED, bitmap=0xFFFFFFFF)
case("ol-extl2-compressed-bitmap", img, "read 16384 512", "fail", "Input/output error",
     protect="0+16384,16384+16384,49152+16384")
# In-place: subcluster 0 allocated, subcluster 5 not; the cluster is the L1.
img = ximg().l2(4, 0, (3 * X) | COPIED, bitmap=0x1)
case("ol-extl2-inplace-on-l1", img, "write -P 0x5a 2560 512", "refuse", refuse_msg("active L1 table"),
     protect="0+16384,16384+16384,49152+16384")
img = ximg().l2(4, 0, (1 * X) | COPIED, bitmap=0x1)
case("ol-extl2-inplace-on-reftable", img, "write -P 0x5a 2560 512", "refuse",
     refuse_msg("refcount table"), protect="0+16384,16384+16384,49152+16384")
img = ximg().l2(4, 0, (2 * X) | COPIED, bitmap=0x0)
case("ol-extl2-inplace-unalloc-on-refblock", img, "write -P 0x5a 0 512", "refuse",
     refuse_msg("refcount block"), protect="0+16384,16384+16384,49152+16384")
img = ximg().l2(4, 0, (4 * X) | COPIED, bitmap=0xFFFFFFFF)
case("ol-extl2-data-on-l2", img, "write -P 0x5a 0 512", "refuse", refuse_msg("active L2 table"),
     protect="0+16384,16384+16384,49152+16384")

# 6. Clusters past the end of the file: a write there is kept (QEMU keeps
# it too); a new cluster never shows what the guest did not write there.
img = Img().l2(4, 3, (64 * CS) | COPIED)
case("ol-data-past-eof", img, "write -P 0x77 1536 512", "ok", "-", corrupt="no")
img = Img().l2(4, 3, (4096 * CS) | COPIED)
case("ol-data-far-past-eof", img, "write -P 0x77 1536 512", "ok", "-", corrupt="no")

# 7. Header extensions: many tiny ones (opening is linear in the header),
# broken bitmap extensions (protect nothing, open as QEMU does).
tiny = b"".join(struct.pack(">II", 0x1000 + i, 0) for i in range(7900))
img = Img(cb=14, snapshot=False, bitmap=False, exts=tiny[:8 * 2000], compact=True)
case("ol-ext-many-tiny", img, "write -P 0x5a 0 512", "ok", "-", corrupt="no", protect="0+16384")
tiny = b"".join(struct.pack(">II", 0xE2792ACA, 4) + b"raw\0" + bytes(4) for i in range(1000))
img = Img(cb=14, snapshot=False, bitmap=False, exts=tiny, compact=True)
case("ol-ext-many-backing-fmt", img, "read 0 512", "ok", "-", corrupt="no", protect="0+16384")
img = Img(bitmap=False, exts=struct.pack(">II", 0x23852875, 24) +
          struct.pack(">IIQQ", 1, 0, 32, 14 * CS + 8))
img.p64(88, 1)
case("ol-ext-bitmap-dir-unaligned", img, "read 0 512", "ok", "-", corrupt="no")
img = Img(bitmap=False, exts=struct.pack(">II", 0x23852875, 24) +
          struct.pack(">IIQQ", 1, 0, 1 << 40, 14 * CS))
img.p64(88, 1)
case("ol-ext-bitmap-dir-huge", img, "read 0 512", "ok", "-", corrupt="no")
img = Img(bitmap=False, exts=struct.pack(">II", 0x23852875, 8) + struct.pack(">II", 1, 0))
img.p64(88, 1)
case("ol-ext-bitmap-short", img, "read 0 512", "ok", "-", corrupt="no")

# 8. Snapshot tables that lie.
img = Img()
img.p32(11 * 0 + 9 * CS + 36, 2000)  # extra_data_size > 1024
case("ol-snapshot-extra-huge", img, "write -P 0x5a 1536 512", "openfail", "Could not read snapshots")
img = Img()
img.p64(64, 200 * CS)  # snapshot table past the end of the file
# (Past the end the file reads as zeroes: one empty entry, as QEMU reads it.)
case("ol-snapshot-table-past-eof", img, "write -P 0x5a 1536 512", "ok", corrupt="no")
img = Img()
img.p64(9 * CS, (11 * CS) + 8)  # snapshot L1 offset unaligned
case("ol-snapshot-l1-unaligned", img, "write -P 0x5a 1536 512", "ok", "-", corrupt="no")
img = Img()
img.p32(9 * CS + 8, 0x7FFFFFFF)  # snapshot L1 size huge
img.l2(4, 0, (200 * CS) | COPIED)
case("ol-snapshot-l1-huge-size", img, "write -P 0x5a 0 512", "refuse", refuse_msg("inactive L1 table"))
img = Img()
img.p64(9 * CS, (1 << 56) - CS)  # snapshot L1 at the top of the offset range
img.l2(4, 0, ((1 << 56) - CS) | COPIED)
case("ol-snapshot-l1-at-2p56", img, "write -P 0x5a 0 512", "fail", "-", corrupt="any",
     protect="0+512,512+1536,3584+512")

# 9. Refcount structures.
img = Img().p64(CS, 0)  # no refcount block at all
case("ol-reftable-empty", img, "write -P 0x5a 1536 512", "fail", "-", corrupt="any",
     protect="0+512,1536+512,2048+512")
img = Img()
img.refcount(2, 0)  # the refcount block says it is free itself
case("ol-refblock-self-free", img, "write -P 0x5a 1536 512", "refuse", refuse_msg("refcount block"))
img = Img()
img.p32(56, 2)  # the refcount table claims two clusters: the refblock too
case("ol-reftable-covers-refblock", img, "write -P 0x5a 1536 512", "refuse",
     refuse_msg("refcount table"))

os.makedirs(OUT, exist_ok=True)
names = set()
lines = ["# Generated by tests/fuzz/make-qcow2-overlap-corpus.py: do not edit.",
         "# name|options|command|outcome|message|corrupt|protect"]
for name, img, opts, cmd, outcome, msg, corrupt, protect in cases:
    assert name not in names, name
    names.add(name)
    data = img.bytes()
    if len(data) > 65536:
        data = data.rstrip(b"\0") or b"\0"
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    lines.append("|".join([name, opts, cmd, outcome, msg, corrupt, protect]))
with open(EXPECT, "w") as f:
    f.write("\n".join(lines) + "\n")
print(f"{len(cases)} images in {OUT}, expectations in {EXPECT}")
