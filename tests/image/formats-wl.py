#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Helper of tests/image/formats-*.sh (vpc, vdi, qed interop).

  formats-wl.py gen SEED SIZE NOPS
      A seeded list of qemu-io commands, one a line, for an image of SIZE
      bytes: writes of odd sizes and offsets with patterns (often across
      block boundaries and into the last block), write -z, discard, flush.
  formats-wl.py runs RAW
      "read -q -P V OFF LEN" commands covering RAW (a file made of runs of
      constant bytes, all the workload writes), in pieces of at most 4 MiB.
"""
import random
import sys


def gen(seed, size, nops):
    r = random.Random(seed)
    blocks = [1 << 20, 2 << 20, 64 << 10]
    out = []
    for _ in range(nops):
        k = r.randrange(100)
        off = r.randrange(0, size)
        if r.random() < 0.3:
            b = r.choice(blocks)
            off = off // b * b + r.choice([0, 0, 1, -1, 512, -512, -4096])
        elif r.random() < 0.3:
            off = off // 512 * 512
        if r.random() < 0.1:
            off = size - r.randrange(1, 3 << 20)
        off = max(0, min(off, size - 1))
        ln = r.choice([r.randrange(1, 9000), r.randrange(1, 300000), r.randrange(1, 3 << 20)])
        ln = max(1, min(ln, size - off))
        if k < 75:
            out.append("write -q -P %d %d %d" % (r.randrange(1, 256), off, ln))
        elif k < 85:
            out.append("write -q -z %d %d" % (off, ln))
        elif k < 95:
            out.append("discard -q %d %d" % (off, ln))
        else:
            out.append("flush")
    print("\n".join(out))


def runs(path):
    data = open(path, "rb").read()
    i, n = 0, len(data)
    while i < n:
        j = i
        v = data[i]
        while j < n and j - i < (4 << 20) and data[j] == v:
            j += 1
        print("read -q -P %d %d %d" % (v, i, j - i))
        i = j


if sys.argv[1] == "gen":
    gen(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
else:
    runs(sys.argv[2])
