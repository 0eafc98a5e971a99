#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted bad VHDX images of tests/fuzz/corpus/vhdx/.

The base image is a small valid dynamic VHDX: 4 MiB disk, 1 MiB blocks,
log at 1 MiB (1 MiB), BAT at 2 MiB, metadata at 3 MiB, block 0 present at
4 MiB, block 1 ZERO, block 2 present at 5 MiB, block 3 NOT_PRESENT.  Each
case breaks one thing: the file identifier, either header, the region
table, every metadata item, BAT entries, and the log (entries to replay
with bad checksums, sequence numbers, descriptors, targets and sizes).
Checksums are recomputed after the damage unless the damage is the
checksum, so the driver meets the damage itself.

Images are written in the sparse form fuzz-vhdx.c reads ("VHDXFUZZ" and
(offset, length, bytes) chunks of the non-zero 512-byte pieces), so the
corpus stays small.  Usage: make-vhdx-corpus.py [OUTDIR]
"""
import os
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "vhdx")
MiB = 1 << 20
KiB = 1 << 10

_T = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    _T.append(c)


_CACHE = {}


def crc32c(data):
    if data in _CACHE:
        return _CACHE[data]
    _CACHE[data] = _crc32c(data)
    return _CACHE[data]


def _crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _T[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def csum(buf, off, length):
    """Set the CRC-32C of buf[off:off+length] (checksum field at off+4)."""
    struct.pack_into("<I", buf, off + 4, 0)
    struct.pack_into("<I", buf, off + 4, crc32c(bytes(buf[off:off + length])))


def g(s):
    """A GUID string to its on-disk bytes."""
    h = s.replace("-", "")
    return struct.pack("<IHH", int(h[0:8], 16), int(h[8:12], 16), int(h[12:16], 16)) + bytes.fromhex(h[16:])


BAT = g("2DC27766-F623-4200-9D64-115E9BFD4A08")
META = g("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMS = g("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VSIZE = g("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
PAGE83 = g("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL = g("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL = g("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT = g("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
LOG_GUID = bytes(range(0x40, 0x50))

H1, H2, RT1, RT2 = 64 * KiB, 128 * KiB, 192 * KiB, 256 * KiB
LOG, BATO, MD = 1 * MiB, 2 * MiB, 3 * MiB


class Img:
    def __init__(self, size=4 * MiB, block=MiB, log_len=MiB, items=None, regions=None,
                 bat=None, file_len=6 * MiB, seq=(10, 11), log_guid=bytes(16)):
        self.b = bytearray(file_len)
        b = self.b
        b[0:8] = b"vhdxfile"
        b[8:18] = "fuzz".encode("utf-16le") + b"\0\0"
        for off, s in ((H1, seq[0]), (H2, seq[1])):
            struct.pack_into("<4sIQ16s16s16sHHIQ", b, off, b"head", 0, s, bytes(16), bytes(16),
                             log_guid, 0, 1, log_len, LOG)
        self.regions = regions if regions is not None else [(BAT, BATO, MiB, 0), (META, MD, MiB, 0)]
        self.items = items if items is not None else [
            (FILE_PARAMS, 65536, 8, 4, struct.pack("<II", block, 0)),
            (VSIZE, 65544, 8, 6, struct.pack("<Q", size)),
            (PAGE83, 65552, 16, 6, bytes(range(16))),
            (LOGICAL, 65568, 4, 6, struct.pack("<I", 512)),
            (PHYSICAL, 65572, 4, 6, struct.pack("<I", 4096)),
        ]
        self.bat = bat if bat is not None else [4 * MiB | 6, 2, 5 * MiB | 6, 0]
        for i, off in ((0, 4 * MiB), (2, 5 * MiB)):
            if off + 8192 <= file_len:
                b[off:off + 4096] = bytes([0xA0 + i]) * 4096
                b[off + 4096:off + 8192] = bytes([0xB0 + i]) * 4096

    def header(self, which):
        return H1 if which == 1 else H2

    def finish(self, fix=True):
        b = self.b
        if fix:
            for off in (H1, H2):
                csum(b, off, 4096)
        rt = bytearray(64 * KiB)
        struct.pack_into("<4sII", rt, 0, b"regi", 0, len(self.regions))
        for i, (guid, off, length, bits) in enumerate(self.regions[:2047]):
            struct.pack_into("<16sQII", rt, 16 + 32 * i, guid, off, length, bits)
        csum(rt, 0, 64 * KiB)
        for off in (RT1, RT2):
            if off + len(rt) <= len(b):
                b[off:off + len(rt)] = rt
        if MD + 65536 <= len(b):
            mt = bytearray(64 * KiB)
            mt[0:8] = b"metadata"
            struct.pack_into("<H", mt, 10, len(self.items) & 0xFFFF)
            for i, (guid, off, length, bits, data) in enumerate(self.items[:2047]):
                struct.pack_into("<16sIII", mt, 32 + 32 * i, guid, off, length, bits)
                if data and MD + off + len(data) <= len(b):
                    b[MD + off:MD + off + len(data)] = data
            b[MD:MD + len(mt)] = mt
        for i, e in enumerate(self.bat):
            if BATO + 8 * i + 8 <= len(b):
                struct.pack_into("<Q", b, BATO + 8 * i, e)
        return self


def log_entry(seq, descs, guid=LOG_GUID, flushed=6 * MiB, last=6 * MiB, tail=0, length=None,
              count=None, bad_crc=False, data_seq=None):
    n = len(descs)
    dsec = (n + 2 + 127) // 128
    ndata = len([d for d in descs if d[0] == "desc"])
    real = (dsec + ndata) * 4096
    total = length if length is not None else real  # the header may lie
    e = bytearray(real)
    struct.pack_into("<4sIIIQII16sQQ", e, 0, b"loge", 0, total, tail, seq,
                     n if count is None else count, 0, guid, flushed, last)
    ds = dsec * 4096
    for i, d in enumerate(descs):
        p = 64 + 32 * i
        if d[0] == "zero":
            struct.pack_into("<4sIQQQ", e, p, b"zero", 0, d[2], d[1], seq)
        else:
            sec = d[2]
            e[p:p + 4] = b"desc"
            e[p + 4:p + 8] = sec[4092:4096]
            e[p + 8:p + 16] = sec[0:8]
            struct.pack_into("<QQ", e, p + 16, d[1], seq)
            s2 = seq if data_seq is None else data_seq
            struct.pack_into("<4sI", e, ds, b"data", s2 >> 32)
            e[ds + 8:ds + 4092] = sec[8:4092]
            struct.pack_into("<I", e, ds + 4092, s2 & 0xFFFFFFFF)
            ds += 4096
    struct.pack_into("<I", e, 4, 0)
    struct.pack_into("<I", e, 4, crc32c(bytes(e[:min(total, real)])))
    if bad_crc:
        e[100] ^= 1
    return bytes(e)


def with_log(entries, at=0, img=None):
    im = img or Img(log_guid=LOG_GUID)
    pos = at
    for e in entries:
        for i in range(len(e)):
            im.b[LOG + (pos + i) % MiB] = e[i]
        pos += len(e)
    return im.finish()


def sparse(b):
    out = bytearray(b"VHDXFUZZ")
    i, n = 0, len(b)
    while i < n:
        if not any(b[i:i + 512]):
            i += 512
            continue
        j = i
        while j < n and any(b[j:j + 512]):
            j += 512
        j = min(j, n)
        out += struct.pack("<QI", i, j - i) + b[i:j]
        i = j
    # The file's size: a last chunk at the end (one zero byte).
    if n and not any(b[n - 1:n]):
        out += struct.pack("<QI", n - 1, 1) + b"\0"
    return bytes(out)


def mut(fn, **kw):
    im = Img(**kw)
    fn(im)
    return im.finish()


def hset(which, fmt, off, val):
    return lambda im: struct.pack_into(fmt, im.b, im.header(which) + off, val)


def both(fmt, off, val):
    return lambda im: (hset(1, fmt, off, val)(im), hset(2, fmt, off, val)(im))


def item(k, **ch):
    def f(im):
        guid, off, length, bits, data = im.items[k]
        im.items[k] = (ch.get("guid", guid), ch.get("off", off), ch.get("length", length),
                       ch.get("bits", bits), ch.get("data", data))
    return f


def items_without(k):
    im = Img()
    return [it for i, it in enumerate(im.items) if i != k]


def cases():
    yield "valid", Img().finish()
    yield "valid-one-block", Img(size=512 * KiB).finish()
    yield "valid-no-log", Img(log_len=0).finish()
    # File identifier, headers.
    yield "bad-file-id", mut(lambda im: im.b.__setitem__(slice(0, 8), b"vhdxfilf"))
    yield "truncated-512k", Img().finish().b[:512 * KiB]
    yield "truncated-bat", Img().finish().b[:2 * MiB + 16]
    yield "truncated-blocks", Img().finish().b[:4 * MiB + 4096]
    im = Img().finish()
    im.b[H2 + 200] ^= 1
    yield "header2-bad-crc", im
    im = Img().finish()
    im.b[H1 + 200] ^= 1
    im.b[H2 + 200] ^= 1
    yield "headers-both-bad-crc", im
    yield "headers-same-seq-differ", mut(hset(2, "<I", 68, 2 * MiB), seq=(5, 5))
    yield "header-version-2", mut(both("<H", 66, 2))
    yield "header-log-version-1", mut(both("<H", 64, 1))
    yield "log-offset-zero", mut(both("<Q", 72, 0))
    yield "log-offset-unaligned", mut(both("<Q", 72, MiB + 4096))
    yield "log-offset-huge", mut(both("<Q", 72, (1 << 64) - MiB))
    yield "log-past-eof", mut(both("<Q", 72, 64 * MiB))
    yield "log-length-unaligned", mut(both("<I", 68, MiB + 4096))
    yield "log-length-huge", mut(both("<I", 68, 0xFFF00000))
    yield "log-over-bat", mut(both("<I", 68, 2 * MiB))
    # Region table.
    im = Img().finish()
    im.b[RT1 + 100] ^= 1
    yield "region-bad-crc", im
    yield "region-no-bat", Img(regions=[(META, MD, MiB, 0)]).finish()
    yield "region-no-metadata", Img(regions=[(BAT, BATO, MiB, 0)]).finish()
    yield "region-bat-twice", Img(regions=[(BAT, BATO, MiB, 0), (META, MD, MiB, 0), (BAT, BATO, MiB, 0)]).finish()
    yield "region-unknown-required", Img(regions=[(BAT, BATO, MiB, 0), (META, MD, MiB, 0), (bytes(16), 8 * MiB, MiB, 1)]).finish()
    yield "region-unknown-optional", Img(regions=[(BAT, BATO, MiB, 0), (META, MD, MiB, 0), (bytes(16), 8 * MiB, MiB, 0)]).finish()
    yield "region-unknown-over-block", Img(regions=[(BAT, BATO, MiB, 0), (META, MD, MiB, 0), (bytes(16), 4 * MiB, MiB, 0)]).finish()
    yield "region-count-huge", mut(lambda im: None, regions=[(BAT, BATO, MiB, 0), (META, MD, MiB, 0)] * 1500)
    yield "region-bat-offset-zero", Img(regions=[(BAT, 0, MiB, 0), (META, MD, MiB, 0)]).finish()
    yield "region-bat-unaligned", Img(regions=[(BAT, BATO + 4096, MiB, 0), (META, MD, MiB, 0)]).finish()
    yield "region-bat-past-eof", Img(regions=[(BAT, 1 << 40, MiB, 0), (META, MD, MiB, 0)]).finish()
    yield "region-bat-wrap", Img(regions=[(BAT, (1 << 64) - MiB, MiB, 0), (META, MD, MiB, 0)]).finish()
    yield "region-bat-length-zero", Img(regions=[(BAT, BATO, 0, 0), (META, MD, MiB, 0)]).finish()
    yield "region-bat-too-small", Img(regions=[(BAT, BATO, MiB, 0), (META, MD, MiB, 0)], size=1 << 46, block=MiB).finish()
    yield "region-bat-on-log", Img(regions=[(BAT, LOG, MiB, 0), (META, MD, MiB, 0)]).finish()
    yield "region-overlap", Img(regions=[(BAT, BATO, 2 * MiB, 0), (META, MD, MiB, 0)]).finish()
    yield "region-metadata-past-eof", Img(regions=[(BAT, BATO, MiB, 0), (META, 5 * MiB + MiB, MiB, 0)]).finish()
    # Metadata.
    yield "md-bad-signature", mut(lambda im: None).finish().b[:MD] + b"metadatX" + Img().finish().b[MD + 8:]
    yield "md-count-huge", mut(lambda im: im.items.extend([im.items[2]] * 2100))
    for k, name in enumerate(["file-params", "vsize", "page83", "logical", "physical"]):
        yield "md-no-" + name, Img(items=items_without(k)).finish()
        yield "md-dup-" + name, mut(lambda im, k=k: im.items.append(im.items[k]))
        yield "md-%s-offset-low" % name, mut(item(k, off=100))
        yield "md-%s-offset-past-region" % name, mut(item(k, off=MiB - 2))
        yield "md-%s-offset-huge" % name, mut(item(k, off=0xFFFFFFFF))
        yield "md-%s-length-wrong" % name, mut(item(k, length=3))
    yield "md-unknown-required", mut(lambda im: im.items.append((bytes(16), 70000, 8, 4, b"x")))
    yield "md-unknown-optional", mut(lambda im: im.items.append((bytes(16), 70000, 8, 0, b"x")))
    for v, name in ((0, "zero"), (3 * MiB, "not-pow2"), (512 * MiB, "512m"), (512 * KiB, "512k"), (0xFFFFFFFF, "max")):
        yield "md-block-size-" + name, mut(item(0, data=struct.pack("<II", v, 0)))
    yield "md-has-parent-no-locator", mut(item(0, data=struct.pack("<II", MiB, 2)))
    yield "md-has-parent", mut(lambda im: (item(0, data=struct.pack("<II", MiB, 2))(im), im.items.append((PARENT, 70000, 16, 6, b"p" * 16))))
    yield "md-leave-allocated", mut(item(0, data=struct.pack("<II", MiB, 1)))
    for v, name in ((0, "zero"), (511, "odd"), (1 << 63, "huge"), (65 << 40, "65t"), (64 << 40, "64t"), (1 << 46, "bigger-than-bat")):
        yield "md-vsize-" + name, mut(item(1, data=struct.pack("<Q", v)))
    for v, name in ((4096, "4096"), (0, "zero"), (1024, "1024")):
        yield "md-logical-" + name, mut(item(3, data=struct.pack("<I", v)))
    for v in (0, 1000, 512, 1 << 31):
        yield "md-physical-%d" % v, mut(item(4, data=struct.pack("<I", v)))
    # BAT entries.
    for v, name in ((64 * MiB | 6, "past-eof"), (0 | 6, "on-header"), (LOG | 6, "on-log"), (BATO | 6, "on-bat"),
                    (MD | 6, "on-metadata"), (5 * MiB | 6, "same-block"), (4, "state-4"),
                    (4 * MiB | 7, "partially-present"), (0xFFFFFFFFFFF00006, "offset-max"),
                    (4 * MiB | 3, "unmapped"), (4 * MiB | 5, "unmapped-v095"), (1, "undefined")):
        yield "bat-" + name, Img(bat=[v, 2, 5 * MiB | 6, 0]).finish()
    yield "bat-partial-last-block", Img(size=3 * MiB + 4096, bat=[4 * MiB | 6, 2, 0, 5 * MiB | 6],
                                        file_len=5 * MiB + 8192).finish()
    yield "bat-sector-bitmap-entry", Img(size=8 << 30, block=MiB, bat=[4 * MiB | 6] + [0] * 4095 + [6 | 5 * MiB]).finish()
    # The log.
    sec = bytes([0x5A]) * 4096
    bat_sec = bytearray(4096)
    struct.pack_into("<4Q", bat_sec, 0, 4 * MiB | 6, 0, 5 * MiB | 6, 2)
    good = log_entry(7, [("desc", 5 * MiB + 4096, sec)])
    yield "log-valid", with_log([good])
    yield "log-valid-two", with_log([good, log_entry(8, [("zero", 4 * MiB, 8192)])])
    yield "log-valid-wraps", with_log([good, log_entry(8, [("zero", 4 * MiB, 8192)])], at=MiB - 4096)
    yield "log-valid-grows-file", with_log([log_entry(7, [("desc", 6 * MiB, sec)], last=7 * MiB)])
    yield "log-bat-update", with_log([log_entry(7, [("desc", BATO, bytes(bat_sec))])])
    yield "log-bad-crc", with_log([log_entry(7, [("desc", 5 * MiB, sec)], bad_crc=True)])
    yield "log-seq-gap", with_log([good, log_entry(9, [("zero", 4 * MiB, 8192)])])
    yield "log-seq-zero", with_log([log_entry(0, [("desc", 5 * MiB, sec)])])
    yield "log-other-guid", with_log([log_entry(7, [("desc", 5 * MiB, sec)], guid=bytes(16))])
    yield "log-no-entries", with_log([])
    yield "log-to-file-id", with_log([log_entry(7, [("desc", 0, sec)])])
    yield "log-to-header", with_log([log_entry(7, [("desc", H1, sec)])])
    yield "log-to-log", with_log([log_entry(7, [("desc", LOG + 8192, sec)])])
    yield "log-to-region-table", with_log([log_entry(7, [("desc", RT1, sec)])])
    yield "log-unaligned-target", with_log([log_entry(7, [("desc", 5 * MiB + 1, sec)])])
    yield "log-past-file", with_log([log_entry(7, [("desc", 40 * MiB, sec)])])
    yield "log-target-wrap", with_log([log_entry(7, [("desc", (1 << 64) - 4096, sec)])])
    yield "log-zero-huge", with_log([log_entry(7, [("zero", 5 * MiB, 1 << 62)])])
    yield "log-zero-unaligned", with_log([log_entry(7, [("zero", 5 * MiB, 100)])])
    yield "log-last-offset-huge", with_log([log_entry(7, [("desc", 5 * MiB, sec)], last=1 << 63)])
    yield "log-flushed-past-eof", with_log([log_entry(7, [("desc", 5 * MiB, sec)], flushed=1 << 40)])
    yield "log-data-seq-mismatch", with_log([log_entry(7, [("desc", 5 * MiB, sec)], data_seq=8)])
    yield "log-count-huge", with_log([log_entry(7, [("desc", 5 * MiB, sec)], count=0xFFFFFFFF)])
    yield "log-count-more-than-sectors", with_log([log_entry(7, [("desc", 5 * MiB, sec)], count=120)])
    yield "log-length-huge", with_log([log_entry(7, [("desc", 5 * MiB, sec)], length=0xFFFFF000)])
    yield "log-length-unaligned", with_log([log_entry(7, [("desc", 5 * MiB, sec)], length=8000)])
    yield "log-length-zero", with_log([log_entry(7, [("desc", 5 * MiB, sec)], length=0)])
    im = Img(log_guid=LOG_GUID)
    e = bytearray(log_entry(7, [("desc", 5 * MiB, sec)]))
    e[64:68] = b"xxxx"
    struct.pack_into("<I", e, 4, 0)
    struct.pack_into("<I", e, 4, crc32c(bytes(e)))
    yield "log-bad-descriptor", with_log([bytes(e)], img=im)
    yield "empty", b""
    yield "file-id-only", b"vhdxfile"


def main():
    os.makedirs(OUT, exist_ok=True)
    n = 0
    for name, im in cases():
        data = bytes(im.b if isinstance(im, Img) else im)
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(sparse(data) if len(data) > 4096 else data)
        n += 1
    print("%d images in %s" % (n, OUT))


main()
