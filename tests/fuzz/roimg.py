# SPDX-License-Identifier: MIT
"""Small valid images of the formats of issue 16, built byte by byte.

Used by tests/image/formats-readonly.sh (bochs, cloop and dmg, which
Debian's qemu-img cannot create) and by the make-{qed,qcow,parallels,bochs,
cloop,dmg}-corpus.py scripts, which break one field of each.  Every builder
takes the guest content (bytes) and returns (image bytes, offsets of the
interesting fields) so a corpus script knows where to aim.  Layouts as in
docs/formats.md.
"""
import base64
import bz2
import struct
import zlib


def qed(data, cluster=4096, table=2, backing=None):
    """QED: header cluster, L1 in cluster 1, one L2 per used L1 entry, data
    clusters after; all-zero clusters left unallocated."""
    nelems = table * cluster // 8
    size = (len(data) + 511) & ~511
    img = bytearray(cluster)  # header cluster
    l1_off = cluster
    img += bytes(table * cluster)
    l1 = [0] * nelems
    l2s = {}
    for ci in range((len(data) + cluster - 1) // cluster):
        chunk = data[ci * cluster:(ci + 1) * cluster].ljust(cluster, b"\0")
        if chunk.count(0) == cluster:
            continue
        l1i, l2i = divmod(ci, nelems)
        if l1i not in l2s:
            l2s[l1i] = (len(img), [0] * nelems)
            l1[l1i] = len(img)
            img += bytes(table * cluster)
        l2s[l1i][1][l2i] = len(img)
        img += chunk
    struct.pack_into("<%dQ" % nelems, img, l1_off, *l1)
    for off, ents in l2s.values():
        struct.pack_into("<%dQ" % nelems, img, off, *ents)
    feat = 0
    boff = bsize = 0
    if backing:
        feat = 1
        boff, bsize = 64, len(backing)
        img[64:64 + bsize] = backing
    struct.pack_into("<IIIIQQQQQII", img, 0, 0x00444551, cluster, table, 1, feat, 0, 0, l1_off, size,
                     boff, bsize)
    return bytes(img), {"l1": l1_off, "l2": [o for o, _ in l2s.values()]}


def qcow(data, cluster_bits=12, l2_bits=9, compress=True):
    """qcow v1: header, L1 after it, L2 tables, clusters (zlib raw deflate
    where that is smaller)."""
    cs = 1 << cluster_bits
    size = len(data)
    shift = cluster_bits + l2_bits
    l1_size = (size + (1 << shift) - 1) >> shift
    img = bytearray(48)
    l1_off = len(img)
    img += bytes(8 * l1_size)
    img += bytes((-len(img)) % 512)
    l1 = [0] * l1_size
    l2s = {}
    for ci in range((size + cs - 1) // cs):
        chunk = data[ci * cs:(ci + 1) * cs].ljust(cs, b"\0")
        if chunk.count(0) == cs:
            continue
        l1i, l2i = divmod(ci, 1 << l2_bits)
        if l1i not in l2s:
            img += bytes((-len(img)) % cs)
            l2s[l1i] = (len(img), [0] * (1 << l2_bits))
            l1[l1i] = len(img)
            img += bytes(8 << l2_bits)
        c = zlib.compressobj(9, zlib.DEFLATED, -12)
        z = c.compress(chunk) + c.flush()
        if compress and len(z) < cs - 1:
            l2s[l1i][1][l2i] = (1 << 63) | (len(z) << (63 - cluster_bits)) | len(img)
            img += z
        else:
            img += bytes((-len(img)) % cs)
            l2s[l1i][1][l2i] = len(img)
            img += chunk
    struct.pack_into(">%dQ" % l1_size, img, l1_off, *l1)
    for off, ents in l2s.values():
        struct.pack_into(">%dQ" % len(ents), img, off, *ents)
    struct.pack_into(">IIQIIQBBHIQ", img, 0, 0x514649FB, 1, 0, 0, 0, size, cluster_bits, l2_bits, 0,
                     0, l1_off)
    return bytes(img), {"l1": l1_off, "l2": [o for o, _ in l2s.values()]}


def parallels(data, tracks=8, ext=True):
    """Parallels: 64-byte header, BAT, clusters of tracks sectors."""
    cs = tracks * 512
    n = (len(data) + cs - 1) // cs
    data_off = (64 + 4 * n + 511) // 512
    img = bytearray(data_off * 512)
    bat = []
    for ci in range(n):
        chunk = data[ci * cs:(ci + 1) * cs].ljust(cs, b"\0")
        if chunk.count(0) == cs:
            bat.append(0)
            continue
        img += bytes((-len(img)) % cs)
        bat.append(len(img) // cs if ext else len(img) // 512)
        img += chunk
    magic = b"WithouFreSpacExt" if ext else b"WithoutFreeSpace"
    struct.pack_into("<16sIIIIIQIIIQ", img, 0, magic, 2, 16, 32, tracks, n, len(data) // 512, 0,
                     data_off, 0, 0)
    struct.pack_into("<%dI" % n, img, 64, *bat)
    return bytes(img), {"bat": 64}


def bochs(data, extent=4096, version=2):
    """Bochs growing redolog: header, catalog, extents (bitmap + data)."""
    n = (len(data) + extent - 1) // extent
    cat = []
    ext = bytearray()
    for i in range(n):
        chunk = data[i * extent:(i + 1) * extent].ljust(extent, b"\0")
        if chunk.count(0) == extent:
            cat.append(0xFFFFFFFF)
            continue
        bm = bytearray(512)
        for s in range(extent // 512):
            if chunk[s * 512:(s + 1) * 512].count(0) != 512:
                bm[s // 8] |= 1 << (s % 8)
        cat.append(len(ext) // (512 + extent))
        ext += bm + chunk
    h = bytearray(512)
    h[0:23] = b"Bochs Virtual HD Image\0"
    h[32:40] = b"Redolog\0"
    h[48:56] = b"Growing\0"
    struct.pack_into("<IIIII", h, 64, 0x20000 if version == 2 else 0x10000, 512, n, 512, extent)
    struct.pack_into("<Q", h, 88 if version == 2 else 84, len(data))
    return bytes(h) + struct.pack("<%dI" % n, *cat) + bytes(ext), {"catalog": 512}


CLOOP_MAGIC = (b"#!/bin/sh\n#V2.0 Format\n"
               b"modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")


def cloop(data, block=4096):
    """cloop V2.0: 128-byte script, block size, count, offsets, zlib blocks."""
    n = (len(data) + block - 1) // block
    blocks = [zlib.compress(data[i * block:(i + 1) * block].ljust(block, b"\0"), 9) for i in range(n)]
    hdr = CLOOP_MAGIC.ljust(128, b"\0") + struct.pack(">II", block, n)
    off = len(hdr) + 8 * (n + 1)
    offs = [off]
    for b in blocks:
        off += len(b)
        offs.append(off)
    return hdr + struct.pack(">%dQ" % (n + 1), *offs) + b"".join(blocks), {"offsets": 136}


UDZE, UDRW, UDIG, UDZO, UDBZ = 0, 1, 2, 0x80000005, 0x80000006


def dmg(data, chunk_sectors=8, plist=True, kinds=(UDZO, UDBZ, UDRW, UDZE)):
    """UDIF: chunks in the data fork (cycling through @kinds, zero chunks as
    UDZE/UDIG), one mish block in an XML plist or a resource fork, koly
    trailer.  len(data) must be a multiple of 512."""
    assert len(data) % 512 == 0
    cs = chunk_sectors * 512
    fork = bytearray()
    chunks = []
    for i in range((len(data) + cs - 1) // cs):
        raw = data[i * cs:(i + 1) * cs]
        kind = kinds[i % len(kinds)]
        if raw.count(0) == len(raw) and kind not in (UDZE, UDIG):
            kind = UDZE
        if kind == UDZO:
            blob = zlib.compress(raw, 9)
        elif kind == UDBZ:
            blob = bz2.compress(raw, 9)
        elif kind == UDRW:
            blob = raw
        else:
            blob = b""
            if raw.count(0) != len(raw):
                blob = zlib.compress(raw, 9)
                kind = UDZO
        chunks.append((kind, i * chunk_sectors, len(raw) // 512, len(fork), len(blob)))
        fork += blob
    mish = bytearray(204)
    struct.pack_into(">IIQQQII", mish, 0, 0x6D697368, 1, 0, len(data) // 512, 0, 0, len(chunks) + 1)
    struct.pack_into(">I", mish, 200, len(chunks) + 1)
    for kind, sec, cnt, off, ln in chunks:
        mish += struct.pack(">IIQQQQ", kind, 0, sec, cnt, off, ln)
    mish += struct.pack(">IIQQQQ", 0xFFFFFFFF, 0, len(data) // 512, 0, len(fork), 0)
    img = bytearray(fork)
    koly = bytearray(512)
    koly[0:4] = b"koly"
    struct.pack_into(">III", koly, 4, 4, 512, 1)
    struct.pack_into(">QQ", koly, 0x18, 0, len(fork))
    if plist:
        xml = (b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0">\n<dict>\n'
               b"<key>resource-fork</key>\n<dict>\n<key>blkx</key>\n<array>\n<dict>\n"
               b"<key>Data</key>\n<data>\n" + base64.encodebytes(bytes(mish)) +
               b"</data>\n</dict>\n</array>\n</dict>\n</dict>\n</plist>\n")
        struct.pack_into(">QQ", koly, 0xD8, len(img), len(xml))
        table_off = len(img)
        img += xml
    else:
        rsrc = bytearray(256)
        struct.pack_into(">III", rsrc, 0, 0x100, 0, 4 + len(mish))
        rsrc += struct.pack(">I", len(mish)) + mish
        struct.pack_into(">QQ", koly, 0x28, len(img), len(rsrc))
        table_off = len(img) + 260
        img += rsrc
    struct.pack_into(">Q", koly, 0x1EC, len(data) // 512)
    return bytes(img + koly), {"koly": len(img), "table": table_off, "fork": len(fork)}


def pattern(size, seed=1):
    """Guest content: runs of bytes, zero stretches, some random-looking
    data, so each format meets holes and data."""
    out = bytearray(size)
    x = seed
    pos = 0
    while pos < size:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        run = 512 * (1 + x % 24)
        kind = (x >> 8) % 4
        end = min(size, pos + run)
        if kind == 1:
            out[pos:end] = bytes([(x >> 16) & 0xFF]) * (end - pos)
        elif kind == 2:
            for i in range(pos, end):
                x = (x * 1103515245 + 12345) & 0x7FFFFFFF
                out[i] = (x >> 16) & 0xFF
        pos = end
    return bytes(out)


def patch(img, off, fmt, *values):
    """A copy of @img with struct @fmt packed at @off."""
    b = bytearray(img)
    end = off + struct.calcsize(fmt)
    if len(b) < end:
        b += bytes(end - len(b))
    struct.pack_into(fmt, b, off, *values)
    return bytes(b)


def write_corpus(name, cases, argv):
    """Write @cases (file name -> bytes) to argv[1] or corpus/@name."""
    import os
    out = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "corpus", name)
    os.makedirs(out, exist_ok=True)
    for fname, data in sorted(cases.items()):
        with open(os.path.join(out, fname), "wb") as f:
            f.write(data)
    print("%d images in %s" % (len(cases), out))
