#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Leave a VHDX image as an unclean close would: a log to replay.

  vhdx-craft.py log IMAGE PATTERN
      IMAGE is a dynamic VHDX made by qemu-img (block_state_zero=off) whose
      payload block 1 is allocated and block 0 is not.  Writes a log
      sequence of two entries under a fresh log GUID, and sets that GUID in
      both headers, without touching anything else:
        entry 1: two data sectors of PATTERN (one byte, e.g. 0x5a) at the
                 end of the file (a new block; last_file_offset grows the
                 file by one block), and a zero descriptor over the first
                 8 KiB of block 1;
        entry 2: the BAT sector with entry 0 pointing at the new block.
      After a replay guest bytes [0, 8K) read PATTERN, [bs, bs + 8K) read
      zeroes, the rest as before.
  vhdx-craft.py crc32c STRING       print the CRC-32C of STRING (self-test)
"""
import os
import struct
import sys

_T = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    _T.append(c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _T[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def with_csum(buf, off):
    buf = bytearray(buf)
    buf[off:off + 4] = b"\0\0\0\0"
    struct.pack_into("<I", buf, off, crc32c(bytes(buf)))
    return buf


def current_header(img):
    hs = []
    for off in (64 << 10, 128 << 10):
        img.seek(off)
        h = bytearray(img.read(4096))
        ok = h[:4] == b"head" and struct.unpack_from("<I", h, 4)[0] == crc32c(bytes(with_csum(h, 4)))
        hs.append((struct.unpack_from("<Q", h, 8)[0] if ok else -1, h))
    return max(hs, key=lambda x: x[0])[1]


def set_log_guid(img, guid):
    h = current_header(img)
    seq = struct.unpack_from("<Q", h, 8)[0]
    for i, off in enumerate((64 << 10, 128 << 10)):
        h2 = bytearray(h)
        struct.pack_into("<Q", h2, 8, seq + 1 + i)
        h2[48:64] = guid
        img.seek(off)
        img.write(with_csum(h2, 4))


def entry(seq, guid, descs, datas, flushed, last):
    """descs: ('desc', file_offset, 4096-byte sector) or ('zero', file_offset, length)."""
    n = len(descs)
    dsec = (n + 2 + 127) // 128
    data_secs = [d for d in descs if d[0] == "desc"]
    length = (dsec + len(data_secs)) * 4096
    e = bytearray(length)
    struct.pack_into("<4sIIIQII16sQQ", e, 0, b"loge", 0, length, 0, seq, n, 0, guid, flushed, last)
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
            struct.pack_into("<4sI", e, ds, b"data", seq >> 32)
            e[ds + 8:ds + 4092] = sec[8:4092]
            struct.pack_into("<I", e, ds + 4092, seq & 0xFFFFFFFF)
            ds += 4096
    return with_csum(e, 4)


def craft_log(path, pattern):
    with open(path, "r+b") as img:
        h = current_header(img)
        log_len, log_off = struct.unpack_from("<IQ", h, 68)
        img.seek(192 << 10)
        rt = img.read(65536)
        bat_off = struct.unpack_from("<Q", rt, 16 + 16)[0]
        md_off = struct.unpack_from("<Q", rt, 48 + 16)[0]
        img.seek(md_off + 65536)
        bs = struct.unpack_from("<I", img.read(4))[0]
        img.seek(bat_off)
        bat = bytearray(img.read(4096))
        e0, e1 = struct.unpack_from("<QQ", bat, 0)
        assert e0 & 7 == 0 and e1 & 7 == 6, "want block 0 absent and block 1 present"
        size = os.fstat(img.fileno()).st_size
        new = (size + (1 << 20) - 1) & ~((1 << 20) - 1)
        guid = os.urandom(16)
        sec = bytes([pattern]) * 4096
        e1s = entry(7, guid, [("desc", new, sec), ("desc", new + 4096, sec),
                              ("zero", e1 & ~0xFFFFF, 8192)], None, size, new + 8192)
        struct.pack_into("<Q", bat, 0, new | 6)
        e2s = entry(8, guid, [("desc", bat_off, bytes(bat))], None, size, new + 8192)
        img.seek(log_off)
        img.write(e1s + e2s)
        set_log_guid(img, guid)


if __name__ == "__main__":
    if sys.argv[1] == "crc32c":
        print("%08x" % crc32c(sys.argv[2].encode()))
    elif sys.argv[1] == "log":
        craft_log(sys.argv[2], int(sys.argv[3], 0))
    else:
        sys.exit(__doc__)
