#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Used by image-tools-amend.sh.  Print each persistent bitmap of a qcow2 image: name, flags, granularity
# and the byte ranges whose bits are set (qcow2.txt "Bitmaps").
import struct, sys
p = sys.argv[1]
with open(p, "rb") as f:
    data = f.read()
cs = 1 << struct.unpack(">I", data[20:24])[0]
size = struct.unpack(">Q", data[24:32])[0]
hl = struct.unpack(">I", data[100:104])[0]
auto = struct.unpack(">Q", data[88:96])[0]
off = hl
ext = None
while off + 8 <= cs:
    t, l = struct.unpack(">II", data[off:off + 8])
    if t == 0:
        break
    if t == 0x23852875:
        ext = data[off + 8:off + 8 + l]
    off += 8 + ((l + 7) & ~7)
if not ext or not (auto & 1):
    print("no valid bitmaps")
    sys.exit(0)
nb, _, dsize, doff = struct.unpack(">IIQQ", ext[:24])
d = data[doff:doff + dsize]
pos = 0
for _ in range(nb):
    toff, tsize, flags, typ, gb, nsize, esize = struct.unpack(">QIIBBHI", d[pos:pos + 24])
    name = d[pos + 24 + esize:pos + 24 + esize + nsize].decode()
    pos += (24 + esize + nsize + 7) & ~7
    g = 1 << gb
    bits = bytearray()
    for i in range(tsize):
        e = struct.unpack(">Q", data[toff + 8 * i:toff + 8 * i + 8])[0]
        o = e & 0x00fffffffffffe00
        bits += data[o:o + cs] if o else (b"\xff" * cs if e & 1 else bytes(cs))
    runs, start = [], None
    n = (size + g - 1) // g
    for i in range(n + 1):
        s = i < n and bits[i // 8] >> (i % 8) & 1
        if s and start is None:
            start = i
        elif not s and start is not None:
            runs.append("%d-%d" % (start * g, min(i * g, size)))
            start = None
    print(name, "flags=%d" % flags, "gran=%d" % g, " ".join(runs))
