#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted bad vmdk images of tests/fuzz/corpus/vmdk/.

Sparse inputs start from a small valid monolithicSparse extent (1 MiB,
64 KiB grains, one 512-entry grain table and its redundant copy, two grains
allocated, embedded descriptor) and break one thing each: every header
field, the grain directory size and place, grain table and grain entries,
compressed grain markers, the streamOptimized footer, truncation.
Descriptor inputs are text as fuzz-vmdk.c opens it, next to flat.bin and
sparse.vmdk: huge and malformed lines, missing, absolute and ".." extent
names, too many extents, sizes that overflow, bad createType.  The driver
must refuse or read each one cleanly.  Usage: make-vmdk-corpus.py [OUTDIR]
"""
import os
import struct
import sys
import zlib

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "vmdk")

DESC = (b'# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
        b'createType="monolithicSparse"\n\n# Extent description\nRW 2048 SPARSE "x.vmdk"\n')

# field name -> (offset, struct format)
FIELDS = {
    "version": (4, "<I"), "flags": (8, "<I"), "capacity": (12, "<Q"),
    "granularity": (20, "<Q"), "desc_offset": (28, "<Q"), "desc_size": (36, "<Q"),
    "num_gtes": (44, "<I"), "rgd_offset": (48, "<Q"), "gd_offset": (56, "<Q"),
    "grain_offset": (64, "<Q"), "compress": (77, "<H"),
}


def sparse(capacity=2048, gran=8, gtes=512, version=1, flags=3, compress=0, grains=(0, 5),
           grain_data=None):
    """A valid sparse extent (4 KiB grains, to keep the corpus small):
    header, descriptor at 1, RGD at 21, RGT at 22, GD at 26, GT at 27,
    grains from 32."""
    h = bytearray(512)
    h[0:4] = b"KDMV"
    struct.pack_into("<IIQQQQIQQQ", h, 4, version, flags, capacity, gran, 1, 20, gtes, 21, 26, 32)
    h[73:77] = b"\n \r\n"
    struct.pack_into("<H", h, 77, compress)
    img = bytearray(32 * 512)
    img[0:512] = h
    img[512:512 + len(DESC)] = DESC
    struct.pack_into("<I", img, 21 * 512, 22)
    struct.pack_into("<I", img, 26 * 512, 27)
    for i, g in enumerate(grains):
        sector = 32 + i * gran
        struct.pack_into("<I", img, 22 * 512 + 4 * g, sector)
        struct.pack_into("<I", img, 27 * 512 + 4 * g, sector)
        data = grain_data(i) if grain_data else bytes([0x40 + i]) * (gran * 512)
        end = sector * 512 + len(data)
        if len(img) < end:
            img += bytes(end - len(img))
        img[sector * 512:end] = data
    return img


def with_field(name, value, **kw):
    img = sparse(**kw)
    off, fmt = FIELDS[name]
    struct.pack_into(fmt, img, off, value)
    return img


def stream_grain(i, size_field=None, payload=None):
    raw = bytes([0x60 + i]) * 4096
    comp = payload if payload is not None else zlib.compress(raw)
    m = struct.pack("<QI", i * 8, len(comp) if size_field is None else size_field) + comp
    return m + bytes((-len(m)) % 512)


def cases():
    yield "valid-sparse", sparse()
    huge = [0, 1, 3, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0x8000000000000000,
            1 << 40, 2049, 513]
    for name, (off, fmt) in FIELDS.items():
        for v in huge:
            mask = (1 << (8 * struct.calcsize(fmt))) - 1
            yield f"{name}-{v & mask:x}", with_field(name, v & mask)
    yield "version-3-rw", with_field("version", 3)
    yield "flags-zero-grain", sparse(flags=7, version=2)
    yield "flags-no-rgd", sparse(flags=1)
    yield "granularity-1", sparse(gran=1)
    yield "capacity-past-gd", with_field("capacity", 512 * 8 * 4)
    # Grain directory / table entries.
    for name, off, v in [("gd-entry-zero", 26 * 512, 0), ("gd-entry-past-eof", 26 * 512, 100000),
                         ("gd-entry-header", 26 * 512, 0), ("gd-entry-huge", 26 * 512, 0xFFFFFFFF),
                         ("rgd-entry-past-eof", 21 * 512, 0xFFFFFF00),
                         ("gt-entry-past-eof", 27 * 512 + 4, 0x100000),
                         ("gt-entry-huge", 27 * 512 + 4, 0xFFFFFFF0),
                         ("gt-entry-in-header", 27 * 512 + 4, 0),
                         ("gt-entry-on-gd", 27 * 512 + 4, 26),
                         ("gt-entry-one", 27 * 512 + 4, 1)]:
        img = sparse()
        struct.pack_into("<I", img, off, v)
        yield name, img
    yield "gd-entry-is-one", (lambda i: (struct.pack_into("<I", i, 26 * 512, 1), i)[1])(sparse())
    # Truncations.
    full = sparse()
    for n in (4, 80, 511, 512, 13000, 27 * 512 + 100, 32 * 512 + 100):
        yield f"truncated-{n}", bytes(full[:n])
    # Compressed grains (streamOptimized).
    yield "stream-valid", sparse(version=3, flags=3 | (1 << 16) | (1 << 17), compress=1,
                                 grain_data=stream_grain)
    for nm, kw in [("size-zero", dict(size_field=0)), ("size-huge", dict(size_field=0xFFFFFFFF)),
                   ("size-past-buffer", dict(size_field=2 * 4096 - 4)),
                   ("garbage", dict(payload=b"\x78\x9c" + b"\xff" * 100)),
                   ("short", dict(payload=zlib.compress(b"\x01" * 100)))]:
        yield f"stream-{nm}", sparse(version=3, flags=3 | (1 << 16) | (1 << 17), compress=1,
                                     grain_data=lambda i, kw=kw: stream_grain(i, **kw))
    yield "stream-no-marker", sparse(version=3, flags=3 | (1 << 16), compress=1,
                                     grain_data=lambda i: zlib.compress(b"\x07" * 4096))
    # GD at the end: footer missing or bad.
    img = with_field("gd_offset", 0xFFFFFFFFFFFFFFFF, version=3, flags=3 | (3 << 16), compress=1)
    yield "footer-missing", img
    foot = bytearray(1536)
    struct.pack_into("<QII", foot, 0, 0, 0, 3)
    foot[512:1024] = sparse()[0:512]
    struct.pack_into("<Q", foot, 512 + 56, 0xFFFFFFFFFFFFFFFF)
    yield "footer-gd-at-end-again", bytes(img) + bytes(foot)
    foot2 = bytearray(foot)
    struct.pack_into("<Q", foot2, 512 + 12, 1 << 60)
    yield "footer-huge-capacity", bytes(img) + bytes(foot2)
    # Descriptor inside a sparse file (capacity 0, desc_offset set).
    inner = bytearray(sparse())
    struct.pack_into("<Q", inner, 12, 0)
    inner[512:512 + 200] = (b'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n'
                            b'createType="monolithicFlat"\nRW 100 FLAT "flat.bin" 0\n').ljust(200, b"\0")
    yield "sparse-holding-descriptor", bytes(inner)
    # The ESX "COWD" header.
    cowd = bytearray(4096)
    cowd[0:4] = b"COWD"
    struct.pack_into("<IIIIII", cowd, 4, 1, 3, 2048, 8, 4, 1)
    yield "cowd-valid", bytes(cowd)
    for i, (o, v) in enumerate([(12, 0xFFFFFFFF), (16, 0), (16, 0xFFFFFFFF), (20, 0xFFFFFFFF),
                                (24, 0xFFFFFFFF), (24, 0)]):
        c = bytearray(cowd)
        struct.pack_into("<I", c, o, v)
        yield f"cowd-field-{o}-{v:x}", bytes(c)

    # Descriptors (text), opened next to flat.bin and sparse.vmdk.
    head = (b'# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
            b'createType="%s"\n')
    flat = head % b"monolithicFlat"
    yield "desc-valid-flat", flat + b'RW 2048 FLAT "flat.bin" 0\n'
    yield "desc-valid-sparse", head % b"twoGbMaxExtentSparse" + b'RW 2048 SPARSE "sparse.vmdk"\n'
    yield "desc-two-extents", flat + b'RW 1024 FLAT "flat.bin" 0\nRW 1024 FLAT "flat.bin" 1024\n'
    yield "desc-crlf", (flat + b'RW 2048 FLAT "flat.bin" 0\n').replace(b"\n", b"\r\n")
    for nm, line in [("dotdot", b'RW 2048 FLAT "../flat.bin" 0'),
                     ("dotdot-inner", b'RW 2048 FLAT "a/../../flat.bin" 0'),
                     ("absolute", b'RW 2048 FLAT "/etc/passwd" 0'),
                     ("missing", b'RW 2048 FLAT "nothere.bin" 0'),
                     ("empty-name", b'RW 2048 FLAT "" 0'),
                     ("newfile-dir", b'RW 2048 FLAT "sub/new.bin" 0'),
                     ("no-offset", b'RW 2048 FLAT "flat.bin"'),
                     ("neg-offset", b'RW 2048 FLAT "flat.bin" -5'),
                     ("huge-offset", b'RW 2048 FLAT "flat.bin" 9223372036854775807'),
                     ("huge-sectors", b'RW 9223372036854775807 FLAT "flat.bin" 0'),
                     ("overflow-sectors", b'RW 99999999999999999999999 FLAT "flat.bin" 0'),
                     ("zero-sectors", b'RW 0 FLAT "flat.bin" 0'),
                     ("neg-sectors", b'RW -2048 FLAT "flat.bin" 0'),
                     ("vmfs-offset", b'RW 2048 VMFS "flat.bin" 7'),
                     ("vmfs", b'RW 2048 VMFS "flat.bin"'),
                     ("sparse-offset", b'RW 2048 SPARSE "sparse.vmdk" 5'),
                     ("sparse-on-flat", b'RW 2048 SPARSE "flat.bin"'),
                     ("vmfssparse", b'RW 2048 VMFSSPARSE "sparse.vmdk"'),
                     ("sesparse", b'RW 2048 SESPARSE "sparse.vmdk"'),
                     ("unknown-type", b'RW 2048 ZFLAT "flat.bin" 0'),
                     ("long-type", b'RW 2048 FLATFLATFLATFLAT "flat.bin" 0'),
                     ("long-access", b'RWRWRWRWRWRWRW 2048 FLAT "flat.bin" 0'),
                     ("rdonly", b'RDONLY 2048 FLAT "flat.bin" 0'),
                     ("noaccess", b'NOACCESS 2048 FLAT "flat.bin" 0'),
                     ("unterminated", b'RW 2048 FLAT "flat.bin 0'),
                     ("control-char", b'RW 2048 FLAT "fl\x01at.bin" 0'),
                     ("long-name", b'RW 2048 FLAT "' + b"a" * 5000 + b'" 0'),
                     ("nul-in-line", b'RW 2048 FLAT "flat\0.bin" 0')]:
        yield f"desc-{nm}", flat + line + b"\n"
    yield "desc-many-extents", flat + b'RW 1 FLAT "flat.bin" 0\n' * 5000
    yield "desc-sum-overflow", flat + b'RW 4611686018427387903 FLAT "flat.bin" 0\n' * 3
    yield "desc-no-cid", b'version=1\ncreateType="monolithicFlat"\nRW 2048 FLAT "flat.bin" 0\n'
    yield "desc-bad-cid", flat.replace(b"fffffffe", b"zzzz") + b'RW 2048 FLAT "flat.bin" 0\n'
    yield "desc-huge-cid", flat.replace(b"fffffffe", b"fffffffffffffffff") + b'RW 8 FLAT "flat.bin" 0\n'
    yield "desc-no-type", b'version=1\nCID=1\nparentCID=ffffffff\nRW 2048 FLAT "flat.bin" 0\n'
    yield "desc-type-stream", head % b"streamOptimized" + b'RW 2048 SPARSE "sparse.vmdk"\n'
    yield "desc-type-long", head % (b"x" * 300) + b'RW 2048 FLAT "flat.bin" 0\n'
    yield "desc-type-unterminated", b'version=1\nCID=1\nparentCID=1\ncreateType="monolithicFlat'
    yield "desc-huge-line", flat + b"#" + b"x" * (1 << 20) + b"\n"
    yield "desc-no-extents", flat
    yield "desc-parent-hint", flat + b'parentFileNameHint="/etc/passwd"\nRW 2048 FLAT "flat.bin" 0\n'
    yield "desc-parent-hint-long", flat + b'parentFileNameHint="' + b"p" * 4000 + b'"\n'
    yield "desc-parent-protocol", flat + b'parentFileNameHint="nbd://x"\nRW 8 FLAT "flat.bin" 0\n'
    yield "desc-only-newlines", b"\n" * 100000
    yield "desc-binary", bytes(range(256)) * 16


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in cases():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(bytes(data))


main()
